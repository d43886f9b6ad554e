//! The registry of open rooms and what they share: get-or-load a room by name, and the store,
//! durable log, config and shutdown every room uses.
//!
//! The registry calls the room (it spawns it); the room never calls the registry. Each room
//! gets a [`Registration`] when it is spawned, its entry in the registry, and gives it up
//! (`release`, or `release_if` under the registry's lock) when it stops: nothing in the room
//! names the registry's map or its lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use weft_protocol::RoomName;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::room::{ApiOp, ApiOpError, ApiReply, JoinError, Joiner, Room, RoomHandle};
use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::store::commit::GroupCommit;
use crate::store::inflight::InFlight;
use crate::store::log::{DurableLog, StoreLog};
use crate::store::Store;

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
    rooms: Arc<Rooms>,
    generation: AtomicU64,
}

/// The open rooms by name.
type Rooms = Mutex<HashMap<RoomName, RoomHandle>>;

/// A room's entry in the registry, handed to the room when it is spawned. The room gives it up
/// to leave the registry; only the incarnation it was made for is ever removed, so a newer
/// incarnation registered under the same name stays. Giving it up twice changes nothing.
pub(crate) struct Registration {
    rooms: Arc<Rooms>,
    name: RoomName,
    generation: u64,
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
    /// (when another incarnation is registered, nothing can reach this one any more).
    pub(crate) fn release_if(&self, cond: impl FnOnce() -> bool) -> bool {
        let mut rooms = lock(&self.rooms);
        let registered = rooms
            .get(&self.name)
            .is_some_and(|h| h.generation == self.generation);
        let removable = cond();
        if registered && removable {
            rooms.remove(&self.name);
        }
        removable
    }

    /// A registration in no registry, for a room driven by its caller (harnesses).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn detached(name: RoomName) -> Self {
        Self {
            rooms: Arc::default(),
            name,
            generation: 0,
        }
    }
}

/// Locks the map of open rooms.
fn lock(rooms: &Rooms) -> std::sync::MutexGuard<'_, HashMap<RoomName, RoomHandle>> {
    // A panic while holding this lock cannot leave the map half-updated (single inserts and
    // removes), so a poisoned lock is still usable.
    rooms.lock().unwrap_or_else(|p| p.into_inner())
}

impl RoomContext {
    /// A context with no room open, whose rooms log their updates to `store` and make them
    /// durable through `commit`.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        commit: GroupCommit,
        config: Arc<Config>,
        shutdown: Shutdown,
        stats: Stats,
        metrics: Arc<Metrics>,
        inflight: Arc<InFlight>,
    ) -> Self {
        let log = Arc::new(StoreLog::new(store.clone(), commit));
        Self {
            store,
            log,
            config,
            shutdown,
            stats,
            metrics,
            inflight,
            rooms: Arc::default(),
            generation: AtomicU64::new(1),
        }
    }

    /// The running room called `name`, loading it if it is not open.
    pub(crate) fn get_or_spawn(self: &Arc<Self>, name: &RoomName) -> RoomHandle {
        let mut rooms = self.lock();
        if let Some(handle) = rooms.get(name) {
            if !handle.is_closed() {
                return handle.clone();
            }
        }
        let registration = Registration {
            rooms: self.rooms.clone(),
            name: name.clone(),
            generation: self.generation.fetch_add(1, Ordering::Relaxed),
        };
        let handle = Room::spawn(self.clone(), registration);
        rooms.insert(name.clone(), handle.clone());
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
        let mut op = op;
        for _ in 0..JOIN_RETRIES {
            let room = self.get_or_spawn(name);
            match room.api(op).await {
                Ok(result) => return result,
                Err(returned) => op = returned,
            }
        }
        Err(ApiOpError::Unavailable(
            "the document kept unloading; try again".into(),
        ))
    }

    /// Connections per open room, by room name.
    pub(crate) fn live_users(&self) -> HashMap<String, u32> {
        self.lock()
            .iter()
            .filter(|(_, h)| !h.is_closed())
            .map(|(name, h)| (name.as_str().to_owned(), h.users()))
            .collect()
    }

    /// Every open room with its vital signs, in no particular order.
    pub(crate) fn live_rooms(&self) -> Vec<(String, RoomHandle)> {
        self.lock()
            .iter()
            .filter(|(_, h)| !h.is_closed())
            .map(|(name, h)| (name.as_str().to_owned(), h.clone()))
            .collect()
    }

    /// Number of rooms loaded in memory: [`Stats::open_rooms`], the one count of them.
    pub(crate) fn open_rooms(&self) -> usize {
        usize::try_from(self.stats.open_rooms()).unwrap_or(usize::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, RoomHandle>> {
        lock(&self.rooms)
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
        };
        let handle = RoomHandle::new(mpsc::channel(1).0, 2, Arc::default());
        lock(&rooms).insert(name.clone(), handle);

        registration(1).release();
        assert!(lock(&rooms).contains_key(&name), "an older one removed it");
        let current = registration(2);
        assert!(!current.release_if(|| false));
        assert!(lock(&rooms).contains_key(&name), "removed though busy");
        assert!(current.release_if(|| true));
        assert!(lock(&rooms).is_empty());
    }
}
