//! When a room records a version of its document: `--version-idle-secs` after the last edit
//! of a burst, at least every `--version-every-secs` while editing goes on, on request (named,
//! even if nothing changed), before the room unloads or the server shuts down when the text
//! changed since the last version, and when a document loads that changed after its last
//! version (the server was killed before it could record one).
//!
//! Reading the text of a big document takes milliseconds (every item of the document is
//! walked), so the room never does it: a recorder task per room keeps a replica of the
//! document, fed a copy of every update the room stores, in order. A version costs the room's
//! task only a marker in that same queue (the authors and the time); the recorder brings its
//! replica up to date, reads the text, computes the delta, compresses and writes on a blocking
//! thread, then makes the version durable through the group commit before anyone sees it:
//! [`record_version`] is the one place a version comes into being.
//!
//! In a cluster every node's room of a document sees every change, and one node at a time
//! records its versions: the recorder asks its turn first (`history/turn.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, warn};
use weft_protocol::RoomName;
use yrs::{ReadTxn, StateVector, Transact};

use crate::config::Durability;
use crate::room::authors::Since;
use crate::room::history::replica::Replica;
use crate::room::history::turn::{Turn, TURN_EVERY};
use crate::room::history::{Capture, Cursor, History};
use crate::room::registry::RoomContext;
use crate::room::{ApiOpError, ApiReply, ApiReplyTx, Room};
use crate::store::history::VersionMeta;
use crate::store::now_ms;

/// Most characters of a version's name.
pub(crate) const MAX_NAME_CHARS: usize = 200;

/// How often a room applies retention to its document's history (and once when it starts).
const THIN_EVERY: Duration = Duration::from_secs(3600);

/// Updates the recorder's replica has not applied yet beyond which it applies them at once
/// rather than at the next version, so a long burst does not pile up in memory.
const MAX_PENDING: usize = 1024;

/// What the room hands its recorder, in order.
enum Job {
    /// An update the room stored: the replica applies it.
    Update(Vec<u8>),
    /// Who wrote the update before this one.
    Author(String),
    /// The room's document was rebuilt from the store: the replica is replaced by this state.
    Reset(Vec<u8>),
    /// Record a version of the text as of this point, and answer `reply` if any.
    Version(Capture, Option<ApiReplyTx>),
}

/// A room's versioning state.
#[derive(Default)]
pub(crate) struct Versions {
    /// Where captures go; `None` when the store keeps no history.
    tx: Option<mpsc::UnboundedSender<Job>>,
    /// The recorder task.
    task: Option<JoinHandle<()>>,
    /// The document's update sequence number the last capture covered.
    covered: u64,
    /// The sequence number seen at the last tick.
    seen: u64,
    /// When the text last changed, and when the first change not covered by a version came.
    last_edit: Option<Instant>,
    first_edit: Option<Instant>,
}

impl Room {
    /// Starts the recorder, and records a version now when the document changed after its last
    /// one (or has none yet).
    pub(super) async fn start_versions(&mut self) {
        let Some(history) = self.ctx.history.clone() else {
            return;
        };
        let name = self.name.clone();
        let started = {
            let (history, name, doc) = (history.clone(), name.clone(), self.doc.clone());
            // The room does not touch its document while it waits here.
            tokio::task::spawn_blocking(move || {
                let state = doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                history.cursor(&name).map(|cursor| (cursor, state))
            })
            .await
        };
        let (cursor, state) = match started {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => {
                error!(room = %self.name, error = %e, "cannot read the version history");
                return;
            }
            Err(e) => {
                error!(room = %self.name, error = %e, "reading the version history failed");
                return;
            }
        };
        self.versions.covered = cursor.last.as_ref().map_or(0, |m| m.seq);
        self.versions.seen = self.last_seq;
        let (tx, rx) = mpsc::unbounded_channel();
        let replica = Replica::from_state(&state);
        let task = tokio::spawn(recorder(
            self.ctx.clone(),
            history,
            name,
            (cursor, replica),
            rx,
        ));
        self.versions.tx = Some(tx);
        self.versions.task = Some(task);
        if self.exists && self.last_seq > self.versions.covered {
            self.capture_version(None, None);
        }
    }

    /// Once a second: records a version when a burst of edits went quiet or has gone on long.
    pub(super) fn version_tick(&mut self, now: Instant) {
        if self.last_seq != self.versions.seen {
            self.versions.seen = self.last_seq;
            self.versions.last_edit = Some(now);
            self.versions.first_edit.get_or_insert(now);
        }
        if self.last_seq <= self.versions.covered || !self.exists {
            return;
        }
        let config = &self.ctx.config;
        let idle = Duration::from_secs(config.version_idle_secs);
        let every = Duration::from_secs(config.version_every_secs.max(1));
        let quiet = self.versions.last_edit.is_none_or(|t| now - t >= idle);
        let long = self.versions.first_edit.is_some_and(|t| now - t >= every);
        if quiet || long {
            self.capture_version(None, None);
        }
    }

    /// A request for a named version (the API): answered once the version is durable.
    pub(super) fn request_version(&mut self, name: Option<String>, reply: ApiReplyTx) {
        if self.deleted || !self.exists {
            let _ = reply.send(Err(ApiOpError::NotFound));
        } else if self.versions.tx.is_none() {
            let _ = reply.send(Err(ApiOpError::Unavailable(
                "this server keeps no version history".into(),
            )));
        } else {
            self.capture_version(name, Some(reply));
        }
    }

    /// Asks the recorder for a version of the text as of now (it reads the text from its
    /// replica, which has every update stored so far).
    fn capture_version(&mut self, name: Option<String>, reply: Option<ApiReplyTx>) {
        let Some(tx) = &self.versions.tx else {
            return;
        };
        let capture = Capture {
            at_ms: now_ms(),
            name,
            authors: self.authors.take(Since::Version),
            seq: self.last_seq,
            text: String::new(),
            runs: None,
        };
        self.versions.covered = self.last_seq;
        self.versions.first_edit = None;
        if let Err(mpsc::error::SendError(Job::Version(_, Some(reply)))) =
            tx.send(Job::Version(capture, reply))
        {
            warn!(room = %self.name, "version recorder gone; version not recorded");
            let _ = reply.send(Err(ApiOpError::Unavailable("recorder stopped".into())));
        }
    }

    /// Counts `author` as the writer of the update just stored: among the version's authors,
    /// and for the characters it inserted.
    pub(super) fn attribute(&mut self, author: &str) {
        self.authors.record(author);
        if let Some(tx) = &self.versions.tx {
            let _ = tx.send(Job::Author(author.to_owned()));
        }
    }

    /// Hands the recorder's replica a copy of an update the room just stored.
    pub(super) fn versions_saw(&self, update: &[u8]) {
        if let Some(tx) = &self.versions.tx {
            let _ = tx.send(Job::Update(update.to_vec()));
        }
    }

    /// The room's document was rebuilt from the store: so is the replica.
    pub(super) fn versions_reset(&self) {
        if let Some(tx) = &self.versions.tx {
            let state = self
                .doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            let _ = tx.send(Job::Reset(state));
        }
    }

    /// Before the room stops with its document kept: a last version when the text changed,
    /// then waits until the recorder made everything durable.
    pub(super) async fn wind_up_versions(&mut self) {
        if self.exists && self.last_seq > self.versions.covered {
            self.capture_version(None, None);
        }
        self.versions.tx = None;
        if let Some(task) = self.versions.task.take() {
            let _ = task.await;
        }
    }
}

/// What a job left to do: nothing more (`Fed`), a version to record, or stop (the replica
/// was lost with a panicking thread).
enum Next {
    Fed,
    Record(Capture, Option<ApiReplyTx>),
    Stop,
}

/// Feeds `job` to the replica (taken out and put back around blocking work).
async fn feed(slot: &mut Option<Replica>, job: Job) -> Next {
    let Some(mut replica) = slot.take() else {
        return Next::Stop;
    };
    let next = match job {
        Job::Update(update) => {
            replica.push(update);
            if replica.pending() >= MAX_PENDING {
                let Some(caught_up) = off_thread(replica, Replica::caught_up).await else {
                    return Next::Stop;
                };
                replica = caught_up;
            }
            Next::Fed
        }
        Job::Author(name) => {
            replica.attribute_last(&name);
            Next::Fed
        }
        Job::Reset(state) => {
            let Some(fresh) = off_thread(state, |s| Replica::from_state(&s)).await else {
                return Next::Stop;
            };
            replica = fresh;
            Next::Fed
        }
        Job::Version(capture, reply) => {
            let Some((caught_up, text, runs)) = off_thread(replica, Replica::text).await else {
                return Next::Stop;
            };
            replica = caught_up;
            let capture = Capture {
                text,
                runs,
                ..capture
            };
            Next::Record(capture, reply)
        }
    };
    *slot = Some(replica);
    next
}

/// A room's recorder: keeps the replica, records each version in order, answers whoever waits
/// for it, and applies retention now and then. With a history several nodes share, it records
/// only in its turn (see `history/turn.rs`).
async fn recorder(
    ctx: Arc<RoomContext>,
    history: History,
    name: RoomName,
    (cursor, replica): (Cursor, Replica),
    mut rx: mpsc::UnboundedReceiver<Job>,
) {
    let mut turn = Turn::new(&history);
    let mut tick = tokio::time::interval(TURN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = Recording {
        cursor,
        thinned: None,
    };
    let mut replica = Some(replica);
    loop {
        let job = tokio::select! {
            job = rx.recv() => match job {
                Some(job) => job,
                None => break,
            },
            _ = tick.tick(), if turn.shared() => match turn.tick(&history, &name).await {
                Some(owed) => Job::Version(owed, None),
                None => continue,
            },
        };
        if matches!(job, Job::Update(_)) {
            turn.saw_change();
        }
        let (capture, reply) = match feed(&mut replica, job).await {
            Next::Fed => continue,
            Next::Stop => break,
            Next::Record(capture, reply) => (capture, reply),
        };
        match turn.claim(&history, &name, reply.is_some()).await {
            Ok(true) => state.record(&ctx, &history, &name, capture, reply).await,
            Ok(false) | Err(_) if reply.is_none() => turn.owe(capture),
            Ok(false) => refuse(reply, "another node is recording this document; try again"),
            Err(e) => refuse(reply, &format!("cannot take the recorder lease: {e}")),
        }
    }
    turn.release(&history, &name).await;
    if !rx.is_closed() {
        error!(room = %name, "the version recorder failed; no more versions until the document reloads");
    }
}

/// Answers a request for a version this node could not record.
fn refuse(reply: Option<ApiReplyTx>, why: &str) {
    if let Some(reply) = reply {
        let _ = reply.send(Err(ApiOpError::Unavailable(why.to_owned())));
    }
}

/// What a recorder keeps between versions.
struct Recording {
    /// The newest version and its text.
    cursor: Cursor,
    /// When retention last ran.
    thinned: Option<Instant>,
}

impl Recording {
    /// Records `capture`, answers `reply`, and applies retention when it is due.
    async fn record(
        &mut self,
        ctx: &RoomContext,
        history: &History,
        name: &RoomName,
        capture: Capture,
        reply: Option<ApiReplyTx>,
    ) {
        let cursor = std::mem::take(&mut self.cursor);
        let (result, back) = record_version(ctx, history, name, cursor, capture).await;
        self.cursor = back;
        match (result, reply) {
            (Ok(meta), Some(reply)) => {
                let _ = reply.send(Ok(ApiReply::Version(meta)));
            }
            (Err(e), Some(reply)) => {
                let _ = reply.send(Err(e));
            }
            (Err(e), None) => error!(room = %name, error = %e, "recording a version failed"),
            (Ok(_), None) => {}
        }
        if self.thinned.is_none_or(|t| t.elapsed() >= THIN_EVERY) {
            self.thinned = Some(Instant::now());
            thin(ctx, history, name, &mut self.cursor).await;
        }
    }
}

/// Runs `f(value)` on a blocking thread; `None` if it panicked (yrs calls inside are
/// contained, so this is not expected).
async fn off_thread<T: Send + 'static, R: Send + 'static>(value: T, f: fn(T) -> R) -> Option<R> {
    tokio::task::spawn_blocking(move || f(value)).await.ok()
}

/// Records `capture` as `name`'s next version after `cursor` and makes it durable; returns
/// its metadata (the latest version's when nothing changed and no name was asked for) and the
/// cursor, moved to the new version. A version is listed only once this returns.
pub(crate) async fn record_version(
    ctx: &RoomContext,
    history: &History,
    name: &RoomName,
    cursor: Cursor,
    capture: Capture,
) -> (Result<VersionMeta, ApiOpError>, Cursor) {
    if let Err(e) = ctx.store.health() {
        return (Err(ApiOpError::StoreFailed(e.to_string())), cursor);
    }
    let (h, doc) = (history.clone(), name.clone());
    let joined = tokio::task::spawn_blocking(move || {
        let mut cursor = cursor;
        let recorded = h.record(&doc, &mut cursor, capture);
        (recorded, cursor)
    })
    .await;
    let (recorded, cursor) = match joined {
        Ok(done) => done,
        Err(e) => {
            let failed = ApiOpError::Unavailable(format!("recording failed: {e}"));
            // The history reloads its cursor from the store when handed an empty one.
            return (Err(failed), Cursor::default());
        }
    };
    let meta = match recorded {
        Ok(Some(meta)) => meta,
        Ok(None) => {
            let latest = cursor.last.clone();
            let none = || ApiOpError::Unavailable("no version to show".into());
            return (latest.ok_or_else(none), cursor);
        }
        Err(e) => return (Err(ApiOpError::Storage(e.to_string())), cursor),
    };
    // The feed's mark rides on the same flush as the version: `version.created` is owed the
    // moment the version can be listed.
    let mark = ctx.feed.owe_version(name.as_str(), meta.id, &meta.authors);
    if let Err(e) = ctx.log.durable(Durability::Strict).await {
        return (Err(ApiOpError::StoreFailed(e.to_string())), cursor);
    }
    history.confirm(name);
    let authors = meta.authors.clone();
    ctx.feed
        .version_created(mark, name.as_str(), meta.id, authors);
    (Ok(meta), cursor)
}

/// Applies retention to `name`'s history; the cursor is reread when anything went.
async fn thin(ctx: &RoomContext, history: &History, name: &RoomName, cursor: &mut Cursor) {
    let (h, doc, days) = (history.clone(), name.clone(), ctx.config.history_keep_days);
    let done = tokio::task::spawn_blocking(move || {
        let gone = h.thin_now(&doc, days)?;
        Ok::<_, crate::room::history::HistoryError>((gone, h.cursor(&doc)?))
    })
    .await;
    match done {
        Ok(Ok((0, _))) => {}
        Ok(Ok((_, fresh))) => {
            *cursor = fresh;
            if let Err(e) = ctx.log.durable(Durability::Strict).await {
                error!(room = %name, error = %e, "flushing thinned history failed");
            }
        }
        Ok(Err(e)) => error!(room = %name, error = %e, "thinning the history failed"),
        Err(e) => error!(room = %name, error = %e, "thinning the history failed"),
    }
}
