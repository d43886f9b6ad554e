//! Large values stored in pieces, so that no page sled writes comes near its blob threshold.
//!
//! sled 0.34.7 writes any page larger than a quarter of a log segment to a file of its own under
//! `blobs/`. A failed blob write (a full disk, a removed data directory) leaves the I/O buffer's
//! writer count raised (`Log::reserve_inner` returns early), and every later flush waits for it
//! forever. So the store never hands sled a value larger than [`piece_len`]: an update,
//! snapshot or quarantine record above it is split into numbered pieces written in the same
//! atomic batch, and reassembled when read.
//!
//! A leaf page holds the values of up to 17 keys (sled splits a leaf once it has more than 16)
//! and sled rewrites it whole when it consolidates its changes, so one piece must stay below a
//! seventeenth of the threshold with room for keys and headers: a piece is 1/128 of a segment
//! (64 KiB with the 8 MiB segments of new stores, 4 KiB with the 512 KiB of older ones), and a
//! full leaf of pieces takes about 13 % of a segment, half the quarter at which a blob starts.
//!
//! Keys: a value fitting one piece keeps its plain key (the format before pieces, still read
//! and written). Pieces are `{base}{index: u32 BE}{count: u32 BE}`, where `base` is the plain
//! key for sequence-keyed records (`u\0{doc}\0{seq}`, `q\0{doc}\0{seq}`) and `s\0{doc}\0` for
//! snapshots (the plain snapshot key `s\0{doc}` could be a prefix of another document's). So a
//! value's pieces sort together, in order, right after where its plain key would be.

use super::StoreError;

/// Bytes a piece's key adds to its base: index and count, u32 BE each.
pub(super) const PIECE_TAIL: usize = 8;

/// Smallest piece used, whatever the segment size: the largest metadata, refusal and probe
/// records (titles and reasons are capped at 1 KiB) always fit one.
const MIN_PIECE: usize = 4 * 1024;

/// The largest value stored under one key in a store with log segments of `segment_size`.
pub(super) fn piece_len(segment_size: usize) -> usize {
    (segment_size / 128).max(MIN_PIECE)
}

/// Adds `value` to `batch`: under `key` when it fits one piece of `piece`, else as pieces
/// `{base}{index}{count}`.
pub(super) fn insert_value(
    batch: &mut sled::Batch,
    key: &[u8],
    base: &[u8],
    value: &[u8],
    piece: usize,
) {
    if value.len() <= piece {
        batch.insert(key, value);
        return;
    }
    let chunks = value.chunks(piece.max(1));
    let count = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
    for (index, chunk) in (0u32..).zip(chunks) {
        batch.insert(piece_key(base, index, count), chunk);
    }
}

/// The key of piece `index` of `count` of the value whose pieces start with `base`.
pub(super) fn piece_key(base: &[u8], index: u32, count: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(base.len() + PIECE_TAIL);
    key.extend_from_slice(base);
    key.extend_from_slice(&index.to_be_bytes());
    key.extend_from_slice(&count.to_be_bytes());
    key
}

/// Reads `(index, count)` from the last [`PIECE_TAIL`] bytes of a piece key.
pub(super) fn parse_piece(doc: &str, tail: &[u8]) -> Result<(u32, u32), StoreError> {
    let half = |at: usize| {
        tail.get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
    };
    match (tail.len(), half(0), half(4)) {
        (PIECE_TAIL, Some(index), Some(count)) if index < count => Ok((index, count)),
        _ => Err(StoreError::corrupt(
            doc,
            format!("piece key tail of {} bytes", tail.len()),
        )),
    }
}

/// A value being reassembled from its pieces.
struct Partial {
    /// Sequence number of the record (0 for a snapshot).
    seq: u64,
    /// Pieces it has.
    count: u32,
    /// The next piece expected.
    next: u32,
    /// The pieces so far, concatenated.
    bytes: Vec<u8>,
}

/// Reassembles values from records read in key order: plain values pass through, pieces are
/// joined once the last one arrived. A missing, repeated or out-of-order piece is
/// [`StoreError::Corrupt`].
pub(super) struct Assembler<'a> {
    /// The document, for error messages.
    doc: &'a str,
    /// The value whose pieces are being read.
    partial: Option<Partial>,
}

impl<'a> Assembler<'a> {
    /// An assembler for records of `doc`.
    pub(super) fn new(doc: &'a str) -> Self {
        Self { doc, partial: None }
    }

    /// Feeds record `seq`: a plain value (`piece == None`) or piece `(index, count)`. Returns
    /// the value once complete.
    pub(super) fn push(
        &mut self,
        seq: u64,
        piece: Option<(u32, u32)>,
        value: &[u8],
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let Some((index, count)) = piece else {
            self.expect_no_partial()?;
            return Ok(Some((seq, value.to_vec())));
        };
        let partial = match self.partial.as_mut() {
            Some(p) if p.seq == seq && p.count == count && p.next == index => p,
            Some(_) => return Err(self.broken(seq)),
            None if index == 0 => self.partial.insert(Partial {
                seq,
                count,
                next: 0,
                // The count comes from disk: reserve for a bounded number of pieces only.
                bytes: Vec::with_capacity(value.len().saturating_mul(count.min(256) as usize)),
            }),
            None => return Err(self.broken(seq)),
        };
        partial.bytes.extend_from_slice(value);
        partial.next += 1;
        if partial.next < partial.count {
            return Ok(None);
        }
        Ok(self.partial.take().map(|p| (p.seq, p.bytes)))
    }

    /// Ends the reading: a value still missing pieces is corrupt.
    pub(super) fn finish(self) -> Result<(), StoreError> {
        self.expect_no_partial()
    }

    fn expect_no_partial(&self) -> Result<(), StoreError> {
        match &self.partial {
            Some(p) => Err(self.broken(p.seq)),
            None => Ok(()),
        }
    }

    fn broken(&self, seq: u64) -> StoreError {
        let what = match &self.partial {
            Some(p) => format!(
                "record {} has {} of its {} pieces (next record {seq})",
                p.seq, p.next, p.count
            ),
            None => format!("record {seq} starts in the middle of its pieces"),
        };
        StoreError::corrupt(self.doc, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as read: sequence number, piece, value.
    type Record<'a> = (u64, Option<(u32, u32)>, &'a [u8]);

    /// Collects what an assembler makes of `records`.
    fn assemble(records: &[Record<'_>]) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut asm = Assembler::new("d");
        let mut out = Vec::new();
        for (seq, piece, value) in records {
            out.extend(asm.push(*seq, *piece, value)?);
        }
        asm.finish()?;
        Ok(out)
    }

    /// Segment sizes map to pieces a full leaf of which stays far below sled's blob threshold.
    #[test]
    fn pieces_keep_a_full_leaf_below_the_blob_threshold() {
        assert_eq!(piece_len(8 << 20), 64 * 1024);
        assert_eq!(piece_len(512 * 1024), 4 * 1024);
        for segment in [512 * 1024, 1 << 20, 8 << 20, 16 << 20] {
            // 17 values with generous key and header overhead, against two thirds of a quarter.
            let leaf = 17 * (piece_len(segment) + 64);
            assert!(leaf < segment / 4 * 2 / 3, "{segment}: leaf of {leaf}");
        }
    }

    /// Small values keep their plain key; large ones become ordered pieces that reassemble.
    #[test]
    fn values_split_and_reassemble() {
        let mut batch = sled::Batch::default();
        insert_value(&mut batch, b"k", b"k", b"small", 8);
        let db = sled::Config::new().temporary(true).open().expect("sled");
        db.apply_batch(batch).expect("batch");
        assert_eq!(db.get(b"k").expect("get").as_deref(), Some(&b"small"[..]));

        let value: Vec<u8> = (0..=20u8).collect();
        let mut batch = sled::Batch::default();
        insert_value(&mut batch, b"v", b"v", &value, 8);
        db.apply_batch(batch).expect("batch");
        assert!(db.get(b"v").expect("get").is_none());
        let mut asm = Assembler::new("d");
        let mut out = None;
        for kv in db.scan_prefix(b"v") {
            let (key, piece) = kv.expect("scan");
            let tail = parse_piece("d", &key[1..]).expect("piece key");
            assert_eq!(tail.1, 3, "21 bytes in pieces of 8");
            out = asm.push(7, Some(tail), &piece).expect("push").or(out);
        }
        asm.finish().expect("complete");
        assert_eq!(out, Some((7, value)));
    }

    /// Plain values and complete piece sets mix; gaps, repeats and truncation are corrupt.
    #[test]
    fn damaged_piece_sets_are_corrupt() {
        let ok = assemble(&[
            (1, None, b"a"),
            (2, Some((0, 2)), b"b"),
            (2, Some((1, 2)), b"c"),
            (3, None, b"d"),
        ])
        .expect("valid");
        assert_eq!(
            ok,
            vec![(1, b"a".to_vec()), (2, b"bc".to_vec()), (3, b"d".to_vec())]
        );
        for bad in [
            &[(2, Some((0, 2)), &b"b"[..])][..],
            &[(2, Some((1, 2)), b"c")],
            &[(2, Some((0, 2)), b"b"), (2, Some((0, 2)), b"b")],
            &[(2, Some((0, 2)), b"b"), (3, None, b"d")],
            &[(2, Some((0, 3)), b"b"), (2, Some((1, 2)), b"c")],
        ] {
            assert!(
                matches!(assemble(bad), Err(StoreError::Corrupt { .. })),
                "{bad:?}"
            );
        }
        assert!(
            parse_piece("d", &piece_key(b"", 2, 2)).is_err(),
            "index past count"
        );
        assert!(parse_piece("d", &[0; 7]).is_err());
    }
}
