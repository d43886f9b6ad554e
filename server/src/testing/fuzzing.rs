//! Fuzz harnesses over the real room and store code: the smallest public surface the cargo-fuzz
//! targets in `server/fuzz` need, compiled with the `fuzzing` feature (and in this crate's own
//! tests, which replay the committed corpora and crash artifacts through the same functions,
//! each input in a child process).
//!
//! - [`room_messages`]: one long-lived document (process-wide, seeded with real text edits) and
//!   several simulated connections; the input becomes a sequence of (connection, message) fed to
//!   the room's own command handling, batch by batch as its actor does. Updates are raw bytes,
//!   real edits made on each connection's replica, or mutations of real encoded updates.
//! - [`store_replay`]: sequences of store operations on a real [`SledStore`], each followed by
//!   the room's real load path.
//! - [`decode_frame`]: the protocol decoder (the harness lives in `weft_protocol::fuzzing`).
//!
//! Each function panics when an invariant breaks; that is what the fuzzer reports.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use tokio::sync::{mpsc, oneshot};
use weft_protocol::{
    decode_frame as decode, AwarenessEntry, AwarenessUpdate, Control, Limits, Message, Role,
    RoomName, UserInfo,
};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use crate::config::{Config, Durability};
use crate::metrics::Metrics;
use crate::outbox::{Data, Outbox};
use crate::room::registry::RoomContext;
use crate::room::{self, ApiOp, Command, Room};
use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::store::commit::GroupCommit;
use crate::store::inflight::InFlight;
use crate::store::{SledStore, Store};

/// A harness: runs one input, panics when an invariant breaks.
pub type Harness = fn(&[u8]);

/// The fuzz targets by name, as `server/fuzz` builds them and the regression tests replay them.
pub const TARGETS: &[(&str, Harness)] = &[
    ("decode_frame", decode_frame),
    ("room_messages", room_messages),
    ("store_replay", store_replay),
];

/// Most operations taken from one input, so one input cannot run for seconds.
const MAX_OPS: usize = 48;

/// Connections a room input can address (more only dilutes the interesting interleavings).
const CONNS: u8 = 4;

/// Real updates kept for mutation: the seeds plus the latest ones the room broadcast.
const POOL: usize = 96;

/// Past this many stored bytes the long-lived document starts over, so executions stay fast.
const RESET_BYTES: u64 = 256 * 1024;

/// Per-connection frame queue; large enough that the room never closes a member as slow.
const QUEUE: usize = 4096;

/// Protocol decode: see `weft_protocol::fuzzing::check_frame`.
pub fn decode_frame(data: &[u8]) {
    weft_protocol::fuzzing::check_frame(data);
}

thread_local! {
    /// The long-lived room of [`room_messages`], created on first use.
    static ROOM: std::cell::RefCell<Option<RoomHarness>> = const { std::cell::RefCell::new(None) };
}

/// Feeds one input to the process-wide room (created on first use).
///
/// # Panics
/// When an invariant breaks: a panic escaped the room, the document stopped encoding or
/// round-tripping, the room's document differs from what its store loads, or a connection was
/// sent a frame that does not decode.
pub fn room_messages(data: &[u8]) {
    ROOM.with(|h| {
        let mut h = h.borrow_mut();
        let harness = h.get_or_insert_with(RoomHarness::new);
        harness.run(data);
        if harness.stored_bytes() > RESET_BYTES {
            *h = None;
        }
    });
}

/// Drops the room [`room_messages`] keeps: its store closes and its temporary directory is
/// removed. A thread-local is dropped only when its thread exits, which a process that exits
/// first (a replay child, whose test thread may still be dropping it) never waits for.
pub fn room_messages_reset() {
    let room = ROOM.with(|h| h.borrow_mut().take());
    drop(room);
}

/// Runs one input of store operations on a fresh store.
///
/// # Panics
/// When an invariant breaks: loading panicked, a loaded document does not encode, a quarantined
/// update is still in the log, or a reopen changed a document.
pub fn store_replay(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS {
        match StoreOp::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    StoreHarness::new().run(ops);
}

/// Where an update's bytes come from.
#[derive(Debug, Arbitrary)]
enum UpdateSource {
    /// Bytes as given.
    Raw(Vec<u8>),
    /// A real update, unchanged.
    Real(u8),
    /// A real update with some bits flipped.
    BitFlip(u8, Vec<(u16, u8)>),
    /// The first bytes of a real update.
    Truncate(u8, u16),
    /// The head of one real update joined to the tail of another.
    Splice(u8, u8, u16, u16),
    /// A real update with some bytes overwritten.
    Overwrite(u8, u16, Vec<u8>),
    /// Two real updates merged by yrs.
    Merge(u8, u8),
    /// What one real update adds over the state of another, computed by yrs.
    Diff(u8, u8),
}

fn pick(pool: &[Vec<u8>], i: u8) -> Vec<u8> {
    if pool.is_empty() {
        return vec![0, 0];
    }
    pool[usize::from(i) % pool.len()].clone()
}

impl UpdateSource {
    fn bytes(&self, pool: &[Vec<u8>]) -> Vec<u8> {
        match self {
            UpdateSource::Raw(b) => b.clone(),
            UpdateSource::Real(i) => pick(pool, *i),
            UpdateSource::BitFlip(i, flips) => {
                let mut b = pick(pool, *i);
                if !b.is_empty() {
                    for (at, bit) in flips.iter().take(8) {
                        let at = usize::from(*at) % b.len();
                        b[at] ^= 1 << (bit % 8);
                    }
                }
                b
            }
            UpdateSource::Truncate(i, keep) => {
                let mut b = pick(pool, *i);
                b.truncate(usize::from(*keep) % (b.len() + 1));
                b
            }
            UpdateSource::Splice(a, b, cut_a, cut_b) => {
                let (a, b) = (pick(pool, *a), pick(pool, *b));
                let head = &a[..usize::from(*cut_a) % (a.len() + 1)];
                let tail = &b[usize::from(*cut_b) % (b.len() + 1)..];
                [head, tail].concat()
            }
            UpdateSource::Overwrite(i, at, with) => {
                let mut b = pick(pool, *i);
                let start = usize::from(*at) % (b.len() + 1);
                for (k, byte) in with.iter().take(16).enumerate() {
                    match b.get_mut(start + k) {
                        Some(slot) => *slot = *byte,
                        None => b.push(*byte),
                    }
                }
                b
            }
            UpdateSource::Merge(a, b) => {
                let (a, b) = (pick(pool, *a), pick(pool, *b));
                catch_unwind(|| yrs::merge_updates_v1([a.as_slice(), b.as_slice()]))
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_else(|| [a, b].concat())
            }
            UpdateSource::Diff(a, b) => {
                let (a, b) = (pick(pool, *a), pick(pool, *b));
                catch_unwind(|| {
                    let sv = yrs::encode_state_vector_from_update_v1(&b).ok()?;
                    yrs::diff_updates_v1(&a, &sv).ok()
                })
                .ok()
                .flatten()
                .unwrap_or(a)
            }
        }
    }
}

/// One step of a room input.
#[derive(Debug, Arbitrary)]
enum RoomOp {
    /// A connection joins (read-only or read-write); a joined one is left first.
    Join { conn: u8, read_only: bool },
    /// A connection's socket ends.
    Leave { conn: u8 },
    /// Sync step 1 with the connection replica's state vector, or with raw bytes.
    Step1 { conn: u8, raw: Option<Vec<u8>> },
    /// An update, sent as sync step 2 or as an update message.
    Write {
        conn: u8,
        update: UpdateSource,
        step2: bool,
    },
    /// A real edit on the connection's replica (insert at, delete a span), sent as an update.
    Edit {
        conn: u8,
        at: u16,
        delete: u8,
        text: String,
    },
    /// An awareness entry (small client ids, so connections collide).
    Awareness {
        conn: u8,
        client: u8,
        clock: u8,
        state: Option<String>,
    },
    /// Query awareness.
    Query { conn: u8 },
    /// Opt in to control messages.
    Hello { conn: u8, name: Option<String> },
    /// A typing hint.
    Typing { conn: u8, active: bool },
    /// A raw frame, decoded as the connection reader does (an undecodable one ends the socket).
    Frame { conn: u8, bytes: Vec<u8> },
    /// The HTTP API replaces the text (minimal UTF-16 diff) or appends to it.
    ApiText { replace: bool, text: String },
    /// The HTTP API applies an update.
    ApiUpdate(UpdateSource),
    /// End the batch: flush, then deliver (the actor batches whatever its mailbox holds).
    Flush,
}

/// A simulated connection: its queue, its outbox, and its copy of the document.
struct Conn {
    id: u64,
    rx: mpsc::Receiver<Data>,
    outbox: Outbox,
    replica: Doc,
}

/// The long-lived room, its store in a temporary directory, and the simulated connections.
struct RoomHarness {
    rt: tokio::runtime::Runtime,
    room: Room,
    ctx: Arc<RoomContext>,
    conns: BTreeMap<u8, Conn>,
    pool: Vec<Vec<u8>>,
    next_id: u64,
    _dir: tempfile::TempDir,
}

/// Where [`temp_dir`] creates its directories instead, when set: the replay test gives each child
/// process one of its own, and removes it once the child exits, however it ended.
const TEMP_DIR_ENV: &str = "WEFT_FUZZ_TEMP_DIR";

/// A temporary data directory, on tmpfs when there is one (flushes there cost no disk sync).
fn temp_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let mut builder = tempfile::Builder::new();
    builder.prefix("weft-fuzz-");
    let dir = match std::env::var_os(TEMP_DIR_ENV) {
        Some(parent) => builder.tempdir_in(parent),
        None if shm.is_dir() => builder.tempdir_in(shm),
        None => builder.tempdir(),
    };
    dir.expect("creating a temporary directory")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime")
}

/// A room context over `store`, as `Server::serve` builds it, with the fuzz harnesses' settings.
fn context(rt: &tokio::runtime::Runtime, store: Arc<dyn Store>, data: &Path) -> Arc<RoomContext> {
    let mut config = Config::for_tests(data.to_path_buf());
    fuzz_config(&mut config);
    context_with(rt, store, data, config)
}

/// Strict durability, and compaction often.
fn fuzz_config(config: &mut Config) {
    config.durability = Durability::Strict;
    // Small, so compaction runs often.
    config.compact_every = 16;
    config.max_doc_bytes = 4 * RESET_BYTES;
}

/// A room context over `store` with `config`, as `Server::serve` builds it (flushes counted in
/// its metrics), except that the committer flushes only when a strict room waits for it (never
/// on its own timer).
fn context_with(
    rt: &tokio::runtime::Runtime,
    store: Arc<dyn Store>,
    data: &Path,
    config: Config,
) -> Arc<RoomContext> {
    let _guard = rt.enter();
    let metrics = Arc::new(Metrics::new());
    let flush_metrics = metrics.clone();
    let commit = GroupCommit::start(store.clone(), Duration::from_secs(3600), move |elapsed| {
        flush_metrics.observe_flush(elapsed)
    });
    let inflight = InFlight::open(data, store.as_ref())
        .map(|(inflight, _)| inflight)
        .unwrap_or_else(|_| InFlight::disabled());
    Arc::new(RoomContext::new(
        store,
        commit,
        Arc::new(config),
        Shutdown::new(),
        Stats::default(),
        metrics,
        Arc::new(inflight),
    ))
}

/// A room loaded by its caller instead of spawned as an actor, on a store of its own: the
/// caller feeds [`Room::handle`] and runs [`Room::finish_batch`] on `rt`, as the actor loop
/// does. Shared by the fuzz harness and `crate::bench`.
pub(crate) struct DirectRoom {
    /// Runs the committer, compaction and the batches (current-thread).
    pub(crate) rt: tokio::runtime::Runtime,
    /// The room.
    pub(crate) room: Room,
    /// What the room shares with the rest of the server (the store, the durable log).
    pub(crate) ctx: Arc<RoomContext>,
    /// The data directory; last, so it is removed after the store is closed.
    pub(crate) dir: tempfile::TempDir,
}

impl DirectRoom {
    /// Loads room `name` from a fresh store in a temporary directory, with the test defaults
    /// adjusted by `tune`.
    pub(crate) fn open(name: &str, tune: impl FnOnce(&mut Config)) -> Self {
        let rt = runtime();
        let dir = temp_dir();
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open(&dir.path().join("db")).expect("opening the store"));
        let mut config = Config::for_tests(dir.path().to_path_buf());
        tune(&mut config);
        let ctx = context_with(&rt, store, dir.path(), config);
        let name = RoomName::parse(name, &Limits::DEFAULT).expect("room name");
        let room = Room::load(name, ctx.clone()).expect("loading the room");
        Self { rt, room, ctx, dir }
    }
}

/// A joiner with no socket behind it: frames the room sends it land in the returned queue (up
/// to `queue` of them; then the room drops it as too slow).
pub(crate) fn detached_joiner(
    id: u64,
    role: Role,
    queue: usize,
) -> (room::Joiner, mpsc::Receiver<Data>) {
    let (tx, rx) = mpsc::channel(queue);
    let joiner = room::Joiner {
        id,
        uuid: format!("00000000-0000-4000-8000-{id:012}"),
        outbox: Outbox::detached(tx),
        role,
        subject: None,
    };
    (joiner, rx)
}

/// Real updates: three clients typing, deleting and replacing text (emoji and accents
/// included), concurrently, as y-websocket peers would.
fn seed_updates() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let peers: Vec<Doc> = (1..=3)
        .map(|id| {
            Doc::with_options(yrs::Options {
                client_id: yrs::block::ClientID::new(id),
                offset_kind: yrs::OffsetKind::Utf16,
                ..yrs::Options::default()
            })
        })
        .collect();
    let edits: &[(usize, u32, u32, &str)] = &[
        (0, 0, 0, "Hello, world"),
        (1, 0, 0, "👋 "),
        (2, 5, 0, "é"),
        (0, 3, 2, ""),
        (1, 0, 0, "line\nline two\n"),
        (2, 1, 1, "🎉"),
        (0, 2, 0, "∑ x²"),
        (1, 4, 3, "abc"),
    ];
    for (round, (who, at, delete, text)) in edits.iter().enumerate() {
        let doc = &peers[*who];
        let t = doc.get_or_insert_text("content");
        let update = {
            let mut txn = doc.transact_mut();
            let len = t.len(&txn);
            let at = (*at).min(len);
            let delete = (*delete).min(len - at);
            if delete > 0 {
                t.remove_range(&mut txn, at, delete);
            }
            if !text.is_empty() {
                t.insert(&mut txn, at, text);
            }
            txn.encode_update_v1()
        };
        out.push(update.clone());
        // Every other round the peers sync up, so later edits depend on earlier ones.
        if round % 2 == 1 {
            for other in &peers {
                let state = doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                if let Ok(u) = Update::decode_v1(&state) {
                    let _ = other.transact_mut().apply_update(u);
                }
            }
        }
    }
    out.push(
        peers[0]
            .transact()
            .encode_state_as_update_v1(&StateVector::default()),
    );
    out
}

impl RoomHarness {
    fn new() -> Self {
        let DirectRoom { rt, room, ctx, dir } = DirectRoom::open("fuzz", fuzz_config);
        let mut h = Self {
            rt,
            room,
            ctx,
            conns: BTreeMap::new(),
            pool: seed_updates(),
            next_id: 1,
            _dir: dir,
        };
        // The long-lived document starts with the real edits, written by a member.
        h.join(0, false);
        for update in h.pool.clone() {
            h.send(0, vec![Message::Update(update)]);
        }
        h.leave(0);
        h.finish();
        h
    }

    fn stored_bytes(&self) -> u64 {
        self.ctx
            .store
            .meta("fuzz")
            .ok()
            .flatten()
            .map_or(0, |m| m.size_bytes)
    }

    fn run(&mut self, data: &[u8]) {
        let mut u = Unstructured::new(data);
        let mut n = 0;
        while n < MAX_OPS {
            let Ok(op) = RoomOp::arbitrary(&mut u) else {
                break;
            };
            self.op(op);
            n += 1;
        }
        self.finish();
        self.check_document();
    }

    fn op(&mut self, op: RoomOp) {
        match op {
            RoomOp::Join { conn, read_only } => self.join(conn % CONNS, read_only),
            RoomOp::Leave { conn } => self.leave(conn % CONNS),
            RoomOp::Step1 { conn, raw } => {
                let conn = conn % CONNS;
                let sv = match (raw, self.conns.get(&conn)) {
                    (Some(raw), _) => raw,
                    (None, Some(c)) => c.replica.transact().state_vector().encode_v1(),
                    (None, None) => StateVector::default().encode_v1(),
                };
                self.send(conn, vec![Message::SyncStep1(sv)]);
            }
            RoomOp::Write {
                conn,
                update,
                step2,
            } => {
                let bytes = update.bytes(&self.pool);
                let msg = if step2 {
                    Message::SyncStep2(bytes)
                } else {
                    Message::Update(bytes)
                };
                self.send(conn % CONNS, vec![msg]);
            }
            RoomOp::Edit {
                conn,
                at,
                delete,
                text,
            } => {
                let conn = conn % CONNS;
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                let edit = catch_unwind(AssertUnwindSafe(|| {
                    let t = c.replica.get_or_insert_text("content");
                    let mut txn = c.replica.transact_mut();
                    let len = t.len(&txn);
                    let at = u32::from(at).min(len);
                    let delete = u32::from(delete).min(len - at);
                    if delete > 0 {
                        t.remove_range(&mut txn, at, delete);
                    }
                    let text: String = text.chars().take(64).collect();
                    if !text.is_empty() {
                        t.insert(&mut txn, at, &text);
                    }
                    txn.encode_update_v1()
                }));
                match edit {
                    Ok(update) => self.send(conn, vec![Message::Update(update)]),
                    // The replica took a mutated update the room accepted and broke; start it over.
                    Err(_) => c.replica = room::new_doc(),
                }
            }
            RoomOp::Awareness {
                conn,
                client,
                clock,
                state,
            } => {
                let state = match state {
                    None => "null".to_owned(),
                    Some(s) => serde_json::json!({ "user": { "name": s } }).to_string(),
                };
                let entry = AwarenessEntry {
                    client_id: u64::from(client % 8),
                    clock: u64::from(clock),
                    state,
                };
                let msg = Message::Awareness(AwarenessUpdate {
                    entries: vec![entry],
                });
                self.send(conn % CONNS, vec![msg]);
            }
            RoomOp::Query { conn } => self.send(conn % CONNS, vec![Message::QueryAwareness]),
            RoomOp::Hello { conn, name } => {
                let user = name.map(|name| UserInfo { name, color: None });
                self.send(
                    conn % CONNS,
                    vec![Message::Control(Control::Hello { user })],
                );
            }
            RoomOp::Typing { conn, active } => {
                let typing = Control::Typing {
                    connection: None,
                    user: None,
                    active,
                };
                self.send(conn % CONNS, vec![Message::Control(typing)]);
            }
            RoomOp::Frame { conn, bytes } => {
                let conn = conn % CONNS;
                match decode(&bytes, &Limits::DEFAULT) {
                    Ok(msgs) => self.send(conn, msgs),
                    Err(_) => self.leave(conn),
                }
            }
            RoomOp::ApiText { replace, text } => {
                let op = if replace {
                    ApiOp::SetText(text)
                } else {
                    ApiOp::Append(text)
                };
                self.api(op);
            }
            RoomOp::ApiUpdate(update) => {
                let bytes = update.bytes(&self.pool);
                self.api(ApiOp::ApplyUpdate(bytes));
            }
            RoomOp::Flush => self.finish(),
        }
    }

    fn join(&mut self, conn: u8, read_only: bool) {
        self.leave(conn);
        let id = self.next_id;
        self.next_id += 1;
        let role = if read_only { Role::Read } else { Role::Write };
        let (joiner, rx) = detached_joiner(id, role, QUEUE);
        let outbox = joiner.outbox.clone();
        let (reply, _) = oneshot::channel();
        self.room.handle(Command::Join(joiner, reply));
        self.conns.insert(
            conn,
            Conn {
                id,
                rx,
                outbox,
                replica: room::new_doc(),
            },
        );
    }

    fn leave(&mut self, conn: u8) {
        if let Some(c) = self.conns.remove(&conn) {
            self.room.handle(Command::Leave(c.id));
        }
    }

    fn send(&mut self, conn: u8, msgs: Vec<Message>) {
        // Messages of a connection that is not in the room still reach it (a reader racing its
        // own leave); the room ignores them.
        let id = self.conns.get(&conn).map_or(u64::MAX, |c| c.id);
        self.room.handle(Command::Messages(id, msgs));
    }

    fn api(&mut self, op: ApiOp) {
        let (reply, _) = oneshot::channel();
        self.room.handle(Command::Api(op, reply));
    }

    /// Ends the batch as the actor does, then delivers what each connection was sent, answering
    /// the room's sync step 1 as a y-websocket client would.
    fn finish(&mut self) {
        for _ in 0..4 {
            self.rt.block_on(self.room.finish_batch());
            let mut answers = Vec::new();
            for (&slot, c) in &mut self.conns {
                while let Ok(data) = c.rx.try_recv() {
                    let Data::Binary(frame) = data else {
                        panic!("connection {slot} was sent a text frame");
                    };
                    let msgs = decode(&frame, &Limits::DEFAULT).unwrap_or_else(|e| {
                        panic!("connection {slot} was sent an undecodable frame ({e}): {frame:?}")
                    });
                    for m in msgs {
                        match m {
                            Message::SyncStep1(sv) => {
                                let reply = catch_unwind(AssertUnwindSafe(|| {
                                    let sv = StateVector::decode_v1(&sv).ok()?;
                                    Some(c.replica.transact().encode_state_as_update_v1(&sv))
                                }));
                                if let Ok(Some(update)) = reply {
                                    answers.push((slot, Message::SyncStep2(update)));
                                }
                            }
                            Message::SyncStep2(u) | Message::Update(u) => {
                                if self.pool.len() >= POOL {
                                    self.pool.remove(seed_updates_len());
                                }
                                self.pool.push(u.clone());
                                let applied = catch_unwind(AssertUnwindSafe(|| {
                                    let u = Update::decode_v1(&u).ok()?;
                                    c.replica.transact_mut().apply_update(u).ok()
                                }));
                                if applied.is_err() {
                                    c.replica = room::new_doc();
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            // Closed members are gone from the room; forget them too.
            self.conns.retain(|_, c| c.outbox.closed_with().is_none());
            if answers.is_empty() {
                return;
            }
            for (slot, msg) in answers {
                self.send(slot, vec![msg]);
            }
        }
        self.rt.block_on(self.room.finish_batch());
    }

    /// The document still encodes and re-decodes, a fresh document applying its state has the
    /// same text, and the store (loaded through the room's own load path) holds the same text.
    fn check_document(&mut self) {
        let doc = self.room.doc();
        let (state, text) = catch_unwind(AssertUnwindSafe(|| {
            let txn = doc.transact();
            let text = txn.get_text("content").map(|t| t.get_string(&txn));
            (txn.encode_state_as_update_v1(&StateVector::default()), text)
        }))
        .expect("the room's document no longer encodes");
        let text = text.unwrap_or_default();
        let fresh = text_of_state(&state);
        if fresh.as_deref() != Some(text.as_str()) {
            // Everything needed to reproduce it without the history: the room's state and the
            // stored form it was built from.
            let stored = self.ctx.store.load("fuzz").unwrap_or_default();
            let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
            let log: Vec<String> = stored.updates.iter().map(|(_, u)| b64(u)).collect();
            panic!(
                "a fresh document applying the room's state has other text: {fresh:?} != \
                 {text:?}\nstate: {}\nsnapshot: {}\nlog: {log:?}",
                b64(&state),
                stored.snapshot.as_deref().map(b64).unwrap_or_default(),
            );
        }
        let name = RoomName::parse("fuzz", &Limits::DEFAULT).expect("room name");
        let loaded = room::load_doc(&self.ctx, &name).expect("the stored document loads");
        let stored = {
            let txn = loaded.doc.transact();
            txn.get_text("content")
                .map(|t| t.get_string(&txn))
                .unwrap_or_default()
        };
        assert_eq!(stored, text, "the store and the room disagree");
    }
}

/// How many pool entries are seeds (never evicted).
fn seed_updates_len() -> usize {
    static LEN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LEN.get_or_init(|| seed_updates().len())
}

/// The text of `content` in a fresh document that applies `state`; `None` if it does not
/// decode or apply.
fn text_of_state(state: &[u8]) -> Option<String> {
    let update = Update::decode_v1(state).ok()?;
    let doc = room::new_doc();
    doc.transact_mut().apply_update(update).ok()?;
    let txn = doc.transact();
    Some(
        txn.get_text("content")
            .map(|t| t.get_string(&txn))
            .unwrap_or_default(),
    )
}

/// One step of a store input; `doc` picks one of two documents.
#[derive(Debug, Arbitrary)]
enum StoreOp {
    /// Append an update.
    Append { doc: bool, update: UpdateSource },
    /// Compact: the snapshot is the document as the room loads it, up to the last sequence.
    Compact { doc: bool },
    /// Quarantine one of the logged updates.
    Quarantine { doc: bool, which: u8 },
    /// Drop the store (it flushes) and open the directory again.
    Reopen,
    /// Flush.
    Flush,
    /// Delete the document.
    Delete { doc: bool },
    /// Load through the room's load path and check the result.
    Load { doc: bool },
}

/// A store in a temporary directory and the runtime its context needs.
struct StoreHarness {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    store: Option<Arc<SledStore>>,
    pool: Vec<Vec<u8>>,
    /// (document, sequence) of every update quarantined, by an operation or by a load.
    quarantined: BTreeSet<(bool, u64)>,
}

fn doc_name(doc: bool) -> &'static str {
    if doc {
        "b"
    } else {
        "a"
    }
}

impl StoreHarness {
    fn new() -> Self {
        let dir = temp_dir();
        let store = SledStore::open(&dir.path().join("db")).expect("opening the store");
        Self {
            rt: runtime(),
            dir,
            store: Some(Arc::new(store)),
            pool: seed_updates(),
            quarantined: BTreeSet::new(),
        }
    }

    fn store(&self) -> Arc<SledStore> {
        self.store.clone().expect("store is open")
    }

    fn run(&mut self, ops: Vec<StoreOp>) {
        for op in ops {
            self.op(op);
        }
        for doc in [false, true] {
            self.load(doc);
        }
    }

    fn op(&mut self, op: StoreOp) {
        let store = self.store();
        match op {
            StoreOp::Append { doc, update } => {
                let bytes = update.bytes(&self.pool);
                store.append(doc_name(doc), &bytes).expect("append");
            }
            StoreOp::Compact { doc } => {
                let Some((text_doc, last_seq)) = self.load(doc) else {
                    return;
                };
                let snapshot = text_doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                store
                    .compact(doc_name(doc), &snapshot, last_seq, None)
                    .expect("compact");
            }
            StoreOp::Quarantine { doc, which } => {
                let updates = store.load(doc_name(doc)).expect("load").updates;
                if updates.is_empty() {
                    return;
                }
                let seq = updates[usize::from(which) % updates.len()].0;
                store
                    .quarantine(doc_name(doc), seq, "fuzz")
                    .expect("quarantine");
                self.quarantined.insert((doc, seq));
            }
            StoreOp::Reopen => {
                let before = [self.text(false), self.text(true)];
                self.store = None;
                // The committer tasks of the load contexts hold the store until they see their
                // handles gone; let them finish so the store (and sled's lock) is released.
                for _ in 0..1000 {
                    if Arc::strong_count(&store) == 1 {
                        break;
                    }
                    self.rt.block_on(tokio::task::yield_now());
                }
                assert_eq!(Arc::strong_count(&store), 1, "the store is still in use");
                drop(store);
                let store = SledStore::open(&self.dir.path().join("db")).expect("reopen");
                self.store = Some(Arc::new(store));
                let after = [self.text(false), self.text(true)];
                assert_eq!(before, after, "a reopen changed a document");
            }
            StoreOp::Flush => store.flush().expect("flush"),
            StoreOp::Delete { doc } => {
                store.delete(doc_name(doc)).expect("delete");
                self.quarantined.retain(|(d, _)| *d != doc);
            }
            StoreOp::Load { doc } => {
                self.load(doc);
            }
        }
    }

    fn text(&mut self, doc: bool) -> Option<String> {
        let (d, _) = self.load(doc)?;
        let txn = d.transact();
        Some(
            txn.get_text("content")
                .map(|t| t.get_string(&txn))
                .unwrap_or_default(),
        )
    }

    /// Loads `doc` through the room's load path and checks it; `None` when it is refused (a
    /// snapshot that does not load).
    fn load(&mut self, doc: bool) -> Option<(Doc, u64)> {
        let store = self.store();
        let ctx = context(&self.rt, store.clone(), self.dir.path());
        let name = RoomName::parse(doc_name(doc), &Limits::DEFAULT).expect("room name");
        let loaded = room::load_doc(&ctx, &name).ok();
        // What the load quarantined is out of the log for good.
        for q in store.quarantined(doc_name(doc)).expect("quarantined") {
            self.quarantined.insert((doc, q.seq));
        }
        let log: Vec<u64> = store
            .load(doc_name(doc))
            .expect("load")
            .updates
            .iter()
            .map(|(seq, _)| *seq)
            .collect();
        for seq in &log {
            assert!(
                !self.quarantined.contains(&(doc, *seq)),
                "quarantined update {seq} of {} is in the log again",
                doc_name(doc)
            );
        }
        let loaded = loaded?;
        let state = catch_unwind(AssertUnwindSafe(|| {
            loaded
                .doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default())
        }))
        .expect("a loaded document does not encode");
        assert!(
            Update::decode_v1(&state).is_ok(),
            "a loaded document's state does not decode"
        );
        let last = log.last().copied().unwrap_or(0);
        Some((loaded.doc, last))
    }
}

#[cfg(test)]
mod tests {
    //! Replays every committed corpus file and crash artifact of `server/fuzz` and
    //! `shared/fuzz` through the harnesses above, each input in a child process (this test
    //! binary, re-executed), so an abort or a segfault fails the test and names the input
    //! instead of killing the test runner.

    use std::path::PathBuf;
    use std::process::Command as Process;

    use super::TARGETS;
    use base64::Engine as _;

    /// Set in a child: `<target>:<path>` of the one input it runs.
    const INPUT_ENV: &str = "WEFT_FUZZ_REPLAY_INPUT";

    /// The committed inputs of `target`: its corpus, plus the artifacts kept as regressions.
    fn inputs(target: &str) -> Vec<PathBuf> {
        let server = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let root = if target == "decode_frame" {
            server.join("../shared/fuzz")
        } else {
            server.join("fuzz")
        };
        let mut out = Vec::new();
        for dir in [
            root.join("corpus").join(target),
            root.join("regressions").join(target),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.path().is_file() {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        out
    }

    /// Pseudo-target: one long-lived room fed every committed `room_messages` input, then
    /// [`SEQUENCE_MUTANTS`] seeded mutations of them, in one process. The room bugs the fuzzer
    /// found depend on the document's history, so no single input reproduces them alone.
    const SEQUENCE: &str = "room_sequence";

    /// Mutated inputs per sequence run (before the room fixes, the first failure came within
    /// 100 of them).
    const SEQUENCE_MUTANTS: usize = 600;

    /// Feeds the committed inputs, then mutations of them (bit flips, inserted, removed and
    /// spliced bytes, as libFuzzer makes them), to one room; panics on the first broken invariant.
    fn replay_room_sequence(seed: u64) {
        let corpus: Vec<Vec<u8>> = inputs("room_messages")
            .iter()
            .map(|p| std::fs::read(p).expect("reading the input"))
            .collect();
        for input in &corpus {
            super::room_messages(input);
        }
        // xorshift64: reproducible from the seed, no dependency.
        let mut state = seed.max(1);
        let mut next = move |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below.max(1) as u64) as usize
        };
        for n in 0..SEQUENCE_MUTANTS {
            let mut input = corpus[next(corpus.len())].clone();
            for _ in 0..1 + next(7) {
                match next(4) {
                    0 if !input.is_empty() => {
                        let at = next(input.len());
                        input[at] ^= 1 << next(8);
                    }
                    1 => input.insert(next(input.len() + 1), next(256) as u8),
                    2 if input.len() > 1 => {
                        input.remove(next(input.len()));
                    }
                    _ => {
                        let other = &corpus[next(corpus.len())];
                        let from = next(other.len());
                        let to = from + next(other.len() - from + 1);
                        let at = next(input.len() + 1);
                        input.splice(at..at, other[from..to].iter().copied());
                    }
                }
            }
            let run = std::panic::catch_unwind(|| super::room_messages(&input));
            if let Err(e) = run {
                let b64 = base64::engine::general_purpose::STANDARD.encode(&input);
                eprintln!("seed {seed}, mutant {n} broke the room; input (base64): {b64}");
                std::panic::resume_unwind(e);
            }
        }
    }

    /// Child side: runs the input named in the environment. Ignored in normal runs; the parent
    /// runs it with `--ignored --exact`.
    #[test]
    #[ignore = "run by replay_corpora_in_child_processes in a child process"]
    fn replay_one_input() {
        /// Removes the room's temporary directory however the test ends (a crash still leaves
        /// it behind).
        struct DropRoom;
        impl Drop for DropRoom {
            fn drop(&mut self) {
                super::room_messages_reset();
            }
        }
        let _drop_room = DropRoom;
        let spec = std::env::var(INPUT_ENV).expect("run by the parent test with an input");
        let (target, path) = spec.split_once(':').expect("target:path");
        // yrs draws every document's client id from this thread's generator: seeded, a replay
        // builds the same documents every time, so a failure here reproduces.
        fastrand::seed(0x5eed);
        if target == SEQUENCE {
            replay_room_sequence(path.parse().expect("a seed"));
            return;
        }
        let run = TARGETS
            .iter()
            .find(|(name, _)| *name == target)
            .map(|(_, f)| *f)
            .expect("known target");
        let data = std::fs::read(path).expect("reading the input");
        run(&data);
    }

    /// Runs `target` on `input` in a child process; the failure, described, if it failed.
    fn run_child(exe: &std::path::Path, target: &str, input: &str) -> Option<String> {
        // The child's temporary directories go in this one, removed when it is dropped below: a
        // child killed by a signal cannot remove its own.
        let scratch = super::temp_dir();
        let out = Process::new(exe)
            .env("RUST_BACKTRACE", "0")
            .args([
                "--ignored",
                "--exact",
                "testing::fuzzing::tests::replay_one_input",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(INPUT_ENV, format!("{target}:{input}"))
            .env(super::TEMP_DIR_ENV, scratch.path())
            .output()
            .expect("spawning the test binary");
        drop(scratch);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // libtest prints this only when the child really ran the one test.
        if out.status.success() && stdout.contains("1 passed") {
            return None;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr
            .lines()
            .chain(stdout.lines())
            .filter(|l| !l.trim().is_empty())
            .take(12)
            .collect::<Vec<_>>()
            .join("\n");
        Some(format!("{target} {input}: {}\n{tail}", out.status))
    }

    /// Every committed corpus input and crash artifact of every fuzz target runs clean in its
    /// own process; a crash of any kind fails this test and names the input.
    #[test]
    fn replay_corpora_in_child_processes() {
        let exe = std::env::current_exe().expect("test binary path");
        let mut failures = Vec::new();
        let mut ran = 0;
        for (target, _) in TARGETS {
            let inputs = inputs(target);
            assert!(!inputs.is_empty(), "no committed corpus for {target}");
            for input in inputs {
                if let Some(failure) = run_child(&exe, target, &input.display().to_string()) {
                    failures.push(failure);
                }
                ran += 1;
            }
        }
        for seed in [1, 2] {
            if let Some(failure) = run_child(&exe, SEQUENCE, &seed.to_string()) {
                failures.push(failure);
            }
            ran += 1;
        }
        assert!(
            failures.is_empty(),
            "{} of {ran} fuzz inputs failed:\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}
