//! The registry of open rooms and what they share: get-or-load a room by name, forget it when it
//! unloads, and the store, group commit, config and shutdown every room uses.

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
use crate::store::Store;

/// How many times a join retries a room that was unloading at that very moment.
const JOIN_RETRIES: usize = 5;

/// Everything rooms share, and the registry of the open ones.
pub(crate) struct RoomContext {
    /// Where documents live.
    pub(crate) store: Arc<dyn Store>,
    /// One flush for many writes.
    pub(crate) commit: GroupCommit,
    /// Limits, durability, timeouts.
    pub(crate) config: Arc<Config>,
    /// Stop signal and task tracker.
    pub(crate) shutdown: Shutdown,
    /// Room counters visible outside the server.
    pub(crate) stats: Stats,
    /// What `/metrics` and the dashboard report.
    pub(crate) metrics: Arc<Metrics>,
    /// In-flight marks around every yrs apply, and the hashes of updates that crashed it.
    pub(crate) inflight: Arc<InFlight>,
    rooms: Mutex<HashMap<RoomName, RoomHandle>>,
    generation: AtomicU64,
}

impl RoomContext {
    /// A context with no room open.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        commit: GroupCommit,
        config: Arc<Config>,
        shutdown: Shutdown,
        stats: Stats,
        metrics: Arc<Metrics>,
        inflight: Arc<InFlight>,
    ) -> Self {
        Self {
            store,
            commit,
            config,
            shutdown,
            stats,
            metrics,
            inflight,
            rooms: Mutex::new(HashMap::new()),
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
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let handle = Room::spawn(name.clone(), self.clone(), generation);
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

    /// Forgets the room `name` if the registered one is this `generation`.
    pub(crate) fn rooms_unregister(&self, name: &RoomName, generation: u64) {
        self.rooms_unregister_if(name, generation, || true);
    }

    /// Forgets the room if it is this `generation` and `cond()` holds, both checked under the
    /// registry lock so no join can find the room in between. Returns whether it was removed.
    pub(crate) fn rooms_unregister_if(
        &self,
        name: &RoomName,
        generation: u64,
        cond: impl FnOnce() -> bool,
    ) -> bool {
        let mut rooms = self.lock();
        let registered = rooms.get(name).is_some_and(|h| h.generation == generation);
        // When not registered (or a newer incarnation is), nothing can reach this one any more.
        let removable = cond();
        if registered && removable {
            rooms.remove(name);
        }
        removable
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

    /// Number of rooms loaded in memory.
    pub(crate) fn open_rooms(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, RoomHandle>> {
        // A panic while holding this lock cannot leave the map half-updated (single inserts and
        // removes), so a poisoned lock is still usable.
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }
}
