//! Documents' metadata in the cluster's key-value bucket, and the changes this node has not
//! written there yet.
//!
//! Several nodes may edit one document, so a record is never overwritten blindly: a node keeps
//! what it changed (updates appended, bytes, the time, the automatic title) as a delta and adds
//! it to the record it reads, written back with compare-and-set (retried on a conflict). New
//! documents get their record before their first update is acknowledged, so a document anyone
//! saw saved is always listed; the rest is written every half second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::warn;
use weft_protocol::RoomName;

use crate::cluster::names::meta_key;
use crate::store::{now_ms, DocMeta};

/// How often deltas are written to the bucket.
pub(crate) const WRITE_EVERY: Duration = Duration::from_millis(500);

/// Tries of one compare-and-set before the delta waits for the next round.
const CAS_TRIES: usize = 5;

/// A document's record in the bucket (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MetaRecord {
    /// Creation time, Unix ms.
    pub(crate) created_ms: u64,
    /// Last change, Unix ms.
    pub(crate) updated_ms: u64,
    /// Snapshot plus logged bytes, as far as the nodes told.
    pub(crate) size_bytes: u64,
    /// Updates ever appended, by every node.
    pub(crate) update_count: u64,
    /// The title, if any.
    pub(crate) title: Option<String>,
    /// Whether the title was set through the API.
    pub(crate) title_pinned: bool,
    /// Updates moved aside because they did not apply.
    pub(crate) quarantined: u64,
}

impl MetaRecord {
    /// The record as the store's metadata of `id`.
    pub(crate) fn to_meta(&self, id: &str) -> DocMeta {
        DocMeta {
            id: id.to_owned(),
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            size_bytes: self.size_bytes,
            update_count: self.update_count,
            title: self.title.clone(),
            title_pinned: self.title_pinned,
            quarantined: self.quarantined,
        }
    }

    /// Decodes a stored record.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// What this node changed in one document since it last wrote the record.
#[derive(Debug, Clone, Default)]
pub(crate) struct Delta {
    /// Updates appended.
    pub(crate) appended: u64,
    /// Their bytes.
    pub(crate) bytes: u64,
    /// When the last was.
    pub(crate) updated_ms: u64,
    /// A new automatic title.
    pub(crate) title: Option<String>,
    /// A new size after compaction (replaces the sum).
    pub(crate) size: Option<u64>,
}

impl Delta {
    fn apply(&self, rec: &mut MetaRecord) {
        rec.update_count += self.appended;
        rec.size_bytes = self.size.unwrap_or(rec.size_bytes) + self.bytes;
        rec.updated_ms = rec.updated_ms.max(self.updated_ms);
        if let Some(title) = &self.title {
            if !rec.title_pinned {
                rec.title = Some(title.clone());
            }
        }
    }

    fn absorb(&mut self, later: Delta) {
        self.appended += later.appended;
        self.bytes = if later.size.is_some() {
            later.bytes
        } else {
            self.bytes + later.bytes
        };
        self.size = later.size.or(self.size);
        self.updated_ms = self.updated_ms.max(later.updated_ms);
        self.title = later.title.or(self.title.take());
    }
}

/// This node's deltas, by document, and the lock of whoever is writing them out (so that
/// [`write_pending`] returns only once a round already under way has finished too).
#[derive(Default)]
pub(crate) struct Deltas(Mutex<HashMap<RoomName, Delta>>, tokio::sync::Mutex<()>);

impl Deltas {
    /// Changes `doc`'s delta with `f`.
    pub(crate) fn note(&self, doc: &RoomName, f: impl FnOnce(&mut Delta)) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(doc.clone()).or_default());
    }

    /// `doc`'s delta not written yet, if any.
    pub(crate) fn get(&self, doc: &RoomName) -> Option<Delta> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(doc).cloned()
    }

    /// Forgets `doc`'s delta (it was deleted).
    pub(crate) fn forget(&self, doc: &RoomName) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(doc);
    }

    fn take(&self) -> HashMap<RoomName, Delta> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn put_back(&self, doc: RoomName, delta: Delta) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.remove(&doc) {
            Some(later) => {
                let mut merged = delta;
                merged.absorb(later);
                map.insert(doc, merged);
            }
            None => {
                map.insert(doc, delta);
            }
        }
    }
}

/// Reads `doc`'s record and its revision.
pub(crate) async fn read(docs: &kv::Store, doc: &str) -> Result<Option<(MetaRecord, u64)>, String> {
    let entry = docs
        .entry(meta_key(doc))
        .await
        .map_err(|e| format!("reading metadata from NATS failed: {e}"))?;
    Ok(entry
        .filter(|e| !e.value.is_empty())
        .and_then(|e| Some((MetaRecord::decode(&e.value)?, e.revision))))
}

/// Changes `doc`'s record with `f` by compare-and-set, creating it (from `f` applied to an
/// empty record made now) if it does not exist; returns the record written.
pub(crate) async fn modify(
    docs: &kv::Store,
    doc: &str,
    f: impl Fn(&mut MetaRecord),
) -> Result<MetaRecord, String> {
    let key = meta_key(doc);
    let mut last = String::new();
    for _ in 0..CAS_TRIES {
        let current = read(docs, doc).await?;
        let mut rec = current.as_ref().map_or_else(
            || MetaRecord {
                created_ms: now_ms(),
                updated_ms: now_ms(),
                ..MetaRecord::default()
            },
            |(r, _)| r.clone(),
        );
        f(&mut rec);
        let written = match current {
            Some((_, rev)) => docs
                .update(&key, rec.encode(), rev)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => docs
                .create(&key, rec.encode())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        match written {
            Ok(()) => return Ok(rec),
            Err(e) => last = e,
        }
    }
    Err(format!(
        "metadata of {doc:?} kept changing under this node: {last}"
    ))
}

/// Writes every delta into its record; a delta that cannot be written is kept for the next
/// round. Runs until `docs` is dropped with the store.
pub(crate) async fn write_deltas(docs: kv::Store, deltas: Arc<Deltas>) {
    let mut every = tokio::time::interval(WRITE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if Arc::strong_count(&deltas) == 1 {
            return;
        }
        // A failure is logged and retried next round.
        let _ = write_pending(&docs, &deltas).await;
    }
}

/// Writes every delta into its record now; one that cannot be written is kept for the next
/// round, and the first failure returned.
pub(crate) async fn write_pending(docs: &kv::Store, deltas: &Deltas) -> Result<(), String> {
    let _writing = deltas.1.lock().await;
    let mut failed = None;
    for (doc, delta) in deltas.take() {
        if let Err(e) = modify(docs, doc.as_str(), |rec| delta.apply(rec)).await {
            warn!(room = %doc, error = %e, "metadata not written to NATS yet; retrying");
            deltas.put_back(doc, delta);
            failed.get_or_insert(e);
        }
    }
    failed.map_or(Ok(()), Err)
}

/// The record of `doc` as this node sees it: the stored one plus the delta not written yet.
pub(crate) fn with_delta(stored: Option<MetaRecord>, delta: Option<Delta>) -> Option<MetaRecord> {
    match (stored, delta) {
        (Some(mut rec), Some(delta)) => {
            delta.apply(&mut rec);
            Some(rec)
        }
        (stored, _) => stored,
    }
}
