//! Live counters the server keeps about itself, readable while it runs: how many documents are
//! loaded, and how often rooms were loaded and unloaded. Tests and operators use them to see that
//! memory tracks open documents, not every document ever opened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A cheap, cloneable view of the server's room counters.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    rooms_loaded: AtomicU64,
    rooms_closed: AtomicU64,
}

impl Stats {
    /// Documents loaded in memory right now.
    pub fn open_rooms(&self) -> u64 {
        // Read closed first: a room closing between the two reads can only undercount.
        let closed = self.inner.rooms_closed.load(Ordering::Acquire);
        self.rooms_loaded().saturating_sub(closed)
    }

    /// Rooms loaded from the store since start (a reload after an idle unload counts again).
    pub fn rooms_loaded(&self) -> u64 {
        self.inner.rooms_loaded.load(Ordering::Acquire)
    }

    /// Rooms that left memory since start (idle unload, load failure or shutdown).
    pub fn rooms_closed(&self) -> u64 {
        self.inner.rooms_closed.load(Ordering::Acquire)
    }

    pub(crate) fn room_loaded(&self) {
        self.inner.rooms_loaded.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn room_closed(&self) {
        self.inner.rooms_closed.fetch_add(1, Ordering::AcqRel);
    }
}
