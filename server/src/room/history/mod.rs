//! Version history of documents: recording a version (its text stored as a delta from the
//! previous version, a whole keyframe every [`KEYFRAME_EVERY`] versions), rebuilding any
//! version's text, diffs between two versions with who wrote each chunk, and retention.
//! Everything here blocks on the store: callers run it on a blocking thread. When a version
//! is recorded and made durable is the room's business (`room/versions.rs`).
//!
//! Attribution: a version lists everyone who changed the text since the previous one. A diff's
//! inserted and deleted chunks name their author when every version the diff spans has the same
//! single author, else `null` (several people's edits in one version are not told apart).
//!
//! Files: `delta.rs` the character deltas and chunks, `retention.rs` the thinning of old
//! versions.

pub(crate) mod delta;
mod retention;

use weft_protocol::RoomName;

use crate::store::history::{HistoryStore, VersionBody, VersionMeta, KEYFRAME_EVERY};
use crate::store::{now_ms, StoreError};
use delta::{Kind, Misfit};

pub(crate) use retention::thin;

/// Why a history request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HistoryError {
    /// No such version of this document.
    #[error("no such version")]
    NoVersion,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored delta does not fit the text before it.
    #[error(transparent)]
    Corrupt(#[from] Misfit),
}

/// What the room hands over to record a version: everything is read on the room's task, the
/// rest (delta, compression, writing) happens on a blocking thread.
#[derive(Debug, Clone)]
pub(crate) struct Capture {
    /// When, milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
    /// Its name, if asked for one (then it is recorded even when nothing changed).
    pub(crate) name: Option<String>,
    /// Who changed the text since the previous version.
    pub(crate) authors: Vec<String>,
    /// The document's last update sequence number.
    pub(crate) seq: u64,
    /// The text.
    pub(crate) text: String,
}

/// The newest version of a document and its text: what the next version is a delta from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cursor {
    /// The newest version, if any.
    pub(crate) last: Option<VersionMeta>,
    /// Its text ("" when there is none).
    pub(crate) text: String,
}

/// One chunk of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// Equal, inserted or deleted.
    pub(crate) kind: Kind,
    /// The characters.
    pub(crate) text: String,
    /// Who wrote an inserted or deleted chunk, when known.
    pub(crate) author: Option<String>,
}

/// The documents' histories (the store's `history` tree).
#[derive(Debug, Clone)]
pub(crate) struct History {
    store: HistoryStore,
}

impl History {
    /// The history kept in `store`.
    pub(crate) fn new(store: HistoryStore) -> Self {
        Self { store }
    }

    /// Every version of `doc`, oldest first.
    pub(crate) fn list(&self, doc: &RoomName) -> Result<Vec<VersionMeta>, StoreError> {
        self.store.list(doc)
    }

    /// Version `id` of `doc`.
    pub(crate) fn meta(&self, doc: &RoomName, id: u64) -> Result<VersionMeta, HistoryError> {
        self.store.meta(doc, id)?.ok_or(HistoryError::NoVersion)
    }

    /// Deletes `doc`'s history.
    pub(crate) fn delete(&self, doc: &RoomName) -> Result<bool, StoreError> {
        self.store.delete_doc(doc)
    }

    /// Bytes `doc`'s history takes (values only).
    pub(crate) fn stored_bytes(&self, doc: &RoomName) -> Result<u64, StoreError> {
        self.store.stored_bytes(doc)
    }

    /// The newest version of `doc` and its text.
    pub(crate) fn cursor(&self, doc: &RoomName) -> Result<Cursor, HistoryError> {
        let Some(last) = self.store.last(doc)? else {
            return Ok(Cursor::default());
        };
        let text = self.text_among(doc, last.id, &self.ids(doc)?)?;
        Ok(Cursor {
            last: Some(last),
            text,
        })
    }

    /// The ids of `doc`'s versions, ascending.
    fn ids(&self, doc: &RoomName) -> Result<Vec<u64>, StoreError> {
        Ok(self.store.list(doc)?.iter().map(|m| m.id).collect())
    }

    /// The text of version `id` of `doc`.
    pub(crate) fn text(&self, doc: &RoomName, id: u64) -> Result<String, HistoryError> {
        self.text_among(doc, id, &self.ids(doc)?)
    }

    /// The text of version `id`, `ids` being every version of the document: the nearest
    /// keyframe at or before it, then the deltas up to it.
    fn text_among(&self, doc: &RoomName, id: u64, ids: &[u64]) -> Result<String, HistoryError> {
        let end = ids.partition_point(|&i| i <= id);
        if end == 0 || ids[end - 1] != id {
            return Err(HistoryError::NoVersion);
        }
        let mut chain = Vec::new();
        let mut text = String::new();
        for &i in ids[..end].iter().rev() {
            let body = self.store.body(doc, i)?.ok_or(HistoryError::NoVersion)?;
            if let Some(keyframe) = body.text {
                text = keyframe;
                break;
            }
            chain.push(body.ops);
        }
        for ops in chain.iter().rev() {
            text = delta::apply(&text, ops)?;
        }
        Ok(text)
    }

    /// Records `capture` as the version after `cursor` (unless nothing changed and it has no
    /// name: `None`), and moves the cursor to it. Not durable until the store's next flush. An
    /// empty cursor is first reread from the store, so a lost one never reuses an id.
    pub(crate) fn record(
        &self,
        doc: &RoomName,
        cursor: &mut Cursor,
        capture: Capture,
    ) -> Result<Option<VersionMeta>, HistoryError> {
        if cursor.last.is_none() && self.store.last(doc)?.is_some() {
            *cursor = self.cursor(doc)?;
        }
        let changed = cursor.last.is_none() || cursor.text != capture.text;
        if !changed && capture.name.is_none() {
            return Ok(None);
        }
        let ops = delta::between(&cursor.text, &capture.text);
        let (inserted, deleted) = delta::counts(&ops);
        let id = cursor.last.as_ref().map_or(1, |m| m.id + 1);
        let meta = VersionMeta {
            id,
            created_ms: capture.at_ms,
            name: capture.name,
            authors: if changed { capture.authors } else { Vec::new() },
            inserted,
            deleted,
            size: delta::chars(&capture.text),
            seq: capture.seq,
        };
        let keyframe = cursor.last.is_none() || id % KEYFRAME_EVERY == 1;
        let body = VersionBody {
            text: keyframe.then(|| capture.text.clone()),
            ops,
        };
        self.store.put(doc, &meta, &body)?;
        cursor.last = Some(meta.clone());
        cursor.text = capture.text;
        Ok(Some(meta))
    }

    /// The diff of version `v` against version `against` (default: the version before `v`,
    /// or the empty text when `v` is the first), with authors.
    pub(crate) fn diff(
        &self,
        doc: &RoomName,
        v: u64,
        against: Option<u64>,
    ) -> Result<Vec<Chunk>, HistoryError> {
        let metas = self.store.list(doc)?;
        let ids: Vec<u64> = metas.iter().map(|m| m.id).collect();
        let at = ids.binary_search(&v).map_err(|_| HistoryError::NoVersion)?;
        let previous = at.checked_sub(1).map(|i| ids[i]);
        let u = against.or(previous);
        if let Some(u) = u {
            ids.binary_search(&u).map_err(|_| HistoryError::NoVersion)?;
        }
        let old = match u {
            Some(u) => self.text_among(doc, u, &ids)?,
            None => String::new(),
        };
        let ops = if u == previous {
            self.store.body(doc, v)?.ok_or(HistoryError::NoVersion)?.ops
        } else {
            delta::between(&old, &self.text_among(doc, v, &ids)?)
        };
        let author = single_author(&metas, u.unwrap_or(0), v);
        Ok(delta::chunks(&old, &ops)?
            .into_iter()
            .map(|(kind, text)| Chunk {
                author: (kind != Kind::Equal).then(|| author.clone()).flatten(),
                kind,
                text,
            })
            .collect())
    }

    /// Thins `doc`'s old versions (see [`thin`]) as of now, keeping `keep_days` days whole.
    pub(crate) fn thin_now(&self, doc: &RoomName, keep_days: u64) -> Result<usize, HistoryError> {
        thin(self, doc, now_ms(), keep_days)
    }
}

/// The one author of every version between `u` and `v` (either order, `v` included, `u` not),
/// if there is exactly one.
fn single_author(metas: &[VersionMeta], u: u64, v: u64) -> Option<String> {
    let (lo, hi) = (u.min(v), u.max(v));
    let mut names = metas
        .iter()
        .filter(|m| m.id > lo && m.id <= hi)
        .flat_map(|m| m.authors.iter());
    let first = names.next()?;
    names.all(|n| n == first).then(|| first.clone())
}

#[cfg(test)]
mod tests;
