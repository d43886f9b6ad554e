//! [`SledStore`]: the [`Store`] on an embedded sled database, with its per-document metadata
//! cache. Opening lives in `open.rs`, fsyncs in `fsync.rs`, key and record encodings in
//! `keys.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use weft_protocol::RoomName;

use super::fsync::SyncState;
use super::keys::{
    check_doc, corrupt, decode_quarantine, doc_key, encode_quarantine, parse_seq, seq_key,
    seq_prefix, MetaRec, PROBE_KEY, TAG_META, TAG_QUARANTINE, TAG_REFUSED, TAG_SNAPSHOT,
    TAG_UPDATE,
};
use super::{now_ms, DocMeta, QuarantinedUpdate, Store, StoreError, StoredDoc};

/// Past this many cached documents, unused clean entries are dropped from the metadata cache.
const CACHE_SOFT_CAP: usize = 4096;

pub(super) fn len_u64(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

/// Locks `mutex`, also when a panic poisoned it.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Cached state is changed only after the sled call it mirrors succeeded, so a panic while the
    // lock was held cannot have left it half-updated.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Cached state of one document; `meta == None` means the document does not exist.
#[derive(Default)]
pub(super) struct Slot {
    /// `meta` was read from disk (and repaired if needed).
    loaded: bool,
    /// The document's metadata; `None` while it does not exist.
    pub(super) meta: Option<MetaRec>,
    /// The cached metadata is newer than the record on disk (and the entry is in the dirty list).
    pub(super) dirty: bool,
}

/// One document in the metadata cache.
pub(super) struct DocEntry {
    /// The document id.
    id: String,
    /// Its cached state, locked while an operation on the document runs.
    slot: Mutex<Slot>,
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
}

/// [`Store`] backed by an embedded sled database in one data directory.
///
/// Lock order: `cache` is never held while a slot is locked; a slot may be held while `dirty` is
/// locked, never the reverse; `sync` is taken before everything else.
pub struct SledStore {
    /// The data directory.
    pub(super) path: PathBuf,
    /// The database (its default tree holds the marker key).
    pub(super) db: sled::Db,
    /// The tree holding every document record (layout in the module docs).
    pub(super) docs: sled::Tree,
    /// Metadata cache.
    pub(super) cache: Mutex<Cache>,
    /// Entries whose cached metadata is newer than the record on disk.
    pub(super) dirty: Mutex<Vec<Arc<DocEntry>>>,
    /// What `flush` syncs after sled's own flush.
    pub(super) sync: Mutex<SyncState>,
    /// Documents with metadata: counted once at open, then kept as documents come and go.
    pub(super) doc_count: AtomicU64,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Writes a title; an automatic one (`pin == false`) never replaces a pinned one.
    fn write_title(&self, doc: &str, title: &str, pin: bool) -> Result<(), StoreError> {
        self.with_slot(doc, |_, slot| {
            let now = now_ms();
            let mut meta = slot.meta.clone().unwrap_or_else(|| MetaRec::new(now));
            if meta.title_pinned && !pin {
                return Ok(());
            }
            meta.title_pinned |= pin;
            meta.title = Some(title.to_owned());
            meta.updated_ms = now;
            self.docs.insert(doc_key(TAG_META, doc), meta.encode())?;
            slot.meta = Some(meta);
            slot.dirty = false;
            Ok(())
        })
    }

    /// The data directory this store was opened on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lists the quarantined updates of `doc`, ascending by sequence number.
    ///
    /// # Errors
    /// Backend errors, or [`StoreError::Corrupt`] for an undecodable record.
    pub fn quarantined(&self, doc: &RoomName) -> Result<Vec<QuarantinedUpdate>, StoreError> {
        let doc = doc.as_str();
        check_doc(doc)?;
        let prefix = seq_prefix(TAG_QUARANTINE, doc);
        let mut out = Vec::new();
        for kv in self.docs.scan_prefix(&prefix) {
            let (key, value) = kv?;
            let seq = parse_seq(doc, &key, prefix.len())?;
            out.push(decode_quarantine(doc, seq, &value)?);
        }
        Ok(out)
    }

    /// Returns the cache entry of `doc`, creating an unloaded one if needed.
    fn entry(&self, doc: &str) -> Arc<DocEntry> {
        let mut cache = lock(&self.cache);
        if let Some(entry) = cache.map.get(doc) {
            return Arc::clone(entry);
        }
        if cache.map.len() >= cache.evict_at {
            // Only the map holds an unused entry; in-use and dirty entries have more owners.
            cache.map.retain(|_, e| Arc::strong_count(e) > 1);
            cache.evict_at = CACHE_SOFT_CAP.max(cache.map.len().saturating_mul(2));
        }
        let entry = Arc::new(DocEntry {
            id: doc.to_owned(),
            slot: Mutex::new(Slot::default()),
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
        check_doc(doc)?;
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

    fn mark_dirty(&self, entry: &Arc<DocEntry>, slot: &mut Slot) {
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
            Some(key) => Some(parse_seq(doc, &key?, prefix.len())?),
            None => None,
        };
        let after = |seq: u64| {
            seq.checked_add(1)
                .ok_or_else(|| corrupt(doc, "sequence number overflow"))
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

    /// Writes every dirty metadata record. On error the unwritten ones stay dirty.
    fn write_dirty_meta(&self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut *lock(&self.dirty));
        let mut rest = pending.into_iter();
        while let Some(entry) = rest.next() {
            let mut slot = lock(&entry.slot);
            if !slot.dirty {
                continue;
            }
            if let Some(meta) = &slot.meta {
                if let Err(e) = self
                    .docs
                    .insert(doc_key(TAG_META, &entry.id), meta.encode())
                {
                    drop(slot);
                    let mut dirty = lock(&self.dirty);
                    dirty.push(entry);
                    dirty.extend(rest);
                    return Err(e.into());
                }
            }
            slot.dirty = false;
        }
        Ok(())
    }
}

impl Store for SledStore {
    fn load(&self, doc: &RoomName) -> Result<StoredDoc, StoreError> {
        let doc = doc.as_str();
        // Under the slot lock, so a concurrent compaction cannot interleave snapshot and log.
        self.with_slot(doc, |entry, slot| {
            let snapshot = self
                .docs
                .get(doc_key(TAG_SNAPSHOT, doc))?
                .map(|s| s.to_vec());
            let prefix = seq_prefix(TAG_UPDATE, doc);
            let mut updates = Vec::new();
            let mut log_bytes = 0u64;
            for kv in self.docs.scan_prefix(&prefix) {
                let (key, value) = kv?;
                let seq = parse_seq(doc, &key, prefix.len())?;
                log_bytes = log_bytes.saturating_add(len_u64(&value));
                updates.push((seq, value.to_vec()));
            }
            // Repair sizes that a crash between append and flush may have left stale.
            let snapshot_len = snapshot.as_deref().map_or(0, len_u64);
            if let Some(meta) = slot.meta.as_mut() {
                let size = snapshot_len.saturating_add(log_bytes);
                if meta.size_bytes != size || meta.snapshot_len != snapshot_len {
                    tracing::debug!(doc, old = meta.size_bytes, new = size, "repairing size");
                    meta.size_bytes = size;
                    meta.snapshot_len = snapshot_len;
                    self.mark_dirty(entry, slot);
                }
            }
            Ok(StoredDoc { snapshot, updates })
        })
    }

    fn append(&self, doc: &RoomName, update: &[u8]) -> Result<u64, StoreError> {
        let doc = doc.as_str();
        self.with_slot(doc, |entry, slot| {
            let now = now_ms();
            if let Some(meta) = slot.meta.as_mut() {
                let seq = meta.next_seq;
                let next = seq
                    .checked_add(1)
                    .ok_or_else(|| corrupt(doc, "sequence overflow"))?;
                self.docs.insert(seq_key(TAG_UPDATE, doc, seq), update)?;
                meta.next_seq = next;
                meta.size_bytes = meta.size_bytes.saturating_add(len_u64(update));
                meta.updated_ms = now;
                self.mark_dirty(entry, slot);
                Ok(seq)
            } else {
                // First append: the metadata goes in the same batch, so the document is listed.
                let mut meta = MetaRec::new(now);
                meta.next_seq = 2;
                meta.size_bytes = len_u64(update);
                let mut batch = sled::Batch::default();
                batch.insert(seq_key(TAG_UPDATE, doc, 1), update);
                batch.insert(doc_key(TAG_META, doc), meta.encode());
                self.docs.apply_batch(batch)?;
                slot.meta = Some(meta);
                slot.dirty = false;
                Ok(1)
            }
        })
    }

    fn compact(
        &self,
        doc: &RoomName,
        snapshot: &[u8],
        upto_seq: u64,
        title: Option<&str>,
    ) -> Result<(), StoreError> {
        let doc = doc.as_str();
        self.with_slot(doc, |_, slot| {
            let mut meta = slot.meta.clone().unwrap_or_else(|| MetaRec::new(now_ms()));
            let prefix_len = seq_prefix(TAG_UPDATE, doc).len();
            let mut batch = sled::Batch::default();
            let mut removed = 0u64;
            let mut count = 0usize;
            let range = seq_key(TAG_UPDATE, doc, 0)..=seq_key(TAG_UPDATE, doc, upto_seq);
            for kv in self.docs.range(range) {
                let (key, value) = kv?;
                parse_seq(doc, &key, prefix_len)?;
                removed = removed.saturating_add(len_u64(&value));
                count += 1;
                batch.remove(key);
            }
            batch.insert(doc_key(TAG_SNAPSHOT, doc), snapshot);
            meta.size_bytes = meta
                .size_bytes
                .saturating_sub(meta.snapshot_len)
                .saturating_sub(removed)
                .saturating_add(len_u64(snapshot));
            meta.snapshot_len = len_u64(snapshot);
            if let Some(title) = title.filter(|_| !meta.title_pinned) {
                meta.title = Some(title.to_owned());
            }
            batch.insert(doc_key(TAG_META, doc), meta.encode());
            self.docs.apply_batch(batch)?;
            tracing::debug!(
                doc,
                upto_seq,
                removed_updates = count,
                snapshot = snapshot.len(),
                "compacted"
            );
            slot.meta = Some(meta);
            slot.dirty = false;
            Ok(())
        })
    }

    fn quarantine(&self, doc: &RoomName, seq: u64, reason: &str) -> Result<(), StoreError> {
        let doc = doc.as_str();
        self.with_slot(doc, |_, slot| {
            let key = seq_key(TAG_UPDATE, doc, seq);
            let Some(update) = self.docs.get(&key)? else {
                tracing::warn!(doc, seq, "quarantine: update is not in the log");
                return Ok(());
            };
            let now = now_ms();
            let mut meta = slot.meta.clone().unwrap_or_else(|| MetaRec::new(now));
            meta.quarantined = meta.quarantined.saturating_add(1);
            meta.size_bytes = meta.size_bytes.saturating_sub(len_u64(&update));
            let mut batch = sled::Batch::default();
            batch.insert(
                seq_key(TAG_QUARANTINE, doc, seq),
                encode_quarantine(now, reason, &update),
            );
            batch.remove(key);
            batch.insert(doc_key(TAG_META, doc), meta.encode());
            self.docs.apply_batch(batch)?;
            tracing::warn!(doc, seq, reason, "update quarantined");
            slot.meta = Some(meta);
            slot.dirty = false;
            Ok(())
        })
    }

    fn set_title(&self, doc: &RoomName, title: &str) -> Result<(), StoreError> {
        self.write_title(doc.as_str(), title, false)
    }

    fn pin_title(&self, doc: &RoomName, title: &str) -> Result<(), StoreError> {
        self.write_title(doc.as_str(), title, true)
    }

    fn meta(&self, doc: &RoomName) -> Result<Option<DocMeta>, StoreError> {
        let doc = doc.as_str();
        self.with_slot(doc, |_, slot| {
            Ok(slot.meta.as_ref().map(|m| m.to_doc_meta(doc)))
        })
    }

    fn list(&self) -> Result<Vec<DocMeta>, StoreError> {
        let mut out = BTreeMap::new();
        for kv in self.docs.scan_prefix([TAG_META, 0]) {
            let (key, value) = kv?;
            let raw_id = key.get(2..).unwrap_or_default();
            let Ok(id) = std::str::from_utf8(raw_id) else {
                let id = String::from_utf8_lossy(raw_id);
                tracing::error!(doc = ?id, "skipping metadata record: key is not UTF-8");
                continue;
            };
            match MetaRec::decode(id, &value) {
                Ok(meta) => {
                    out.insert(id.to_owned(), meta.to_doc_meta(id));
                }
                // One bad record must not hide every other document; `meta(id)` reports it.
                Err(e) => tracing::error!(doc = id, error = %e, "skipping metadata record"),
            }
        }
        // Cached metadata is authoritative (appends write it to disk lazily).
        let entries: Vec<Arc<DocEntry>> = lock(&self.cache).map.values().cloned().collect();
        for entry in entries {
            let slot = lock(&entry.slot);
            if !slot.loaded {
                continue;
            }
            match &slot.meta {
                Some(meta) => {
                    out.insert(entry.id.clone(), meta.to_doc_meta(&entry.id));
                }
                None => {
                    out.remove(&entry.id);
                }
            }
        }
        Ok(out.into_values().collect())
    }

    fn doc_count(&self) -> u64 {
        self.doc_count.load(Ordering::Relaxed)
    }

    fn delete(&self, doc: &RoomName) -> Result<bool, StoreError> {
        let doc = doc.as_str();
        self.with_slot(doc, |_, slot| {
            let mut existed = slot.meta.is_some();
            let mut batch = sled::Batch::default();
            for key in [doc_key(TAG_META, doc), doc_key(TAG_SNAPSHOT, doc)] {
                if self.docs.contains_key(&key)? {
                    existed = true;
                    batch.remove(key);
                }
            }
            for tag in [TAG_UPDATE, TAG_QUARANTINE] {
                for key in self.docs.scan_prefix(seq_prefix(tag, doc)).keys() {
                    existed = true;
                    batch.remove(key?);
                }
            }
            self.docs.apply_batch(batch)?;
            slot.meta = None;
            slot.dirty = false;
            Ok(existed)
        })
    }

    fn refuse(&self, hash: &[u8; 32], reason: &str) -> Result<(), StoreError> {
        let mut key = vec![TAG_REFUSED, 0];
        key.extend_from_slice(hash);
        let value = encode_quarantine(now_ms(), reason, &[]);
        // Keep the first record: it names the crash that caused the refusal.
        let _ = self
            .docs
            .compare_and_swap(key, None::<&[u8]>, Some(value))?;
        Ok(())
    }

    fn refused(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        let mut out = Vec::new();
        for key in self.docs.scan_prefix([TAG_REFUSED, 0]).keys() {
            let key = key?;
            match key.get(2..).and_then(|h| <[u8; 32]>::try_from(h).ok()) {
                Some(hash) => out.push(hash),
                None => tracing::error!(len = key.len(), "skipping a malformed refused-hash key"),
            }
        }
        Ok(out)
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut sync = lock(&self.sync);
        self.write_dirty_meta()?;
        self.db.flush()?;
        sync.sync()?;
        Ok(())
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.docs.insert(PROBE_KEY, &now_ms().to_be_bytes()[..])?;
        self.docs.remove(PROBE_KEY)?;
        self.flush()
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Best effort: the server flushes explicitly at shutdown; this covers early returns.
        if let Err(e) = self.flush() {
            tracing::error!(path = %self.path.display(), error = %e, "final store flush failed");
        }
    }
}
