//! Version history of documents: recording a version (its text stored as a delta from the
//! previous version, a whole keyframe every [`KEYFRAME_EVERY`] versions), rebuilding any
//! version's text, diffs between two versions with who wrote each chunk, and retention.
//! Everything here blocks on the store: callers run it on a blocking thread. When a version
//! is recorded and made durable is the room's business (`room/versions.rs`).
//!
//! Attribution: a version lists everyone who changed the text since the previous one, and
//! stores who wrote each character of its text (author runs kept by the recorder's replica,
//! `attribution.rs`). A diff splits inserted text into one chunk per writer; a deleted chunk,
//! or an inserted one whose writer is unknown (text loaded with the document and never
//! rewritten), names the author when every version the diff spans has the same single author,
//! else `null`.
//!
//! Files: `delta.rs` the character deltas and chunks, `replica.rs` the recorder's copy of the
//! document, `attribution.rs` who wrote each character, `retention.rs` the thinning of old
//! versions.

mod attribution;
pub(crate) mod delta;
pub(crate) mod replica;
mod retention;
pub(crate) mod turn;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use weft_protocol::RoomName;

use crate::store::history::{HistoryStore, VersionBody, VersionMeta, KEYFRAME_EVERY};
use crate::store::{now_ms, StoreError};
use delta::{Kind, Misfit};

pub(crate) use retention::thin;

/// Tries of recording one version while other nodes keep taking the next id.
const RECORD_TRIES: usize = 3;

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
    /// Who wrote each character of it, when known.
    pub(crate) runs: Option<replica::CharRuns>,
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
    /// Per document, the version written but not yet durable (a room records one at a time):
    /// readers do not see it until [`History::confirm`], so nothing listed can be lost.
    unconfirmed: Arc<Mutex<HashMap<String, u64>>>,
}

impl History {
    /// The history kept in `store`.
    pub(crate) fn new(store: HistoryStore) -> Self {
        Self {
            store,
            unconfirmed: Arc::default(),
        }
    }

    /// The version of `doc` written but not yet durable, if any.
    fn unconfirmed(&self, doc: &RoomName) -> Option<u64> {
        let map = self.unconfirmed.lock().unwrap_or_else(|p| p.into_inner());
        map.get(doc.as_str()).copied()
    }

    /// Marks `doc`'s last recorded version durable: readers see it from now on.
    pub(crate) fn confirm(&self, doc: &RoomName) {
        let mut map = self.unconfirmed.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(doc.as_str());
    }

    /// Every durable version of `doc`, oldest first.
    pub(crate) fn list(&self, doc: &RoomName) -> Result<Vec<VersionMeta>, StoreError> {
        let mut metas = self.store.list(doc)?;
        if let Some(id) = self.unconfirmed(doc) {
            metas.retain(|m| m.id != id);
        }
        Ok(metas)
    }

    /// Version `id` of `doc`, once durable.
    pub(crate) fn meta(&self, doc: &RoomName, id: u64) -> Result<VersionMeta, HistoryError> {
        if self.unconfirmed(doc) == Some(id) {
            return Err(HistoryError::NoVersion);
        }
        self.store.meta(doc, id)?.ok_or(HistoryError::NoVersion)
    }

    /// Deletes `doc`'s history.
    pub(crate) fn delete(&self, doc: &RoomName) -> Result<bool, StoreError> {
        self.store.delete_doc(doc)
    }

    /// Bytes `doc`'s history takes (values only).
    #[cfg(any(test, feature = "bench-internals"))]
    pub(crate) fn stored_bytes(&self, doc: &RoomName) -> Result<u64, StoreError> {
        self.store.stored_bytes(doc)
    }

    /// The newest version of `doc` and its text.
    pub(crate) fn cursor(&self, doc: &RoomName) -> Result<Cursor, HistoryError> {
        let metas = self.store.list(doc)?;
        let Some(last) = metas.last().cloned() else {
            return Ok(Cursor::default());
        };
        let ids: Vec<u64> = metas.iter().map(|m| m.id).collect();
        let text = self.text_among(doc, last.id, &ids)?;
        Ok(Cursor {
            last: Some(last),
            text,
        })
    }

    /// The ids of `doc`'s versions, ascending.
    fn ids(&self, doc: &RoomName) -> Result<Vec<u64>, StoreError> {
        Ok(self.store.list(doc)?.iter().map(|m| m.id).collect())
    }

    /// The text of version `id` of `doc`, once durable.
    pub(crate) fn text(&self, doc: &RoomName, id: u64) -> Result<String, HistoryError> {
        if self.unconfirmed(doc) == Some(id) {
            return Err(HistoryError::NoVersion);
        }
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
    /// empty cursor is first reread from the store, so a lost one never reuses an id; in a
    /// history several nodes write, so is one another node went past, and an id another node
    /// took meanwhile is left to it and the version recorded after it.
    pub(crate) fn record(
        &self,
        doc: &RoomName,
        cursor: &mut Cursor,
        capture: Capture,
    ) -> Result<Option<VersionMeta>, HistoryError> {
        for _ in 0..RECORD_TRIES {
            self.refresh(doc, cursor)?;
            let changed = cursor.last.is_none() || cursor.text != capture.text;
            if !changed && capture.name.is_none() {
                return Ok(None);
            }
            let (meta, body) = next_version(cursor, &capture, changed);
            {
                let mut map = self.unconfirmed.lock().unwrap_or_else(|p| p.into_inner());
                map.insert(doc.as_str().to_owned(), meta.id);
            }
            if !self.store.create(doc, &meta, &body)? {
                let mut map = self.unconfirmed.lock().unwrap_or_else(|p| p.into_inner());
                map.remove(doc.as_str());
                *cursor = Cursor::default();
                continue;
            }
            cursor.last = Some(meta.clone());
            cursor.text = capture.text;
            return Ok(Some(meta));
        }
        Err(StoreError::Unavailable("other nodes kept taking the next version id".into()).into())
    }

    /// Rereads `cursor` from the store when it is empty or, in a shared history, behind.
    fn refresh(&self, doc: &RoomName, cursor: &mut Cursor) -> Result<(), HistoryError> {
        if cursor.last.is_some() && !self.store.shared() {
            return Ok(());
        }
        let last = self.store.last(doc)?;
        if last.as_ref().map(|m| m.id) != cursor.last.as_ref().map(|m| m.id) {
            *cursor = self.cursor(doc)?;
        }
        Ok(())
    }

    /// The newest version of `doc`, durable or not.
    pub(crate) fn last(&self, doc: &RoomName) -> Result<Option<VersionMeta>, StoreError> {
        self.store.last(doc)
    }

    /// Whether several nodes write this history (a cluster): then only the holder of a
    /// document's recorder lease records its versions.
    pub(crate) fn shared(&self) -> bool {
        self.store.shared()
    }

    /// Takes or renews `doc`'s recorder lease; `force` takes it from another live node.
    pub(crate) fn claim(&self, doc: &RoomName, force: bool) -> Result<bool, StoreError> {
        self.store.claim(doc, force)
    }

    /// Gives `doc`'s recorder lease up if this node holds it.
    pub(crate) fn release(&self, doc: &RoomName) -> Result<(), StoreError> {
        self.store.release(doc)
    }

    /// The diff of version `v` against version `against` (default: the version before `v`,
    /// or the empty text when `v` is the first), with authors.
    pub(crate) fn diff(
        &self,
        doc: &RoomName,
        v: u64,
        against: Option<u64>,
    ) -> Result<Vec<Chunk>, HistoryError> {
        let metas = self.list(doc)?;
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
        let body = self.store.body(doc, v)?.ok_or(HistoryError::NoVersion)?;
        let ops = if u == previous {
            body.ops
        } else {
            delta::between(&old, &self.text_among(doc, v, &ids)?)
        };
        let fallback = single_author(&metas, u.unwrap_or(0), v);
        let chunks = delta::chunks(&old, &ops)?;
        Ok(attribute(chunks, &body.runs, fallback))
    }

    /// Thins `doc`'s old versions (see [`thin`]) as of now, keeping `keep_days` days whole.
    pub(crate) fn thin_now(&self, doc: &RoomName, keep_days: u64) -> Result<usize, HistoryError> {
        thin(self, doc, now_ms(), keep_days)
    }
}

/// The version `capture` makes after `cursor`, and its body: a keyframe for the first
/// version and every [`KEYFRAME_EVERY`]th, else the delta from the cursor's text.
fn next_version(cursor: &Cursor, capture: &Capture, changed: bool) -> (VersionMeta, VersionBody) {
    let ops = delta::between(&cursor.text, &capture.text);
    let (inserted, deleted) = delta::counts(&ops);
    let id = cursor.last.as_ref().map_or(1, |m| m.id + 1);
    let meta = VersionMeta {
        id,
        created_ms: capture.at_ms,
        name: capture.name.clone(),
        authors: if changed {
            capture.authors.clone()
        } else {
            Vec::new()
        },
        inserted,
        deleted,
        size: delta::chars(&capture.text),
        seq: capture.seq,
    };
    let keyframe = cursor.last.is_none() || id % KEYFRAME_EVERY == 1;
    let body = VersionBody {
        text: keyframe.then(|| capture.text.clone()),
        ops,
        runs: capture.runs.clone().unwrap_or_default(),
    };
    (meta, body)
}

/// Walks author runs (characters) alongside a text.
struct RunWalk<'a> {
    runs: std::slice::Iter<'a, (Option<String>, u64)>,
    head: Option<(Option<String>, u64)>,
}

impl RunWalk<'_> {
    /// The next `n` characters' runs, in order.
    fn take(&mut self, mut n: u64) -> Vec<(Option<String>, u64)> {
        let mut out = Vec::new();
        while n > 0 {
            let Some((who, left)) = self.head.take().or_else(|| self.runs.next().cloned()) else {
                break;
            };
            let used = left.min(n);
            if left > used {
                self.head = Some((who.clone(), left - used));
            }
            out.push((who, used));
            n -= used;
        }
        out
    }
}

/// Names the authors of `chunks`: inserted characters by `runs` (who wrote each character of
/// the newer text) when known, deleted ones, and inserted ones of unknown writer, `fallback`.
fn attribute(
    chunks: Vec<(Kind, String)>,
    runs: &[(Option<String>, u64)],
    fallback: Option<String>,
) -> Vec<Chunk> {
    let newer: u64 = chunks
        .iter()
        .filter(|(k, _)| *k != Kind::Delete)
        .map(|(_, t)| delta::chars(t))
        .sum();
    let known = !runs.is_empty() && runs.iter().map(|r| r.1).sum::<u64>() == newer;
    let mut walk = RunWalk {
        runs: runs.iter(),
        head: None,
    };
    let mut out = Vec::with_capacity(chunks.len());
    for (kind, text) in chunks {
        let author = match kind {
            Kind::Equal => {
                walk.take(delta::chars(&text));
                None
            }
            Kind::Insert if known => {
                let mut rest = text.as_str();
                for (who, n) in walk.take(delta::chars(&text)) {
                    let cut = rest
                        .char_indices()
                        .nth(n as usize)
                        .map_or(rest.len(), |(i, _)| i);
                    let author = who.or_else(|| fallback.clone());
                    out.push(Chunk {
                        kind,
                        text: rest[..cut].to_owned(),
                        author,
                    });
                    rest = &rest[cut..];
                }
                continue;
            }
            Kind::Insert | Kind::Delete => fallback.clone(),
        };
        out.push(Chunk { kind, text, author });
    }
    out
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
