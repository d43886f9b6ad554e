//! Backups at the store layer: the byte format `GET /api/backup` streams and `weft backup`
//! reads, and [`SledStore::import`], which writes one backed-up document into a store with the
//! metadata it had.
//!
//! ## Stream format, version 1
//!
//! ```text
//! stream  = MAGIC VERSION record*
//! MAGIC   = "weft-backup\n"                          (12 bytes)
//! VERSION = 0x01                                      (1 byte)
//! record  = kind: u8, len: u64 big-endian, payload: len bytes
//! ```
//!
//! | kind | payload                                                                   |
//! |------|---------------------------------------------------------------------------|
//! | `H`  | header, JSON `{"started_ms", "documents"}`: the documents listed at start |
//! | `D`  | document: `meta_len: u32 BE`, meta JSON ([`BackupMeta`]), then its whole  |
//! |      | state as one Yjs v1 update (the rest of the payload)                      |
//! | `S`  | skipped document, JSON `{"id", "reason", "failed"}`: deleted after the   |
//! |      | listing (`failed: false`) or could not be read (`failed: true`)           |
//! | `X`  | the server failed, JSON `{"message"}`; nothing follows                    |
//! | `E`  | end, JSON `{"documents", "skipped"}`: how many `D` and `S` records came   |
//!
//! A complete stream is the header, one `D` or `S` record per listed document, and `E` as the
//! very last bytes. A reader detects truncation (the connection cut, the server stopped) by the
//! missing trailer, and a miscount by comparing the trailer with what it received. A reader of
//! version 1 refuses any other version and any unknown record kind.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::keys::{
    doc_key, seq_prefix, MetaRec, TAG_META, TAG_QUARANTINE, TAG_SNAPSHOT, TAG_UPDATE,
};
use super::pieces::insert_value;
use super::sled_store::len_u64;
use super::{SledStore, StoreError};

/// First bytes of every backup stream.
pub(crate) const MAGIC: &[u8; 12] = b"weft-backup\n";
/// The format version this build writes and reads.
pub(crate) const VERSION: u8 = 1;

/// Bytes of a record's kind and length.
const RECORD_HEAD: usize = 1 + 8;

/// What a backup keeps of a document besides its state: what a restore needs to list it as it
/// was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BackupMeta {
    /// The document id.
    pub(crate) id: String,
    /// Its title, if it had one.
    pub(crate) title: Option<String>,
    /// Whether the title was chosen explicitly (edits do not replace it).
    #[serde(default)]
    pub(crate) title_pinned: bool,
    /// Creation time, milliseconds since the Unix epoch.
    pub(crate) created_ms: u64,
    /// Last change, milliseconds since the Unix epoch.
    pub(crate) updated_ms: u64,
    /// Updates ever stored: the restored document's version continues from it.
    #[serde(default)]
    pub(crate) update_count: u64,
}

impl From<super::DocMeta> for BackupMeta {
    fn from(m: super::DocMeta) -> Self {
        Self {
            id: m.id,
            title: m.title,
            title_pinned: m.title_pinned,
            created_ms: m.created_ms,
            updated_ms: m.updated_ms,
            update_count: m.update_count,
        }
    }
}

/// The `H` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    /// When the backup began (the listing), milliseconds since the Unix epoch.
    pub(crate) started_ms: u64,
    /// Documents listed; one `D` or `S` record follows for each.
    pub(crate) documents: u64,
}

/// The `S` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Skipped {
    /// The listed document.
    pub(crate) id: String,
    /// Why it is not in the backup.
    pub(crate) reason: String,
    /// Whether it could not be read (an error), rather than being gone (deleted meanwhile).
    #[serde(default)]
    pub(crate) failed: bool,
}

/// The `E` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Trailer {
    /// `D` records sent.
    pub(crate) documents: u64,
    /// `S` records sent.
    pub(crate) skipped: u64,
}

/// The `X` record's JSON.
#[derive(Debug, Serialize, Deserialize)]
struct Failure {
    message: String,
}

/// One record of a backup stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// `H`: the listing.
    Header(Header),
    /// `D`: a document's metadata and its state as one Yjs v1 update.
    Doc(BackupMeta, Bytes),
    /// `S`: a listed document that is not in the backup.
    Skipped(Skipped),
    /// `X`: the server failed with this message.
    Failed(String),
    /// `E`: the end, with the counts.
    End(Trailer),
}

/// Why bytes are not a backup stream this build can read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FormatError {
    /// The stream does not start with [`MAGIC`].
    #[error("not a weft backup stream (the server may be too old or not weft)")]
    NotABackup,
    /// A version this build does not read.
    #[error("backup format version {0}; this weft reads version {VERSION}")]
    Version(u8),
    /// A record kind this version does not define.
    #[error("unknown record kind 0x{0:02x}")]
    UnknownRecord(u8),
    /// A record whose payload does not decode.
    #[error("malformed {kind} record: {why}")]
    Malformed {
        /// The record's kind.
        kind: char,
        /// What was wrong.
        why: String,
    },
}

impl Record {
    /// The record's bytes, ready to send.
    pub(crate) fn encode(&self) -> Bytes {
        let (kind, payload) = match self {
            Record::Header(h) => (b'H', json(h)),
            Record::Doc(meta, state) => (b'D', doc_payload(meta, state)),
            Record::Skipped(s) => (b'S', json(s)),
            Record::Failed(message) => (
                b'X',
                json(&Failure {
                    message: message.clone(),
                }),
            ),
            Record::End(t) => (b'E', json(t)),
        };
        let mut out = BytesMut::with_capacity(RECORD_HEAD + payload.len());
        out.put_u8(kind);
        out.put_u64(len_u64(&payload));
        out.extend_from_slice(&payload);
        out.freeze()
    }
}

/// The stream's first bytes: [`MAGIC`] and [`VERSION`].
pub(crate) fn stream_start() -> Bytes {
    let mut out = BytesMut::with_capacity(MAGIC.len() + 1);
    out.extend_from_slice(MAGIC);
    out.put_u8(VERSION);
    out.freeze()
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    // Only plain structs of strings and integers are encoded here: serialization cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn doc_payload(meta: &BackupMeta, state: &[u8]) -> Vec<u8> {
    let meta = json(meta);
    let mut out = Vec::with_capacity(4 + meta.len() + state.len());
    out.extend_from_slice(&u32::try_from(meta.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(state);
    out
}

/// Reads records from a backup stream that arrives in chunks of any size (start with
/// `Decoder::default()`).
///
/// Memory grows only with the bytes that actually arrived: a record's declared length is
/// never allocated up front, so a garbled length cannot make the reader reserve gigabytes.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    buf: BytesMut,
    started: bool,
}

impl Decoder {
    /// Adds the next bytes of the stream.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes received but not yet returned as a record: non-zero at the end of the stream means
    /// it was cut in the middle of a record.
    pub(crate) fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete record, or `None` until more bytes arrive.
    ///
    /// # Errors
    /// [`FormatError`] when the bytes are not a version-1 backup stream.
    pub(crate) fn next(&mut self) -> Result<Option<Record>, FormatError> {
        if !self.started {
            if self.buf.len() < MAGIC.len() + 1 {
                let seen = self.buf.len().min(MAGIC.len());
                if self.buf[..seen] != MAGIC[..seen] {
                    return Err(FormatError::NotABackup);
                }
                return Ok(None);
            }
            if &self.buf[..MAGIC.len()] != MAGIC {
                return Err(FormatError::NotABackup);
            }
            let version = self.buf[MAGIC.len()];
            if version != VERSION {
                return Err(FormatError::Version(version));
            }
            self.buf.advance(MAGIC.len() + 1);
            self.started = true;
        }
        if self.buf.len() < RECORD_HEAD {
            return Ok(None);
        }
        let kind = self.buf[0];
        let mut len = [0u8; 8];
        len.copy_from_slice(&self.buf[1..RECORD_HEAD]);
        let len = u64::from_be_bytes(len);
        let total = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(RECORD_HEAD));
        let Some(total) = total else {
            return Err(malformed(
                kind,
                format!("length {len} does not fit in memory"),
            ));
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        self.buf.advance(RECORD_HEAD);
        let payload = self.buf.split_to(total - RECORD_HEAD).freeze();
        decode_record(kind, payload).map(Some)
    }
}

fn malformed(kind: u8, why: impl Into<String>) -> FormatError {
    FormatError::Malformed {
        kind: char::from(kind),
        why: why.into(),
    }
}

fn from_json<'a, T: Deserialize<'a>>(kind: u8, bytes: &'a [u8]) -> Result<T, FormatError> {
    serde_json::from_slice(bytes).map_err(|e| malformed(kind, e.to_string()))
}

fn decode_record(kind: u8, payload: Bytes) -> Result<Record, FormatError> {
    Ok(match kind {
        b'H' => Record::Header(from_json(kind, &payload)?),
        b'D' => {
            let meta_len = payload
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .and_then(|l| usize::try_from(l).ok())
                .ok_or_else(|| malformed(kind, "shorter than its metadata length"))?;
            let meta_end = meta_len
                .checked_add(4)
                .filter(|end| *end <= payload.len())
                .ok_or_else(|| malformed(kind, "metadata longer than the record"))?;
            let meta: BackupMeta = from_json(kind, &payload[4..meta_end])?;
            Record::Doc(meta, payload.slice(meta_end..))
        }
        b'S' => Record::Skipped(from_json(kind, &payload)?),
        b'X' => Record::Failed(from_json::<Failure>(kind, &payload)?.message),
        b'E' => Record::End(from_json(kind, &payload)?),
        other => return Err(FormatError::UnknownRecord(other)),
    })
}

impl SledStore {
    /// Writes a backed-up document: `state` (one Yjs v1 update) becomes its snapshot and `meta`
    /// its times, title and version, in one atomic batch. Whatever the store held for the
    /// document before (snapshot, log, quarantine) is replaced; its version never goes back,
    /// so no sequence number is given out twice.
    ///
    /// # Errors
    /// An invalid document id or a backend failure; nothing is written then.
    pub(crate) fn import(&self, meta: &BackupMeta, state: &[u8]) -> Result<(), StoreError> {
        self.health.check()?;
        let doc = meta.id.as_str();
        self.with_slot(doc, |entry, slot| {
            let mut batch = sled::Batch::default();
            for tag in [TAG_UPDATE, TAG_QUARANTINE] {
                for key in self.docs.scan_prefix(seq_prefix(tag, doc)).keys() {
                    batch.remove(key?);
                }
            }
            let next_seq = meta
                .update_count
                .saturating_add(1)
                .max(slot.meta.as_ref().map_or(1, |m| m.next_seq));
            let rec = MetaRec {
                created_ms: meta.created_ms,
                updated_ms: meta.updated_ms,
                size_bytes: len_u64(state),
                snapshot_len: len_u64(state),
                next_seq,
                quarantined: 0,
                title: meta.title.clone(),
                title_pinned: meta.title_pinned && meta.title.is_some(),
            };
            self.remove_snapshot(doc, &mut batch)?;
            // An empty state is a document with a title and no content yet: no snapshot, since
            // zero bytes are not a Yjs update. A large one is stored in pieces, as compaction
            // stores it, below sled's blob threshold.
            if !state.is_empty() {
                let base = seq_prefix(TAG_SNAPSHOT, doc);
                insert_value(
                    &mut batch,
                    &doc_key(TAG_SNAPSHOT, doc),
                    &base,
                    state,
                    self.piece,
                );
            }
            batch.insert(doc_key(TAG_META, doc), rec.encode());
            self.apply(entry, batch)?;
            slot.meta = Some(rec);
            slot.dirty = false;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::room;
    use crate::store::Store;

    fn meta(id: &str) -> BackupMeta {
        BackupMeta {
            id: id.into(),
            title: Some("Notes".into()),
            title_pinned: true,
            created_ms: 1_000,
            updated_ms: 2_000,
            update_count: 7,
        }
    }

    fn sample() -> Vec<Record> {
        vec![
            Record::Header(Header {
                started_ms: 5,
                documents: 2,
            }),
            Record::Doc(meta("a"), Bytes::from_static(b"\x01\x02state")),
            Record::Skipped(Skipped {
                id: "b".into(),
                reason: "deleted".into(),
                failed: false,
            }),
            Record::End(Trailer {
                documents: 1,
                skipped: 1,
            }),
        ]
    }

    fn encode_all(records: &[Record]) -> Vec<u8> {
        let mut out = stream_start().to_vec();
        for r in records {
            out.extend_from_slice(&r.encode());
        }
        out
    }

    /// Records survive a round trip fed one byte at a time, and nothing is left over.
    #[test]
    fn records_round_trip_in_any_chunking() {
        let records = sample();
        let bytes = encode_all(&records);
        let mut decoder = Decoder::default();
        let mut got = Vec::new();
        for b in &bytes {
            decoder.push(std::slice::from_ref(b));
            while let Some(r) = decoder.next().expect("decodes") {
                got.push(r);
            }
        }
        assert_eq!(got, records);
        assert_eq!(decoder.pending(), 0);
    }

    /// A stream cut inside a record leaves bytes pending and no trailer.
    #[test]
    fn truncation_is_visible() {
        let bytes = encode_all(&sample());
        let mut decoder = Decoder::default();
        decoder.push(&bytes[..bytes.len() - 3]);
        let mut kinds = Vec::new();
        while let Some(r) = decoder.next().expect("decodes") {
            kinds.push(r);
        }
        assert!(!kinds.iter().any(|r| matches!(r, Record::End(_))));
        assert!(decoder.pending() > 0);
    }

    /// Other bytes, other versions and unknown kinds are refused, not guessed at.
    #[test]
    fn foreign_bytes_are_refused() {
        let mut d = Decoder::default();
        d.push(b"{\"code\":\"x\"}");
        assert!(matches!(d.next(), Err(FormatError::NotABackup)));
        let mut d = Decoder::default();
        d.push(MAGIC);
        d.push(&[2]);
        assert!(matches!(d.next(), Err(FormatError::Version(2))));
        let mut d = Decoder::default();
        d.push(&stream_start());
        d.push(&[b'Z', 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(d.next(), Err(FormatError::UnknownRecord(b'Z'))));
        let mut d = Decoder::default();
        d.push(&stream_start());
        d.push(&[b'D', 0, 0, 0, 0, 0, 0, 0, 2, 0, 9]);
        assert!(matches!(d.next(), Err(FormatError::Malformed { .. })));
    }

    /// Import writes the state as the snapshot with the backed-up metadata, replaces what the
    /// document held, and never lowers its version.
    #[test]
    fn import_keeps_metadata_and_replaces_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open");
        store.import(&meta("a"), b"snap").expect("import");
        let m = store.meta(&room("a")).expect("meta").expect("exists");
        assert_eq!(
            (m.created_ms, m.updated_ms, m.update_count, m.size_bytes),
            (1_000, 2_000, 7, 4)
        );
        assert_eq!((m.title.as_deref(), m.title_pinned), (Some("Notes"), true));
        assert_eq!(store.doc_count(), 1);

        for _ in 0..10 {
            store.append(&room("a"), b"later").expect("append");
        }
        store.import(&meta("a"), b"again").expect("replace");
        let loaded = store.load(&room("a")).expect("load");
        assert_eq!(loaded.snapshot.as_deref(), Some(&b"again"[..]));
        assert!(loaded.updates.is_empty());
        assert_eq!(store.append(&room("a"), b"x").expect("append"), 18);
        assert_eq!(store.doc_count(), 1);

        let mut empty = meta("b");
        empty.title_pinned = false;
        store.import(&empty, b"").expect("import");
        assert_eq!(store.load(&room("b")).expect("load").snapshot, None);
        store.flush().expect("flush");
        drop(store);
        let store = SledStore::open(dir.path()).expect("reopen");
        let m = store.meta(&room("b")).expect("meta").expect("exists");
        assert_eq!((m.created_ms, m.title_pinned), (1_000, false));
    }
}
