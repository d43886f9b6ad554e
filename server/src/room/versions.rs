//! When a room records a version of its document: `--version-idle-secs` after the last edit
//! of a burst, at least every `--version-every-secs` while editing goes on, on request (named,
//! even if nothing changed), before the room unloads or the server shuts down when the text
//! changed since the last version, and when a document loads that changed after its last
//! version (the server was killed before it could record one).
//!
//! On the room's task a version costs only its capture (the text, the authors, the time). A
//! recorder task per room takes the captures in order and does the rest on a blocking thread
//! (delta, compression, the write), then makes the version durable through the group commit
//! before anyone sees it: [`record_version`] is the one place a version comes into being.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, warn};
use weft_protocol::RoomName;
use yrs::{GetString, Transact};

use crate::config::Durability;
use crate::room::authors::Since;
use crate::room::history::{Capture, Cursor, History};
use crate::room::registry::RoomContext;
use crate::room::{ApiOpError, ApiReply, ApiReplyTx, Room};
use crate::store::history::VersionMeta;
use crate::store::now_ms;

/// Most characters of a version's name.
pub(crate) const MAX_NAME_CHARS: usize = 200;

/// How often a room applies retention to its document's history (and once when it starts).
const THIN_EVERY: Duration = Duration::from_secs(3600);

/// A capture waiting for the recorder, and who waits for its version.
struct Job {
    capture: Capture,
    reply: Option<ApiReplyTx>,
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
        let cursor = {
            let (history, name) = (history.clone(), name.clone());
            tokio::task::spawn_blocking(move || history.cursor(&name)).await
        };
        let cursor = match cursor {
            Ok(Ok(cursor)) => cursor,
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
        let task = tokio::spawn(recorder(self.ctx.clone(), history, name, cursor, rx));
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

    /// Captures the document as a version and hands it to the recorder.
    fn capture_version(&mut self, name: Option<String>, reply: Option<ApiReplyTx>) {
        let Some(tx) = &self.versions.tx else {
            return;
        };
        let text = capture_text(&self.doc);
        let capture = Capture {
            at_ms: now_ms(),
            name,
            authors: self.authors.take(Since::Version),
            seq: self.last_seq,
            text,
        };
        self.versions.covered = self.last_seq;
        self.versions.first_edit = None;
        if let Err(mpsc::error::SendError(job)) = tx.send(Job { capture, reply }) {
            warn!(room = %self.name, "version recorder gone; version not recorded");
            if let Some(reply) = job.reply {
                let _ = reply.send(Err(ApiOpError::Unavailable("recorder stopped".into())));
            }
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

    /// After the document was deleted: stop the recorder, then delete the history.
    pub(super) async fn delete_versions(&mut self) {
        self.versions.tx = None;
        if let Some(task) = self.versions.task.take() {
            let _ = task.await;
        }
        let (Some(history), name) = (self.ctx.history.clone(), self.name.clone()) else {
            return;
        };
        match tokio::task::spawn_blocking(move || history.delete(&name)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => error!(room = %self.name, error = %e, "deleting the history failed"),
            Err(e) => error!(room = %self.name, error = %e, "deleting the history failed"),
        }
    }
}

/// The text a version captures, read on the room's task (the only part of recording a room
/// waits for).
pub(crate) fn capture_text(doc: &yrs::Doc) -> String {
    let content = doc.get_or_insert_text("content");
    let txn = doc.transact();
    content.get_string(&txn)
}

/// A room's recorder: records each capture in order, answers whoever waits for it, and applies
/// retention now and then.
async fn recorder(
    ctx: Arc<RoomContext>,
    history: History,
    name: RoomName,
    mut cursor: Cursor,
    mut rx: mpsc::UnboundedReceiver<Job>,
) {
    let mut thinned: Option<Instant> = None;
    while let Some(Job { capture, reply }) = rx.recv().await {
        let (result, back) = record_version(&ctx, &history, &name, cursor, capture).await;
        cursor = back;
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
        if thinned.is_none_or(|t| t.elapsed() >= THIN_EVERY) {
            thinned = Some(Instant::now());
            thin(&ctx, &history, &name, &mut cursor).await;
        }
    }
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
    if let Err(e) = ctx.log.durable(Durability::Strict).await {
        return (Err(ApiOpError::StoreFailed(e.to_string())), cursor);
    }
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
