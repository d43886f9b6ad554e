//! Key layout and record encodings of the sled store (the table in the [`store`](super) docs).
//!
//! Keys are `{tag}\0{doc}` or `{tag}\0{doc}\0{seq: u64 BE}`, so one document's records of one
//! kind are a contiguous, seq-ordered range of the `docs` tree; a value too large for one key
//! adds a piece index and count after that (`pieces.rs`). Values are fixed binary records with
//! a version byte, decoded without trusting their lengths.

use super::pieces::{parse_piece, PIECE_TAIL};
use super::{DocMeta, QuarantinedUpdate, StoreError};

/// Tag of a document's metadata record, `m\0{doc}`.
pub(super) const TAG_META: u8 = b'm';
/// Tag of a document's snapshot, `s\0{doc}`.
pub(super) const TAG_SNAPSHOT: u8 = b's';
/// Tag of a logged update, `u\0{doc}\0{seq}`.
pub(super) const TAG_UPDATE: u8 = b'u';
/// Tag of a quarantined update, `q\0{doc}\0{seq}`.
pub(super) const TAG_QUARANTINE: u8 = b'q';
/// Tag of a refused update hash, `r\0{sha256}`.
pub(super) const TAG_REFUSED: u8 = b'r';
/// The transient key [`Store::check_writable`](super::Store::check_writable) writes and removes.
pub(super) const PROBE_KEY: &[u8] = b"p\0probe";

/// `m\0{doc}` / `s\0{doc}`.
pub(super) fn doc_key(tag: u8, doc: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + doc.len());
    key.push(tag);
    key.push(0);
    key.extend_from_slice(doc.as_bytes());
    key
}

/// `u\0{doc}\0` / `q\0{doc}\0`: the prefix of a document's sequence-keyed records.
pub(super) fn seq_prefix(tag: u8, doc: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(3 + doc.len() + 8);
    key.push(tag);
    key.push(0);
    key.extend_from_slice(doc.as_bytes());
    key.push(0);
    key
}

/// `u\0{doc}\0{seq BE}` / `q\0{doc}\0{seq BE}`.
pub(super) fn seq_key(tag: u8, doc: &str, seq: u64) -> Vec<u8> {
    let mut key = seq_prefix(tag, doc);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Reads the sequence number of a key that starts with a prefix of `prefix_len` bytes, and
/// `(index, count)` if the key is a piece of a larger value (see `pieces.rs`).
pub(super) fn parse_seq(
    doc: &str,
    key: &[u8],
    prefix_len: usize,
) -> Result<(u64, Option<(u32, u32)>), StoreError> {
    let bad = || StoreError::corrupt(doc, format!("log key of {} bytes", key.len()));
    let tail = key.get(prefix_len..).ok_or_else(bad)?;
    let seq = tail
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(bad)?;
    match tail.len() {
        8 => Ok((seq, None)),
        n if n == 8 + PIECE_TAIL => Ok((seq, Some(parse_piece(doc, &tail[8..])?))),
        _ => Err(bad()),
    }
}

/// Longest title kept, in bytes (longer ones are cut at a character boundary), so that a
/// metadata record always fits one piece.
pub(super) const MAX_TITLE_LEN: usize = 1024;

/// `s` cut to at most `max` bytes at a character boundary.
pub(super) fn clip(s: &str, max: usize) -> &str {
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// Refuses ids the key layout cannot hold: an empty id, or one with `\0` (the separator).
///
/// [`RoomName`](weft_protocol::RoomName) already rules both out; the check stays because the
/// layout depends on it, not on the protocol crate's naming rules.
pub(super) fn check_doc(doc: &str) -> Result<(), StoreError> {
    let why = if doc.is_empty() {
        "empty"
    } else if doc.contains('\0') {
        "contains NUL"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidDoc {
        doc: doc.to_owned(),
        why,
    })
}

/// Reads a big-endian u64 at `at`, or `None` if out of range.
fn be_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let end = at.checked_add(8)?;
    let chunk = bytes.get(at..end)?;
    <[u8; 8]>::try_from(chunk).ok().map(u64::from_be_bytes)
}

/// The stored metadata record.
///
/// Encoding, version 1: `[1][created][updated][size][snapshot_len][next_seq][quarantined]`
/// (u64 BE each) `[title: 0 none | 1 automatic | 2 pinned][title UTF-8 ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MetaRec {
    /// Creation time, Unix ms.
    pub(super) created_ms: u64,
    /// Time of the last append or title change, Unix ms.
    pub(super) updated_ms: u64,
    /// Bytes of the snapshot plus the logged updates.
    pub(super) size_bytes: u64,
    /// Bytes of the snapshot alone, so a compaction can replace it in `size_bytes`.
    pub(super) snapshot_len: u64,
    /// The sequence number the next append takes.
    pub(super) next_seq: u64,
    /// Updates moved to quarantine.
    pub(super) quarantined: u64,
    /// Title, if one was set.
    pub(super) title: Option<String>,
    /// The title was set explicitly (through the API), so edits no longer replace it.
    pub(super) title_pinned: bool,
}

/// Version byte of the metadata encoding.
const META_VERSION: u8 = 1;
/// Bytes of the metadata record before the title.
const META_FIXED_LEN: usize = 1 + 6 * 8 + 1;

impl MetaRec {
    /// A new document's record, created and updated `now`.
    pub(super) fn new(now: u64) -> Self {
        Self {
            created_ms: now,
            updated_ms: now,
            size_bytes: 0,
            snapshot_len: 0,
            next_seq: 1,
            quarantined: 0,
            title: None,
            title_pinned: false,
        }
    }

    /// The stored bytes of this record.
    pub(super) fn encode(&self) -> Vec<u8> {
        let title = self.title.as_deref().unwrap_or("");
        let mut out = Vec::with_capacity(META_FIXED_LEN + title.len());
        out.push(META_VERSION);
        for v in [
            self.created_ms,
            self.updated_ms,
            self.size_bytes,
            self.snapshot_len,
            self.next_seq,
            self.quarantined,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.push(match (&self.title, self.title_pinned) {
            (None, _) => 0,
            (Some(_), false) => 1,
            (Some(_), true) => 2,
        });
        out.extend_from_slice(title.as_bytes());
        out
    }

    /// Reads a stored record of `doc`.
    pub(super) fn decode(doc: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        Self::decode_with(doc, bytes, true)
    }

    /// Decodes a record without its title (`title` is `None`): what a listing sorts and pages
    /// by, without reading every document's title.
    pub(super) fn decode_untitled(doc: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        Self::decode_with(doc, bytes, false)
    }

    fn decode_with(doc: &str, bytes: &[u8], with_title: bool) -> Result<Self, StoreError> {
        match bytes.first() {
            Some(&META_VERSION) => {}
            Some(v) => return Err(StoreError::corrupt(doc, format!("metadata version {v}"))),
            None => return Err(StoreError::corrupt(doc, "empty metadata record")),
        }
        if bytes.len() < META_FIXED_LEN {
            return Err(StoreError::corrupt(
                doc,
                format!("metadata record of {} bytes", bytes.len()),
            ));
        }
        let field = |i: usize| {
            be_u64(bytes, 1 + 8 * i).ok_or_else(|| StoreError::corrupt(doc, "short metadata"))
        };
        let title_bytes = &bytes[META_FIXED_LEN..];
        let flag = bytes[META_FIXED_LEN - 1];
        let title = match flag {
            0 if title_bytes.is_empty() => None,
            1 | 2 if !with_title => None,
            1 | 2 => Some(
                std::str::from_utf8(title_bytes)
                    .map_err(|_| StoreError::corrupt(doc, "metadata title is not UTF-8"))?
                    .to_owned(),
            ),
            _ => return Err(StoreError::corrupt(doc, "metadata title flag")),
        };
        let rec = Self {
            created_ms: field(0)?,
            updated_ms: field(1)?,
            size_bytes: field(2)?,
            snapshot_len: field(3)?,
            next_seq: field(4)?,
            quarantined: field(5)?,
            title,
            title_pinned: flag == 2,
        };
        if rec.next_seq == 0 {
            return Err(StoreError::corrupt(doc, "metadata next_seq is 0"));
        }
        Ok(rec)
    }

    /// The public view of this record for document `id`.
    pub(super) fn to_doc_meta(&self, id: &str) -> DocMeta {
        DocMeta {
            id: id.to_owned(),
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            size_bytes: self.size_bytes,
            update_count: self.next_seq.saturating_sub(1),
            title: self.title.clone(),
            title_pinned: self.title_pinned,
            quarantined: self.quarantined,
        }
    }
}

/// Longest quarantine reason kept, in bytes (longer ones are cut at a character boundary).
const MAX_REASON_LEN: usize = 1024;

/// Quarantine record: `[1][at_ms u64 BE][reason_len u32 BE][reason][update]`.
pub(super) fn encode_quarantine(at_ms: u64, reason: &str, update: &[u8]) -> Vec<u8> {
    let reason = clip(reason, MAX_REASON_LEN);
    let mut out = Vec::with_capacity(13 + reason.len() + update.len());
    out.push(1);
    out.extend_from_slice(&at_ms.to_be_bytes());
    out.extend_from_slice(&u32::try_from(reason.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(update);
    out
}

/// Reads quarantine record `seq` of `doc`.
pub(super) fn decode_quarantine(
    doc: &str,
    seq: u64,
    bytes: &[u8],
) -> Result<QuarantinedUpdate, StoreError> {
    let bad = || StoreError::corrupt(doc, format!("quarantine record {seq}"));
    if bytes.first() != Some(&1) {
        return Err(bad());
    }
    let at_ms = be_u64(bytes, 1).ok_or_else(bad)?;
    let len_bytes = bytes
        .get(9..13)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .ok_or_else(bad)?;
    let reason_end = usize::try_from(u32::from_be_bytes(len_bytes))
        .ok()
        .and_then(|len| len.checked_add(13))
        .ok_or_else(bad)?;
    let reason = bytes.get(13..reason_end).ok_or_else(bad)?;
    let reason = std::str::from_utf8(reason).map_err(|_| bad())?.to_owned();
    let update = bytes.get(reason_end..).ok_or_else(bad)?.to_vec();
    Ok(QuarantinedUpdate {
        seq,
        at_ms,
        reason,
        update,
    })
}

/// A per-document time as the trash and revocation trees store it: eight bytes, big-endian.
pub(super) fn decode_time(value: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(value).ok().map(u64::from_be_bytes)
}

/// Every `(document, time)` record of the sled tree `tree`, in key order; a record that cannot
/// be decoded is skipped with an error naming `what` it was.
pub(super) fn doc_times(
    db: &sled::Db,
    tree: &str,
    what: &str,
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut out = Vec::new();
    for entry in db.open_tree(tree)?.iter() {
        let (key, value) = entry?;
        match (std::str::from_utf8(&key), decode_time(&value)) {
            (Ok(doc), Some(at)) => out.push((doc.to_owned(), at)),
            _ => tracing::error!(len = key.len(), "skipping a malformed {what} record"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Big-endian keys keep log order past seq 255 and 65535, and stay inside their document.
    #[test]
    fn sequence_keys_sort_numerically() {
        assert!(seq_key(TAG_UPDATE, "d", 255) < seq_key(TAG_UPDATE, "d", 256));
        assert!(seq_key(TAG_UPDATE, "d", 65_535) < seq_key(TAG_UPDATE, "d", 65_536));
        assert!(seq_key(TAG_UPDATE, "d", u64::MAX) < seq_prefix(TAG_UPDATE, "d\u{1}"));
        let key = seq_key(TAG_QUARANTINE, "doc", 70_000);
        let prefix_len = seq_prefix(TAG_QUARANTINE, "doc").len();
        assert_eq!(
            parse_seq("doc", &key, prefix_len).expect("seq"),
            (70_000, None)
        );
        assert!(parse_seq("doc", &key[..key.len() - 1], prefix_len).is_err());
        let piece = crate::store::pieces::piece_key(&key, 2, 5);
        assert_eq!(
            parse_seq("doc", &piece, prefix_len).expect("piece"),
            (70_000, Some((2, 5)))
        );
        assert!(parse_seq("doc", &piece[..piece.len() - 1], prefix_len).is_err());
        assert_eq!(clip("aé", 2), "a");
    }

    /// Ids the key layout cannot hold are refused before any key is built.
    #[test]
    fn ids_that_break_the_layout_are_refused() {
        check_doc("doc").expect("valid id");
        assert!(matches!(check_doc(""), Err(StoreError::InvalidDoc { .. })));
        assert!(matches!(
            check_doc("a\0b"),
            Err(StoreError::InvalidDoc { .. })
        ));
    }

    /// Metadata and quarantine records decode to what was encoded; damage is an error.
    #[test]
    fn records_round_trip() {
        let mut meta = MetaRec::new(5);
        meta.next_seq = 9;
        meta.title = Some("Title".to_owned());
        meta.title_pinned = true;
        assert_eq!(MetaRec::decode("d", &meta.encode()).expect("meta"), meta);
        assert!(MetaRec::decode("d", &meta.encode()[..10]).is_err());
        let record = encode_quarantine(7, "why", b"update");
        let q = decode_quarantine("d", 3, &record).expect("quarantine");
        assert_eq!((q.seq, q.at_ms, q.reason.as_str()), (3, 7, "why"));
        assert_eq!(q.update, b"update");
        assert!(decode_quarantine("d", 3, &record[..5]).is_err());
    }
}
