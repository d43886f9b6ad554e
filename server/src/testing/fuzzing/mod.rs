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
//!
//! Files: `updates.rs` (seed edits and the mutations of real updates both harnesses use),
//! `room_ops.rs` (the room harness), `store_ops.rs` (the store harness), `tests.rs` (the replay
//! of every committed input, each in a child process). This module also has what the room's
//! unit tests and the benches share: [`DirectRoom`], [`detached_joiner`].

mod room_ops;
mod store_ops;
#[cfg(test)]
mod tests;
mod updates;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use tokio::sync::mpsc;
use weft_protocol::{Limits, Role, RoomName};

use crate::config::{Config, Durability};
use crate::metrics::Metrics;
use crate::outbox::{Data, Outbox};
use crate::room::registry::RoomContext;
use crate::room::{self, Room};
use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::store::commit::GroupCommit;
use crate::store::inflight::InFlight;
use crate::store::{SledStore, Store};
use room_ops::RoomHarness;
use store_ops::{StoreHarness, StoreOp};

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

/// Past this many stored bytes the long-lived document starts over, so executions stay fast.
const RESET_BYTES: u64 = 256 * 1024;

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

/// A current-thread runtime for a harness.
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
        crate::feed::Feed::in_memory(),
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
        hocuspocus: false,
    };
    (joiner, rx)
}
