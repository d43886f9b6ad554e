//! One actor task per open document. It alone owns the yrs `Doc` and the awareness table:
//! it answers sync, applies updates, appends them to the store, waits for the group commit,
//! and only then broadcasts one encoded frame, shared by every member.
//!
//! Commands are handled in batches: everything waiting in the mailbox is applied, one flush
//! makes the whole batch durable, then every reply and broadcast of the batch goes out in order.
//! Nothing leaves the room before it is on disk (strict durability).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};
use weft_protocol::{
    encode_sync, AwarenessEntry, AwarenessUpdate, Control, Message, Role, RoomName, UserInfo,
    SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE,
};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Transact, Update};

use crate::config::Durability;
use crate::connection::Outbox;
use crate::presence::Presence;
use crate::rooms::RoomContext;

/// Identifies a connection inside the server (cheaper to hash than its UUID).
pub(crate) type ConnId = u64;

/// Mailbox depth of a room. A full mailbox makes senders wait, which slows the connections
/// feeding this room and nothing else.
const MAILBOX: usize = 1024;

/// Most commands handled before one flush, so a flood cannot delay every reply indefinitely.
const MAX_BATCH: usize = 256;

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
}

/// What connections and HTTP handlers ask of a room.
pub(crate) enum Command {
    /// Add a member; the reply says whether it was admitted.
    Join(Joiner, oneshot::Sender<Result<(), JoinError>>),
    /// Messages decoded from one frame of a member.
    Messages(ConnId, Vec<Message>),
    /// A member's socket is gone.
    Leave(ConnId),
}

/// Cheap handle to a running room.
#[derive(Clone)]
pub(crate) struct RoomHandle {
    tx: mpsc::Sender<Command>,
    /// Distinguishes incarnations of the same room name in the registry.
    pub(crate) generation: u64,
    /// Members right now, kept by the room, read by listings without asking the actor.
    users: Arc<AtomicU32>,
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
        self.users.load(Ordering::Relaxed)
    }
}

struct Member {
    uuid: String,
    outbox: Outbox,
    role: Role,
    /// Opted in to control messages with `hello`.
    control: bool,
    user: Option<UserInfo>,
    told_read_only: bool,
    told_full: bool,
}

/// Where a queued frame goes once the batch is durable.
enum Target {
    All,
    One(ConnId),
    /// Every member that opted in to control messages, except one.
    ControlExcept(Option<ConnId>),
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
    /// Bytes the document occupies in the store (snapshot plus log).
    stored_bytes: u64,
    /// Store writes of this batch not yet flushed.
    dirty: bool,
    queued: Vec<(Target, Bytes)>,
    last_sent: Instant,
    empty_since: Option<Instant>,
    users: Arc<AtomicU32>,
    /// The title last written to the store, and whether edits since may have changed it.
    title: Option<String>,
    title_stale: bool,
    title_checked: Instant,
}

impl Room {
    /// Loads `name` from the store and spawns its actor; the handle is usable at once.
    pub(crate) fn spawn(name: RoomName, ctx: Arc<RoomContext>, generation: u64) -> RoomHandle {
        let (tx, rx) = mpsc::channel(MAILBOX);
        let users = Arc::new(AtomicU32::new(0));
        let shutdown = ctx.shutdown.clone();
        let room_users = users.clone();
        shutdown.spawn(async move {
            let loaded = {
                let (ctx, name) = (ctx.clone(), name.clone());
                tokio::task::spawn_blocking(move || load_doc(&ctx, &name)).await
            };
            match loaded {
                Ok(Ok(loaded)) => {
                    let room = Room {
                        name,
                        ctx,
                        generation,
                        doc: loaded.doc,
                        presence: Presence::default(),
                        members: HashMap::new(),
                        last_seq: loaded.last_seq,
                        log_len: loaded.log_len,
                        stored_bytes: loaded.stored_bytes,
                        dirty: false,
                        queued: Vec::new(),
                        last_sent: Instant::now(),
                        empty_since: Some(Instant::now()),
                        users: room_users,
                        title: None,
                        title_stale: false,
                        title_checked: Instant::now(),
                    };
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
            users,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        info!(room = %self.name, "room loaded");
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.ctx.shutdown.clone();
        loop {
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.handle(cmd);
                    let mut n = 1;
                    while n < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(cmd) => self.handle(cmd),
                            Err(_) => break,
                        }
                        n += 1;
                    }
                    self.finish_batch().await;
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
        self.compact();
        if let Err(e) = self.ctx.commit.commit().await {
            error!(room = %self.name, error = %e, "final flush failed");
        }
        self.ctx.rooms_unregister(&self.name, self.generation);
        info!(room = %self.name, "room closed for shutdown");
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
        self.compact();
        if let Err(e) = self.ctx.commit.commit().await {
            error!(room = %self.name, error = %e, "flush before unload failed");
        }
        info!(room = %self.name, "room unloaded after being idle");
        true
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Join(joiner, reply) => {
                let result = self.join(joiner);
                let _ = reply.send(result);
            }
            Command::Messages(conn, msgs) => {
                for msg in msgs {
                    if !self.members.contains_key(&conn) {
                        break;
                    }
                    self.message(conn, msg);
                }
            }
            Command::Leave(conn) => self.leave(conn),
        }
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
                told_read_only: false,
                told_full: false,
            },
        );
        self.users
            .store(self.members.len() as u32, Ordering::Relaxed);
        self.empty_since = None;
        Ok(())
    }

    fn leave(&mut self, conn: ConnId) {
        let Some(member) = self.members.remove(&conn) else {
            return;
        };
        self.users
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
        let encoded = catch_unwind(AssertUnwindSafe(|| {
            let sv = StateVector::decode_v1(sv).map_err(|e| e.to_string())?;
            Ok::<_, String>(self.doc.transact().encode_state_as_update_v1(&sv))
        }));
        match encoded {
            Ok(Ok(update)) => {
                let frame = encode_sync(SYNC_STEP2, &update);
                self.queued.push((Target::One(conn), Bytes::from(frame)));
            }
            Ok(Err(e)) => self.close_member(conn, 1007, &format!("invalid state vector: {e}")),
            Err(_) => self.poisoned(conn, sv, "encoding the document for sync step 2"),
        }
    }

    fn write(&mut self, conn: ConnId, update: Vec<u8>) {
        let Some(m) = self.members.get_mut(&conn) else {
            return;
        };
        if m.role == Role::Read {
            if !std::mem::replace(&mut m.told_read_only, true) {
                let frame = refusal(
                    m.control,
                    "read_only",
                    "this connection is read-only; edits are not saved",
                );
                self.queued.push((Target::One(conn), frame));
            }
            return;
        }
        let max = self.ctx.config.max_doc_bytes;
        if self.stored_bytes.saturating_add(update.len() as u64) > max {
            if !std::mem::replace(&mut m.told_full, true) {
                warn!(room = %self.name, conn, max, "document size limit reached; write refused");
                let frame = refusal(
                    m.control,
                    "document_too_large",
                    &format!(
                        "the document reached its size limit of {max} bytes; edits are not saved"
                    ),
                );
                self.queued.push((Target::One(conn), frame));
            }
            return;
        }
        let applied = catch_unwind(AssertUnwindSafe(|| {
            let decoded = Update::decode_v1(&update).map_err(|e| e.to_string())?;
            if decoded.is_empty() {
                return Ok::<bool, String>(false);
            }
            let mut txn = self.doc.transact_mut();
            txn.apply_update(decoded).map_err(|e| e.to_string())?;
            Ok(true)
        }));
        match applied {
            Ok(Ok(true)) => {}
            // Clients answer the server's sync step 1 with a step 2 that is usually empty:
            // nothing to store or broadcast.
            Ok(Ok(false)) => return,
            Ok(Err(e)) => {
                warn!(room = %self.name, conn, error = %e, "refused an update that does not decode");
                self.close_member(conn, 1007, "invalid update");
                return;
            }
            Err(_) => {
                self.poisoned(conn, &update, "applying an update");
                return;
            }
        }
        match self.ctx.store.append(self.name.as_str(), &update) {
            Ok(seq) => {
                self.last_seq = seq;
                self.log_len += 1;
                self.stored_bytes += update.len() as u64;
                self.dirty = true;
                self.title_stale = true;
            }
            Err(e) => {
                // Not durable, so it must not be acknowledged: drop the in-memory copy too.
                error!(room = %self.name, error = %e, "store append failed");
                self.close_member(conn, 1011, "storage failure");
                self.reload();
                return;
            }
        }
        self.queued
            .push((Target::All, Bytes::from(encode_sync(SYNC_UPDATE, &update))));
    }

    /// yrs panicked on remote data: the document in memory may be half-modified, so it is
    /// rebuilt from the store (which never saw the offending bytes) and the sender is closed.
    fn poisoned(&mut self, conn: ConnId, bytes: &[u8], during: &str) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        error!(room = %self.name, conn, during, bytes = %b64,
            "yrs panicked on remote data; closing the sender and reloading the document");
        self.close_member(conn, 1011, "update crashed the document engine");
        self.reload();
    }

    fn reload(&mut self) {
        // Replies already queued may describe the discarded state; the reloaded document is the
        // durable truth, so members resync from it.
        match load_doc(&self.ctx, &self.name) {
            Ok(loaded) => {
                self.doc = loaded.doc;
                self.last_seq = loaded.last_seq;
                self.log_len = loaded.log_len;
                self.stored_bytes = loaded.stored_bytes;
            }
            Err(e) => {
                error!(room = %self.name, error = %e, "reload failed; closing every member");
                let ids: Vec<ConnId> = self.members.keys().copied().collect();
                for id in ids {
                    self.close_member(id, 1011, "document unavailable");
                }
            }
        }
    }

    fn close_member(&mut self, conn: ConnId, code: u16, reason: &str) {
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
    async fn finish_batch(&mut self) {
        let flushed = self.dirty;
        if self.dirty {
            self.dirty = false;
            match self.ctx.config.durability {
                Durability::Strict => {
                    if let Err(e) = self.ctx.commit.commit().await {
                        error!(room = %self.name, error = %e, "flush failed; nothing acknowledged");
                        let ids: Vec<ConnId> = self.members.keys().copied().collect();
                        for id in ids {
                            self.close_member(id, 1011, "storage failure");
                        }
                        self.queued.clear();
                        self.reload();
                        return;
                    }
                }
                Durability::Relaxed => self.ctx.commit.mark_dirty(),
            }
        }
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
        for (target, frame) in self.queued.drain(..) {
            match target {
                Target::All => {
                    for (&id, m) in &self.members {
                        if !m.outbox.send(frame.clone()) {
                            slow.push(id);
                        }
                    }
                }
                Target::One(id) => {
                    if let Some(m) = self.members.get(&id) {
                        if !m.outbox.send(frame) {
                            slow.push(id);
                        }
                    }
                }
                Target::ControlExcept(except) => {
                    for (&id, m) in &self.members {
                        if m.control && Some(id) != except && !m.outbox.send(frame.clone()) {
                            slow.push(id);
                        }
                    }
                }
            }
        }
        self.last_sent = Instant::now();
        slow.sort_unstable();
        slow.dedup();
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
        if self.log_len >= self.ctx.config.compact_every {
            self.compact();
        }
    }

    /// Writes the document's first line to its metadata if it changed.
    fn refresh_title(&mut self, now: Instant) {
        self.title_stale = false;
        self.title_checked = now;
        let title = catch_unwind(AssertUnwindSafe(|| {
            let txn = self.doc.transact();
            let text = txn
                .get_text("content")
                .map(|t| t.get_string(&txn))
                .unwrap_or_default();
            title_of(&text)
        }))
        .ok()
        .flatten();
        if title.is_none() || title == self.title {
            return;
        }
        match self
            .ctx
            .store
            .set_title(self.name.as_str(), title.as_deref().unwrap_or_default())
        {
            Ok(()) => self.title = title,
            Err(e) => warn!(room = %self.name, error = %e, "could not update the title"),
        }
    }

    /// Merges the log into one snapshot, atomically.
    fn compact(&mut self) {
        if self.log_len == 0 {
            return;
        }
        let encoded = catch_unwind(AssertUnwindSafe(|| {
            let txn = self.doc.transact();
            let snapshot = txn.encode_state_as_update_v1(&StateVector::default());
            let text = txn
                .get_text("content")
                .map(|t| t.get_string(&txn))
                .unwrap_or_default();
            (snapshot, title_of(&text))
        }));
        let Ok((snapshot, title)) = encoded else {
            error!(room = %self.name, "yrs panicked while compacting; keeping the log");
            self.reload();
            return;
        };
        match self.ctx.store.compact(
            self.name.as_str(),
            &snapshot,
            self.last_seq,
            title.as_deref(),
        ) {
            Ok(()) => {
                debug!(room = %self.name, upto = self.last_seq, bytes = snapshot.len(), "compacted");
                self.log_len = 0;
                self.stored_bytes = snapshot.len() as u64;
                if title.is_some() {
                    self.title = title;
                    self.title_stale = false;
                }
            }
            Err(e) => error!(room = %self.name, error = %e, "compaction failed; log kept"),
        }
    }
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

/// The first non-empty line of a document, trimmed to 80 characters, as its title.
pub(crate) fn title_of(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(80).collect())
}

/// A new document with the options every room uses: UTF-16 offsets, as Yjs counts them.
pub(crate) fn new_doc() -> Doc {
    Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

struct Loaded {
    doc: Doc,
    last_seq: u64,
    log_len: u64,
    /// Snapshot plus logged update bytes: what `--max-doc-bytes` is checked against.
    stored_bytes: u64,
}

/// Rebuilds a document from its snapshot and log. An update that fails (or panics) is moved to
/// quarantine and the rest still loads; a snapshot that fails refuses the whole document, so an
/// empty one can never overwrite it.
fn load_doc(ctx: &RoomContext, name: &RoomName) -> Result<Loaded, String> {
    let stored = ctx.store.load(name.as_str()).map_err(|e| e.to_string())?;
    let doc = new_doc();
    if let Some(snapshot) = &stored.snapshot {
        apply_stored(&doc, snapshot).map_err(|e| format!("snapshot does not load: {e}"))?;
    }
    let mut last_seq = 0;
    let mut log_len = 0;
    let mut stored_bytes = stored.snapshot.as_ref().map_or(0, |s| s.len() as u64);
    for (seq, update) in &stored.updates {
        last_seq = *seq;
        match apply_stored(&doc, update) {
            Ok(()) => {
                log_len += 1;
                stored_bytes += update.len() as u64;
            }
            Err(e) => {
                error!(room = %name, seq, error = %e, "stored update does not apply; quarantined");
                if let Err(qe) = ctx.store.quarantine(name.as_str(), *seq, &e) {
                    error!(room = %name, seq, error = %qe, "quarantine failed");
                }
            }
        }
    }
    Ok(Loaded {
        doc,
        last_seq,
        log_len,
        stored_bytes,
    })
}

fn apply_stored(doc: &Doc, bytes: &[u8]) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| {
        let update = Update::decode_v1(bytes).map_err(|e| e.to_string())?;
        doc.transact_mut()
            .apply_update(update)
            .map_err(|e| e.to_string())
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
        if let Command::Join(_, reply) = cmd {
            let _ = reply.send(Err(JoinError::LoadFailed(reason.clone())));
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
}
