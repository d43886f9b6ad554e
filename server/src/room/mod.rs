//! One actor task per open document. It alone owns the yrs `Doc` and the awareness table:
//! it answers sync, applies updates, appends them to the store, waits for the group commit,
//! and only then broadcasts one encoded frame, shared by every member.
//!
//! Commands are handled in batches: everything waiting in the mailbox is applied, one flush
//! makes the whole batch durable, then every reply and broadcast of the batch goes out in order.
//! Nothing leaves the room before it is on disk (strict durability).
//!
//! The HTTP API reaches the document only through this actor ([`ApiOp`]): reads see exactly
//! what members see, writes are broadcast to live members like theirs, and a delete closes
//! every member (close code [`CloseCode::Deleted`]) and stops the room, so nothing it held can
//! write the document back.

pub(crate) mod calls;
pub(crate) mod presence;
pub(crate) mod registry;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};
use weft_protocol::{
    encode_sync, AwarenessEntry, AwarenessUpdate, CloseCode, Control, Message, NoticeLevel, Role,
    RoomName, UserInfo, SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE,
};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Text, Transact, Update, ID};

use crate::config::Durability;
use crate::outbox::Outbox;
use crate::room::presence::Presence;
use crate::room::registry::RoomContext;
use crate::store::inflight::{self, Applying};
use crate::store::now_ms;

/// Identifies a connection inside the server (cheaper to hash than its UUID).
pub(crate) type ConnId = u64;

/// Mailbox depth of a room. A full mailbox makes senders wait, which slows the connections
/// feeding this room and nothing else.
const MAILBOX: usize = 1024;

/// Most commands handled before one flush, so a flood cannot delay every reply indefinitely.
const MAX_BATCH: usize = 256;

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

/// Why a join was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum JoinError {
    /// The room has its configured maximum of connections.
    #[error("room is full ({0} connections)")]
    Full(usize),
    /// The room is unloading or failed; ask the registry again.
    #[error("room is closing")]
    Gone,
    /// The stored document could not be loaded.
    #[error("document could not be loaded: {0}")]
    LoadFailed(String),
}

/// A connection joining a room.
#[derive(Clone)]
pub(crate) struct Joiner {
    /// Internal id.
    pub(crate) id: ConnId,
    /// Public id, sent in control messages.
    pub(crate) uuid: String,
    /// Where frames for this connection go.
    pub(crate) outbox: Outbox,
    /// What it may do.
    pub(crate) role: Role,
    /// The user its token names, if any: notices can address one user's connections.
    pub(crate) subject: Option<String>,
}

/// What the HTTP API asks of a document.
#[derive(Debug)]
pub(crate) enum ApiOp {
    /// Create the document, seeded with `text`; refused if it already exists, so seeding never
    /// duplicates content.
    Create {
        /// Initial content.
        text: Option<String>,
        /// Title for listings (else the first line).
        title: Option<String>,
    },
    /// The text of `content`.
    GetText,
    /// The state as one Yjs v1 update, relative to a v1 state vector when given.
    GetUpdate(Option<Vec<u8>>),
    /// Replace the text with a minimal diff, so live cursors outside the change stay put.
    SetText(String),
    /// Insert text at the end.
    Append(String),
    /// Apply a Yjs v1 update.
    ApplyUpdate(Vec<u8>),
    /// Show a notice to every opted-in member, or only to those whose token names `to`.
    Notice {
        /// How to show it.
        level: NoticeLevel,
        /// The text.
        text: String,
        /// The user to address, or everyone.
        to: Option<String>,
    },
    /// Close every member, delete everything stored, and stop the room.
    Delete,
}

/// A successful [`ApiOp`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ApiReply {
    /// The document's text.
    Text(String),
    /// A Yjs v1 update.
    Update(Vec<u8>),
    /// The change is durable; the document's update count is now this.
    Written {
        /// Sequence number of the document's last stored update.
        version: u64,
        /// Whether anything changed (a replace with the same text changes nothing).
        changed: bool,
    },
    /// The notice went to this many connections.
    Delivered(u32),
    /// The document is gone; this many connections were closed.
    Deleted(u32),
}

/// Why an [`ApiOp`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ApiOpError {
    /// The document does not exist (or was deleted).
    #[error("no such document")]
    NotFound,
    /// `Create` on a document that exists.
    #[error("the document already exists")]
    Exists,
    /// The write would take the document past `--max-doc-bytes`.
    #[error("the document would exceed its size limit of {0} bytes")]
    TooLarge(u64),
    /// The update or state vector does not decode or apply.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Storage failed; nothing was applied.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The room could not be reached or loaded.
    #[error("document unavailable: {0}")]
    Unavailable(String),
}

/// Why a write into the document failed.
#[derive(Debug)]
enum WriteError {
    TooLarge(u64),
    Invalid(String),
    /// yrs panicked; the document was rebuilt from the store.
    Poisoned,
    /// The store refused the append; the document was rebuilt from the store.
    Storage(String),
    /// The same bytes crashed the process before (see `inflight`); this is their hash, in hex.
    Refused(String),
}

impl From<WriteError> for ApiOpError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::TooLarge(max) => ApiOpError::TooLarge(max),
            WriteError::Invalid(e) => ApiOpError::Invalid(e),
            WriteError::Poisoned => {
                ApiOpError::Invalid("the update crashed the document engine".into())
            }
            WriteError::Storage(e) => ApiOpError::Storage(e),
            WriteError::Refused(hash) => ApiOpError::Invalid(format!(
                "this update crashed the server before and is refused (sha256 {hash})"
            )),
        }
    }
}

/// Where an API request's answer goes.
type ApiReplyTx = oneshot::Sender<Result<ApiReply, ApiOpError>>;

/// What connections and HTTP handlers ask of a room.
pub(crate) enum Command {
    /// Add a member; the reply says whether it was admitted.
    Join(Joiner, oneshot::Sender<Result<(), JoinError>>),
    /// Messages decoded from one frame of a member.
    Messages(ConnId, Vec<Message>),
    /// A member's socket is gone.
    Leave(ConnId),
    /// A request of the HTTP API, answered once its effect is durable.
    Api(ApiOp, ApiReplyTx),
}

/// Cheap handle to a running room.
#[derive(Clone)]
pub(crate) struct RoomHandle {
    tx: mpsc::Sender<Command>,
    /// Distinguishes incarnations of the same room name in the registry.
    pub(crate) generation: u64,
    /// What listings and the dashboard read without asking the actor.
    live: Arc<Live>,
}

/// A room's vital signs, kept by the room and read by listings and the dashboard without a
/// round trip through the actor's mailbox.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Members right now.
    users: AtomicU32,
    /// Bytes the document takes in the store (snapshot plus log).
    stored_bytes: AtomicU64,
    /// When a member last sent anything, milliseconds since the Unix epoch (0: never).
    active_ms: AtomicU64,
}

impl Live {
    /// Members right now.
    pub(crate) fn users(&self) -> u32 {
        self.users.load(Ordering::Relaxed)
    }

    /// Bytes the document takes in the store.
    pub(crate) fn stored_bytes(&self) -> u64 {
        self.stored_bytes.load(Ordering::Relaxed)
    }

    /// Last message from a member, Unix milliseconds (0 when none came since the load).
    pub(crate) fn active_ms(&self) -> u64 {
        self.active_ms.load(Ordering::Relaxed)
    }
}

impl RoomHandle {
    /// Asks the room to admit `joiner`.
    pub(crate) async fn join(&self, joiner: Joiner) -> Result<(), JoinError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Join(joiner, tx))
            .await
            .map_err(|_| JoinError::Gone)?;
        rx.await.unwrap_or(Err(JoinError::Gone))
    }

    /// Runs an API request. `Err(Some(op))` hands the request back when the room stopped before
    /// receiving it, so the caller may retry on a fresh incarnation.
    pub(crate) async fn api(&self, op: ApiOp) -> Result<Result<ApiReply, ApiOpError>, ApiOp> {
        let (tx, rx) = oneshot::channel();
        match self.tx.send(Command::Api(op, tx)).await {
            Ok(()) => Ok(rx
                .await
                .unwrap_or_else(|_| Err(ApiOpError::Unavailable("the room stopped".into())))),
            Err(mpsc::error::SendError(Command::Api(op, _))) => Err(op),
            Err(_) => Ok(Err(ApiOpError::Unavailable("the room stopped".into()))),
        }
    }

    /// Hands a member's messages to the room; false if the room is gone.
    pub(crate) async fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).await.is_ok()
    }

    /// Whether the room task has stopped.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Connections in the room right now.
    pub(crate) fn users(&self) -> u32 {
        self.live.users()
    }

    /// The room's vital signs.
    pub(crate) fn live(&self) -> &Live {
        &self.live
    }
}

struct Member {
    uuid: String,
    outbox: Outbox,
    role: Role,
    /// Opted in to control messages with `hello`.
    control: bool,
    user: Option<UserInfo>,
    /// The user its token names.
    subject: Option<String>,
    told_read_only: bool,
    told_full: bool,
}

/// Where a queued frame goes once the batch is durable.
enum Target {
    All,
    One(ConnId),
    /// Every member that opted in to control messages, except one.
    ControlExcept(Option<ConnId>),
    /// Every member that opted in to control messages and whose token names this user.
    ControlSubject(String),
}

/// The actor's state.
pub(crate) struct Room {
    name: RoomName,
    ctx: Arc<RoomContext>,
    generation: u64,
    doc: Doc,
    presence: Presence,
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
    unsaved: Option<(u64, u64)>,
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
}

impl Room {
    /// Loads `name` from the store and spawns its actor; the handle is usable at once.
    pub(crate) fn spawn(name: RoomName, ctx: Arc<RoomContext>, generation: u64) -> RoomHandle {
        let (tx, rx) = mpsc::channel(MAILBOX);
        let live = Arc::new(Live::default());
        let shutdown = ctx.shutdown.clone();
        let room_live = live.clone();
        shutdown.spawn(async move {
            let loaded = {
                let (ctx, name) = (ctx.clone(), name.clone());
                tokio::task::spawn_blocking(move || load_doc(&ctx, &name)).await
            };
            match loaded {
                Ok(Ok(loaded)) => {
                    let room = Room::new(name, ctx, generation, loaded, room_live);
                    let stats = room.ctx.stats.clone();
                    stats.room_loaded();
                    room.run(rx).await;
                    stats.room_closed();
                }
                Ok(Err(e)) => refuse_all(rx, &ctx, &name, generation, e).await,
                Err(e) => refuse_all(rx, &ctx, &name, generation, e.to_string()).await,
            }
        });
        RoomHandle {
            tx,
            generation,
            live,
        }
    }

    fn new(
        name: RoomName,
        ctx: Arc<RoomContext>,
        generation: u64,
        loaded: Loaded,
        live: Arc<Live>,
    ) -> Self {
        Room {
            name,
            ctx,
            generation,
            doc: loaded.doc,
            presence: Presence::default(),
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
        }
    }

    /// Loads `name` into a room that is driven by the caller (a fuzz harness) instead of its
    /// own task: it feeds commands to [`Room::handle`] and awaits [`Room::finish_batch`] as
    /// the actor loop does.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn load(name: RoomName, ctx: Arc<RoomContext>) -> Result<Self, String> {
        let loaded = load_doc(&ctx, &name)?;
        Ok(Room::new(name, ctx, 0, loaded, Arc::default()))
    }

    /// The document, for harnesses checking invariants between batches.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn doc(&self) -> &Doc {
        &self.doc
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        info!(room = %self.name, "room loaded");
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.ctx.shutdown.clone();
        let mut flushed = self.ctx.commit.flushed();
        loop {
            tokio::select! {
                // Relaxed durability: say `saved` once the committer's flush covers the edits.
                Ok(()) = flushed.changed(), if self.unsaved.is_some() => {
                    let done = *flushed.borrow_and_update();
                    if let Some((flush, version)) = self.unsaved {
                        if done >= flush {
                            self.unsaved = None;
                            self.queue_control(Target::ControlExcept(None), &Control::Saved { version });
                            self.finish_batch().await;
                        }
                    }
                }
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.handle(cmd);
                    let mut n = 1;
                    while n < MAX_BATCH && self.batch_bytes < MAX_BATCH_BYTES && !self.deleted {
                        match rx.try_recv() {
                            Ok(cmd) => self.handle(cmd),
                            Err(_) => break,
                        }
                        n += 1;
                    }
                    self.finish_batch().await;
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
                _ = shutdown.triggered() => break,
            }
        }
        // Shutdown: apply what is already in the mailbox, then compact and flush.
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            self.handle(cmd);
        }
        self.finish_batch().await;
        self.compact().await;
        if let Err(e) = self.ctx.commit.commit().await {
            error!(room = %self.name, error = %e, "final flush failed");
        }
        self.ctx.rooms_unregister(&self.name, self.generation);
        info!(room = %self.name, "room closed for shutdown");
    }

    /// After `Delete`: leave the registry, then answer whatever is still in the mailbox as if
    /// the document never existed. Nothing is compacted or flushed: that would write it back.
    async fn stop_deleted(self, mut rx: mpsc::Receiver<Command>) {
        self.ctx.rooms_unregister(&self.name, self.generation);
        rx.close();
        while let Some(cmd) = rx.recv().await {
            match cmd {
                // The registry no longer has this room: the joiner retries on a fresh one.
                Command::Join(_, reply) => {
                    let _ = reply.send(Err(JoinError::Gone));
                }
                Command::Api(_, reply) => {
                    let _ = reply.send(Err(ApiOpError::NotFound));
                }
                Command::Messages(..) | Command::Leave(_) => {}
            }
        }
        info!(room = %self.name, "room closed: document deleted");
    }

    /// Periodic work; returns true when the room unloaded itself.
    async fn on_tick(&mut self, rx: &mut mpsc::Receiver<Command>) -> bool {
        let now = Instant::now();
        let removed = self.presence.sweep(now);
        if !removed.is_empty() {
            debug!(room = %self.name, count = removed.len(), "swept stale awareness states");
            self.queue_awareness(removed);
        }
        if self.title_stale && now.duration_since(self.title_checked) >= TITLE_EVERY {
            self.refresh_title(now);
        }
        if !self.members.is_empty() && now.duration_since(self.last_sent) >= KEEPALIVE {
            self.queued
                .push((Target::All, Bytes::from_static(EMPTY_AWARENESS)));
        }
        self.finish_batch().await;
        match self.empty_since {
            Some(since) if now.duration_since(since) >= self.ctx.config.idle_unload() => {
                self.try_unload(rx).await
            }
            _ => false,
        }
    }

    /// Unloads the room if nobody joined meanwhile: compact, flush, leave the registry.
    async fn try_unload(&mut self, rx: &mut mpsc::Receiver<Command>) -> bool {
        if !self
            .ctx
            .rooms_unregister_if(&self.name, self.generation, || rx.is_empty())
        {
            return false;
        }
        // From here no new handle reaches us; a sender that cloned ours earlier gets `Gone`.
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Command::Join(_, reply) => {
                    let _ = reply.send(Err(JoinError::Gone));
                }
                other => self.handle(other),
            }
        }
        self.finish_batch().await;
        self.compact().await;
        if let Err(e) = self.ctx.commit.commit().await {
            error!(room = %self.name, error = %e, "flush before unload failed");
        }
        info!(room = %self.name, "room unloaded after being idle");
        true
    }

    /// Handles one command; its replies and broadcasts wait for [`Room::finish_batch`].
    pub(crate) fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Join(joiner, reply) => {
                let result = self.join(joiner);
                let _ = reply.send(result);
            }
            Command::Messages(conn, msgs) => {
                self.live.active_ms.store(now_ms(), Ordering::Relaxed);
                for msg in msgs {
                    if !self.members.contains_key(&conn) {
                        break;
                    }
                    self.message(conn, msg);
                }
            }
            Command::Leave(conn) => self.leave(conn),
            Command::Api(op, reply) => {
                if self.deleted {
                    let _ = reply.send(Err(ApiOpError::NotFound));
                    return;
                }
                let result = self.api(op);
                let durable_first =
                    matches!(result, Ok(ApiReply::Written { .. } | ApiReply::Deleted(_)));
                if durable_first {
                    self.replies.push((reply, result));
                } else {
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// Runs one API request; writes are queued for broadcast like a member's.
    fn api(&mut self, op: ApiOp) -> Result<ApiReply, ApiOpError> {
        if !self.exists && !matches!(op, ApiOp::Create { .. }) {
            return Err(ApiOpError::NotFound);
        }
        match op {
            ApiOp::Create { text, title } => self.create(text, title),
            ApiOp::GetText => {
                let text = catch_unwind(AssertUnwindSafe(|| self.text()))
                    .map_err(|_| ApiOpError::Unavailable("reading the text failed".into()))?;
                Ok(ApiReply::Text(text))
            }
            ApiOp::GetUpdate(sv) => {
                let encoded = catch_unwind(AssertUnwindSafe(|| {
                    let sv = match &sv {
                        Some(sv) => decode_state_vector(sv)
                            .map_err(|e| ApiOpError::Invalid(format!("state vector: {e}")))?,
                        None => StateVector::default(),
                    };
                    Ok(self.doc.transact().encode_state_as_update_v1(&sv))
                }));
                match encoded {
                    Ok(result) => result.map(ApiReply::Update),
                    Err(_) => {
                        error!(room = %self.name, "yrs panicked encoding the state for the API");
                        self.reload();
                        Err(ApiOpError::Unavailable(
                            "encoding the document failed".into(),
                        ))
                    }
                }
            }
            ApiOp::SetText(new) => self.local_edit(|text, txn| {
                let old = text.get_string(txn);
                replace_text(text, txn, &old, &new);
            }),
            ApiOp::Append(tail) => self.local_edit(|text, txn| {
                let end = text.len(txn);
                text.insert(txn, end, &tail);
            }),
            ApiOp::ApplyUpdate(update) => {
                let changed = self.integrate(update)?;
                Ok(ApiReply::Written {
                    version: self.last_seq,
                    changed,
                })
            }
            ApiOp::Notice { level, text, to } => {
                let notice = Control::Notice { level, text };
                let delivered = self
                    .members
                    .values()
                    .filter(|m| m.control && (to.is_none() || m.subject == to))
                    .count() as u32;
                let target = match to {
                    Some(user) => Target::ControlSubject(user),
                    None => Target::ControlExcept(None),
                };
                self.queue_control(target, &notice);
                Ok(ApiReply::Delivered(delivered))
            }
            ApiOp::Delete => self.delete(),
        }
    }

    /// `Create`: seeds the text in the room that owns the document, so it happens once.
    fn create(
        &mut self,
        text: Option<String>,
        title: Option<String>,
    ) -> Result<ApiReply, ApiOpError> {
        if self.exists {
            return Err(ApiOpError::Exists);
        }
        let text = text.unwrap_or_default();
        let written = match title {
            // A title given explicitly stays, whatever the first line becomes.
            Some(title) => self.ctx.store.pin_title(&self.name, &title).map(|()| title),
            None => {
                let title = title_of(&text).unwrap_or_default();
                self.ctx.store.set_title(&self.name, &title).map(|()| title)
            }
        };
        let title = written.map_err(|e| ApiOpError::Storage(e.to_string()))?;
        self.title = Some(title);
        self.exists = true;
        self.dirty = true;
        if text.is_empty() {
            return Ok(ApiReply::Written {
                version: self.last_seq,
                changed: true,
            });
        }
        let written = self.local_edit(|t, txn| t.insert(txn, 0, &text));
        // The title given (or the first line) was just written; edits refresh it later.
        self.title_stale = false;
        written
    }

    /// `Delete`: removes everything stored and closes every member; the room then stops.
    fn delete(&mut self) -> Result<ApiReply, ApiOpError> {
        self.ctx
            .store
            .delete(&self.name)
            .map_err(|e| ApiOpError::Storage(e.to_string()))?;
        let closed = self.members.len() as u32;
        for m in self.members.values() {
            m.outbox.close(CloseCode::Deleted, "document deleted");
        }
        self.members.clear();
        self.live.users.store(0, Ordering::Relaxed);
        self.queued.clear();
        self.exists = false;
        self.deleted = true;
        // The delete batch must reach disk before the reply; nothing may compact afterwards.
        self.dirty = true;
        self.log_len = 0;
        self.log_bytes = 0;
        self.title_stale = false;
        info!(room = %self.name, closed, "document deleted");
        Ok(ApiReply::Deleted(closed))
    }

    /// The text of `content`.
    fn text(&self) -> String {
        text_of(&self.doc)
    }

    /// Edits `content` on the server (UTF-16 offsets, as Yjs counts), then stores and
    /// broadcasts the resulting update like a member's.
    fn local_edit(
        &mut self,
        edit: impl FnOnce(&yrs::TextRef, &mut yrs::TransactionMut<'_>),
    ) -> Result<ApiReply, ApiOpError> {
        self.full_state = None;
        let encoded = catch_unwind(AssertUnwindSafe(|| {
            let text = self.doc.get_or_insert_text("content");
            let mut txn = self.doc.transact_mut();
            edit(&text, &mut txn);
            let update = txn.encode_update_v1();
            // yrs retries pending structs and deletions only when it applies a remote update,
            // never after a local edit. Every replay of the store applies this edit as a remote
            // update, so retry here too, or this document would differ from what the store and
            // its own encoded state give a later joiner or a restart.
            let store = txn.store();
            if store.pending_update().is_some() || store.pending_ds().is_some() {
                let _ = txn.apply_update(Update::new());
            }
            update
        }));
        let Ok(update) = encoded else {
            error!(room = %self.name, "yrs panicked during a server-side edit");
            self.reload();
            return Err(ApiOpError::Unavailable(
                "editing the document failed".into(),
            ));
        };
        let max = self.ctx.config.max_doc_bytes;
        if self.stored_bytes.saturating_add(update.len() as u64) > max {
            // Already applied in memory: the store is the truth, so rebuild from it.
            self.reload();
            return Err(ApiOpError::TooLarge(max));
        }
        let changed = match Update::decode_v1(&update) {
            Ok(u) => !u.is_empty(),
            Err(_) => true,
        };
        if changed {
            self.store_and_broadcast(update).map_err(ApiOpError::from)?;
        }
        Ok(ApiReply::Written {
            version: self.last_seq,
            changed,
        })
    }

    fn join(&mut self, j: Joiner) -> Result<(), JoinError> {
        let max = self.ctx.config.max_room_connections;
        if self.members.len() >= max {
            return Err(JoinError::Full(max));
        }
        let sv = self.doc.transact().state_vector().encode_v1();
        self.queued
            .push((Target::One(j.id), Bytes::from(encode_sync(SYNC_STEP1, &sv))));
        let snapshot = self.presence.snapshot();
        if !snapshot.entries.is_empty() {
            self.queued.push((
                Target::One(j.id),
                Bytes::from(Message::Awareness(snapshot).encode()),
            ));
        }
        self.members.insert(
            j.id,
            Member {
                uuid: j.uuid,
                outbox: j.outbox,
                role: j.role,
                control: false,
                user: None,
                subject: j.subject,
                told_read_only: false,
                told_full: false,
            },
        );
        self.live
            .users
            .store(self.members.len() as u32, Ordering::Relaxed);
        self.empty_since = None;
        Ok(())
    }

    fn leave(&mut self, conn: ConnId) {
        let Some(member) = self.members.remove(&conn) else {
            return;
        };
        self.live
            .users
            .store(self.members.len() as u32, Ordering::Relaxed);
        let removed = self.presence.remove_connection(conn, Instant::now());
        self.queue_awareness(removed);
        if member.control {
            let left = Control::Left {
                connection: member.uuid,
                users: self.members.len() as u32,
            };
            self.queue_control(Target::ControlExcept(None), &left);
        }
        if self.members.is_empty() {
            self.empty_since = Some(Instant::now());
        }
    }

    fn message(&mut self, conn: ConnId, msg: Message) {
        match msg {
            Message::SyncStep1(sv) => self.answer_step1(conn, &sv),
            Message::SyncStep2(update) | Message::Update(update) => self.write(conn, update),
            Message::Awareness(update) => {
                let applied = self.presence.apply(conn, update, Instant::now());
                if applied.foreign > 0 {
                    warn!(room = %self.name, conn, refused = applied.foreign,
                        "awareness update touched client ids owned by another connection");
                }
                self.queue_awareness(applied.accepted);
            }
            Message::QueryAwareness => {
                let snapshot = self.presence.snapshot();
                self.queued.push((
                    Target::One(conn),
                    Bytes::from(Message::Awareness(snapshot).encode()),
                ));
            }
            Message::Control(c) => self.control(conn, c),
            Message::PermissionDenied(_) => {}
        }
    }

    fn control(&mut self, conn: ConnId, c: Control) {
        let users = self.members.len() as u32;
        let Some(m) = self.members.get_mut(&conn) else {
            return;
        };
        match c {
            Control::Hello { user } => {
                let first = !m.control;
                m.control = true;
                m.user = user.clone();
                let welcome = Control::Welcome {
                    connection: m.uuid.clone(),
                    role: m.role,
                    room: self.name.to_string(),
                    users,
                };
                let joined = Control::Joined {
                    connection: m.uuid.clone(),
                    user,
                    users,
                };
                self.queue_control(Target::One(conn), &welcome);
                if first {
                    self.queue_control(Target::ControlExcept(Some(conn)), &joined);
                }
            }
            Control::Typing { active, .. } => {
                let typing = Control::Typing {
                    connection: Some(m.uuid.clone()),
                    user: m.user.clone(),
                    active,
                };
                self.queue_control(Target::ControlExcept(Some(conn)), &typing);
            }
            // Everything else is server → client only.
            _ => {}
        }
    }

    fn answer_step1(&mut self, conn: ConnId, sv: &[u8]) {
        let full_state = self.full_state.clone();
        let encoded = catch_unwind(AssertUnwindSafe(|| {
            let sv = decode_state_vector(sv)?;
            if sv.is_empty() {
                if let Some(frame) = full_state {
                    return Ok::<_, String>((frame, true));
                }
            }
            let update = self.doc.transact().encode_state_as_update_v1(&sv);
            Ok((Bytes::from(encode_sync(SYNC_STEP2, &update)), sv.is_empty()))
        }));
        match encoded {
            Ok(Ok((frame, whole))) => {
                // Encoding a large document takes milliseconds on the runtime thread this room
                // shares; joiners with nothing (every new tab, and every reconnect of a client
                // that lost its state) all get the same bytes.
                if whole {
                    self.full_state = Some(frame.clone());
                }
                self.queued.push((Target::One(conn), frame));
            }
            Ok(Err(e)) => self.close_member(
                conn,
                CloseCode::InvalidData,
                &format!("invalid state vector: {e}"),
            ),
            Err(_) => self.poisoned(conn, sv, "encoding the document for sync step 2"),
        }
    }

    fn write(&mut self, conn: ConnId, update: Vec<u8>) {
        let Some(m) = self.members.get_mut(&conn) else {
            return;
        };
        if m.role == Role::Read {
            // Every client answers the server's step 1 with a step 2, empty when it has no
            // edits of its own: only a real edit earns the (one) refusal.
            let is_edit = catch_unwind(|| decode_update(&update).map(|u| !u.is_empty()))
                .is_ok_and(|r| r.unwrap_or(true));
            if is_edit && !std::mem::replace(&mut m.told_read_only, true) {
                let frame = refusal(
                    m.control,
                    "read_only",
                    "this connection is read-only; edits are not saved",
                );
                self.queued.push((Target::One(conn), frame));
            }
            return;
        }
        let control = m.control;
        match self.integrate(update) {
            Ok(_) => {}
            Err(WriteError::TooLarge(max)) => {
                let Some(m) = self.members.get_mut(&conn) else {
                    return;
                };
                if !std::mem::replace(&mut m.told_full, true) {
                    warn!(room = %self.name, conn, max, "document size limit reached; write refused");
                    let frame = refusal(
                        control,
                        "document_too_large",
                        &format!(
                            "the document reached its size limit of {max} bytes; edits are not saved"
                        ),
                    );
                    self.queued.push((Target::One(conn), frame));
                }
            }
            Err(WriteError::Invalid(e)) => {
                warn!(room = %self.name, conn, error = %e, "refused an invalid update");
                self.close_member(conn, CloseCode::InvalidData, "invalid update");
            }
            Err(WriteError::Poisoned) => {
                self.close_member(
                    conn,
                    CloseCode::Internal,
                    "update crashed the document engine",
                );
            }
            Err(WriteError::Storage(_)) => {
                self.close_member(conn, CloseCode::Internal, "storage failure")
            }
            Err(WriteError::Refused(hash)) => {
                warn!(room = %self.name, conn, sha256 = %hash,
                    "refused an update that crashed the server before; closing the sender");
                self.close_member(
                    conn,
                    CloseCode::InvalidData,
                    "update refused: it crashed the server before",
                );
            }
        }
    }

    /// Applies a remote update (a member's or the API's), stores it and queues its broadcast.
    /// Returns false when the update was empty (nothing stored or sent).
    fn integrate(&mut self, update: Vec<u8>) -> Result<bool, WriteError> {
        let max = self.ctx.config.max_doc_bytes;
        if self.stored_bytes.saturating_add(update.len() as u64) > max {
            return Err(WriteError::TooLarge(max));
        }
        let hash = inflight::hash(&update);
        if self.ctx.inflight.is_refused(&hash) {
            return Err(WriteError::Refused(inflight::hex(&hash)));
        }
        // Apply before persist: the store sees the bytes only after yrs took them without
        // crashing. Should yrs take the process down, the mark tells the next start which bytes.
        let mark =
            self.ctx
                .inflight
                .mark(self.name.as_str(), Applying::Remote, &hash, update.len());
        #[cfg(feature = "fault-injection")]
        crate::testing::fault::before_apply(&update);
        // From here even an update that fails may have changed the document (or its pending
        // part); one refused above changed nothing, so a flood of those keeps the cache.
        self.full_state = None;
        let applied = catch_unwind(AssertUnwindSafe(|| {
            let (decoded, parents) = decode_update_with_parents(&update)?;
            if decoded.is_empty() {
                return Ok::<bool, String>(false);
            }
            let mut txn = self.doc.transact_mut();
            out_of_order(&txn, &decoded)?;
            parents_known(&txn, &decoded, &parents)?;
            txn.apply_update(decoded).map_err(|e| e.to_string())?;
            // An update waiting for missing dependencies changes nothing yet but must be kept,
            // or a restart would lose it once they arrive.
            let store = txn.store();
            let pending = store.pending_update().is_some() || store.pending_ds().is_some();
            Ok(txn.has_changes() || pending)
        }));
        drop(mark);
        match applied {
            Ok(Ok(true)) => {}
            // Nothing new: the empty step 2 every client answers the server's step 1 with, or a
            // reconnecting client's step 2, which always repeats its whole delete set. Storing
            // and broadcasting those would grow every log by one entry per reconnect.
            Ok(Ok(false)) => return Ok(false),
            Ok(Err(e)) => return Err(WriteError::Invalid(e)),
            Err(_) => {
                // The document in memory may be half-modified: rebuild it from the store,
                // which never saw the offending bytes.
                let b64 = base64::engine::general_purpose::STANDARD.encode(&update);
                error!(room = %self.name, bytes = %b64,
                    "yrs panicked applying an update; reloading the document");
                self.reload();
                return Err(WriteError::Poisoned);
            }
        }
        self.store_and_broadcast(update)?;
        Ok(true)
    }

    /// Appends an update already applied to the document, then queues its broadcast.
    fn store_and_broadcast(&mut self, update: Vec<u8>) -> Result<(), WriteError> {
        match self.ctx.store.append(&self.name, &update) {
            Ok(seq) => {
                self.ctx.metrics.updates_applied.inc();
                self.last_seq = seq;
                self.log_len += 1;
                self.log_bytes += update.len() as u64;
                self.batch_bytes += update.len() as u64;
                self.stored_bytes += update.len() as u64;
                self.dirty = true;
                self.title_stale = true;
                self.exists = true;
            }
            Err(e) => {
                // Not durable, so it must not be acknowledged: drop the in-memory copy too.
                error!(room = %self.name, error = %e, "store append failed");
                self.reload();
                return Err(WriteError::Storage(e.to_string()));
            }
        }
        self.queued
            .push((Target::All, Bytes::from(encode_sync(SYNC_UPDATE, &update))));
        Ok(())
    }

    /// yrs panicked on remote data: the document in memory may be half-modified, so it is
    /// rebuilt from the store (which never saw the offending bytes) and the sender is closed.
    fn poisoned(&mut self, conn: ConnId, bytes: &[u8], during: &str) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        error!(room = %self.name, conn, during, bytes = %b64,
            "yrs panicked on remote data; closing the sender and reloading the document");
        self.close_member(
            conn,
            CloseCode::Internal,
            "update crashed the document engine",
        );
        self.reload();
    }

    /// Answers the API requests of a batch: with their results once the batch is durable, or
    /// with `error` when it could not be made durable.
    fn send_replies(&mut self, error: Option<&str>) {
        for (reply, result) in self.replies.drain(..) {
            let result = match error {
                Some(e) => Err(ApiOpError::Storage(e.to_owned())),
                None => result,
            };
            let _ = reply.send(result);
        }
    }

    fn reload(&mut self) {
        // Replies already queued may describe the discarded state; the reloaded document is the
        // durable truth, so members resync from it.
        match load_doc(&self.ctx, &self.name) {
            Ok(loaded) => {
                self.full_state = None;
                self.doc = loaded.doc;
                self.last_seq = loaded.last_seq;
                self.log_len = loaded.log_len;
                self.log_bytes = loaded.log_bytes;
                self.stored_bytes = loaded.stored_bytes;
                self.exists = loaded.exists;
            }
            Err(e) => {
                error!(room = %self.name, error = %e, "reload failed; closing every member");
                let ids: Vec<ConnId> = self.members.keys().copied().collect();
                for id in ids {
                    self.close_member(id, CloseCode::Internal, "document unavailable");
                }
            }
        }
    }

    fn close_member(&mut self, conn: ConnId, code: CloseCode, reason: &str) {
        if let Some(m) = self.members.get(&conn) {
            m.outbox.close(code, reason);
        }
        self.leave(conn);
    }

    fn queue_awareness(&mut self, entries: Vec<AwarenessEntry>) {
        if entries.is_empty() {
            return;
        }
        let frame = Message::Awareness(AwarenessUpdate { entries }).encode();
        self.queued.push((Target::All, Bytes::from(frame)));
    }

    fn queue_control(&mut self, target: Target, c: &Control) {
        let frame = Message::Control(c.clone()).encode();
        self.queued.push((target, Bytes::from(frame)));
    }

    /// Makes the batch durable, then sends everything it produced.
    pub(crate) async fn finish_batch(&mut self) {
        self.live
            .stored_bytes
            .store(self.stored_bytes, Ordering::Relaxed);
        let flushed = self.dirty;
        self.batch_bytes = 0;
        if self.dirty {
            self.dirty = false;
            match self.ctx.config.durability {
                Durability::Strict => {
                    if let Err(e) = self.ctx.commit.commit().await {
                        error!(room = %self.name, error = %e, "flush failed; nothing acknowledged");
                        let ids: Vec<ConnId> = self.members.keys().copied().collect();
                        for id in ids {
                            self.close_member(id, CloseCode::Internal, "storage failure");
                        }
                        self.queued.clear();
                        self.send_replies(Some(e.as_ref()));
                        self.reload();
                        return;
                    }
                }
                Durability::Relaxed => {
                    let flush = self.ctx.commit.mark_dirty();
                    self.unsaved = Some((flush, self.last_seq));
                }
            }
        }
        self.send_replies(None);
        if flushed && self.ctx.config.durability == Durability::Strict {
            let saved = Control::Saved {
                version: self.last_seq,
            };
            self.queue_control(Target::ControlExcept(None), &saved);
        }
        if self.queued.is_empty() {
            return;
        }
        let mut slow = Vec::new();
        let mut fanout = 0u64;
        let mut send = |id: ConnId, m: &Member, frame: Bytes| {
            fanout += 1;
            if !m.outbox.send(frame) {
                slow.push(id);
            }
        };
        for (target, frame) in self.queued.drain(..) {
            match target {
                Target::All => {
                    for (&id, m) in &self.members {
                        send(id, m, frame.clone());
                    }
                }
                Target::One(id) => {
                    if let Some(m) = self.members.get(&id) {
                        send(id, m, frame);
                    }
                }
                Target::ControlExcept(except) => {
                    for (&id, m) in &self.members {
                        if m.control && Some(id) != except {
                            send(id, m, frame.clone());
                        }
                    }
                }
                Target::ControlSubject(user) => {
                    for (&id, m) in &self.members {
                        if m.control && m.subject.as_deref() == Some(user.as_str()) {
                            send(id, m, frame.clone());
                        }
                    }
                }
            }
        }
        self.ctx.metrics.fanout.inc_by(fanout);
        self.last_sent = Instant::now();
        slow.sort_unstable();
        slow.dedup();
        self.ctx.metrics.queue_full.inc_by(slow.len() as u64);
        for id in slow {
            // The outbox already closed the socket with 1013; drop it from the room now so no
            // later frame is silently skipped for it.
            info!(room = %self.name, conn = id, "member too slow; disconnected");
            self.leave(id);
        }
        if !self.queued.is_empty() {
            // Leaving slow members queued awareness removals and `left` notices.
            Box::pin(self.finish_batch()).await;
        }
        // Compacting re-encodes the whole document: wait until the log is at least as large as
        // the snapshot as well, so a big document is not rewritten for every few hundred
        // keystrokes (the cost stays proportional to what was written).
        if self.log_len >= self.ctx.config.compact_every
            && self.log_bytes.saturating_mul(2) >= self.stored_bytes
        {
            self.compact().await;
        }
    }

    /// Writes the document's first line to its metadata if it changed.
    fn refresh_title(&mut self, now: Instant) {
        self.title_stale = false;
        self.title_checked = now;
        let title = catch_unwind(AssertUnwindSafe(|| title_of(&self.text())))
            .ok()
            .flatten();
        if title.is_none() || title == self.title {
            return;
        }
        match self
            .ctx
            .store
            .set_title(&self.name, title.as_deref().unwrap_or_default())
        {
            Ok(()) => self.title = title,
            Err(e) => warn!(room = %self.name, error = %e, "could not update the title"),
        }
    }

    /// Merges the log into one snapshot, atomically.
    async fn compact(&mut self) {
        if self.log_len == 0 {
            return;
        }
        let (doc, ctx, name, upto) = (
            self.doc.clone(),
            self.ctx.clone(),
            self.name.clone(),
            self.last_seq,
        );
        // Encoding and writing a large document takes long enough to stall every task sharing
        // this runtime thread; on a blocking thread only this room (which waits for it) pauses.
        let done = tokio::task::spawn_blocking(move || {
            let encoded = catch_unwind(AssertUnwindSafe(|| {
                let snapshot = doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                (snapshot, title_of(&text_of(&doc)))
            }));
            let Ok((snapshot, title)) = encoded else {
                return Err(None);
            };
            match ctx.store.compact(&name, &snapshot, upto, title.as_deref()) {
                Ok(()) => Ok((snapshot.len() as u64, title)),
                Err(e) => Err(Some(e.to_string())),
            }
        })
        .await;
        match done {
            Ok(Ok((bytes, title))) => {
                debug!(room = %self.name, upto, bytes, "compacted");
                self.log_len = 0;
                self.log_bytes = 0;
                self.stored_bytes = bytes;
                if title.is_some() {
                    self.title = title;
                    self.title_stale = false;
                }
            }
            Ok(Err(None)) => {
                error!(room = %self.name, "yrs panicked while compacting; keeping the log");
                self.reload();
            }
            Ok(Err(Some(e))) => {
                error!(room = %self.name, error = %e, "compaction failed; log kept")
            }
            Err(e) => error!(room = %self.name, error = %e, "compaction task failed; log kept"),
        }
    }
}

/// Decodes a v1 update from a client, the API or the store.
fn decode_update(bytes: &[u8]) -> Result<Update, String> {
    decode_update_with_parents(bytes).map(|(update, _)| update)
}

/// [`decode_update`], plus the parent items the update's items name (for [`parents_known`]),
/// collected by the same walk of its sections.
fn decode_update_with_parents(bytes: &[u8]) -> Result<(Update, Vec<ID>), String> {
    count_fits(bytes, "update")?;
    let parents = clocks_listed_once(bytes)?;
    let update = Update::decode_v1(bytes).map_err(|e| e.to_string())?;
    Ok((update, parents))
}

/// Refuses an update that lists clocks of one client more than once: a client's section repeated,
/// or a later section of the same client starting inside an earlier one. No encoder writes that
/// (Yjs and yrs write each client once, its clocks consecutive), but yrs 0.28 decodes it into
/// overlapping blocks, trims them against the document and never against each other, and then
/// takes the second copy for one that fills a gap: `BlockStore::push` overwrites the first copy's
/// block, which it frees while the document still links it. After that use after free the room,
/// its encoded state and a restart disagree about the text (once or twice), and a later edit or
/// read crashes the process: the room's, or that of any yrs peer the update was broadcast to
/// (the fuzz harness's replicas segfaulted). Also refused: a section whose clocks
/// run past `u32::MAX` (yrs wraps them around onto earlier clocks) and a client id wider than the
/// 53 bits Yjs uses (yrs keeps the low 53 bits, so two such ids are one client).
///
/// The sections are walked with yrs' own decoder, reading exactly what `Update::decode_v1` reads.
/// Returns the ids of the items the update's items name as their parent (items of nested types;
/// root types are named), which [`parents_known`] checks once the document is at hand.
fn clocks_listed_once(bytes: &[u8]) -> Result<Vec<ID>, String> {
    use yrs::block::{
        ItemContent, BLOCK_GC_REF_NUMBER, BLOCK_ITEM_DOC_REF_NUMBER, BLOCK_SKIP_REF_NUMBER,
        HAS_ORIGIN, HAS_PARENT_SUB, HAS_RIGHT_ORIGIN,
    };
    use yrs::encoding::read::{Cursor, Error, Read};
    use yrs::updates::decoder::{Decoder, DecoderV1};

    /// The clocks one struct takes (0 for an empty item, which yrs drops); an item whose parent
    /// is another item (not a root type) adds that item's id to `parents`.
    fn struct_len(d: &mut DecoderV1<'_>, parents: &mut Vec<ID>) -> Result<u32, Error> {
        let info = d.read_info()?;
        match info {
            BLOCK_SKIP_REF_NUMBER => d.read_var(),
            BLOCK_GC_REF_NUMBER => d.read_len(),
            _ => {
                if info & HAS_ORIGIN != 0 {
                    d.read_left_id()?;
                }
                if info & HAS_RIGHT_ORIGIN != 0 {
                    d.read_right_id()?;
                }
                if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
                    if d.read_parent_info()? {
                        d.read_string()?;
                    } else {
                        parents.push(d.read_left_id()?);
                    }
                    if info & HAS_PARENT_SUB != 0 {
                        d.read_string()?;
                    }
                }
                if info & 0b1111 == BLOCK_ITEM_DOC_REF_NUMBER {
                    // A subdocument's options, read without building the document yrs would.
                    d.read_string()?;
                    d.read_any()?;
                    return Ok(1);
                }
                Ok(ItemContent::decode(d, info)?.len_utf16())
            }
        }
    }

    const CLIENT_BITS: u32 = 53;
    let malformed = |e: Error| e.to_string();
    let mut d = DecoderV1::new(Cursor::new(bytes));
    let sections: u32 = d.read_var().map_err(malformed)?;
    // Per client, the end of the clocks its earlier sections listed.
    let mut listed: HashMap<u64, u64> = HashMap::new();
    let mut parents = Vec::new();
    for _ in 0..sections {
        let structs: u32 = d.read_var().map_err(malformed)?;
        let client: u64 = d.read_var().map_err(malformed)?;
        if client >> CLIENT_BITS != 0 {
            return Err(format!(
                "the update names client {client}, wider than {CLIENT_BITS} bits"
            ));
        }
        let start: u32 = d.read_var().map_err(malformed)?;
        let mut end = u64::from(start);
        for _ in 0..structs {
            end += u64::from(struct_len(&mut d, &mut parents).map_err(malformed)?);
        }
        if end > u64::from(u32::MAX) {
            return Err(format!(
                "the update's clocks of client {client} run past {}",
                u32::MAX
            ));
        }
        let before = listed.entry(client).or_insert(0);
        if u64::from(start) < *before && end > u64::from(start) {
            return Err(format!(
                "the update lists clocks {start}..{end} of client {client} twice"
            ));
        }
        *before = (*before).max(end);
    }
    Ok(parents)
}

/// Refuses an update with an item whose parent is an item that neither the document nor the
/// update has. yrs 0.28 holds such an item back, but trims it against clocks of its client the
/// document already has, and then encodes the trimmed rest with the previous clock as its origin
/// and without its parent: a joiner or a restart (the store's snapshot is that encoding) puts it
/// into the text of the origin's parent, where the room shows nothing. Weft's document is one
/// root text, so a nested parent that is nowhere is a mutated or hostile update.
fn parents_known(
    txn: &yrs::TransactionMut<'_>,
    update: &Update,
    parents: &[ID],
) -> Result<(), String> {
    if parents.is_empty() {
        return Ok(());
    }
    let known = txn.state_vector();
    let inserted = update.insertions(true);
    for parent in parents {
        if parent.clock >= known.get(&parent.client) && !inserted.contains(parent) {
            return Err(format!(
                "the update inserts into item {}#{}, which the document does not have",
                parent.client, parent.clock
            ));
        }
    }
    Ok(())
}

/// Decodes a v1 state vector from a client's sync step 1 or the API.
fn decode_state_vector(bytes: &[u8]) -> Result<StateVector, String> {
    count_fits(bytes, "state vector")?;
    StateVector::decode_v1(bytes).map_err(|e| e.to_string())
}

/// Refuses bytes whose leading count (the clients of an update, the entries of a state vector)
/// cannot fit in them. yrs reserves a hash table of that many entries before reading any, and
/// fills its control bytes: five bytes declaring 268 million clients cost 0.4 s and 0.5 GiB.
fn count_fits(bytes: &[u8], what: &'static str) -> Result<(), String> {
    let mut decoder = weft_protocol::Decoder::new(bytes);
    let declared = decoder.read_var_uint(what).map_err(|e| e.to_string())?;
    // Every entry takes at least two bytes: a client id and a clock.
    let room = decoder.remaining() as u64 / 2;
    if declared > room {
        return Err(format!(
            "the {what} declares {declared} clients in {} bytes",
            bytes.len()
        ));
    }
    Ok(())
}

/// Refuses an update that yrs would apply in a way its own encoding cannot reproduce, so that
/// the document in memory, its encoded state (what a joiner gets) and a replay of the store
/// (what a restart gets) always hold the same text:
/// - text that leaves a gap in a client's clocks: yrs 0.28 integrates it out of order behind a
///   skip, where Yjs would hold it back, and then leaves it out of every encoding;
/// - deletions of clocks of the room's own client id that the room has not written yet: nobody
///   else can know them, and yrs would hold them back and apply them to every replay of the
///   room's later server-side edits but never to the edits themselves.
fn out_of_order(txn: &yrs::TransactionMut<'_>, update: &Update) -> Result<(), String> {
    let own = txn.doc().client_id();
    let written = txn.store().get_local_state();
    if let Some(ranges) = update.delete_set().get(&own) {
        if ranges.iter().any(|(r, ())| r.end > written) {
            return Err(format!(
                "the update deletes text the server has not written yet (client {own})"
            ));
        }
    }
    let inserted = update.insertions(true);
    if inserted.is_empty() {
        return Ok(());
    }
    let known = txn.state_vector();
    for (client, ranges) in inserted.iter() {
        let mut covered = known.get(client);
        for r in ranges.iter() {
            if r.start > covered {
                return Err(format!(
                    "the update skips clocks {covered}..{} of client {client}",
                    r.start
                ));
            }
            covered = covered.max(r.end);
        }
    }
    Ok(())
}

/// Tells a writer, once, why its edits are not saved: a control error for Weft-aware clients,
/// the y-protocols auth permission-denied message for stock ones.
fn refusal(control: bool, code: &str, message: &str) -> Bytes {
    let frame = if control {
        Message::Control(Control::Error {
            code: code.into(),
            message: message.into(),
        })
    } else {
        Message::PermissionDenied(message.into())
    };
    Bytes::from(frame.encode())
}

/// Turns `old` into `new` with a minimal character diff, in UTF-16 offsets (the unit of the
/// room's documents and of Yjs), so text outside the changed spans keeps its identity and
/// remote cursors anchored there stay where they are.
fn replace_text(text: &yrs::TextRef, txn: &mut yrs::TransactionMut<'_>, old: &str, new: &str) {
    let mut at: u32 = 0;
    for chunk in dissimilar::diff(old, new) {
        match chunk {
            dissimilar::Chunk::Equal(s) => at += utf16_len(s),
            dissimilar::Chunk::Delete(s) => text.remove_range(txn, at, utf16_len(s)),
            dissimilar::Chunk::Insert(s) => {
                text.insert(txn, at, s);
                at += utf16_len(s);
            }
        }
    }
}

/// Length of `s` in UTF-16 code units.
fn utf16_len(s: &str) -> u32 {
    u32::try_from(s.encode_utf16().count()).unwrap_or(u32::MAX)
}

/// The first non-empty line of a document, trimmed to 80 characters, as its title.
pub(crate) fn title_of(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(80).collect())
}

/// The text of a document's `content` (empty when it has none).
fn text_of(doc: &Doc) -> String {
    let txn = doc.transact();
    txn.get_text("content")
        .map(|t| t.get_string(&txn))
        .unwrap_or_default()
}

/// A new document with the options every room uses: UTF-16 offsets, as Yjs counts them.
pub(crate) fn new_doc() -> Doc {
    Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

/// A document rebuilt from the store, with what the room tracks about its stored form.
pub(crate) struct Loaded {
    /// The document.
    pub(crate) doc: Doc,
    last_seq: u64,
    log_len: u64,
    log_bytes: u64,
    /// Snapshot plus logged update bytes: what `--max-doc-bytes` is checked against.
    stored_bytes: u64,
    /// Whether the store knows the document (metadata or content).
    exists: bool,
}

/// Rebuilds a document from its snapshot and log. An update that fails (or panics), or whose
/// bytes crashed the process before, is moved to quarantine and the rest still loads; a snapshot
/// that fails refuses the whole document, so an empty one can never overwrite it.
pub(crate) fn load_doc(ctx: &RoomContext, name: &RoomName) -> Result<Loaded, String> {
    let stored = ctx.store.load(name).map_err(|e| e.to_string())?;
    let exists = stored.snapshot.is_some()
        || !stored.updates.is_empty()
        || matches!(ctx.store.meta(name), Ok(Some(_)));
    let doc = new_doc();
    if let Some(snapshot) = &stored.snapshot {
        apply_stored(ctx, name, Applying::Snapshot, &doc, snapshot)
            .map_err(|e| format!("snapshot does not load: {e}"))?;
    }
    let mut last_seq = 0;
    let mut log_len = 0;
    let mut log_bytes = 0;
    let mut stored_bytes = stored.snapshot.as_ref().map_or(0, |s| s.len() as u64);
    for (seq, update) in &stored.updates {
        last_seq = *seq;
        match apply_stored(ctx, name, Applying::Stored(*seq), &doc, update) {
            Ok(()) => {
                log_len += 1;
                log_bytes += update.len() as u64;
                stored_bytes += update.len() as u64;
            }
            Err(e) => {
                error!(room = %name, seq, error = %e, "stored update does not apply; quarantined");
                if let Err(qe) = ctx.store.quarantine(name, *seq, &e) {
                    error!(room = %name, seq, error = %qe, "quarantine failed");
                }
            }
        }
    }
    Ok(Loaded {
        doc,
        last_seq,
        log_len,
        log_bytes,
        stored_bytes,
        exists,
    })
}

/// Applies one stored update (or the snapshot) under an in-flight mark; bytes that crashed the
/// process before are not applied.
fn apply_stored(
    ctx: &RoomContext,
    name: &RoomName,
    applying: Applying,
    doc: &Doc,
    bytes: &[u8],
) -> Result<(), String> {
    let hash = inflight::hash(bytes);
    if ctx.inflight.is_refused(&hash) {
        return Err(format!(
            "refused: these bytes crashed the server before (sha256 {})",
            inflight::hex(&hash)
        ));
    }
    let _mark = ctx
        .inflight
        .mark(name.as_str(), applying, &hash, bytes.len());
    #[cfg(feature = "fault-injection")]
    crate::testing::fault::before_apply(bytes);
    catch_unwind(AssertUnwindSafe(|| {
        let (update, parents) = decode_update_with_parents(bytes)?;
        let mut txn = doc.transact_mut();
        // Stored before the write path refused such updates; applying one would make this
        // document differ from its own encoding. (A snapshot is such an encoding already.)
        if matches!(applying, Applying::Stored(_)) {
            out_of_order(&txn, &update)?;
            parents_known(&txn, &update, &parents)?;
        }
        txn.apply_update(update).map_err(|e| e.to_string())
    }))
    .unwrap_or_else(|_| Err("yrs panicked".into()))
}

/// A room that failed to load answers every join with the reason, then stops.
async fn refuse_all(
    mut rx: mpsc::Receiver<Command>,
    ctx: &RoomContext,
    name: &RoomName,
    generation: u64,
    reason: String,
) {
    error!(room = %name, error = %reason, "document failed to load");
    ctx.rooms_unregister(name, generation);
    rx.close();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Join(_, reply) => {
                let _ = reply.send(Err(JoinError::LoadFailed(reason.clone())));
            }
            Command::Api(_, reply) => {
                let _ = reply.send(Err(ApiOpError::Unavailable(reason.clone())));
            }
            Command::Messages(..) | Command::Leave(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The title is the first non-empty line, trimmed and cut to 80 characters.
    #[test]
    fn titles() {
        assert_eq!(title_of(""), None);
        assert_eq!(
            title_of("\n  \n  Hello world  \nmore"),
            Some("Hello world".into())
        );
        assert_eq!(title_of(&"é".repeat(100)).unwrap().chars().count(), 80);
    }

    /// A replace edits only the changed span, in UTF-16 units: emoji (surrogate pairs) before,
    /// inside and after the change survive, and a peer's concurrent insert is kept.
    #[test]
    fn replace_is_a_minimal_utf16_diff() {
        let doc = new_doc();
        let text = doc.get_or_insert_text("content");
        text.insert(&mut doc.transact_mut(), 0, "👋 héllo wörld 🎉 end");
        // A peer that saw the same start inserts concurrently near the end.
        let peer = new_doc();
        let state = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        peer.transact_mut()
            .apply_update(Update::decode_v1(&state).expect("decode"))
            .expect("apply");
        let peer_text = peer.get_or_insert_text("content");
        let end = peer_text.len(&peer.transact());
        let concurrent = {
            let mut txn = peer.transact_mut();
            peer_text.insert(&mut txn, end, "!");
            txn.encode_update_v1()
        };
        let replace = |new: &str| {
            let old = text.get_string(&doc.transact());
            let mut txn = doc.transact_mut();
            replace_text(&text, &mut txn, &old, new);
            txn.encode_update_v1()
        };
        let update = replace("👋 hello 🌍 wörld 🎉 end");
        assert_eq!(text.get_string(&doc.transact()), "👋 hello 🌍 wörld 🎉 end");
        // Minimal: the update carries the few changed characters, not the whole text.
        let whole = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert!(
            update.len() < whole.len(),
            "{} >= {}",
            update.len(),
            whole.len()
        );
        doc.transact_mut()
            .apply_update(Update::decode_v1(&concurrent).expect("decode"))
            .expect("apply");
        assert_eq!(
            text.get_string(&doc.transact()),
            "👋 hello 🌍 wörld 🎉 end!"
        );
        assert!(
            replace("👋 hello 🌍 wörld 🎉 end!").len() <= 2,
            "no-op replace is empty"
        );
    }

    /// Large updates waiting in the mailbox at once are stored in batches of about
    /// [`MAX_BATCH_BYTES`], each made durable by its own flush, instead of one flush carrying
    /// them all that every other room's edits would have to wait for.
    #[test]
    fn large_updates_are_flushed_in_bounded_batches() {
        const UPDATES: usize = 32;
        const SIZE: usize = 32 * 1024;
        let crate::testing::fuzzing::DirectRoom { rt, room, ctx, dir } =
            crate::testing::fuzzing::DirectRoom::open("big", |_| {});
        let (tx, rx) = mpsc::channel(MAILBOX);
        let (writer, _) = crate::testing::fuzzing::detached_joiner(1, Role::Write, 4096);
        let (reader, mut frames) = crate::testing::fuzzing::detached_joiner(2, Role::Read, 4096);
        for joiner in [writer, reader] {
            tx.try_send(Command::Join(joiner, oneshot::channel().0))
                .expect("mailbox");
        }
        // Queued before the room runs, so all of them wait in its mailbox together.
        for i in 0..UPDATES {
            let client = Doc::with_client_id(1_000 + i as u64);
            let text = client.get_or_insert_text("content");
            let mut txn = client.transact_mut();
            text.insert(&mut txn, 0, &"x".repeat(SIZE));
            let update = Message::Update(txn.encode_update_v1());
            tx.try_send(Command::Messages(1, vec![update]))
                .expect("mailbox");
        }
        let flushed = ctx.commit.flushed();
        let before = *flushed.borrow();
        let _running = rt.spawn(room.run(rx));
        let received = rt.block_on(async {
            let mut updates = 0;
            while updates < UPDATES {
                let next = tokio::time::timeout(Duration::from_secs(30), frames.recv()).await;
                let frame = next
                    .expect("the reader got every update within 30 s")
                    .expect("the room is running");
                let crate::outbox::Data::Binary(frame) = frame else {
                    continue;
                };
                let msgs = weft_protocol::decode_frame(&frame, &weft_protocol::Limits::DEFAULT)
                    .expect("decodes");
                updates += msgs
                    .iter()
                    .filter(|m| matches!(m, Message::Update(_)))
                    .count();
            }
            updates
        });
        assert_eq!(received, UPDATES);
        let flushes = *flushed.borrow() - before;
        let bound = (UPDATES * SIZE) as u64 / MAX_BATCH_BYTES;
        assert!(
            flushes >= bound,
            "{UPDATES} updates of {SIZE} bytes took {flushes} flushes; batches of at most \
             {MAX_BATCH_BYTES} bytes need at least {bound}"
        );
        drop(tx);
        drop(rt);
        drop(dir);
    }

    /// A room driven in-process for the consistency tests below: one writer joined.
    fn room_with_writer(name: &str) -> (crate::testing::fuzzing::DirectRoom, Outbox) {
        let mut d = crate::testing::fuzzing::DirectRoom::open(name, |_| {});
        let (joiner, _rx) = crate::testing::fuzzing::detached_joiner(1, Role::Write, 64);
        let outbox = joiner.outbox.clone();
        let (reply, _) = oneshot::channel();
        d.room.handle(Command::Join(joiner, reply));
        d.rt.block_on(d.room.finish_batch());
        (d, outbox)
    }

    /// Sends `updates` as the writer's update messages and ends the batch.
    fn send_updates(d: &mut crate::testing::fuzzing::DirectRoom, updates: &[&[u8]]) {
        let msgs = updates
            .iter()
            .map(|u| Message::Update(u.to_vec()))
            .collect();
        d.room.handle(Command::Messages(1, msgs));
        d.rt.block_on(d.room.finish_batch());
    }

    /// The room's text, after checking that a joiner (a fresh document applying the room's
    /// encoded state) and a restart (the store loaded again) both get exactly that text.
    fn consistent_text(d: &crate::testing::fuzzing::DirectRoom) -> String {
        let text = text_of(d.room.doc());
        let state = d
            .room
            .doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert_eq!(
            text_of(&doc_from(&state)),
            text,
            "a joiner would get other text"
        );
        let restarted = load_doc(&d.ctx, &d.room.name).expect("load");
        assert_eq!(
            text_of(&restarted.doc),
            text,
            "a restart would get other text"
        );
        text
    }

    /// A fresh document holding `update`.
    fn doc_from(update: &[u8]) -> Doc {
        let doc = new_doc();
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).expect("decode"))
            .expect("apply");
        doc
    }

    /// Appends `text` through the API and ends the batch.
    fn api_append(d: &mut crate::testing::fuzzing::DirectRoom, text: &str) {
        let (reply, _) = oneshot::channel();
        d.room
            .handle(Command::Api(ApiOp::Append(text.into()), reply));
        d.rt.block_on(d.room.finish_batch());
    }

    /// Three keystrokes of one client, each its own update.
    fn three_keystrokes() -> [Vec<u8>; 3] {
        let client = new_doc();
        let text = client.get_or_insert_text("content");
        ["a", "b", "c"].map(|s| {
            let mut txn = client.transact_mut();
            let end = text.len(&txn);
            text.insert(&mut txn, end, s);
            txn.encode_update_v1()
        })
    }

    /// yrs 0.28 applies text that skips clocks of its client out of order, and then leaves it
    /// out of every encoding: the room would show it while joiners and restarts lose it. The
    /// room refuses such an update (1007) and stays consistent; sent in order, it applies.
    #[test]
    fn an_update_that_skips_clocks_is_refused() {
        let [a, b, c] = three_keystrokes();
        let (mut d, outbox) = room_with_writer("gap");
        send_updates(&mut d, &[&a, &c]);
        assert_eq!(
            outbox.closed_with().map(|(code, _)| code),
            Some(CloseCode::InvalidData)
        );
        assert_eq!(consistent_text(&d), "a");

        let (joiner, _rx) = crate::testing::fuzzing::detached_joiner(2, Role::Write, 64);
        let (reply, _) = oneshot::channel();
        d.room.handle(Command::Join(joiner, reply));
        d.room.handle(Command::Messages(
            2,
            vec![Message::Update(b), Message::Update(c)],
        ));
        d.rt.block_on(d.room.finish_batch());
        assert_eq!(consistent_text(&d), "abc");
    }

    /// A deletion of clocks of the room's own client id that the room has not written yet
    /// would be held back by yrs and later applied to every replay of the room's next API
    /// edit, but not to the edit itself. It is refused, and the API edit is kept everywhere.
    #[test]
    fn deleting_the_servers_future_text_is_refused() {
        let [a, _, _] = three_keystrokes();
        let (mut d, outbox) = room_with_writer("own");
        send_updates(&mut d, &[&a]);
        let own = d.room.doc().client_id().get();
        // An update with no structs and the delete set {own: [0, 1000)}, in lib0 encoding.
        let mut forged = vec![0, 1];
        for v in [own, 1, 0, 1000] {
            weft_protocol::encoding::write_var_uint(&mut forged, v);
        }
        send_updates(&mut d, &[&forged]);
        assert_eq!(
            outbox.closed_with().map(|(code, _)| code),
            Some(CloseCode::InvalidData)
        );

        api_append(&mut d, "kept");
        assert_eq!(consistent_text(&d), "akept");
    }

    /// An update waiting for the room's own next clock (its left neighbour is text the room
    /// writes later) integrates as soon as the room writes it, exactly as it does when the
    /// store is replayed; yrs alone would retry it only after a remote update.
    #[test]
    fn a_server_edit_releases_updates_waiting_for_it() {
        let (mut d, _outbox) = room_with_writer("waiting");
        let own = d.room.doc().client_id();
        // A peer that knows what the room will write next (its own client id, clock 0)...
        let forger = Doc::with_options(Options {
            client_id: own,
            offset_kind: OffsetKind::Utf16,
            ..Options::default()
        });
        let text = forger.get_or_insert_text("content");
        text.insert(&mut forger.transact_mut(), 0, "A");
        // ...types after it, and sends only its own edit: the room holds it back.
        let peer = doc_from(
            &forger
                .transact()
                .encode_state_as_update_v1(&StateVector::default()),
        );
        let peer_text = peer.get_or_insert_text("content");
        let waiting = {
            let mut txn = peer.transact_mut();
            peer_text.insert(&mut txn, 1, "y");
            txn.encode_update_v1()
        };
        send_updates(&mut d, &[&waiting]);
        assert_eq!(consistent_text(&d), "");

        api_append(&mut d, "z");
        assert_eq!(consistent_text(&d), "zy");
    }

    /// An item whose parent is an item nobody has: yrs 0.28 holds it back, but trims it against
    /// the clocks of its client the room already has and encodes the rest with that clock as its
    /// origin and no parent, so a joiner and a restart got "xontent" where the room showed "x"
    /// (found by the fuzzer with random client ids; `regressions/room_messages/sequence-item-inside-a-missing-item`
    /// is the artifact of that run).
    #[test]
    fn an_item_inside_a_missing_item_is_refused() {
        let (mut d, outbox) = room_with_writer("dangling-parent");
        let writer = Doc::with_options(Options {
            client_id: yrs::block::ClientID::new(5),
            ..Options::default()
        });
        let text = writer.get_or_insert_text("content");
        let x = {
            let mut txn = writer.transact_mut();
            text.insert(&mut txn, 0, "x");
            txn.encode_update_v1()
        };
        send_updates(&mut d, &[&x]);
        assert_eq!(consistent_text(&d), "x");
        // [1 client] [1 struct of client 5 from clock 0: a string, parent = the item 4#1,
        // "content"] [no deletions]
        let mut inside_missing = vec![1, 1, 5, 0, 4, 0, 4, 1, 7];
        inside_missing.extend_from_slice(b"content");
        inside_missing.push(0);
        send_updates(&mut d, &[&inside_missing]);
        assert_eq!(consistent_text(&d), "x");
        assert!(outbox.closed_with().is_some(), "the sender is closed");
    }

    /// The one client section of each of `updates` (insertions only), joined into one update.
    fn sections(updates: &[&[u8]]) -> Vec<u8> {
        let mut joined = vec![u8::try_from(updates.len()).expect("a few")];
        for u in updates {
            // [1 client] [its section] [an empty delete set]
            assert_eq!((u[0], u[u.len() - 1]), (1, 0), "one client, no deletions");
            joined.extend_from_slice(&u[1..u.len() - 1]);
        }
        joined.push(0);
        joined
    }

    /// An update listing clocks of one client twice (its section repeated, or a second section
    /// starting inside the first) makes yrs 0.28 free a block the document still links: the room
    /// and a restart disagreed about the text, then yrs peers the room broadcast it to crashed.
    /// Such an update is refused before yrs sees it (applying it here would be undefined
    /// behaviour: `regressions/room_messages/update-lists-a-clients-clocks-twice` checks the room
    /// in a child process); sections that do not overlap still decode.
    #[test]
    fn an_update_listing_clocks_twice_is_refused() {
        let [a, b, _] = three_keystrokes();
        let twice = sections(&[&a, &a]);
        let err = decode_update(&twice).map(|_| ()).expect_err("refused");
        assert!(err.contains("lists clocks 0..1 of client"), "{err}");
        // The keystrokes' client has typed "ab" (clocks 0..2); the second keystroke alone is 1..2.
        let client = new_doc();
        for u in [&a, &b] {
            client
                .transact_mut()
                .apply_update(decode_update(u).expect("a real update"))
                .expect("apply");
        }
        let ab = client
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let err = decode_update(&sections(&[&ab, &b]))
            .map(|_| ())
            .expect_err("refused");
        assert!(err.contains("lists clocks 1..2 of client"), "{err}");
        assert!(decode_update(&sections(&[&a, &b])).is_ok());

        let (mut d, outbox) = room_with_writer("twice");
        send_updates(&mut d, &[&twice]);
        assert_eq!(
            outbox.closed_with().map(|(code, _)| code),
            Some(CloseCode::InvalidData)
        );
        assert_eq!(consistent_text(&d), "");

        let (joiner, _rx) = crate::testing::fuzzing::detached_joiner(2, Role::Write, 64);
        let (reply, _) = oneshot::channel();
        d.room.handle(Command::Join(joiner, reply));
        d.room
            .handle(Command::Messages(2, vec![Message::Update(a)]));
        d.rt.block_on(d.room.finish_batch());
        assert_eq!(consistent_text(&d), "a");
    }

    /// The clock walk reads every kind of struct exactly as yrs does: a document using every
    /// shared type, formatting, an embed, a subdocument, deletions, and a merge with a gap (a
    /// skip) passes, and so do its incremental updates.
    #[test]
    fn every_kind_of_struct_passes_the_clock_walk() {
        use yrs::types::xml::{Xml, XmlElementPrelim, XmlFragment, XmlTextPrelim};
        use yrs::{Any, Array, Map};
        let doc = new_doc();
        let mut updates = Vec::new();
        let mut edit = |f: &dyn Fn(&mut yrs::TransactionMut<'_>)| {
            let mut txn = doc.transact_mut();
            f(&mut txn);
            updates.push(txn.encode_update_v1());
        };
        let text = doc.get_or_insert_text("content");
        let map = doc.get_or_insert_map("map");
        let array = doc.get_or_insert_array("array");
        let xml = doc.get_or_insert_xml_fragment("xml");
        edit(&|txn| {
            text.insert(txn, 0, "héllo 👋 wörld");
            let bold = HashMap::from([(Arc::<str>::from("bold"), Any::Bool(true))]);
            text.insert_with_attributes(txn, 0, "bold ", bold.clone());
            text.format(txn, 6, 3, bold);
            text.insert_embed(txn, 2, Any::from("an image"));
        });
        edit(&|txn| {
            map.insert(txn, "number", 1.5);
            map.insert(txn, "nested", yrs::MapPrelim::from([("k", Any::from("v"))]));
            map.insert(txn, "bytes", Any::from(vec![1u8, 2, 3]));
            map.insert(txn, "sub", Doc::new());
            array.insert_range(txn, 0, [Any::from(1), Any::from("two"), Any::Null]);
            array.push_back(txn, yrs::ArrayPrelim::default());
            let p = xml.insert(txn, 0, XmlElementPrelim::empty("p"));
            p.insert(txn, 0, XmlTextPrelim::new("para"));
            p.insert_attribute(txn, "class", "x");
        });
        edit(&|txn| {
            text.insert(txn, 0, "again ");
            text.remove_range(txn, 1, 4);
            array.remove(txn, 1);
            map.remove(txn, "number");
        });
        let state = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        for u in updates.iter().chain([&state]) {
            assert!(clocks_listed_once(u).is_ok(), "{u:?}");
            assert!(decode_update(u).is_ok());
        }
        // The first and the last update: a gap, which the merge fills with a skip.
        let gap =
            yrs::merge_updates_v1([updates[0].as_slice(), updates[2].as_slice()]).expect("merge");
        assert!(clocks_listed_once(&gap).is_ok());
    }

    /// A few bytes declaring millions of clients are refused before yrs reserves a table for
    /// them (which would cost half a GiB and most of a second); real updates and state vectors
    /// pass.
    #[test]
    fn oversized_counts_are_refused_before_decoding() {
        let mut bomb = Vec::new();
        weft_protocol::encoding::write_var_uint(&mut bomb, 0x0fff_ffff);
        let err = decode_update(&bomb).map(|_| ()).expect_err("refused");
        assert!(err.contains("declares 268435455 clients"), "{err}");
        let err = decode_state_vector(&bomb).map(|_| ()).expect_err("refused");
        assert!(err.contains("state vector declares"), "{err}");

        let [a, b, _] = three_keystrokes();
        let doc = new_doc();
        for u in [&a, &b] {
            doc.transact_mut()
                .apply_update(decode_update(u).expect("a real update"))
                .expect("apply");
        }
        let sv = doc.transact().state_vector().encode_v1();
        assert_eq!(
            decode_state_vector(&sv).expect("a real state vector").len(),
            1
        );
        assert!(decode_update(&Update::new().encode_v1()).is_ok());
        assert!(decode_state_vector(&StateVector::default().encode_v1()).is_ok());
    }

    /// The sync step 2 a member gets for an empty state vector, decoded as a fresh joiner
    /// would, with the frame's buffer address (equal addresses: the same cached bytes).
    fn step2_for_empty_state(
        d: &mut crate::testing::fuzzing::DirectRoom,
        id: ConnId,
    ) -> (String, *const u8) {
        let (joiner, mut rx) = crate::testing::fuzzing::detached_joiner(id, Role::Read, 64);
        let (reply, _) = oneshot::channel();
        d.room.handle(Command::Join(joiner, reply));
        let empty = StateVector::default().encode_v1();
        d.room
            .handle(Command::Messages(id, vec![Message::SyncStep1(empty)]));
        d.rt.block_on(d.room.finish_batch());
        while let Ok(crate::outbox::Data::Binary(frame)) = rx.try_recv() {
            let msgs = weft_protocol::decode_frame(&frame, &weft_protocol::Limits::DEFAULT)
                .expect("decodes");
            if let Some(Message::SyncStep2(update)) = msgs.into_iter().next() {
                return (text_of(&doc_from(&update)), frame.as_ptr());
            }
        }
        panic!("no sync step 2 for member {id}");
    }

    /// Joiners with nothing share one encoded step 2 until the document changes; after any
    /// change the next one gets the new text.
    #[test]
    fn joiners_share_the_encoded_document_until_it_changes() {
        let [a, b, _] = three_keystrokes();
        let (mut d, _outbox) = room_with_writer("joins");
        send_updates(&mut d, &[&a]);
        let (first, at) = step2_for_empty_state(&mut d, 10);
        let (second, again) = step2_for_empty_state(&mut d, 11);
        assert_eq!((first.as_str(), second.as_str()), ("a", "a"));
        assert_eq!(at, again, "the second joiner got a new encoding");

        send_updates(&mut d, &[&b]);
        assert_eq!(step2_for_empty_state(&mut d, 12).0, "ab");
        api_append(&mut d, "!");
        assert_eq!(step2_for_empty_state(&mut d, 13).0, "ab!");
    }
}
