//! Version history records: a sled tree `history` in the same database as the documents, so a
//! version is made durable by the same flush (the group commit) as the edits it covers.
//!
//! Layout (keys compare as bytes, ids are u64 BE, so one document's versions are a contiguous,
//! id-ordered range):
//!
//! | key                         | value                                               |
//! |-----------------------------|-----------------------------------------------------|
//! | `v\0{doc}\0{id}`            | the version's metadata ([`VersionMeta`], JSON)      |
//! | `b\0{doc}\0{id}`            | its text as a [`VersionBody`] (JSON, deflated)      |
//! | either, `{key}{i}{n}`       | piece `i` of `n` of a value larger than one piece   |
//!
//! A body holds the edit operations that turn the previous version's text into this one's
//! (characters kept, deleted, inserted), and every [`KEYFRAME_EVERY`]th version also the whole
//! text, so a version's text is a keyframe plus at most that many deltas away, and history
//! costs a small fraction of a full copy per version. Values larger than a piece are split as
//! the document records are (`pieces.rs`), far below sled's blob threshold.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weft_protocol::RoomName;

use super::pieces::{insert_value, PIECE_TAIL};
use super::StoreError;

/// Every this many versions, a version's body also holds its whole text (a keyframe).
pub(crate) const KEYFRAME_EVERY: u64 = 32;

/// Tag of a version's metadata.
const TAG_META: u8 = b'v';
/// Tag of a version's body.
const TAG_BODY: u8 = b'b';

/// Largest body inflated when read: a corrupt or hostile length cannot exhaust memory.
const MAX_INFLATED: usize = 1 << 30;

/// What is known about one version without reading its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VersionMeta {
    /// Its id, unique within the document, increasing, never reused.
    pub(crate) id: u64,
    /// When it was recorded, milliseconds since the Unix epoch.
    pub(crate) created_ms: u64,
    /// The name it was given, if any (named versions are never thinned).
    pub(crate) name: Option<String>,
    /// Who changed the text since the previous version, sorted.
    pub(crate) authors: Vec<String>,
    /// Characters inserted since the previous version.
    pub(crate) inserted: u64,
    /// Characters deleted since the previous version.
    pub(crate) deleted: u64,
    /// Length of its text, in characters.
    pub(crate) size: u64,
    /// The document's last update sequence number it covers (a document whose log went past
    /// it has changed since).
    pub(crate) seq: u64,
}

/// One step of turning a text into the next version's, in characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Op {
    /// This many characters stay.
    #[serde(rename = "k")]
    Keep(u64),
    /// This many characters are removed.
    #[serde(rename = "d")]
    Delete(u64),
    /// This text is inserted.
    #[serde(rename = "i")]
    Insert(String),
}

/// A version's text as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VersionBody {
    /// The whole text, in keyframes.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<String>,
    /// The operations from the previous version's text (empty for the first version).
    #[serde(rename = "o", default)]
    pub(crate) ops: Vec<Op>,
    /// Who wrote the text's characters: (author or null, characters) runs in order; empty
    /// when unknown.
    #[serde(rename = "a", default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) runs: Vec<(Option<String>, u64)>,
}

/// Where one store keeps its documents' versions: the sled tree of a single node, or (in a
/// cluster) NATS JetStream, shared by every node. Every method blocks on its backend.
pub(crate) trait HistoryBackend: Send + Sync + 'static {
    /// Every version of `doc`, oldest first.
    fn list(&self, doc: &RoomName) -> Result<Vec<VersionMeta>, StoreError>;
    /// Version `id` of `doc`, if it exists.
    fn meta(&self, doc: &RoomName, id: u64) -> Result<Option<VersionMeta>, StoreError>;
    /// The newest version of `doc`, if it has any.
    fn last(&self, doc: &RoomName) -> Result<Option<VersionMeta>, StoreError>;
    /// The body of version `id` of `doc`, if it exists.
    fn body(&self, doc: &RoomName, id: u64) -> Result<Option<VersionBody>, StoreError>;
    /// Writes version `meta` with `body`, replacing both if the id exists.
    fn put(&self, doc: &RoomName, meta: &VersionMeta, body: &VersionBody)
        -> Result<(), StoreError>;
    /// Writes a new version; `false` (and nothing written) when its id is taken already, which
    /// only a history written by several nodes sees.
    fn create(
        &self,
        doc: &RoomName,
        meta: &VersionMeta,
        body: &VersionBody,
    ) -> Result<bool, StoreError> {
        self.put(doc, meta, body).map(|()| true)
    }
    /// Removes version `id` of `doc` (a no-op if absent).
    fn remove(&self, doc: &RoomName, id: u64) -> Result<(), StoreError>;
    /// Removes every version of `doc`; `true` if it had any.
    fn delete_doc(&self, doc: &RoomName) -> Result<bool, StoreError>;
    /// Bytes of every value stored for `doc`'s history.
    #[cfg(any(test, feature = "bench-internals"))]
    fn stored_bytes(&self, doc: &RoomName) -> Result<u64, StoreError>;
    /// Whether other nodes write this history too: then one node at a time records a
    /// document's versions, the holder of its recorder lease.
    fn shared(&self) -> bool {
        false
    }
    /// Takes or renews `doc`'s recorder lease for this node: `true` when this node may record.
    /// A lease another node renewed lately is taken only when `force` is set.
    fn claim(&self, doc: &RoomName, force: bool) -> Result<bool, StoreError> {
        let _ = (doc, force);
        Ok(true)
    }
    /// Gives `doc`'s recorder lease up if this node holds it, so another node takes over now.
    fn release(&self, doc: &RoomName) -> Result<(), StoreError> {
        let _ = doc;
        Ok(())
    }
}

/// The documents' version histories of a store, whichever backend keeps them.
#[derive(Clone)]
pub struct HistoryStore {
    backend: Arc<dyn HistoryBackend>,
}

impl std::fmt::Debug for HistoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryStore")
            .field("shared", &self.backend.shared())
            .finish_non_exhaustive()
    }
}

impl HistoryStore {
    /// The history tree of `db`, whose values are split above `piece` bytes.
    pub(crate) fn open(db: &sled::Db, piece: usize) -> Result<Self, StoreError> {
        Ok(Self::with(SledHistory::open(db, piece)?))
    }

    /// The history kept by `backend`.
    pub(crate) fn with(backend: impl HistoryBackend) -> Self {
        Self {
            backend: Arc::new(backend),
        }
    }

    /// Every version of `doc`, oldest first.
    pub(crate) fn list(&self, doc: &RoomName) -> Result<Vec<VersionMeta>, StoreError> {
        self.backend.list(doc)
    }

    /// Version `id` of `doc`, if it exists.
    pub(crate) fn meta(&self, doc: &RoomName, id: u64) -> Result<Option<VersionMeta>, StoreError> {
        self.backend.meta(doc, id)
    }

    /// The newest version of `doc`, if it has any.
    pub(crate) fn last(&self, doc: &RoomName) -> Result<Option<VersionMeta>, StoreError> {
        self.backend.last(doc)
    }

    /// The body of version `id` of `doc`, if it exists.
    pub(crate) fn body(&self, doc: &RoomName, id: u64) -> Result<Option<VersionBody>, StoreError> {
        self.backend.body(doc, id)
    }

    /// Writes version `meta` with `body` (replacing both if the id exists); on sled not
    /// durable until the store's next flush.
    pub(crate) fn put(
        &self,
        doc: &RoomName,
        meta: &VersionMeta,
        body: &VersionBody,
    ) -> Result<(), StoreError> {
        self.backend.put(doc, meta, body)
    }

    /// Writes a new version; `false` when another node took its id first.
    pub(crate) fn create(
        &self,
        doc: &RoomName,
        meta: &VersionMeta,
        body: &VersionBody,
    ) -> Result<bool, StoreError> {
        self.backend.create(doc, meta, body)
    }

    /// Removes version `id` of `doc` (a no-op if absent).
    pub(crate) fn remove(&self, doc: &RoomName, id: u64) -> Result<(), StoreError> {
        self.backend.remove(doc, id)
    }

    /// Removes every version of `doc`; `true` if it had any.
    pub(crate) fn delete_doc(&self, doc: &RoomName) -> Result<bool, StoreError> {
        self.backend.delete_doc(doc)
    }

    /// Bytes of every value stored for `doc`'s history (what the storage ratio counts).
    #[cfg(any(test, feature = "bench-internals"))]
    pub(crate) fn stored_bytes(&self, doc: &RoomName) -> Result<u64, StoreError> {
        self.backend.stored_bytes(doc)
    }

    /// Whether several nodes write this history (see [`HistoryBackend::shared`]).
    pub(crate) fn shared(&self) -> bool {
        self.backend.shared()
    }

    /// Takes or renews `doc`'s recorder lease (see [`HistoryBackend::claim`]).
    pub(crate) fn claim(&self, doc: &RoomName, force: bool) -> Result<bool, StoreError> {
        self.backend.claim(doc, force)
    }

    /// Gives `doc`'s recorder lease up if held (see [`HistoryBackend::release`]).
    pub(crate) fn release(&self, doc: &RoomName) -> Result<(), StoreError> {
        self.backend.release(doc)
    }
}

/// A version body as stored: JSON, deflated.
pub(crate) fn pack_body(doc: &str, body: &VersionBody) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(body).map_err(|e| StoreError::corrupt(doc, e.to_string()))?;
    Ok(miniz_oxide::deflate::compress_to_vec(&json, 6))
}

/// A version body read back from its stored form.
pub(crate) fn unpack_body(doc: &str, packed: &[u8]) -> Result<VersionBody, StoreError> {
    let json = miniz_oxide::inflate::decompress_to_vec_with_limit(packed, MAX_INFLATED)
        .map_err(|e| StoreError::corrupt(doc, format!("version body: {e}")))?;
    serde_json::from_slice(&json)
        .map_err(|e| StoreError::corrupt(doc, format!("version body: {e}")))
}

/// The `history` tree of a single node's sled store: every document's versions.
#[derive(Clone)]
pub(crate) struct SledHistory {
    tree: sled::Tree,
    /// Largest value written under one key (the store's piece length).
    piece: usize,
}

/// `{tag}\0{doc}\0`.
fn prefix(tag: u8, doc: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(11 + doc.len());
    key.extend_from_slice(&[tag, 0]);
    key.extend_from_slice(doc.as_bytes());
    key.push(0);
    key
}

/// `{tag}\0{doc}\0{id BE}`.
fn key(tag: u8, doc: &str, id: u64) -> Vec<u8> {
    let mut key = prefix(tag, doc);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

impl SledHistory {
    /// The history tree of `db`, whose values are split above `piece` bytes.
    pub(crate) fn open(db: &sled::Db, piece: usize) -> Result<Self, StoreError> {
        Ok(Self {
            tree: db.open_tree("history")?,
            piece,
        })
    }

    /// The value under `k`, whole or reassembled from its pieces (which sort right after it,
    /// in order).
    fn read(&self, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut value: Option<Vec<u8>> = None;
        for item in self.tree.scan_prefix(k) {
            let (key, v) = item?;
            if key.len() != k.len() && key.len() != k.len() + PIECE_TAIL {
                continue;
            }
            value.get_or_insert_with(Vec::new).extend_from_slice(&v);
        }
        Ok(value)
    }

    /// Adds the removal of `k` and of its pieces to `batch`.
    fn remove_value(&self, batch: &mut sled::Batch, k: &[u8]) -> Result<(), StoreError> {
        for key in self.tree.scan_prefix(k).keys() {
            let key = key?;
            if key.len() == k.len() || key.len() == k.len() + PIECE_TAIL {
                batch.remove(key);
            }
        }
        Ok(())
    }
}

impl HistoryBackend for SledHistory {
    /// Every version of `doc`, oldest first.
    fn list(&self, doc: &RoomName) -> Result<Vec<VersionMeta>, StoreError> {
        let doc = doc.as_str();
        let start = prefix(TAG_META, doc);
        let mut out: Vec<VersionMeta> = Vec::new();
        let mut value: Vec<u8> = Vec::new();
        let mut current: Option<u64> = None;
        for item in self.tree.scan_prefix(&start) {
            let (k, v) = item?;
            let tail = &k[start.len()..];
            let id = tail
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StoreError::corrupt(doc, "version key"))?;
            if current.is_some_and(|c| c != id) {
                out.push(decode_meta(doc, &value)?);
                value.clear();
            }
            current = Some(id);
            value.extend_from_slice(&v);
        }
        if current.is_some() {
            out.push(decode_meta(doc, &value)?);
        }
        Ok(out)
    }

    /// Version `id` of `doc`, if it exists.
    fn meta(&self, doc: &RoomName, id: u64) -> Result<Option<VersionMeta>, StoreError> {
        let value = self.read(&key(TAG_META, doc.as_str(), id))?;
        value.map(|v| decode_meta(doc.as_str(), &v)).transpose()
    }

    /// The newest version of `doc`, if it has any.
    fn last(&self, doc: &RoomName) -> Result<Option<VersionMeta>, StoreError> {
        let start = prefix(TAG_META, doc.as_str());
        let Some((k, _)) = self.tree.scan_prefix(&start).next_back().transpose()? else {
            return Ok(None);
        };
        let id = k
            .get(start.len()..start.len() + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| StoreError::corrupt(doc.as_str(), "version key"))?;
        self.meta(doc, id)
    }

    /// The body of version `id` of `doc`, if it exists.
    fn body(&self, doc: &RoomName, id: u64) -> Result<Option<VersionBody>, StoreError> {
        let Some(packed) = self.read(&key(TAG_BODY, doc.as_str(), id))? else {
            return Ok(None);
        };
        unpack_body(doc.as_str(), &packed).map(Some)
    }

    /// Writes version `meta` with `body` (replacing both if the id exists), in one batch; not
    /// durable until the store's next flush.
    fn put(
        &self,
        doc: &RoomName,
        meta: &VersionMeta,
        body: &VersionBody,
    ) -> Result<(), StoreError> {
        let doc = doc.as_str();
        let meta_json =
            serde_json::to_vec(meta).map_err(|e| StoreError::corrupt(doc, e.to_string()))?;
        let packed = pack_body(doc, body)?;
        let mut batch = sled::Batch::default();
        for (tag, value) in [(TAG_META, &meta_json), (TAG_BODY, &packed)] {
            let k = key(tag, doc, meta.id);
            self.remove_value(&mut batch, &k)?;
            insert_value(&mut batch, &k, &k, value, self.piece);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Removes version `id` of `doc` (a no-op if absent); not durable until the next flush.
    fn remove(&self, doc: &RoomName, id: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for tag in [TAG_META, TAG_BODY] {
            self.remove_value(&mut batch, &key(tag, doc.as_str(), id))?;
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Removes every version of `doc`; `true` if it had any.
    fn delete_doc(&self, doc: &RoomName) -> Result<bool, StoreError> {
        let mut batch = sled::Batch::default();
        let mut any = false;
        for tag in [TAG_META, TAG_BODY] {
            for k in self.tree.scan_prefix(prefix(tag, doc.as_str())).keys() {
                batch.remove(k?);
                any = true;
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(any)
    }

    #[cfg(any(test, feature = "bench-internals"))]
    fn stored_bytes(&self, doc: &RoomName) -> Result<u64, StoreError> {
        let mut total = 0u64;
        for tag in [TAG_META, TAG_BODY] {
            for item in self.tree.scan_prefix(prefix(tag, doc.as_str())) {
                let (_, v) = item?;
                total += v.len() as u64;
            }
        }
        Ok(total)
    }
}

/// Decodes a metadata record of `doc`.
pub(crate) fn decode_meta(doc: &str, value: &[u8]) -> Result<VersionMeta, StoreError> {
    serde_json::from_slice(value)
        .map_err(|e| StoreError::corrupt(doc, format!("version record: {e}")))
}

/// Whether `k` is a piece key of a value under `base` (used by tests of the layout).
#[cfg(test)]
fn is_piece_of(k: &[u8], base: &[u8]) -> bool {
    k.len() == base.len() + PIECE_TAIL && k.starts_with(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: u64, name: Option<&str>) -> VersionMeta {
        VersionMeta {
            id,
            created_ms: 1000 * id,
            name: name.map(str::to_owned),
            authors: vec!["ada".into()],
            inserted: id,
            deleted: 0,
            size: id,
            seq: id,
        }
    }

    /// How many pieces version `id` of document `a` has.
    fn pieces(h: &SledHistory, id: u64) -> usize {
        h.tree
            .iter()
            .keys()
            .filter_map(Result::ok)
            .filter(|k| is_piece_of(k, &key(TAG_BODY, "a", id)))
            .count()
    }

    /// Versions round-trip, list in id order per document, large bodies go in pieces, and
    /// deleting a document deletes only its history.
    #[test]
    fn versions_round_trip_in_pieces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let h = SledHistory::open(&db, 4096).expect("open");
        let (a, b) = (
            RoomName::parse("a", &Default::default()).expect("name"),
            RoomName::parse("a2", &Default::default()).expect("name"),
        );
        // Incompressible enough to need pieces after deflate.
        let big: String = (0..200_000u32)
            .map(|i| {
                char::from_u32(0x4e00 + (i.wrapping_mul(2_654_435_761) % 20_000)).unwrap_or('x')
            })
            .collect();
        let body = VersionBody {
            text: Some(big.clone()),
            ops: vec![Op::Insert(big)],
            runs: vec![(Some("ada".into()), 3), (None, 5)],
        };
        for id in 1..=3 {
            h.put(&a, &meta(id, None), &body).expect("put");
        }
        h.put(&b, &meta(7, Some("named")), &VersionBody::default())
            .expect("put");
        assert!(pieces(&h, 2) > 1, "a large body is stored in pieces");
        assert!(h
            .tree
            .iter()
            .values()
            .all(|v| v.is_ok_and(|v| v.len() <= 4096)));
        assert_eq!(
            h.list(&a)
                .expect("list")
                .iter()
                .map(|m| m.id)
                .collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(h.body(&a, 2).expect("body"), Some(body.clone()));
        assert_eq!(h.last(&a).expect("last").map(|m| m.id), Some(3));
        assert_eq!(h.last(&b).expect("last"), Some(meta(7, Some("named"))));
        h.remove(&a, 2).expect("remove");
        assert_eq!(
            h.list(&a)
                .expect("list")
                .iter()
                .map(|m| m.id)
                .collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(h.body(&a, 2).expect("body"), None);
        assert!(h.delete_doc(&a).expect("delete"));
        assert!(h.list(&a).expect("list").is_empty());
        assert_eq!(h.list(&b).expect("list").len(), 1);
    }
}
