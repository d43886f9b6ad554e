//! [`SledStore`]: the [`Store`] on an embedded sled database. Opening lives in `open.rs`, the
//! metadata cache in `cache.rs` (reached through `slots.rs`), values in pieces in `pieces.rs`,
//! the flush thread and its deadline in `flusher.rs`, the failed state in `health.rs`, fsyncs
//! in `fsync.rs`, key and record encodings in `keys.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use weft_protocol::RoomName;

use super::cache::{Cache, DirtyList, DocEntry};
use super::flusher::Flusher;
#[cfg(test)]
use super::fsync::SyncState;
use super::health::Health;
use super::keys::{
    check_doc, clip, decode_quarantine, doc_key, encode_quarantine, parse_seq, seq_key, seq_prefix,
    MetaRec, MAX_TITLE_LEN, PROBE_KEY, TAG_META, TAG_QUARANTINE, TAG_REFUSED, TAG_SNAPSHOT,
    TAG_UPDATE,
};
use super::pieces::{insert_value, parse_piece, Assembler};
use super::{lock, now_ms, DocMeta, QuarantinedUpdate, Store, StoreError, StoredDoc};

pub(super) fn len_u64(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

/// [`Store`] backed by an embedded sled database in one data directory.
///
/// Lock order: `cache` is never held while a slot is locked; a slot may be held while `dirty` is
/// locked, never the reverse. No lock is held while waiting for a flush: the flush runs on the
/// flusher's thread (which takes slots one at a time to write dirty metadata, then `sync`).
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
    pub(super) dirty: Arc<DirtyList>,
    /// What a flush syncs after sled's own flush (owned by the flush thread; here for tests).
    #[cfg(test)]
    pub(super) sync: Arc<Mutex<SyncState>>,
    /// Documents with metadata: counted once at open, then kept as documents come and go.
    pub(super) doc_count: AtomicU64,
    /// The largest value stored under one key (see `pieces.rs`).
    pub(super) piece: usize,
    /// Whether the store has failed, and the data directory's identity.
    pub(super) health: Arc<Health>,
    /// The flush thread.
    pub(super) flusher: Flusher,
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
        self.health.check()?;
        self.with_slot(doc, |entry, slot| {
            let now = now_ms();
            let mut meta = slot.meta.clone().unwrap_or_else(|| MetaRec::new(now));
            if meta.title_pinned && !pin {
                return Ok(());
            }
            meta.title_pinned |= pin;
            meta.title = Some(clip(title, MAX_TITLE_LEN).to_owned());
            meta.updated_ms = now;
            self.insert(entry, doc_key(TAG_META, doc), meta.encode())?;
            slot.meta = Some(meta);
            slot.dirty = false;
            Ok(())
        })
    }

    /// A tree of its own in the store's database (the change feed, the webhook outboxes): its
    /// writes are made durable by the store's flushes, in order with the documents'.
    ///
    /// # Errors
    /// When sled cannot open the tree.
    pub(crate) fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
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
        self.read_records(doc, &seq_prefix(TAG_QUARANTINE, doc))?
            .into_iter()
            .map(|(seq, record)| decode_quarantine(doc, seq, &record))
            .collect()
    }

    /// Applies `batch`, a write of `entry`'s document. A refusal fails the store: sled keeps
    /// refusing after an I/O error, and what it holds in memory is no longer trusted.
    pub(super) fn apply(&self, entry: &DocEntry, batch: sled::Batch) -> Result<(), StoreError> {
        let result = self.docs.apply_batch(batch);
        self.written(entry, result)
    }

    /// Inserts one record of `entry`'s document (see [`SledStore::apply`]).
    fn insert(
        &self,
        entry: &DocEntry,
        key: Vec<u8>,
        value: impl Into<sled::IVec>,
    ) -> Result<(), StoreError> {
        let result = self.docs.insert(key, value).map(drop);
        self.written(entry, result)
    }

    /// Records a write of `entry`'s document, also a failed one: a batch sled refused part-way
    /// may have left some of its keys in memory, which a failed store must not serve.
    fn written(&self, entry: &DocEntry, result: sled::Result<()>) -> Result<(), StoreError> {
        entry
            .written
            .fetch_max(self.flusher.next_number(), Ordering::SeqCst);
        result.map_err(|e| self.health.fail_on(&e))
    }

    /// Every sequence-keyed record under `prefix`, reassembled from pieces, ascending.
    fn read_records(&self, doc: &str, prefix: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut pieces = Assembler::new(doc);
        let mut out = Vec::new();
        for kv in self.docs.scan_prefix(prefix) {
            let (key, value) = kv?;
            let (seq, piece) = parse_seq(doc, &key, prefix.len())?;
            out.extend(pieces.push(seq, piece, &value)?);
        }
        pieces.finish()?;
        Ok(out)
    }

    /// The snapshot of `doc`: whole under `s\0{doc}`, or in pieces under `s\0{doc}\0`.
    fn read_snapshot(&self, doc: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let whole = self.docs.get(doc_key(TAG_SNAPSHOT, doc))?;
        let prefix = seq_prefix(TAG_SNAPSHOT, doc);
        let mut pieces = Assembler::new(doc);
        let mut joined = None;
        for kv in self.docs.scan_prefix(&prefix) {
            let (key, value) = kv?;
            let piece = parse_piece(doc, key.get(prefix.len()..).unwrap_or_default())?;
            if let Some((_, bytes)) = pieces.push(0, Some(piece), &value)? {
                if joined.replace(bytes).is_some() {
                    return Err(StoreError::corrupt(doc, "two snapshots in pieces"));
                }
            }
        }
        pieces.finish()?;
        match (whole, joined) {
            (Some(_), Some(_)) => Err(StoreError::corrupt(
                doc,
                "snapshot stored whole and in pieces",
            )),
            (Some(whole), None) => Ok(Some(whole.to_vec())),
            (None, joined) => Ok(joined),
        }
    }

    /// Adds the removal of every key of `doc`'s snapshot (whole and pieces) to `batch`.
    pub(super) fn remove_snapshot(
        &self,
        doc: &str,
        batch: &mut sled::Batch,
    ) -> Result<bool, StoreError> {
        let mut existed = false;
        let whole = doc_key(TAG_SNAPSHOT, doc);
        if self.docs.contains_key(&whole)? {
            existed = true;
            batch.remove(whole);
        }
        for key in self.docs.scan_prefix(seq_prefix(TAG_SNAPSHOT, doc)).keys() {
            existed = true;
            batch.remove(key?);
        }
        Ok(existed)
    }

    /// The `(key, value)` records of update `seq` (its plain key, or its pieces).
    fn update_records(
        &self,
        doc: &str,
        seq: u64,
    ) -> Result<Vec<(sled::IVec, sled::IVec)>, StoreError> {
        let prefix_len = seq_prefix(TAG_UPDATE, doc).len();
        let mut out = Vec::new();
        for kv in self.docs.scan_prefix(seq_key(TAG_UPDATE, doc, seq)) {
            let (key, value) = kv?;
            parse_seq(doc, &key, prefix_len)?;
            out.push((key, value));
        }
        Ok(out)
    }

    /// Every document's metadata, sorted by id; titles only `with_titles`.
    fn list_with(&self, with_titles: bool) -> Result<Vec<DocMeta>, StoreError> {
        let mut out = BTreeMap::new();
        for kv in self.docs.scan_prefix([TAG_META, 0]) {
            let (key, value) = kv?;
            let raw_id = key.get(2..).unwrap_or_default();
            let Ok(id) = std::str::from_utf8(raw_id) else {
                let id = String::from_utf8_lossy(raw_id);
                tracing::error!(doc = ?id, "skipping metadata record: key is not UTF-8");
                continue;
            };
            let decoded = if with_titles {
                MetaRec::decode(id, &value)
            } else {
                MetaRec::decode_untitled(id, &value)
            };
            match decoded {
                Ok(meta) => {
                    out.insert(id.to_owned(), meta.to_doc_meta(id));
                }
                // One bad record must not hide every other document; `meta(id)` reports it.
                Err(e) => tracing::error!(doc = id, error = %e, "skipping metadata record"),
            }
        }
        // Cached metadata is authoritative (appends write it to disk lazily).
        let entries = lock(&self.cache).entries();
        for entry in entries {
            let slot = lock(&entry.slot);
            if !slot.loaded {
                continue;
            }
            match &slot.meta {
                Some(meta) => {
                    let mut meta = meta.to_doc_meta(&entry.id);
                    if !with_titles {
                        meta.title = None;
                    }
                    out.insert(entry.id.clone(), meta);
                }
                None => {
                    out.remove(&entry.id);
                }
            }
        }
        Ok(out.into_values().collect())
    }
}

impl Store for SledStore {
    fn load(&self, doc: &RoomName) -> Result<StoredDoc, StoreError> {
        let doc = doc.as_str();
        // Under the slot lock, so a concurrent compaction cannot interleave snapshot and log.
        self.with_slot(doc, |entry, slot| {
            if let Some(reason) = self.health.failure() {
                // sled still holds writes whose flush failed: serving them would present edits
                // that were never saved (and may be gone after a restart) as the document.
                if self.has_unflushed(entry) {
                    return Err(StoreError::Failed(Arc::from(format!(
                        "{reason}; document {doc} has writes that never reached the disk"
                    ))));
                }
            }
            let snapshot = self.read_snapshot(doc)?;
            let updates = self.read_records(doc, &seq_prefix(TAG_UPDATE, doc))?;
            let log_bytes = updates
                .iter()
                .fold(0u64, |sum, (_, u)| sum.saturating_add(len_u64(u)));
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
            Ok(StoredDoc {
                snapshot,
                updates,
                covers: 0,
            })
        })
    }

    fn append(&self, doc: &RoomName, update: &[u8]) -> Result<u64, StoreError> {
        self.health.check()?;
        let doc = doc.as_str();
        self.with_slot(doc, |entry, slot| {
            let now = now_ms();
            let Some(meta) = slot.meta.as_mut() else {
                // First append: the metadata goes in the same batch, so the document is listed.
                let mut meta = MetaRec::new(now);
                meta.next_seq = 2;
                meta.size_bytes = len_u64(update);
                let key = seq_key(TAG_UPDATE, doc, 1);
                let mut batch = sled::Batch::default();
                insert_value(&mut batch, &key, &key, update, self.piece);
                batch.insert(doc_key(TAG_META, doc), meta.encode());
                self.apply(entry, batch)?;
                slot.meta = Some(meta);
                slot.dirty = false;
                return Ok(1);
            };
            let seq = meta.next_seq;
            let next = seq
                .checked_add(1)
                .ok_or_else(|| StoreError::corrupt(doc, "sequence overflow"))?;
            let key = seq_key(TAG_UPDATE, doc, seq);
            if update.len() <= self.piece {
                // The common case, a keystroke: one plain insert.
                self.insert(entry, key, update)?;
            } else {
                let mut batch = sled::Batch::default();
                insert_value(&mut batch, &key, &key, update, self.piece);
                self.apply(entry, batch)?;
            }
            meta.next_seq = next;
            meta.size_bytes = meta.size_bytes.saturating_add(len_u64(update));
            meta.updated_ms = now;
            self.mark_dirty(entry, slot);
            Ok(seq)
        })
    }

    fn compact(
        &self,
        doc: &RoomName,
        snapshot: &[u8],
        upto_seq: u64,
        title: Option<&str>,
    ) -> Result<(), StoreError> {
        self.health.check()?;
        let doc = doc.as_str();
        self.with_slot(doc, |entry, slot| {
            let mut meta = slot.meta.clone().unwrap_or_else(|| MetaRec::new(now_ms()));
            let prefix_len = seq_prefix(TAG_UPDATE, doc).len();
            let mut batch = sled::Batch::default();
            let mut removed = 0u64;
            let mut count = 0usize;
            for kv in self.docs.scan_prefix(seq_prefix(TAG_UPDATE, doc)) {
                let (key, value) = kv?;
                let (seq, piece) = parse_seq(doc, &key, prefix_len)?;
                if seq > upto_seq {
                    break;
                }
                removed = removed.saturating_add(len_u64(&value));
                count += usize::from(piece.is_none_or(|(index, _)| index == 0));
                batch.remove(key);
            }
            self.remove_snapshot(doc, &mut batch)?;
            // After the removals: a piece key written again must end up inserted.
            let whole = doc_key(TAG_SNAPSHOT, doc);
            let base = seq_prefix(TAG_SNAPSHOT, doc);
            insert_value(&mut batch, &whole, &base, snapshot, self.piece);
            meta.size_bytes = meta
                .size_bytes
                .saturating_sub(meta.snapshot_len)
                .saturating_sub(removed)
                .saturating_add(len_u64(snapshot));
            meta.snapshot_len = len_u64(snapshot);
            if let Some(title) = title.filter(|_| !meta.title_pinned) {
                meta.title = Some(clip(title, MAX_TITLE_LEN).to_owned());
            }
            batch.insert(doc_key(TAG_META, doc), meta.encode());
            self.apply(entry, batch)?;
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
        self.health.check()?;
        let doc = doc.as_str();
        self.with_slot(doc, |entry, slot| {
            let records = self.update_records(doc, seq)?;
            let mut pieces = Assembler::new(doc);
            let mut update = None;
            let mut batch = sled::Batch::default();
            let prefix_len = seq_prefix(TAG_UPDATE, doc).len();
            for (key, value) in records {
                let (seq, piece) = parse_seq(doc, &key, prefix_len)?;
                update = pieces.push(seq, piece, &value)?.map(|(_, u)| u).or(update);
                batch.remove(key);
            }
            pieces.finish()?;
            let Some(update) = update else {
                tracing::warn!(doc, seq, "quarantine: update is not in the log");
                return Ok(());
            };
            let now = now_ms();
            let mut meta = slot.meta.clone().unwrap_or_else(|| MetaRec::new(now));
            meta.quarantined = meta.quarantined.saturating_add(1);
            meta.size_bytes = meta.size_bytes.saturating_sub(len_u64(&update));
            let key = seq_key(TAG_QUARANTINE, doc, seq);
            let record = encode_quarantine(now, reason, &update);
            insert_value(&mut batch, &key, &key, &record, self.piece);
            batch.insert(doc_key(TAG_META, doc), meta.encode());
            self.apply(entry, batch)?;
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
        self.list_with(true)
    }

    fn list_untitled(&self) -> Result<Vec<DocMeta>, StoreError> {
        self.list_with(false)
    }

    fn doc_count(&self) -> u64 {
        self.doc_count.load(Ordering::Relaxed)
    }

    fn delete(&self, doc: &RoomName) -> Result<bool, StoreError> {
        self.health.check()?;
        let doc = doc.as_str();
        self.with_slot(doc, |entry, slot| {
            let mut existed = slot.meta.is_some();
            let mut batch = sled::Batch::default();
            let meta_key = doc_key(TAG_META, doc);
            if self.docs.contains_key(&meta_key)? {
                existed = true;
                batch.remove(meta_key);
            }
            existed |= self.remove_snapshot(doc, &mut batch)?;
            for tag in [TAG_UPDATE, TAG_QUARANTINE] {
                for key in self.docs.scan_prefix(seq_prefix(tag, doc)).keys() {
                    existed = true;
                    batch.remove(key?);
                }
            }
            self.apply(entry, batch)?;
            slot.meta = None;
            slot.dirty = false;
            Ok(existed)
        })
    }

    fn refuse(&self, hash: &[u8; 32], reason: &str) -> Result<(), StoreError> {
        self.health.check()?;
        let mut key = vec![TAG_REFUSED, 0];
        key.extend_from_slice(hash);
        let value = encode_quarantine(now_ms(), reason, &[]);
        // Keep the first record: it names the crash that caused the refusal.
        let _ = self
            .docs
            .compare_and_swap(key, None::<&[u8]>, Some(value))
            .map_err(|e| self.health.fail_on(&e))?;
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
        self.flusher.flush()
    }

    fn health(&self) -> Result<(), StoreError> {
        self.health.check_dir()
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.health.check_dir()?;
        self.docs
            .insert(PROBE_KEY, &now_ms().to_be_bytes()[..])
            .and_then(|_| self.docs.remove(PROBE_KEY))
            .map_err(|e| self.health.fail_on(&e))?;
        self.flush()
    }

    fn revoke_tokens(&self, doc: &RoomName, before: u64) -> Result<(), StoreError> {
        self.write_revocation(doc, before)
    }

    fn revocations(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read_revocations()
    }

    fn reserve_awareness_offsets(&self, count: u64) -> Result<u64, StoreError> {
        self.reserve_offsets(count)
    }

    fn move_to_trash(&self, doc: &RoomName, at_ms: u64) -> Result<(), StoreError> {
        self.write_trashed(doc, at_ms)
    }

    fn take_from_trash(&self, doc: &RoomName) -> Result<bool, StoreError> {
        self.remove_trashed(doc)
    }

    fn trashed(&self, doc: &RoomName) -> Result<Option<u64>, StoreError> {
        self.read_trashed(doc)
    }

    fn trash(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read_trash()
    }

    fn history(&self) -> Option<super::history::HistoryStore> {
        super::history::HistoryStore::open(&self.db, self.piece)
            .map_err(|e| tracing::error!(error = %e, "cannot open the version history"))
            .ok()
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Best effort: the server flushes explicitly at shutdown; this covers early returns.
        let flushed = self.flush();
        if let Err(e) = &flushed {
            tracing::error!(path = %self.path.display(), error = %e, "final store flush failed");
        }
        self.flusher.stop(flushed.is_ok());
        if flushed.is_err() {
            // sled's own drop flushes again and joins its flusher thread, and a failed log can
            // block both forever: leave its handles (and lock) to the process exit instead.
            std::mem::forget(self.db.clone());
            std::mem::forget(self.docs.clone());
        }
    }
}
