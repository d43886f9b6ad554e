//! The metadata cache of [`SledStore`]: one entry per document touched since open, holding its
//! metadata (written to disk lazily, see the [`store`](super) docs) and the lock that orders
//! operations on the document, plus which flush last covered its writes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::keys::{doc_key, parse_seq, seq_prefix, MetaRec, TAG_META, TAG_UPDATE};
use super::lock;
use super::sled_store::SledStore;
use super::{now_ms, StoreError};

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
    /// open); see [`SledStore::has_unflushed`].
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

    /// Every entry, for merging cached metadata into a listing.
    pub(super) fn entries(&self) -> Vec<Arc<DocEntry>> {
        self.map.values().cloned().collect()
    }
}

/// Entries whose cached metadata is newer than the record on disk; shared with the flush thread.
pub(super) type DirtyList = Mutex<Vec<Arc<DocEntry>>>;

impl SledStore {
    /// Returns the cache entry of `doc`, creating an unloaded one if needed.
    fn entry(&self, doc: &str) -> Arc<DocEntry> {
        let mut cache = lock(&self.cache);
        if let Some(entry) = cache.map.get(doc) {
            return Arc::clone(entry);
        }
        if cache.map.len() >= cache.evict_at {
            // Only the map holds an unused entry; in-use and dirty entries have more owners.
            // An entry with unflushed writes stays too: after a failed flush it is what tells
            // `load` that sled's copy of the document was never made durable.
            let completed = self.flusher.completed();
            cache.map.retain(|_, e| {
                Arc::strong_count(e) > 1 || e.written.load(Ordering::SeqCst) > completed
            });
            cache.evict_at = CACHE_SOFT_CAP.max(cache.map.len().saturating_mul(2));
        }
        let entry = Arc::new(DocEntry {
            id: doc.to_owned(),
            slot: Mutex::new(Slot::default()),
            written: AtomicU64::new(0),
        });
        cache.map.insert(doc.to_owned(), Arc::clone(&entry));
        entry
    }

    /// Runs `f` with the document's slot locked and its metadata loaded.
    pub(super) fn with_slot<T>(
        &self,
        doc: &str,
        f: impl FnOnce(&Arc<DocEntry>, &mut Slot) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        super::keys::check_doc(doc)?;
        let entry = self.entry(doc);
        let mut slot = lock(&entry.slot);
        if !slot.loaded {
            let (meta, repaired) = self.read_meta(doc)?;
            slot.meta = meta;
            slot.loaded = true;
            if repaired {
                self.mark_dirty(&entry, &mut slot);
            }
        }
        let existed = slot.meta.is_some();
        let result = f(&entry, &mut slot);
        match (existed, slot.meta.is_some()) {
            (false, true) => {
                self.doc_count.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.doc_count.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        result
    }

    /// Notes that the cached metadata of `entry` must be written at the next flush.
    pub(super) fn mark_dirty(&self, entry: &Arc<DocEntry>, slot: &mut Slot) {
        if !slot.dirty {
            slot.dirty = true;
            lock(&self.dirty).push(Arc::clone(entry));
        }
    }

    /// Reads the metadata record and reconciles `next_seq` with the last logged key.
    /// Returns whether the record needed repair.
    fn read_meta(&self, doc: &str) -> Result<(Option<MetaRec>, bool), StoreError> {
        let meta = match self.docs.get(doc_key(TAG_META, doc))? {
            Some(bytes) => Some(MetaRec::decode(doc, &bytes)?),
            None => None,
        };
        let prefix = seq_prefix(TAG_UPDATE, doc);
        let last_seq = match self.docs.scan_prefix(&prefix).keys().next_back() {
            Some(key) => Some(parse_seq(doc, &key?, prefix.len())?.0),
            None => None,
        };
        let after = |seq: u64| {
            seq.checked_add(1)
                .ok_or_else(|| StoreError::corrupt(doc, "sequence number overflow"))
        };
        match (meta, last_seq) {
            (Some(mut meta), Some(last)) if last >= meta.next_seq => {
                tracing::warn!(
                    doc,
                    last,
                    next_seq = meta.next_seq,
                    "repairing stale metadata"
                );
                meta.next_seq = after(last)?;
                Ok((Some(meta), true))
            }
            (None, Some(last)) => {
                tracing::warn!(doc, last, "update log without metadata; rebuilding it");
                let mut meta = MetaRec::new(now_ms());
                meta.next_seq = after(last)?;
                Ok((Some(meta), true))
            }
            (meta, _) => Ok((meta, false)),
        }
    }

    /// Whether `entry` has writes that no successful flush covered.
    pub(super) fn has_unflushed(&self, entry: &DocEntry) -> bool {
        entry.written.load(Ordering::SeqCst) > self.flusher.completed()
    }
}

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
