//! How the sled store reaches a document's cached metadata (`cache.rs`): the slot locked for
//! each operation, loaded and repaired from disk on first use, marked dirty for the flush
//! thread, and whether a flush has covered its writes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::cache::{DocEntry, Slot};
use super::keys::{doc_key, parse_seq, seq_prefix, MetaRec, TAG_META, TAG_UPDATE};
use super::lock;
use super::sled_store::SledStore;
use super::{now_ms, StoreError};

impl SledStore {
    /// Returns the cache entry of `doc`, creating an unloaded one if needed.
    fn entry(&self, doc: &str) -> Arc<DocEntry> {
        lock(&self.cache).entry(doc, self.flusher.completed())
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
