//! The metadata cache of the sled store: one entry per document touched since open, holding its
//! metadata (written to disk lazily, see the [`store`](super) docs) and the lock that orders
//! operations on the document, plus which flush last covered its writes. How the store reads
//! and updates an entry is in `slots.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::keys::{doc_key, MetaRec, TAG_META};
use super::lock;
use super::StoreError;

/// Past this many cached documents, unused clean entries are dropped from the metadata cache.
const CACHE_SOFT_CAP: usize = 4096;

/// Cached state of one document; `meta == None` means the document does not exist.
#[derive(Default)]
pub(super) struct Slot {
    /// `meta` was read from disk (and repaired if needed).
    pub(super) loaded: bool,
    /// The document's metadata; `None` while it does not exist.
    pub(super) meta: Option<MetaRec>,
    /// The cached metadata is newer than the record on disk (and the entry is in the dirty list).
    pub(super) dirty: bool,
}

/// One document in the metadata cache.
pub(super) struct DocEntry {
    /// The document id.
    pub(super) id: String,
    /// Its cached state, locked while an operation on the document runs.
    pub(super) slot: Mutex<Slot>,
    /// The flush number that makes the document's last write durable (0: nothing written since
    /// open); see `SledStore::has_unflushed` in `slots.rs`.
    pub(super) written: AtomicU64,
}

/// The metadata cache: one entry per document touched since open (evicted when unused).
pub(super) struct Cache {
    /// Entries by document id.
    map: HashMap<String, Arc<DocEntry>>,
    /// Size at which unused entries are dropped next.
    evict_at: usize,
}

impl Cache {
    /// An empty cache.
    pub(super) fn new() -> Self {
        Self {
            map: HashMap::new(),
            evict_at: CACHE_SOFT_CAP,
        }
    }

    /// Returns the entry of `doc`, creating an unloaded one if needed. Past the soft cap, unused
    /// clean entries are dropped first; `completed` is the last flush that succeeded.
    pub(super) fn entry(&mut self, doc: &str, completed: u64) -> Arc<DocEntry> {
        if let Some(entry) = self.map.get(doc) {
            return Arc::clone(entry);
        }
        if self.map.len() >= self.evict_at {
            // Only the map holds an unused entry; in-use and dirty entries have more owners.
            // An entry with unflushed writes stays too: after a failed flush it is what tells
            // `load` that sled's copy of the document was never made durable.
            self.map.retain(|_, e| {
                Arc::strong_count(e) > 1 || e.written.load(Ordering::SeqCst) > completed
            });
            self.evict_at = CACHE_SOFT_CAP.max(self.map.len().saturating_mul(2));
        }
        let entry = Arc::new(DocEntry {
            id: doc.to_owned(),
            slot: Mutex::new(Slot::default()),
            written: AtomicU64::new(0),
        });
        self.map.insert(doc.to_owned(), Arc::clone(&entry));
        entry
    }

    /// Every entry, for merging cached metadata into a listing.
    pub(super) fn entries(&self) -> Vec<Arc<DocEntry>> {
        self.map.values().cloned().collect()
    }
}

/// Entries whose cached metadata is newer than the record on disk; shared with the flush thread.
pub(super) type DirtyList = Mutex<Vec<Arc<DocEntry>>>;

/// Writes every dirty metadata record (on the flush thread, before sled's flush). On error the
/// unwritten ones stay dirty.
pub(super) fn write_dirty_meta(docs: &sled::Tree, dirty: &DirtyList) -> Result<(), StoreError> {
    let pending = std::mem::take(&mut *lock(dirty));
    let mut rest = pending.into_iter();
    while let Some(entry) = rest.next() {
        let mut slot = lock(&entry.slot);
        if !slot.dirty {
            continue;
        }
        if let Some(meta) = &slot.meta {
            if let Err(e) = docs.insert(doc_key(TAG_META, &entry.id), meta.encode()) {
                drop(slot);
                let mut dirty = lock(dirty);
                dirty.push(entry);
                dirty.extend(rest);
                return Err(e.into());
            }
        }
        slot.dirty = false;
    }
    Ok(())
}
