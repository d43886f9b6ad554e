//! One actor task per open document. It alone owns the yrs `Doc` and the awareness table:
//! it answers sync, applies updates, appends them to the durable log, waits for them to be
//! durable, and only then broadcasts one encoded frame, shared by every member.
//!
//! Commands are handled in batches: everything waiting in the mailbox is applied, one flush
//! makes the whole batch durable, then every reply and broadcast of the batch goes out in order.
//! Nothing leaves the room before it is on disk (strict durability).
//!
//! The HTTP API reaches the document only through this actor ([`ApiOp`]): reads see exactly
//! what members see, writes are broadcast to live members like theirs, and a delete closes
//! every member (close code [`weft_protocol::CloseCode::Deleted`]) and stops the room, so
//! nothing it held can write the document back.
//!
//! # Files
//! - `mod.rs`: the [`Room`] state, spawning, the actor's run loop (batches, ticks, idle unload,
//!   shutdown, stop after a delete) and the one mailbox drain they share.
//! - `handle.rs`: what the rest of the server holds: [`RoomHandle`], [`Command`], joins and
//!   the API's request and answer types.
//! - `members.rs`: joins, leaves, and each message a member sends (sync, awareness, control).
//! - `write.rs`: a member's write, and the path of every remote update: guard, apply, log.
//! - `inbox.rs`: updates that come from no member, and server-side edits.
//! - `ops.rs`: the HTTP API's requests.
//! - `diff.rs`: the edits that turn one text into another, planned in bounded time (`PUT text`
//!   plans them on a blocking thread, the room applies them).
//! - `batch.rs`: the end of a batch: durable, then replies, then fan-out.
//! - `failure.rs`: writes that could not be saved: members told `not_saved` and closed, the
//!   document rebuilt from the store or the room unloaded.
//! - `fanout.rs`: members as the room sees them, queued frames and their delivery.
//! - `load.rs`: rebuilding the document from the store (at start and after a failure).
//! - `compact.rs`: compaction and titles.
//! - `yrs_guards.rs`: every workaround for a yrs 0.28 behaviour, each with what pins it and
//!   when it can go.
//! - `hocuspocus.rs`: what members speaking the Hocuspocus framing get besides the y-websocket
//!   frames: a SyncStatus per write once durable, stateless relays, notices as stateless.
//! - `authors.rs`: who wrote since the last version or change-feed event.
//! - `feed.rs`: what the room tells the change feed (marks, the debounced report).
//! - `versions.rs`: when the room records a version; `history/`: how versions are stored,
//!   rebuilt, diffed and thinned.
//! - `presence.rs` (awareness), `registry.rs` (get-or-load by name, what rooms share).
//! - `awareness_tick.rs`: awareness changes sent at most once per tick, one frame per member.
//! - `replica.rs`: a cluster's other nodes' updates, applied and broadcast, never logged again;
//!   `peers.rs`: awareness exchanged with the same document's rooms on other nodes.
//!
//! # Seams
//! - **Durable log.** The room adds to a document's history only through
//!   [`crate::store::log::DurableLog`] (`ctx.log`): `append` gives each update its sequence
//!   number, `durable` a future that resolves once the batch is durable. Today that is the sled
//!   store plus the group commit; a replicated log (a cluster) or one that keeps versions
//!   replaces it without touching validation or fan-out. Loading, compaction (the snapshot that
//!   replaces the log), titles, quarantine and delete stay on [`crate::store::Store`].
//! - **Inbox.** Every update that does not come from a member enters through one door:
//!   [`RoomHandle::deliver`] with an [`Incoming`] (`Command::Inbox`), validated, applied, logged,
//!   and broadcast exactly like a member's write, answered once durable. The HTTP API's writes
//!   (apply an update, replace or append text) take it today; another node's updates or a
//!   restore would too.
//! - **Registration.** The registry spawns a room with a
//!   [`registry::Registration`] and the room gives it up when it stops, so the room never calls
//!   the registry.

pub(crate) mod authors;
mod awareness_tick;
mod batch;
pub(crate) mod calls;
pub(crate) mod clocks;
mod compact;
pub(crate) mod diff;
mod failure;
mod fanout;
mod feed;
mod handle;
pub(crate) mod history;
mod hocuspocus;
mod inbox;
mod known_clocks;
mod load;
mod members;
mod ops;
mod peers;
pub(crate) mod presence;
pub(crate) mod registry;
mod replica;
#[cfg(test)]
mod tests;
pub(crate) mod trash;
pub(crate) mod versions;
mod write;
mod yrs_guards;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};
use weft_protocol::RoomName;
use yrs::Doc;

use crate::config::Durability;
use crate::room::authors::Authors;
use crate::room::awareness_tick::{awareness_due, AwarenessTick};
use crate::room::batch::{saved, Unsaved};
use crate::room::fanout::{Member, Target};
use crate::room::feed::{window_closed, FeedState};
use crate::room::hocuspocus::Acks;
use crate::room::known_clocks::KnownClocks;
use crate::room::presence::Presence;
use crate::room::registry::{Registration, RoomContext, Stopped};
use crate::room::versions::Versions;

pub(crate) use compact::title_of;
pub(crate) use handle::{
    ApiOp, ApiOpError, ApiReply, ApiReplyTx, Command, ConnId, JoinError, Joiner, Live, RoomHandle,
};
pub(crate) use inbox::Incoming;
pub(crate) use load::{load_doc, Loaded};
pub(crate) use yrs_guards::new_doc;

/// Mailbox depth of a room. A full mailbox makes senders wait, which slows the connections
/// feeding this room and nothing else.
const MAILBOX: usize = 1024;

/// Most commands handled before one flush, so a flood cannot delay every reply indefinitely.
pub(super) const MAX_BATCH: usize = 256;

/// Most update bytes stored before one flush. Every member of every room waits for the flush
/// its edits ride on, and a flush's time grows with the bytes it carries (sled rewrites whole
/// pages of large values, several times their size): a room fed large updates as fast as its
/// sockets take them makes many small flushes instead of one that stalls everyone.
const MAX_BATCH_BYTES: u64 = 64 * 1024;

/// y-websocket clients reconnect after 30 s with no message at all, and browsers do not surface
/// pings, so a room that has sent nothing for this long sends an empty awareness update.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// How often the room checks keepalive, stale awareness and idleness.
const TICK: Duration = Duration::from_secs(1);

/// How often an edited document's title (its first line) is refreshed in its metadata, so
/// listings show a title long before the next compaction.
const TITLE_EVERY: Duration = Duration::from_secs(2);

/// `01 01 00`: an awareness update with no entries, a no-op every client accepts.
const EMPTY_AWARENESS: &[u8] = &[1, 1, 0];

/// The actor's state.
pub(crate) struct Room {
    name: RoomName,
    ctx: Arc<RoomContext>,
    /// Its entry in the registry, given up when the room stops.
    registration: Registration,
    doc: Doc,
    /// The document's clocks per client, for the write guards (see `known_clocks`).
    known: KnownClocks,
    presence: Presence,
    /// Awareness changes waiting for the room's next awareness frame.
    awareness: AwarenessTick,
    members: HashMap<ConnId, Member>,
    /// Sequence number of the last update appended to the store.
    last_seq: u64,
    /// Updates in the store's log since the last compaction.
    log_len: u64,
    /// Bytes of those updates.
    log_bytes: u64,
    /// Bytes the document occupies in the store (snapshot plus log).
    stored_bytes: u64,
    /// Relaxed durability: the flush that will make `version` durable, until it has.
    unsaved: Unsaved,
    /// Store writes of this batch not yet flushed.
    dirty: bool,
    /// Update bytes stored in this batch (see [`MAX_BATCH_BYTES`]).
    batch_bytes: u64,
    queued: Vec<(Target, Bytes)>,
    last_sent: Instant,
    empty_since: Option<Instant>,
    live: Arc<Live>,
    /// The title last written to the store, and whether edits since may have changed it.
    title: Option<String>,
    title_stale: bool,
    title_checked: Instant,
    /// Whether the document exists in the store (API requests on others get `NotFound`).
    exists: bool,
    /// API replies of this batch, sent once the batch is durable.
    replies: Vec<(ApiReplyTx, Result<ApiReply, ApiOpError>)>,
    /// Set by `Delete`: the room stops after this batch, writing nothing more.
    deleted: bool,
    /// Sync step 2 carrying the whole document, shared by every joiner that has nothing yet
    /// (an empty state vector: every fresh tab); dropped whenever the document may change.
    full_state: Option<Bytes>,
    /// Who wrote since each reader of the changes (history, feed) last asked.
    authors: Authors,
    /// What the changes since the last change-feed event owe it, and when it is told.
    feed: FeedState,
    /// When to record the next version, and the task recording them.
    versions: Versions,
    /// Set when the document in memory could not be rebuilt from the store (it held writes
    /// that were never saved): the room refuses everything and stops after this batch.
    failed: Option<String>,
    /// SyncStatus acknowledgements owed to Hocuspocus members.
    acks: Acks,
    /// Other nodes' updates to this document, in a cluster.
    follow: Option<mpsc::Receiver<crate::store::log::Followed>>,
    /// The same document's rooms on other nodes, in a cluster.
    peers: peers::Peers,
}

impl Room {
    /// The handle of the room `registration` names, usable at once, and the actor task to
    /// spawn: it waits until the `previous` incarnation has stopped, loads the document from
    /// the store and runs.
    pub(crate) fn start(
        ctx: Arc<RoomContext>,
        registration: Registration,
        previous: Option<Stopped>,
    ) -> (RoomHandle, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(MAILBOX);
        let live = Arc::new(Live::default());
        let stopped = registration.stopped();
        let handle = RoomHandle::new(tx, registration.generation(), stopped, live.clone());
        let task = async move {
            if let Some(previous) = previous {
                previous.wait().await;
            }
            if trash::in_trash(&ctx, registration.name()).await {
                return trash::serve_trashed(ctx, rx, registration).await;
            }
            let loaded = {
                let (ctx, name) = (ctx.clone(), registration.name().clone());
                tokio::task::spawn_blocking(move || load_doc(&ctx, &name)).await
            };
            match loaded {
                Ok(Ok(loaded)) => {
                    let room = Room::new(ctx, registration, loaded, live);
                    let stats = room.ctx.stats.clone();
                    stats.room_loaded();
                    room.run(rx).await;
                    stats.room_closed();
                }
                Ok(Err(e)) => {
                    let store_failed = ctx.store.health().is_err();
                    let api = failure::failed_or_unavailable(store_failed, &e);
                    refuse_all(rx, registration, e, api).await;
                }
                Err(e) => {
                    let api = ApiOpError::Unavailable(e.to_string());
                    refuse_all(rx, registration, e.to_string(), api).await;
                }
            }
        };
        (handle, task)
    }

    fn new(
        ctx: Arc<RoomContext>,
        registration: Registration,
        loaded: Loaded,
        live: Arc<Live>,
    ) -> Self {
        Room {
            presence: Presence::new(ctx.clocks.clone()),
            feed: FeedState::default(),
            name: registration.name().clone(),
            ctx,
            registration,
            doc: loaded.doc,
            known: loaded.clocks,
            awareness: AwarenessTick::default(),
            members: HashMap::new(),
            last_seq: loaded.last_seq,
            log_len: loaded.log_len,
            log_bytes: loaded.log_bytes,
            stored_bytes: loaded.stored_bytes,
            unsaved: None,
            dirty: false,
            batch_bytes: 0,
            queued: Vec::new(),
            last_sent: Instant::now(),
            empty_since: Some(Instant::now()),
            live,
            title: None,
            title_stale: false,
            title_checked: Instant::now(),
            exists: loaded.exists,
            replies: Vec::new(),
            deleted: false,
            full_state: None,
            failed: None,
            acks: Acks::default(),
            follow: None,
            peers: peers::Peers::default(),
            authors: Authors::default(),
            versions: Versions::default(),
        }
    }

    /// Loads `name` into a room that is driven by the caller (a fuzz harness) instead of its
    /// own task: it feeds commands to [`Room::handle`] and awaits [`Room::finish_batch`] as
    /// the actor loop does.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn load(name: RoomName, ctx: Arc<RoomContext>) -> Result<Self, String> {
        let loaded = load_doc(&ctx, &name)?;
        let registration = Registration::detached(name);
        Ok(Room::new(ctx, registration, loaded, Arc::default()))
    }

    /// The document, for harnesses checking invariants between batches.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn doc(&self) -> &Doc {
        &self.doc
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        info!(room = %self.name, "room loaded");
        self.start_versions().await;
        self.start_following();
        self.start_peers();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.ctx.shutdown.clone();
        loop {
            tokio::select! {
                // Relaxed durability: say `saved` once the flush covering the edits is done.
                done = saved(&mut self.unsaved), if self.unsaved.is_some() => {
                    self.on_saved(done).await;
                }
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.batch(cmd, &mut rx).await;
                    if self.deleted {
                        self.stop_deleted(rx).await;
                        return;
                    }
                }
                _ = tick.tick() => {
                    if self.on_tick(&mut rx).await {
                        return;
                    }
                }
                _ = awareness_due(self.awareness.due()), if self.awareness.due().is_some() => {
                    self.send_awareness_tick();
                    self.finish_batch().await;
                }
                (node, msg) = peers::next_peer_message(&mut self.peers) => {
                    self.on_peer(node, msg);
                    self.finish_batch().await;
                    if self.deleted {
                        self.stop_deleted(rx).await;
                        return;
                    }
                }
                followed = replica::next_followed(&mut self.follow) => {
                    self.on_followed(followed);
                    self.finish_batch().await;
                }
                _ = window_closed(self.feed.due), if self.feed.due.is_some() => {
                    self.report_feed();
                }
                _ = shutdown.triggered() => break,
            }
            if let Some(reason) = self.failed.take() {
                self.stop_failed(rx, reason).await;
                return;
            }
        }
        self.stop_for_shutdown(rx).await;
    }

    /// Handles `first` and whatever else the mailbox holds (up to the batch limits), then ends
    /// the batch.
    async fn batch(&mut self, first: Command, rx: &mut mpsc::Receiver<Command>) {
        self.handle(first);
        let mut n = 1;
        while n < MAX_BATCH
            && self.batch_bytes < MAX_BATCH_BYTES
            && !self.deleted
            && self.failed.is_none()
        {
            match rx.try_recv() {
                Ok(cmd) => self.handle(cmd),
                Err(_) => break,
            }
            n += 1;
        }
        self.finish_batch().await;
    }

    /// Shutdown: apply what is already in the mailbox, then compact, flush and leave the
    /// registry.
    async fn stop_for_shutdown(mut self, mut rx: mpsc::Receiver<Command>) {
        drain(&mut rx, |cmd| self.handle(cmd)).await;
        self.wind_up("final flush failed").await;
        self.registration.release();
        info!(room = %self.name, "room closed for shutdown");
    }

    /// After `Delete` (to the trash): leave the registry, then answer whatever is still in the
    /// mailbox as if the document did not exist. Nothing is compacted.
    async fn stop_deleted(mut self, mut rx: mpsc::Receiver<Command>) {
        self.registration.release();
        // The registry no longer has this room: a joiner retries on a fresh one.
        drain(&mut rx, |cmd| {
            refuse(cmd, &JoinError::Gone, &ApiOpError::NotFound);
        })
        .await;
        // The history stays with the document in the trash; the recorder finishes first, so
        // the next incarnation (a purge) never races it.
        self.wind_up_versions().await;
        info!(room = %self.name, "room closed: document moved to the trash");
    }

    /// Periodic work; returns true when the room unloaded itself.
    async fn on_tick(&mut self, rx: &mut mpsc::Receiver<Command>) -> bool {
        let now = Instant::now();
        let removed = self.presence.sweep(now);
        if !removed.is_empty() {
            debug!(room = %self.name, count = removed.len(), "swept stale awareness states");
            self.share_awareness(&removed);
            self.queue_awareness(removed);
        }
        self.peers_tick(now);
        if self.title_stale && now.duration_since(self.title_checked) >= TITLE_EVERY {
            self.refresh_title(now);
        }
        if !self.members.is_empty() && now.duration_since(self.last_sent) >= KEEPALIVE {
            self.queued
                .push((Target::All, Bytes::from_static(EMPTY_AWARENESS)));
        }
        self.version_tick(now);
        self.finish_batch().await;
        match self.empty_since {
            Some(since) if now.duration_since(since) >= self.ctx.config.idle_unload() => {
                self.try_unload(rx).await
            }
            _ => false,
        }
    }

    /// Unloads the room if nobody joined meanwhile: leave the registry, compact, flush.
    async fn try_unload(&mut self, rx: &mut mpsc::Receiver<Command>) -> bool {
        if !self.registration.release_if(|| rx.is_empty()) {
            return false;
        }
        // From here no new handle reaches us; a sender that cloned ours earlier gets `Gone`.
        drain(rx, |cmd| match cmd {
            Command::Join(_, reply) => {
                let _ = reply.send(Err(JoinError::Gone));
            }
            other => self.handle(other),
        })
        .await;
        self.wind_up("flush before unload failed").await;
        info!(room = %self.name, "room unloaded after being idle");
        true
    }

    /// The last work before the room stops with its document kept: end the batch, compact,
    /// and make sure everything is durable.
    /// Nothing is compacted or flushed once the store has failed: both would fail at once, and
    /// a wedged store is best left alone.
    async fn wind_up(&mut self, failed: &str) {
        self.finish_batch().await;
        self.report_feed();
        if self.failed.is_some() {
            return;
        }
        if let Some(reason) = self.store_failure() {
            warn!(room = %self.name, %reason, "store failed; not compacting or flushing");
            return;
        }
        self.wind_up_versions().await;
        self.compact().await;
        if let Err(e) = self.ctx.log.durable(Durability::Strict).await {
            error!(room = %self.name, error = %e, "{failed}");
        }
    }

    /// Handles one command; its replies and broadcasts wait for [`Room::finish_batch`].
    pub(crate) fn handle(&mut self, cmd: Command) {
        if let Some(reason) = &self.failed {
            let join = JoinError::LoadFailed(reason.clone());
            refuse(cmd, &join, &self.refusal_for(reason));
            return;
        }
        match cmd {
            Command::Join(joiner, reply) => {
                let result = self.join(joiner);
                let _ = reply.send(result);
            }
            Command::Messages(conn, msgs) => self.messages(conn, msgs),
            Command::Leave(conn) => self.leave(conn),
            Command::Stateless(conn, payload) => self.stateless(conn, &payload),
            Command::Api(ApiOp::RecordVersion(name), reply) => self.request_version(name, reply),
            Command::Api(op, reply) => self.request(reply, |room| room.api(op)),
            Command::Inbox(incoming, author, reply) => {
                self.request(reply, |room| room.receive(incoming, &author))
            }
        }
    }

    /// Runs a request that expects an answer: a write's answer waits until the batch is
    /// durable, and so does a read's in strict durability (it may show writes of this batch,
    /// and whatever a caller has seen must survive a crash); anything else is answered at once.
    /// A deleted document answers `NotFound`.
    fn request(
        &mut self,
        reply: ApiReplyTx,
        run: impl FnOnce(&mut Self) -> Result<ApiReply, ApiOpError>,
    ) {
        if self.deleted {
            let _ = reply.send(Err(ApiOpError::NotFound));
            return;
        }
        let result = run(self);
        let strict = self.ctx.config.durability == Durability::Strict;
        let durable_first = match &result {
            Ok(ApiReply::Written { .. } | ApiReply::Deleted(_) | ApiReply::Titled) => true,
            Ok(ApiReply::Text(_) | ApiReply::Update(_)) => strict,
            _ => false,
        };
        if durable_first {
            self.replies.push((reply, result));
        } else {
            let _ = reply.send(result);
        }
    }
}

/// Closes the mailbox, so no sender gets a command in any more, and hands `each` every
/// command still in it. Every way a room stops ends its mailbox this way.
async fn drain(rx: &mut mpsc::Receiver<Command>, mut each: impl FnMut(Command)) {
    rx.close();
    while let Some(cmd) = rx.recv().await {
        each(cmd);
    }
}

/// Answers a command the room will not run: a join with `join`, a request with `api`.
fn refuse(cmd: Command, join: &JoinError, api: &ApiOpError) {
    match cmd {
        Command::Join(_, reply) => {
            let _ = reply.send(Err(join.clone()));
        }
        Command::Api(_, reply) | Command::Inbox(_, _, reply) => {
            let _ = reply.send(Err(api.clone()));
        }
        Command::Messages(..) | Command::Leave(_) | Command::Stateless(..) => {}
    }
}

/// A room that failed to load leaves the registry, answers every join with the reason, then
/// stops. Requests get `api`.
async fn refuse_all(
    mut rx: mpsc::Receiver<Command>,
    registration: Registration,
    reason: String,
    api: ApiOpError,
) {
    error!(room = %registration.name(), error = %reason, "document failed to load");
    registration.release();
    let join = JoinError::LoadFailed(reason);
    drain(&mut rx, |cmd| refuse(cmd, &join, &api)).await;
}
