//! The offsets rooms add to the awareness clocks they relay, shared by every room and kept
//! increasing across restarts.
//!
//! Peers never forget a client id's clock: awareness.js ignores a state whose clock is not
//! above the one it holds, and keeps a removal's clock after the state is gone. A client that
//! comes back (a new socket, or the same socket after a server restart) announces itself with
//! the clock it had, which its peers already hold a removal at, so they would ignore it until
//! its 15 s renewal. The room therefore relays `clock + offset`, where each client id gets an
//! offset when it (re)appears: one above every offset handed out before, in this process or an
//! earlier one. Offsets come from a counter whose ceiling is reserved durably in the store in
//! blocks of [`BLOCK`]; a process starts at the previous ceiling, so it never reuses an offset
//! an earlier process may have used, crashed or not. The ceiling grows by one block per start
//! and per [`BLOCK`] announcements, so relayed clocks stay far below `u32::MAX` (the clock type
//! of yrs-based clients) for millions of restarts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tracing::warn;

use crate::store::Store;

/// Offsets reserved in the store at once.
const BLOCK: u64 = 1024;

/// Hands out strictly increasing awareness clock offsets (see the module doc).
pub(crate) struct ClockOffsets {
    /// The next offset to hand out.
    next: AtomicU64,
    /// Offsets below this are reserved durably.
    reserved: AtomicU64,
    /// A reservation is being written.
    reserving: AtomicBool,
    /// Where the reservation is kept; `None` keeps nothing (tests).
    store: Option<Arc<dyn Store>>,
}

impl ClockOffsets {
    /// Offsets above every one an earlier process reserved in `store`. A store that cannot
    /// reserve is logged and offsets start where its reservation stands, or at 0.
    pub(crate) fn start(store: Arc<dyn Store>) -> Arc<Self> {
        let base = store.reserve_awareness_offsets(BLOCK).unwrap_or_else(|e| {
            warn!(error = %e, "cannot reserve awareness clock offsets; presence may lag after restarts");
            0
        });
        Arc::new(ClockOffsets {
            next: AtomicU64::new(base),
            reserved: AtomicU64::new(base.saturating_add(BLOCK)),
            reserving: AtomicBool::new(false),
            store: Some(store),
        })
    }

    /// Offsets from `base` on, kept nowhere.
    #[cfg(test)]
    pub(crate) fn unpersisted(base: u64) -> Arc<Self> {
        Arc::new(ClockOffsets {
            next: AtomicU64::new(base),
            reserved: AtomicU64::new(u64::MAX),
            reserving: AtomicBool::new(false),
            store: None,
        })
    }

    /// A new offset, above every one handed out before. Reserves the next block in the
    /// background once half of this one is used, so the room never waits on the disk.
    pub(crate) fn take(self: &Arc<Self>) -> u64 {
        let offset = self.next.fetch_add(1, Ordering::SeqCst);
        let reserved = self.reserved.load(Ordering::SeqCst);
        if offset.saturating_add(BLOCK / 2) >= reserved
            && !self.reserving.swap(true, Ordering::SeqCst)
        {
            let this = self.clone();
            let reserve = move || this.reserve_block();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(reserve)),
                Err(_) => reserve(),
            }
        }
        offset
    }

    /// Reserves one more block in the store.
    fn reserve_block(&self) {
        if let Some(store) = &self.store {
            match store.reserve_awareness_offsets(BLOCK) {
                Ok(old) => {
                    let ceiling = old.saturating_add(BLOCK);
                    self.reserved.fetch_max(ceiling, Ordering::SeqCst);
                }
                Err(e) => warn!(error = %e, "cannot reserve awareness clock offsets"),
            }
        }
        self.reserving.store(false, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for ClockOffsets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClockOffsets")
            .field("next", &self.next.load(Ordering::Relaxed))
            .field("reserved", &self.reserved.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    /// A restarted process hands out offsets above every one the previous process used, also
    /// past the first block.
    #[test]
    fn offsets_grow_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut last = 0;
        for _ in 0..3 {
            let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("open"));
            let offsets = ClockOffsets::start(store);
            let first = offsets.take();
            assert!(first >= last, "offset {first} after {last}");
            for _ in 0..BLOCK * 2 {
                let next = offsets.take();
                assert!(next > last);
                last = next;
            }
            // Let a background reservation finish before the store closes.
            while offsets.reserving.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            last += 1;
        }
    }
}
