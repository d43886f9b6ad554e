//! The registry of open rooms and what they share: get-or-load a room by name, and the store,
//! durable log, config and shutdown every room uses.
//!
//! The registry calls the room (it spawns it); the room never calls the registry. Each room
//! gets a [`Registration`] when it is spawned, its entry in the registry, and gives it up
//! (`release`, or `release_if` under the registry's lock) when it stops: nothing in the room
//! names the registry's map or its lock.
//!
//! One document has at most one incarnation writing to the store at a time. A room that left
//! the registry may still be writing (its last flush, the compaction of an idle unload); the
//! registry remembers it as stopping until its registration is dropped, and a new incarnation of
//! the same name waits for that before it loads. Otherwise a delete served by the new one could
//! be undone by the old one's compaction writing the snapshot back.
//!
//! The context also keeps the token revocations (loaded from the store once, so authorizing
//! never reads the disk) and the connections admitted with a token, by document: a revocation
//! closes those whose token it covers. Tokens are the connections' business, not the room's:
//! the room never sees them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use weft_protocol::RoomName;

use tracing::error;
use weft_protocol::CloseCode;

use crate::config::Config;
use crate::feed::Feed;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::room::authors::ANONYMOUS;
use crate::room::clocks::ClockOffsets;
use crate::room::history::History;
use crate::room::{ApiOp, ApiOpError, ApiReply, ConnId, JoinError, Joiner, Room, RoomHandle};
use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::store::commit::GroupCommit;
use crate::store::inflight::InFlight;
use crate::store::log::{DurableLog, StoreLog};
use crate::store::Store;
use crate::token::{unix_now, Revocations};

/// How many times a join retries a room that was unloading at that very moment.
const JOIN_RETRIES: usize = 5;

/// Everything rooms share, and the registry of the open ones.
pub(crate) struct RoomContext {
    /// Where documents live: snapshots, metadata, quarantine, deletion, loading.
    pub(crate) store: Arc<dyn Store>,
    /// Where rooms append their updates and learn when they are durable.
    pub(crate) log: Arc<dyn DurableLog>,
    /// Limits, durability, timeouts.
    pub(crate) config: Arc<Config>,
    /// Stop signal and task tracker.
    pub(crate) shutdown: Shutdown,
    /// Room counters visible outside the server; the one count of open rooms.
    pub(crate) stats: Stats,
    /// What `/metrics` and the dashboard report.
    pub(crate) metrics: Arc<Metrics>,
    /// In-flight marks around every yrs apply, and the hashes of updates that crashed it.
    pub(crate) inflight: Arc<InFlight>,
    /// The documents' version histories (`None` when the store keeps none).
    pub(crate) history: Option<History>,
    /// Which documents' tokens are revoked, and since when (a copy of the store's record).
    pub(crate) revocations: Revocations,
    /// The connections admitted with a token, by document.
    pub(crate) tokens: Arc<LiveTokens>,
    /// The change feed rooms report their changes to.
    pub(crate) feed: Arc<Feed>,
    /// Where rooms take the offsets of the awareness clocks they relay.
    pub(crate) clocks: Arc<ClockOffsets>,
    rooms: Arc<Rooms>,
    generation: AtomicU64,
}

/// The connections admitted with a token, by document, with when their token was minted: what
/// a revocation closes.
#[derive(Default)]
pub(crate) struct LiveTokens(Mutex<TokenHolders>);

/// Per document, each connection admitted with a token: when it was minted, and the outbox that
/// closes the connection.
type TokenHolders = HashMap<RoomName, HashMap<ConnId, (u64, Outbox)>>;

/// A connection's entry in [`LiveTokens`], removed when dropped.
pub(crate) struct TokenHold {
    tokens: Arc<LiveTokens>,
    room: RoomName,
    conn: ConnId,
}

impl LiveTokens {
    /// Enters connection `conn` to `room`, admitted with a token minted at `iat`, closed through
    /// `outbox` if revoked; it stays until the returned hold is dropped.
    pub(crate) fn hold(
        self: &Arc<Self>,
        room: &RoomName,
        conn: ConnId,
        iat: u64,
        outbox: Outbox,
    ) -> TokenHold {
        let mut map = self.lock();
        map.entry(room.clone())
            .or_default()
            .insert(conn, (iat, outbox));
        TokenHold {
            tokens: self.clone(),
            room: room.clone(),
            conn,
        }
    }

    /// Closes `room`'s connections whose token was minted before `before` with 4401
    /// `token_revoked`; returns how many.
    pub(crate) fn close_before(&self, room: &RoomName, before: u64) -> u32 {
        let map = self.lock();
        let Some(conns) = map.get(room) else {
            return 0;
        };
        let mut closed = 0;
        for (iat, outbox) in conns.values() {
            if *iat < before {
                outbox.close(CloseCode::Unauthorized, "token_revoked");
                closed += 1;
            }
        }
        closed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TokenHolders> {
        // Single inserts and removes: a panic cannot leave the map half-updated.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for TokenHold {
    fn drop(&mut self) {
        let mut map = self.tokens.lock();
        if let Some(conns) = map.get_mut(&self.room) {
            conns.remove(&self.conn);
            if conns.is_empty() {
                map.remove(&self.room);
            }
        }
    }
}

/// The open rooms by name, and those that left the registry but have not stopped yet.
type Rooms = Mutex<Entries>;

/// What the registry's lock guards.
#[derive(Default)]
struct Entries {
    /// Rooms that joins and requests reach.
    open: HashMap<RoomName, RoomHandle>,
    /// Rooms that left the registry and may still write (a last flush, a compaction), by name.
    stopping: HashMap<RoomName, RoomHandle>,
}

/// A room's entry in the registry, handed to the room when it is spawned. The room gives it up
/// to leave the registry; only the incarnation it was made for is ever removed, so a newer
/// incarnation registered under the same name stays. Giving it up twice changes nothing.
/// Dropping it (when the room has stopped) tells a newer incarnation waiting to load.
pub(crate) struct Registration {
    rooms: Arc<Rooms>,
    name: RoomName,
    generation: u64,
    /// Dropped with the registration: closes the channel [`Stopped`] waits on.
    alive: watch::Sender<()>,
}

/// Resolves once a room incarnation has stopped (its registration was dropped).
#[derive(Clone)]
pub(crate) struct Stopped(watch::Receiver<()>);

impl Stopped {
    /// Waits until the incarnation has stopped.
    pub(crate) async fn wait(mut self) {
        // `changed` fails only once the sender is gone; nothing is ever sent on it.
        while self.0.changed().await.is_ok() {}
    }
}

impl Registration {
    /// The registered room's name.
    pub(crate) fn name(&self) -> &RoomName {
        &self.name
    }

    /// Which incarnation of the name this is.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Leaves the registry now.
    pub(crate) fn release(&self) {
        self.release_if(|| true);
    }

    /// Leaves the registry if `cond()` holds, checked under the registry lock together with
    /// the generation so no join can find the room in between. Returns whether `cond()` held
    /// (when another incarnation is registered, nothing can reach this one any more). The room
    /// stays known as stopping until the registration is dropped.
    pub(crate) fn release_if(&self, cond: impl FnOnce() -> bool) -> bool {
        let mut rooms = lock(&self.rooms);
        let registered = rooms
            .open
            .get(&self.name)
            .is_some_and(|h| h.generation == self.generation);
        let removable = cond();
        if registered && removable {
            if let Some(handle) = rooms.open.remove(&self.name) {
                rooms.stopping.insert(self.name.clone(), handle);
            }
        }
        removable
    }

    /// What a newer incarnation waits on before it loads.
    pub(crate) fn stopped(&self) -> Stopped {
        Stopped(self.alive.subscribe())
    }

    /// A registration in no registry, for a room driven by its caller (harnesses).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn detached(name: RoomName) -> Self {
        Self {
            rooms: Arc::default(),
            name,
            generation: 0,
            alive: watch::channel(()).0,
        }
    }
}

impl Drop for Registration {
    // The registry never holds its lock where a registration can be dropped: rooms are
    // spawned only after `get_or_spawn` unlocked it.
    fn drop(&mut self) {
        let mut rooms = lock(&self.rooms);
        let ours = |h: &RoomHandle| h.generation == self.generation;
        if rooms.stopping.get(&self.name).is_some_and(ours) {
            rooms.stopping.remove(&self.name);
        }
        // A room that stopped without leaving (its task panicked) must not stay reachable.
        if rooms.open.get(&self.name).is_some_and(ours) {
            rooms.open.remove(&self.name);
        }
    }
}

/// Locks the registry's maps.
fn lock(rooms: &Rooms) -> std::sync::MutexGuard<'_, Entries> {
    // A panic while holding this lock cannot leave the map half-updated (single inserts and
    // removes), so a poisoned lock is still usable.
    rooms.lock().unwrap_or_else(|p| p.into_inner())
}

impl RoomContext {
    /// A context with no room open, whose rooms log their updates to `store` and make them
    /// durable through `commit`.
    // Each argument is one of the parts rooms share, made by the server's wiring.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Arc<dyn Store>,
        commit: GroupCommit,
        config: Arc<Config>,
        shutdown: Shutdown,
        stats: Stats,
        metrics: Arc<Metrics>,
        inflight: Arc<InFlight>,
        feed: Arc<Feed>,
    ) -> Self {
        let log = Arc::new(StoreLog::new(store.clone(), commit));
        Self {
            revocations: load_revocations(store.as_ref()),
            history: store.history().map(History::new),
            clocks: ClockOffsets::start(store.clone()),
            tokens: Arc::default(),
            store,
            log,
            config,
            shutdown,
            stats,
            metrics,
            inflight,
            feed,
            rooms: Arc::default(),
            generation: AtomicU64::new(1),
        }
    }

    /// The running room called `name`, loading it if it is not open.
    /// A new incarnation waits until the previous one (still open with its mailbox closed, or
    /// stopping) has stopped writing before it loads.
    pub(crate) fn get_or_spawn(self: &Arc<Self>, name: &RoomName) -> RoomHandle {
        let (handle, task) = {
            let mut rooms = self.lock();
            let previous = match rooms.open.get(name) {
                Some(handle) if !handle.is_closed() => return handle.clone(),
                Some(handle) => Some(handle.stopped()),
                None => rooms.stopping.get(name).map(RoomHandle::stopped),
            };
            let registration = Registration {
                rooms: self.rooms.clone(),
                name: name.clone(),
                generation: self.generation.fetch_add(1, Ordering::Relaxed),
                alive: watch::channel(()).0,
            };
            let (handle, task) = Room::start(self.clone(), registration, previous);
            rooms.open.insert(name.clone(), handle.clone());
            (handle, task)
        };
        // Outside the lock: a runtime that is shutting down drops the task (and with it the
        // registration, whose drop takes the lock) inside `spawn`.
        self.shutdown.spawn(task);
        handle
    }

    /// Joins `name`, retrying when the room unloads between lookup and join.
    pub(crate) async fn join(
        self: &Arc<Self>,
        name: &RoomName,
        joiner: Joiner,
    ) -> Result<RoomHandle, JoinError> {
        let mut last = JoinError::Gone;
        for _ in 0..JOIN_RETRIES {
            let room = self.get_or_spawn(name);
            match room.join(joiner.clone()).await {
                Ok(()) => return Ok(room),
                Err(JoinError::Gone) => last = JoinError::Gone,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Runs an API request in the room `name` (loading it), retrying when the room unloads
    /// between lookup and delivery. Requests are delivered at most once.
    pub(crate) async fn api(
        self: &Arc<Self>,
        name: &RoomName,
        op: ApiOp,
    ) -> Result<ApiReply, ApiOpError> {
        self.api_by(name, op, ANONYMOUS).await
    }

    /// [`RoomContext::api`], its writes attributed to `author`.
    pub(crate) async fn api_by(
        self: &Arc<Self>,
        name: &RoomName,
        op: ApiOp,
        author: &str,
    ) -> Result<ApiReply, ApiOpError> {
        let mut op = op;
        for _ in 0..JOIN_RETRIES {
            let room = self.get_or_spawn(name);
            match room.api(op, author).await {
                Ok(result) => return result,
                Err(returned) => op = returned,
            }
        }
        Err(ApiOpError::Unavailable(
            "the document kept unloading; try again".into(),
        ))
    }

    /// Refuses `room`'s tokens minted before `before` from now on (the store has recorded it)
    /// and closes the connections admitted with one; returns how many were closed.
    pub(crate) fn revoked(&self, room: &RoomName, before: u64) -> u32 {
        // Recorded first: a connection that registers after the sweep checks the record.
        self.revocations.record(room.as_str(), before);
        self.tokens.close_before(room, before)
    }

    /// Connections per open room, by room name.
    pub(crate) fn live_users(&self) -> HashMap<String, u32> {
        self.lock()
            .open
            .iter()
            .filter(|(_, h)| !h.is_closed())
            .map(|(name, h)| (name.as_str().to_owned(), h.users()))
            .collect()
    }

    /// Every open room with its vital signs, in no particular order.
    pub(crate) fn live_rooms(&self) -> Vec<(String, RoomHandle)> {
        self.lock()
            .open
            .iter()
            .filter(|(_, h)| !h.is_closed())
            .map(|(name, h)| (name.as_str().to_owned(), h.clone()))
            .collect()
    }

    /// Number of rooms loaded in memory: [`Stats::open_rooms`], the one count of them.
    pub(crate) fn open_rooms(&self) -> usize {
        usize::try_from(self.stats.open_rooms()).unwrap_or(usize::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        lock(&self.rooms)
    }
}

/// The store's revocations; when they cannot be read, every token minted before now is
/// refused (on every document) rather than a revoked one admitted.
fn load_revocations(store: &dyn Store) -> Revocations {
    match store.revocations() {
        Ok(stored) => Revocations::new(stored),
        Err(e) => {
            error!(error = %e, "reading token revocations failed: refusing every token minted before now");
            Revocations::everything_before(unix_now())
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;
    use weft_protocol::Limits;

    use super::*;

    /// A registration removes its own incarnation only, and only when its condition holds: an
    /// older incarnation stopping late leaves the newer one registered.
    #[test]
    fn a_registration_removes_only_its_own_incarnation() {
        let rooms: Arc<Rooms> = Arc::default();
        let name = RoomName::parse("r", &Limits::DEFAULT).expect("room name");
        let registration = |generation| Registration {
            rooms: rooms.clone(),
            name: name.clone(),
            generation,
            alive: watch::channel(()).0,
        };
        let current = registration(2);
        let handle = RoomHandle::new(mpsc::channel(1).0, 2, current.stopped(), Arc::default());
        lock(&rooms).open.insert(name.clone(), handle);

        registration(1).release();
        assert!(
            lock(&rooms).open.contains_key(&name),
            "an older one removed it"
        );
        assert!(!current.release_if(|| false));
        assert!(lock(&rooms).open.contains_key(&name), "removed though busy");
        assert!(current.release_if(|| true));
        assert!(lock(&rooms).open.is_empty());
        assert!(
            lock(&rooms).stopping.contains_key(&name),
            "not known as stopping"
        );
        drop(current);
        assert!(
            lock(&rooms).stopping.is_empty(),
            "still stopping once dropped"
        );
    }

    /// A new incarnation's wait for the previous one ends when the previous registration is
    /// dropped, not when it leaves the registry.
    #[tokio::test]
    async fn stopped_resolves_when_the_registration_is_dropped() {
        let name = RoomName::parse("r", &Limits::DEFAULT).expect("room name");
        let registration = Registration::detached(name);
        let stopped = registration.stopped();
        registration.release();
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), stopped.clone().wait());
        assert!(early.await.is_err(), "resolved while the room still runs");
        drop(registration);
        stopped.wait().await;
    }
}
