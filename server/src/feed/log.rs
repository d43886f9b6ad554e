//! The feed's durable record in a sled tree of its own, in the store's database (so the store's
//! flushes cover it, and a mark written in a batch is durable with that batch's updates).
//!
//! Keys (all integers big-endian, so sled's order is numeric order):
//! - `e` + seq → the [`Record`]'s JSON: the events, oldest first;
//! - `m` + mark id + doc → flags: changes acknowledged whose events are not recorded yet (see
//!   the [`feed`](super) docs);
//! - `n` → the next seq (written in the same batch as the events that used the ones before);
//! - `p` → the highest seq ever pruned (0: none), so a `since` older than that is refused.

use std::ops::Bound;

use crate::feed::event::Record;
use crate::store::StoreError;

const EVENT: u8 = b'e';
const MARK: u8 = b'm';
const NEXT: &[u8] = b"n";
const PRUNED: &[u8] = b"p";

/// A mark's flags: which events a change still owes.
pub(crate) mod flags {
    /// The document was created.
    pub(crate) const CREATED: u8 = 1;
    /// The document's text changed.
    pub(crate) const UPDATED: u8 = 2;
    /// The document was deleted.
    pub(crate) const DELETED: u8 = 4;
    /// Version history recorded a version (a mark of its own: see [`super::Mark::version`]).
    pub(crate) const VERSION: u8 = 8;
}

/// A change acknowledged whose event is not recorded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mark {
    /// Its id (global, increasing within one run).
    pub(crate) id: u64,
    /// The document.
    pub(crate) doc: String,
    /// What it owes ([`flags`]).
    pub(crate) flags: u8,
    /// The text's length (UTF-16 units) with the changes it covers.
    pub(crate) text_length: u64,
    /// The text's first line when the window's first change was made.
    pub(crate) title: String,
    /// A [`flags::VERSION`] mark's version number and authors (its text fields are empty).
    pub(crate) version: Option<(u64, Vec<String>)>,
}

/// The feed's tree.
#[derive(Clone)]
pub(crate) struct EventLog {
    tree: sled::Tree,
}

fn event_key(seq: u64) -> [u8; 9] {
    let mut k = [EVENT; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn mark_key(id: u64, doc: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + doc.len());
    k.push(MARK);
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(doc.as_bytes());
    k
}

fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt {
        doc: "(change feed)".into(),
        what: what.into(),
    }
}

impl EventLog {
    /// The log kept in `tree`.
    pub(crate) fn new(tree: sled::Tree) -> Self {
        Self { tree }
    }

    /// The seq the next event gets (1 on a new store).
    pub(crate) fn next_seq(&self) -> Result<u64, StoreError> {
        let stored = self.tree.get(NEXT)?;
        Ok(stored.as_deref().and_then(read_u64).unwrap_or(1).max(1))
    }

    /// The highest seq ever pruned (0: none).
    pub(crate) fn pruned(&self) -> Result<u64, StoreError> {
        Ok(self
            .tree
            .get(PRUNED)?
            .as_deref()
            .and_then(read_u64)
            .unwrap_or(0))
    }

    /// Records `events` as `first`, `first + 1`, … and settles `settled` marks, in one atomic
    /// batch (durable with the store's next flush).
    pub(crate) fn append(
        &self,
        first: u64,
        events: &[Record],
        settled: &[(u64, String)],
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (i, record) in events.iter().enumerate() {
            let json =
                serde_json::to_vec(record).map_err(|e| corrupt(&format!("encoding: {e}")))?;
            batch.insert(&event_key(first + i as u64), json);
        }
        batch.insert(NEXT, &(first + events.len() as u64).to_be_bytes());
        for (id, doc) in settled {
            batch.remove(mark_key(*id, doc));
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Removes the marks `settled` (their events are recorded elsewhere: a cluster's log).
    pub(crate) fn settle(&self, settled: &[(u64, String)]) -> Result<(), StoreError> {
        if settled.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (id, doc) in settled {
            batch.remove(mark_key(*id, doc));
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Records `events` numbered elsewhere (a cluster's log), each under its own seq, in one
    /// batch; the next seq expected becomes the one after the last. Storing one again is
    /// harmless: it is the same event under the same key.
    pub(crate) fn store(&self, events: &[Record]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for record in events {
            let json =
                serde_json::to_vec(record).map_err(|e| corrupt(&format!("encoding: {e}")))?;
            batch.insert(&event_key(record.seq), json);
        }
        if let Some(last) = events.last() {
            batch.insert(NEXT, &(last.seq + 1).to_be_bytes());
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// The events before `first` are gone for good (the cluster's log dropped them before
    /// this mirror saw them): they count as pruned, and the next seq expected is `first`.
    pub(crate) fn skip_to(&self, first: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(
            PRUNED,
            &first.saturating_sub(1).max(self.pruned()?).to_be_bytes(),
        );
        batch.insert(NEXT, &first.max(self.next_seq()?).to_be_bytes());
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Up to `limit` events after `since` and up to `upto`, in order, filtered to `doc` when
    /// given, looking at no more than `scan` events; with the last seq looked at (`since` when
    /// none).
    pub(crate) fn read(
        &self,
        (since, upto): (u64, u64),
        limit: usize,
        doc: Option<&str>,
        scan: usize,
    ) -> Result<(Vec<Record>, u64), StoreError> {
        if upto <= since {
            return Ok((Vec::new(), since));
        }
        let start = Bound::Excluded(event_key(since));
        let end = Bound::Included(event_key(upto));
        let mut out = Vec::new();
        let mut last = since;
        for item in self.tree.range::<[u8; 9], _>((start, end)).take(scan) {
            let (key, value) = item?;
            let record: Record = serde_json::from_slice(&value)
                .map_err(|e| corrupt(&format!("event {key:?}: {e}")))?;
            last = record.seq;
            if doc.is_none_or(|d| record.event.doc() == d) {
                out.push(record);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok((out, last))
    }

    /// The oldest seq still kept, if any.
    pub(crate) fn oldest(&self) -> Result<Option<u64>, StoreError> {
        let first = self.tree.range(event_key(0)..=event_key(u64::MAX)).next();
        match first {
            Some(item) => Ok(read_u64(&item?.0[1..])),
            None => Ok(None),
        }
    }

    /// Removes the events recorded before `cutoff` (RFC 3339); returns how many. The newest
    /// event is always kept, so the feed never forgets where it is.
    pub(crate) fn prune(&self, cutoff: &str) -> Result<usize, StoreError> {
        let mut removed = 0;
        let mut batch = sled::Batch::default();
        let mut pruned = None;
        let last = self
            .tree
            .range(event_key(0)..=event_key(u64::MAX))
            .next_back();
        let last = match last {
            Some(item) => read_u64(&item?.0[1..]).unwrap_or(0),
            None => return Ok(0),
        };
        for item in self.tree.range(event_key(0)..event_key(last)) {
            let (key, value) = item?;
            let record: Record = serde_json::from_slice(&value)
                .map_err(|e| corrupt(&format!("event {key:?}: {e}")))?;
            // RFC 3339 in one fixed format and zone orders as text.
            if record.at.as_str() >= cutoff {
                break;
            }
            batch.remove(key);
            pruned = Some(record.seq);
            removed += 1;
        }
        if let Some(seq) = pruned {
            batch.insert(PRUNED, &seq.to_be_bytes());
            self.tree.apply_batch(batch)?;
        }
        Ok(removed)
    }

    /// Writes (or rewrites) mark `id`: `doc` owes the events `flags` names, its text now
    /// `text_length` long and titled `title`.
    pub(crate) fn mark(
        &self,
        id: u64,
        doc: &str,
        flags: u8,
        (text_length, title): (u64, &str),
    ) -> Result<(), StoreError> {
        let mut value = Vec::with_capacity(9 + title.len());
        value.push(flags);
        value.extend_from_slice(&text_length.to_be_bytes());
        value.extend_from_slice(title.as_bytes());
        self.tree.insert(mark_key(id, doc), value)?;
        Ok(())
    }

    /// Writes mark `id`: version `version` of `doc`, by `authors`, is durable with the same
    /// flush as this mark and owes its `version.created`.
    pub(crate) fn mark_version(
        &self,
        id: u64,
        doc: &str,
        version: u64,
        authors: &[String],
    ) -> Result<(), StoreError> {
        let authors = serde_json::to_vec(authors).map_err(|e| corrupt(&e.to_string()))?;
        let mut value = Vec::with_capacity(9 + authors.len());
        value.push(flags::VERSION);
        value.extend_from_slice(&version.to_be_bytes());
        value.extend_from_slice(&authors);
        self.tree.insert(mark_key(id, doc), value)?;
        Ok(())
    }

    /// Every mark, in id order.
    pub(crate) fn marks(&self) -> Result<Vec<Mark>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([MARK]) {
            let (key, value) = item?;
            let id = read_u64(&key[1..]).ok_or_else(|| corrupt("short mark key"))?;
            let doc = String::from_utf8(key[9..].to_vec()).map_err(|_| corrupt("mark doc"))?;
            let flags = value.first().copied().unwrap_or(0);
            let number = value.get(1..).and_then(read_u64).unwrap_or(0);
            let rest = value.get(9..).unwrap_or_default();
            let mark = if flags & flags::VERSION != 0 {
                let authors = serde_json::from_slice(rest).unwrap_or_default();
                Mark {
                    id,
                    doc,
                    flags,
                    text_length: 0,
                    title: String::new(),
                    version: Some((number, authors)),
                }
            } else {
                Mark {
                    id,
                    doc,
                    flags,
                    text_length: number,
                    title: String::from_utf8_lossy(rest).into_owned(),
                    version: None,
                }
            };
            out.push(mark);
        }
        Ok(out)
    }
}
