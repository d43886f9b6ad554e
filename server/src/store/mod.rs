//! Document store: the [`Store`] trait that rooms persist through, and its sled implementation.
//!
//! Each document has an append-only log of Yjs v1 updates keyed by (document, sequence), at most
//! one snapshot, and a small metadata record. Compaction writes a new snapshot and deletes the
//! updates it covers in one atomic batch. Nothing is durable until [`Store::flush`] returns; the
//! server's group-commit task calls it once to cover many appends across rooms.
//!
//! Layout of [`SledStore`]: one sled tree `docs` (keys compare as bytes, integers are big-endian,
//! document ids never contain `\0`), so every multi-key change is one `Tree::apply_batch`:
//!
//! | key                          | value                                         |
//! |------------------------------|-----------------------------------------------|
//! | `m\0{doc}`                   | metadata, fixed binary encoding (`MetaRec`)   |
//! | `s\0{doc}`                   | snapshot (one Yjs v1 update)                  |
//! | `u\0{doc}\0{seq: u64 BE}`    | logged update                                 |
//! | `q\0{doc}\0{seq: u64 BE}`    | quarantined update, with reason and time      |
//! | `r\0{sha256: 32 bytes}`      | refused update hash, with time and reason     |
//! | `p\0probe`                   | transient key of [`Store::check_writable`]    |
//!
//! Quarantined updates live in `docs` too (not in a tree of their own) so that quarantine and
//! delete are single batches as well. sled's default tree holds one marker key, and the data
//! directory a marker file `weft-store`: together they let [`SledStore::open`] refuse a database
//! that sled silently recovered as empty (it does that for a truncated or garbled log).
//!
//! Metadata is cached per document. A document's first append writes its metadata in the same
//! batch as the update, so a document that has any update on disk is always listed; later appends
//! only write the update and mark the cached metadata dirty, and [`Store::flush`] writes dirty
//! metadata before it flushes. If the process dies between the two, the record is repaired when
//! the document is next touched: the next sequence number from the last logged key (so no number
//! is reused), sizes on the next `load`. Until then `list` may show a slightly stale count/size.
//! Sequence numbers start at 1 and are never reused for a document, also not after compaction;
//! `update_count` is `next_seq - 1` because every append takes exactly one number.
//!
//! Durability: sled 0.34.7's `Db::flush` on Linux only calls `sync_file_range` (no fsync: no
//! device-cache flush, no file-size metadata) and never syncs its `blobs/` files, so
//! [`Store::flush`] also fdatasyncs sled's log file and fsyncs new blob files itself.
//!
//! Segment size: sled writes any page larger than a quarter of a log segment to a file of its
//! own under `blobs/`, and rewrites it whole when the page changes. A leaf holds up to 16 keys,
//! so with sled's default 512 KiB segments a run of 32 KiB updates made a new blob file every
//! few appends: 11 bytes written per byte stored, and a flush that fsynced dozens of files
//! while every waiting typist's edit rode on it. New stores use [`SEGMENT_BYTES`] segments, so
//! pages below 2 MiB stay in the log and one fdatasync covers them; a store created with another
//! segment size keeps it (sled refuses to change it), read from sled's `conf` file.

pub(crate) mod commit;
pub(crate) mod inflight;
pub(crate) mod log;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Errors from the document store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the data directory's lock.
    #[error(
        "data directory {} is locked: another weft process is probably running with the same \
         data directory",
        path.display()
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// The data directory could not be opened (not a directory, unreadable, corrupt, ...).
    #[error("cannot open data directory {}: {source}", path.display())]
    Open {
        /// The data directory.
        path: PathBuf,
        /// What sled or the file system reported.
        #[source]
        source: sled::Error,
    },
    /// The storage backend failed during an operation.
    #[error("storage backend error: {0}")]
    Io(#[from] sled::Error),
    /// A stored record or key of one document could not be decoded.
    #[error("corrupt stored data for document {doc:?}: {what}")]
    Corrupt {
        /// The document id (as far as it could be decoded).
        doc: String,
        /// What was wrong.
        what: String,
    },
    /// The document id cannot be used as a store key (empty or containing `\0`).
    #[error("invalid document id {doc:?}: {why}")]
    InvalidDoc {
        /// The rejected id.
        doc: String,
        /// Which rule it broke.
        why: &'static str,
    },
}

/// Everything stored for one document, in replay order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredDoc {
    /// The latest snapshot, if the document was ever compacted; apply it first.
    pub snapshot: Option<Vec<u8>>,
    /// Logged updates after the snapshot as `(seq, update)`, ascending by `seq`.
    pub updates: Vec<(u64, Vec<u8>)>,
}

/// Metadata of one document, readable without loading its CRDT state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DocMeta {
    /// The document id (validated room name).
    pub id: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Time of the last append or title change, milliseconds since the Unix epoch.
    pub updated_ms: u64,
    /// Bytes of the snapshot plus the logged updates (values only, not keys or sled overhead).
    pub size_bytes: u64,
    /// Total number of updates ever appended (compaction and quarantine do not lower it).
    pub update_count: u64,
    /// Title, if one was set.
    pub title: Option<String>,
    /// Number of updates moved to quarantine.
    pub quarantined: u64,
}

/// One update moved out of a document's log by [`Store::quarantine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedUpdate {
    /// Its sequence number in the log.
    pub seq: u64,
    /// When it was quarantined, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Why it was quarantined.
    pub reason: String,
    /// The update bytes as they were logged.
    pub update: Vec<u8>,
}

/// Persistence of documents: update log, snapshot and metadata. All methods block on disk I/O.
pub trait Store: Send + Sync + 'static {
    /// Loads the snapshot and the logged updates of `doc`; an empty [`StoredDoc`] if unknown.
    fn load(&self, doc: &str) -> Result<StoredDoc, StoreError>;
    /// Appends one update and returns its sequence number; not durable until [`Store::flush`].
    fn append(&self, doc: &str, update: &[u8]) -> Result<u64, StoreError>;
    /// Atomically writes `snapshot`, deletes logged updates with `seq <= upto_seq`, and updates
    /// the metadata (size; title if `Some`, unchanged if `None`). Later updates stay.
    fn compact(
        &self,
        doc: &str,
        snapshot: &[u8],
        upto_seq: u64,
        title: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Moves logged update `seq` to quarantine with `reason` and the time; a no-op if absent.
    fn quarantine(&self, doc: &str, seq: u64, reason: &str) -> Result<(), StoreError>;
    /// Sets the automatic title of `doc` (its first line), creating its metadata if the
    /// document is new; does nothing once a title was pinned.
    fn set_title(&self, doc: &str, title: &str) -> Result<(), StoreError>;
    /// Sets a title chosen explicitly (through the API); edits no longer replace it.
    fn pin_title(&self, doc: &str, title: &str) -> Result<(), StoreError>;
    /// Returns the metadata of `doc`, or `None` if the document does not exist.
    fn meta(&self, doc: &str) -> Result<Option<DocMeta>, StoreError>;
    /// Lists the metadata of every document, sorted by id, without reading content.
    fn list(&self) -> Result<Vec<DocMeta>, StoreError>;
    /// How many documents are stored, without reading them (for metrics).
    fn doc_count(&self) -> u64;
    /// Deletes snapshot, log, quarantine and metadata of `doc`; `true` if anything existed.
    fn delete(&self, doc: &str) -> Result<bool, StoreError>;
    /// Records that updates whose SHA-256 is `hash` must never be applied again (one crashed
    /// the process), with `reason`; recording the same hash again keeps the first record.
    fn refuse(&self, hash: &[u8; 32], reason: &str) -> Result<(), StoreError>;
    /// Every hash recorded with [`Store::refuse`].
    fn refused(&self) -> Result<Vec<[u8; 32]>, StoreError>;
    /// Blocks until everything written before the call is durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Writes, removes and flushes a probe key: fails if the store cannot write to disk.
    fn check_writable(&self) -> Result<(), StoreError>;
}

const TAG_META: u8 = b'm';
const TAG_SNAPSHOT: u8 = b's';
const TAG_UPDATE: u8 = b'u';
const TAG_QUARANTINE: u8 = b'q';
const TAG_REFUSED: u8 = b'r';
const PROBE_KEY: &[u8] = b"p\0probe";

/// How long `open` waits for a held lock before reporting [`StoreError::Locked`].
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// File in the data directory that marks it as a weft store (see [`SledStore::open`]).
const MARKER_FILE: &str = "weft-store";
/// Key in sled's default tree that must exist whenever [`MARKER_FILE`] does.
const MARKER_KEY: &[u8] = b"weft-store-marker";

/// Past this many cached documents, unused clean entries are dropped from the metadata cache.
const CACHE_SOFT_CAP: usize = 4096;

/// `m\0{doc}` / `s\0{doc}`.
fn doc_key(tag: u8, doc: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + doc.len());
    key.push(tag);
    key.push(0);
    key.extend_from_slice(doc.as_bytes());
    key
}

/// `u\0{doc}\0` / `q\0{doc}\0`: the prefix of a document's sequence-keyed records.
fn seq_prefix(tag: u8, doc: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(3 + doc.len() + 8);
    key.push(tag);
    key.push(0);
    key.extend_from_slice(doc.as_bytes());
    key.push(0);
    key
}

/// `u\0{doc}\0{seq BE}` / `q\0{doc}\0{seq BE}`.
fn seq_key(tag: u8, doc: &str, seq: u64) -> Vec<u8> {
    let mut key = seq_prefix(tag, doc);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Reads the sequence number of a key that starts with a prefix of `prefix_len` bytes.
fn parse_seq(doc: &str, key: &[u8], prefix_len: usize) -> Result<u64, StoreError> {
    key.get(prefix_len..)
        .and_then(|tail| <[u8; 8]>::try_from(tail).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt(doc, format!("log key of {} bytes", key.len())))
}

fn corrupt(doc: &str, what: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        doc: doc.to_owned(),
        what: what.into(),
    }
}

fn check_doc(doc: &str) -> Result<(), StoreError> {
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

/// Now, in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn len_u64(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Cached state is changed only after the sled call it mirrors succeeded, so a panic while the
    // lock was held cannot have left it half-updated.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
/// (u64 BE each) `[has_title: 0|1][title UTF-8 ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MetaRec {
    created_ms: u64,
    updated_ms: u64,
    size_bytes: u64,
    snapshot_len: u64,
    next_seq: u64,
    quarantined: u64,
    title: Option<String>,
    /// The title was set explicitly (through the API), so edits no longer replace it.
    title_pinned: bool,
}

const META_VERSION: u8 = 1;
const META_FIXED_LEN: usize = 1 + 6 * 8 + 1;

impl MetaRec {
    fn new(now: u64) -> Self {
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

    fn encode(&self) -> Vec<u8> {
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

    fn decode(doc: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        match bytes.first() {
            Some(&META_VERSION) => {}
            Some(v) => return Err(corrupt(doc, format!("metadata version {v}"))),
            None => return Err(corrupt(doc, "empty metadata record")),
        }
        if bytes.len() < META_FIXED_LEN {
            return Err(corrupt(
                doc,
                format!("metadata record of {} bytes", bytes.len()),
            ));
        }
        let field =
            |i: usize| be_u64(bytes, 1 + 8 * i).ok_or_else(|| corrupt(doc, "short metadata"));
        let title_bytes = &bytes[META_FIXED_LEN..];
        let flag = bytes[META_FIXED_LEN - 1];
        let title = match flag {
            0 if title_bytes.is_empty() => None,
            1 | 2 => Some(
                std::str::from_utf8(title_bytes)
                    .map_err(|_| corrupt(doc, "metadata title is not UTF-8"))?
                    .to_owned(),
            ),
            _ => return Err(corrupt(doc, "metadata title flag")),
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
            return Err(corrupt(doc, "metadata next_seq is 0"));
        }
        Ok(rec)
    }

    fn to_doc_meta(&self, id: &str) -> DocMeta {
        DocMeta {
            id: id.to_owned(),
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            size_bytes: self.size_bytes,
            update_count: self.next_seq.saturating_sub(1),
            title: self.title.clone(),
            quarantined: self.quarantined,
        }
    }
}

/// Longest quarantine reason kept, in bytes (longer ones are cut at a character boundary).
const MAX_REASON_LEN: usize = 1024;

/// Quarantine record: `[1][at_ms u64 BE][reason_len u32 BE][reason][update]`.
fn encode_quarantine(at_ms: u64, reason: &str, update: &[u8]) -> Vec<u8> {
    let mut cut = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let reason = &reason[..cut];
    let mut out = Vec::with_capacity(13 + reason.len() + update.len());
    out.push(1);
    out.extend_from_slice(&at_ms.to_be_bytes());
    out.extend_from_slice(&u32::try_from(reason.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(update);
    out
}

fn decode_quarantine(doc: &str, seq: u64, bytes: &[u8]) -> Result<QuarantinedUpdate, StoreError> {
    let bad = || corrupt(doc, format!("quarantine record {seq}"));
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

/// Cached state of one document; `meta == None` means the document does not exist.
#[derive(Default)]
struct Slot {
    loaded: bool,
    meta: Option<MetaRec>,
    /// The cached metadata is newer than the record on disk (and the entry is in the dirty list).
    dirty: bool,
}

struct DocEntry {
    id: String,
    slot: Mutex<Slot>,
}

struct Cache {
    map: HashMap<String, Arc<DocEntry>>,
    evict_at: usize,
}

/// sled's page cache size.
const STORE_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// sled log segment size of new stores (see the module docs); sled allows up to 16 MiB.
const SEGMENT_BYTES: usize = 8 << 20;

/// The segment size sled recorded in `conf` when it created the store at `path`, if any.
fn existing_segment_size(path: &Path) -> Option<usize> {
    let conf = std::fs::read(path.join("conf")).ok()?;
    // Lines of `key: value`, then a CRC (binary, so the file is not read as one string).
    conf.split(|&b| b == b'\n').find_map(|line| {
        std::str::from_utf8(line)
            .ok()?
            .strip_prefix("segment_size: ")?
            .trim()
            .parse()
            .ok()
    })
}

/// [`Store`] backed by an embedded sled database in one data directory.
///
/// Lock order: `cache` is never held while a slot is locked; a slot may be held while `dirty` is
/// locked, never the reverse; `sync` is taken before everything else.
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    docs: sled::Tree,
    cache: Mutex<Cache>,
    dirty: Mutex<Vec<Arc<DocEntry>>>,
    sync: Mutex<SyncState>,
    /// Documents with metadata: counted once at open, then kept as documents come and go.
    doc_count: AtomicU64,
}

/// What [`Store::flush`] must fsync itself: sled 0.34.7's `Db::flush` on Linux only calls
/// `sync_file_range` on its log (no fsync: no device cache flush, no size metadata), and never
/// syncs the large-value files it writes under `blobs/`.
struct SyncState {
    /// A second descriptor of sled's log file `db` (fsync acts on the file, not the descriptor).
    db_file: std::fs::File,
    blobs_dir: PathBuf,
    /// Highest blob file (named by log sequence number) already fsynced.
    synced_blob: u64,
}

impl SyncState {
    /// Makes what `db.flush()` wrote durable: fdatasync the log, fsync new blob files and their
    /// directory.
    fn sync(&mut self) -> Result<(), sled::Error> {
        self.db_file.sync_data()?;
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut newest = self.synced_blob;
        for entry in entries {
            let entry = entry?;
            let Some(lsn) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if lsn <= self.synced_blob {
                continue;
            }
            match std::fs::File::open(entry.path()) {
                Ok(file) => file.sync_all()?,
                // sled deletes blobs that a newer page version replaced.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            }
            newest = newest.max(lsn);
        }
        if newest > self.synced_blob {
            sync_dir(&self.blobs_dir)?;
            self.synced_blob = newest;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn invalid_data(msg: &str) -> sled::Error {
    sled::Error::Io(io::Error::new(io::ErrorKind::InvalidData, msg.to_owned()))
}

fn write_marker_file(path: &Path) -> io::Result<()> {
    let file = std::fs::File::create(path)?;
    io::Write::write_all(
        &mut &file,
        b"weft document store (sled 0.34); do not delete\n",
    )?;
    file.sync_all()
}

fn is_lock_error(err: &sled::Error) -> bool {
    // sled 0.34.7 (config.rs `try_lock`) wraps fs2's WouldBlock into an `ErrorKind::Other` io
    // error whose message starts with "could not acquire lock on".
    match err {
        sled::Error::Io(e) => {
            e.kind() == io::ErrorKind::WouldBlock || {
                let msg = e.to_string();
                msg.contains("could not acquire lock") || msg.contains("WouldBlock")
            }
        }
        _ => false,
    }
}

impl SledStore {
    /// Opens (creating if absent) the data directory.
    ///
    /// A new store writes a marker file `weft-store` beside sled's files and a marker key inside
    /// the database. Opening refuses a non-empty directory that is neither a weft store nor a
    /// sled database, and a store whose marker file exists but whose database came back empty.
    ///
    /// # Errors
    /// [`StoreError::Locked`] if another process (or a live store in this one) still holds it
    /// after waiting up to 2 s; [`StoreError::Open`] if the path is not
    /// a directory, cannot be read or created, is a foreign non-empty directory, lost its
    /// database contents, or sled cannot open the database in it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source: sled::Error| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(open_err(sled::Error::Io(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "the path exists but is not a directory",
                ))));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(path).map_err(|e| open_err(e.into()))?;
            }
            Err(e) => return Err(open_err(e.into())),
        }
        // Fail clearly on an unreadable directory rather than somewhere inside sled.
        let mut entries = std::fs::read_dir(path).map_err(|e| open_err(e.into()))?;
        let marker_path = path.join(MARKER_FILE);
        let had_marker = marker_path.try_exists().map_err(|e| open_err(e.into()))?;
        let mut has_sled_db = false;
        for name in ["db", "conf"] {
            has_sled_db |= path
                .join(name)
                .try_exists()
                .map_err(|e| open_err(e.into()))?;
        }
        if !had_marker && !has_sled_db && entries.next().is_some() {
            return Err(open_err(invalid_data(
                "the directory is not empty and is not a weft data directory",
            )));
        }

        // sled caches up to 1 GiB of pages by default. Open documents live in their rooms' yrs
        // docs, so the store's cache mostly holds recent writes and metadata: a bounded 64 MiB
        // keeps the server's memory tracking its open documents.
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(STORE_CACHE_BYTES)
            .segment_size(existing_segment_size(path).unwrap_or(SEGMENT_BYTES));
        let started = Instant::now();
        let mut backoff = Duration::from_millis(5);
        // sled 0.34 can panic on some corrupt files; report that as an open failure.
        let db = loop {
            match std::panic::catch_unwind(AssertUnwindSafe(|| config.open())) {
                Ok(Ok(db)) => break db,
                // sled's Db::drop returns before its I/O threads release the lock
                // (spacejam/sled#1289): a reopen in the same process can race it for some ms.
                Ok(Err(e)) if is_lock_error(&e) && started.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Ok(Err(e)) if is_lock_error(&e) => {
                    return Err(StoreError::Locked {
                        path: path.to_owned(),
                    });
                }
                Ok(Err(e)) => return Err(open_err(e)),
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    return Err(open_err(sled::Error::ReportableBug(format!(
                        "sled panicked while opening the database: {msg}"
                    ))));
                }
            }
        };
        let docs = db.open_tree("docs").map_err(open_err)?;
        // sled recovers a truncated or garbled log as an empty database without an error; the
        // marker (a file beside it and a key inside it) turns that into a refusal to start.
        let has_marker_key = db.contains_key(MARKER_KEY).map_err(open_err)?;
        if had_marker && !has_marker_key {
            return Err(open_err(invalid_data(
                "the database lost its contents (the weft-store marker file exists but the \
                 database is empty): refusing to start on an empty store; restore the \
                 directory from a backup or move it away",
            )));
        }
        let db_file = std::fs::File::open(path.join("db")).map_err(|e| open_err(e.into()))?;
        let mut sync = SyncState {
            db_file,
            blobs_dir: path.join("blobs"),
            synced_blob: 0,
        };
        if !has_marker_key {
            db.insert(MARKER_KEY, &b"1"[..]).map_err(open_err)?;
            db.flush().map_err(open_err)?;
            sync.sync().map_err(open_err)?;
        }
        if !had_marker {
            // Only after the marker key is durable, or a power cut could fake "lost contents".
            write_marker_file(&marker_path).map_err(|e| open_err(e.into()))?;
            sync_dir(path).map_err(|e| open_err(e.into()))?;
        }
        let doc_count = docs.scan_prefix([TAG_META, 0]).keys().count() as u64;
        tracing::debug!(path = %path.display(), recovered = db.was_recovered(), doc_count, "store opened");
        Ok(Self {
            path: path.to_owned(),
            db,
            docs,
            cache: Mutex::new(Cache {
                map: HashMap::new(),
                evict_at: CACHE_SOFT_CAP,
            }),
            dirty: Mutex::new(Vec::new()),
            sync: Mutex::new(sync),
            doc_count: AtomicU64::new(doc_count),
        })
    }

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
    pub fn quarantined(&self, doc: &str) -> Result<Vec<QuarantinedUpdate>, StoreError> {
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
    fn with_slot<T>(
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
    fn load(&self, doc: &str) -> Result<StoredDoc, StoreError> {
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

    fn append(&self, doc: &str, update: &[u8]) -> Result<u64, StoreError> {
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
        doc: &str,
        snapshot: &[u8],
        upto_seq: u64,
        title: Option<&str>,
    ) -> Result<(), StoreError> {
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

    fn quarantine(&self, doc: &str, seq: u64, reason: &str) -> Result<(), StoreError> {
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

    fn set_title(&self, doc: &str, title: &str) -> Result<(), StoreError> {
        self.write_title(doc, title, false)
    }

    fn pin_title(&self, doc: &str, title: &str) -> Result<(), StoreError> {
        self.write_title(doc, title, true)
    }

    fn meta(&self, doc: &str) -> Result<Option<DocMeta>, StoreError> {
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

    fn delete(&self, doc: &str) -> Result<bool, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn open_temp() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open store");
        (dir, store)
    }

    /// A store whose sled database was created with sled's default 512 KiB segments (every
    /// store before the segment size changed) still opens, keeps its documents and takes writes.
    #[test]
    fn store_with_older_segment_size_opens() {
        let old = tempfile::tempdir().expect("tempdir");
        // Created as before the change: sled's default segments.
        drop(sled::Config::new().path(old.path()).open().expect("sled"));
        assert_eq!(existing_segment_size(old.path()), Some(512 * 1024));
        {
            // SledStore::open waits out the lock sled's dropped threads still hold.
            let store = SledStore::open(old.path()).expect("open a store with 512 KiB segments");
            store.append("doc", b"first").expect("append");
            store.flush().expect("flush");
        }
        let store = SledStore::open(old.path()).expect("reopen it");
        store.append("doc", b"second").expect("append");
        store.flush().expect("flush");
        assert_eq!(existing_segment_size(old.path()), Some(512 * 1024));
        let loaded = store.load("doc").expect("load");
        let updates: Vec<&[u8]> = loaded.updates.iter().map(|(_, u)| u.as_slice()).collect();
        assert_eq!(updates, [&b"first"[..], &b"second"[..]]);
    }

    /// A run of 32 KiB updates stays in sled's log instead of one file per rewritten page, so a
    /// flush after them is one fdatasync, not dozens of file fsyncs.
    #[test]
    fn large_updates_write_no_blob_files() {
        let (dir, store) = open_temp();
        let update = vec![7u8; 32 * 1024];
        for _ in 0..64 {
            store.append("doc", &update).expect("append");
            store.flush().expect("flush");
        }
        let blobs = std::fs::read_dir(dir.path().join("blobs"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(blobs, 0, "sled wrote pages of 32 KiB updates as blob files");
        assert_eq!(store.load("doc").expect("load").updates.len(), 64);
    }

    /// Appends get ascending sequence numbers from 1 and load returns them in order.
    #[test]
    fn append_then_load_in_order() {
        let (_dir, store) = open_temp();
        assert_eq!(store.load("a").expect("load"), StoredDoc::default());
        for i in 0..5u8 {
            assert_eq!(
                store.append("a", &[i; 3]).expect("append"),
                u64::from(i) + 1
            );
        }
        assert_eq!(store.append("b", b"other").expect("append"), 1);
        let doc = store.load("a").expect("load");
        assert_eq!(doc.snapshot, None);
        let expected: Vec<(u64, Vec<u8>)> =
            (0..5u8).map(|i| (u64::from(i) + 1, vec![i; 3])).collect();
        assert_eq!(doc.updates, expected);
        let meta = store.meta("a").expect("meta").expect("exists");
        assert_eq!(
            (meta.update_count, meta.size_bytes, meta.quarantined),
            (5, 15, 0)
        );
        assert!(meta.created_ms > 0 && meta.updated_ms >= meta.created_ms);
        assert_eq!(store.meta("nope").expect("meta"), None);
    }

    /// After flush and drop, a reopened store has the same content, metadata and next seq.
    #[test]
    fn reopen_keeps_everything_and_seq_continues() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before;
        {
            let store = SledStore::open(dir.path()).expect("open");
            for i in 0..10u8 {
                store.append("doc", &[i]).expect("append");
            }
            store
                .compact("doc", b"SNAP", 4, Some("Notes"))
                .expect("compact");
            store.append("doc", b"eleven").expect("append");
            store.flush().expect("flush");
            before = store.meta("doc").expect("meta").expect("exists");
        }
        let store = SledStore::open(dir.path()).expect("reopen");
        assert_eq!(store.meta("doc").expect("meta").as_ref(), Some(&before));
        assert_eq!(store.list().expect("list"), vec![before.clone()]);
        let doc = store.load("doc").expect("load");
        assert_eq!(doc.snapshot.as_deref(), Some(&b"SNAP"[..]));
        let seqs: Vec<u64> = doc.updates.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (5..=11).collect::<Vec<_>>());
        assert_eq!(store.append("doc", b"x").expect("append"), 12);
        assert_eq!(
            store
                .meta("doc")
                .expect("meta")
                .expect("exists")
                .update_count,
            12
        );
    }

    /// Metadata written lazily is repaired on open when only the log reached disk.
    #[test]
    fn stale_metadata_is_repaired_from_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStore::open(dir.path()).expect("open");
            store.append("doc", b"one").expect("append");
            // Simulate a crash after the update keys but before the dirty metadata reached disk.
            let stale = store
                .docs
                .get(doc_key(TAG_META, "doc"))
                .expect("get")
                .expect("meta");
            store.append("doc", b"two").expect("append");
            store.append("doc", b"three").expect("append");
            store.flush().expect("flush");
            store
                .docs
                .insert(doc_key(TAG_META, "doc"), stale)
                .expect("insert");
            store.db.flush().expect("flush");
            lock(&store.dirty).clear();
        }
        let store = SledStore::open(dir.path()).expect("reopen");
        assert_eq!(store.append("doc", b"four").expect("append"), 4);
        store.load("doc").expect("load");
        let meta = store.meta("doc").expect("meta").expect("exists");
        assert_eq!((meta.update_count, meta.size_bytes), (4, 3 + 3 + 5 + 4));
    }

    /// Compaction drops covered updates, keeps later ones, and updates size and title.
    #[test]
    fn compaction_is_reflected_in_log_and_meta() {
        let (_dir, store) = open_temp();
        for _ in 0..6 {
            store.append("d", &[7; 10]).expect("append");
        }
        assert_eq!(
            store.meta("d").expect("meta").expect("exists").size_bytes,
            60
        );
        store
            .compact("d", &[1; 25], 4, Some("Title"))
            .expect("compact");
        let doc = store.load("d").expect("load");
        assert_eq!(doc.snapshot, Some(vec![1; 25]));
        assert_eq!(doc.updates, vec![(5, vec![7; 10]), (6, vec![7; 10])]);
        let meta = store.meta("d").expect("meta").expect("exists");
        assert_eq!((meta.size_bytes, meta.update_count), (25 + 20, 6));
        assert_eq!(meta.title.as_deref(), Some("Title"));

        // A second compaction replaces the snapshot; `None` keeps the title.
        store.append("d", &[8; 10]).expect("append");
        store.compact("d", &[2; 5], 7, None).expect("compact");
        let doc = store.load("d").expect("load");
        assert_eq!((doc.snapshot, doc.updates), (Some(vec![2; 5]), vec![]));
        let meta = store.meta("d").expect("meta").expect("exists");
        assert_eq!((meta.size_bytes, meta.update_count), (5, 7));
        assert_eq!(meta.title.as_deref(), Some("Title"));
        assert_eq!(store.append("d", b"z").expect("append"), 8);
    }

    /// A pinned title survives automatic titles and compaction, and a reopen.
    #[test]
    fn pinned_titles_stay() {
        let (dir, store) = open_temp();
        store.pin_title("doc", "Chosen").expect("pin");
        store.set_title("doc", "first line").expect("auto");
        store.append("doc", b"u").expect("append");
        store
            .compact("doc", b"snap", 1, Some("first line"))
            .expect("compact");
        assert_eq!(
            store
                .meta("doc")
                .expect("meta")
                .and_then(|m| m.title)
                .as_deref(),
            Some("Chosen")
        );
        store.flush().expect("flush");
        drop(store);
        let store = SledStore::open(dir.path()).expect("reopen");
        store.set_title("doc", "again").expect("auto");
        assert_eq!(
            store
                .meta("doc")
                .expect("meta")
                .and_then(|m| m.title)
                .as_deref(),
            Some("Chosen")
        );
    }

    /// list reports every live document with its title and omits deleted ones.
    #[test]
    fn list_reports_titles_and_skips_deleted() {
        let (dir, store) = open_temp();
        store.append("alpha", b"a").expect("append");
        store.append("beta", b"b").expect("append");
        store.append("gamma", b"c").expect("append");
        store.set_title("beta", "Beta doc").expect("title");
        store.set_title("empty", "Only a title").expect("title");
        assert!(store.delete("gamma").expect("delete"));
        assert!(!store.delete("gamma").expect("delete again"));
        assert!(!store.delete("never").expect("delete unknown"));
        store.flush().expect("flush");

        let list = store.list().expect("list");
        let got: Vec<(&str, Option<&str>)> = list
            .iter()
            .map(|m| (m.id.as_str(), m.title.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("alpha", None),
                ("beta", Some("Beta doc")),
                ("empty", Some("Only a title"))
            ]
        );
        assert_eq!(store.doc_count(), 3);
        assert_eq!(store.load("gamma").expect("load"), StoredDoc::default());
        assert_eq!(store.append("gamma", b"new").expect("append"), 1);
        assert_eq!(store.doc_count(), 4);
        store.flush().expect("flush");
        drop(store);
        let store = SledStore::open(dir.path()).expect("reopen");
        assert_eq!(store.doc_count(), 4, "counted again at open");
    }

    /// list sees unflushed appends and does not depend on the cache to find documents.
    #[test]
    fn list_merges_cache_and_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStore::open(dir.path()).expect("open");
            store.append("x", b"12345").expect("append");
            store.append("x", b"678").expect("append");
            let listed = store.list().expect("list");
            assert_eq!((listed[0].update_count, listed[0].size_bytes), (2, 8));
        }
        let store = SledStore::open(dir.path()).expect("reopen");
        let listed = store.list().expect("list");
        assert_eq!((listed[0].update_count, listed[0].size_bytes), (2, 8));
    }

    /// Quarantine moves an update out of the log, records reason and time, bumps the counter.
    #[test]
    fn quarantine_moves_an_update() {
        let (_dir, store) = open_temp();
        for u in [&b"good"[..], b"evil!", b"fine"] {
            store.append("q", u).expect("append");
        }
        store
            .quarantine("q", 2, "apply panicked")
            .expect("quarantine");
        store
            .quarantine("q", 99, "not there")
            .expect("missing seq is a no-op");
        let doc = store.load("q").expect("load");
        assert_eq!(
            doc.updates,
            vec![(1, b"good".to_vec()), (3, b"fine".to_vec())]
        );
        let quarantined = store.quarantined("q").expect("quarantined");
        assert_eq!(quarantined.len(), 1);
        assert_eq!(quarantined[0].seq, 2);
        assert_eq!(quarantined[0].reason, "apply panicked");
        assert_eq!(quarantined[0].update, b"evil!");
        assert!(quarantined[0].at_ms > 0);
        let meta = store.meta("q").expect("meta").expect("exists");
        assert_eq!(
            (meta.quarantined, meta.size_bytes, meta.update_count),
            (1, 8, 3)
        );
        assert_eq!(store.append("q", b"next").expect("append"), 4);
        assert!(store.delete("q").expect("delete"));
        assert!(store.quarantined("q").expect("quarantined").is_empty());
    }

    /// A second open of the same directory in the same process reports Locked.
    #[test]
    fn second_open_is_locked() {
        let (dir, _store) = open_temp();
        let err = SledStore::open(dir.path()).expect_err("must be locked");
        assert!(
            matches!(err, StoreError::Locked { ref path } if path == dir.path()),
            "{err:?}"
        );
        assert!(err.to_string().contains("another weft process"), "{err}");
    }

    /// Opening a path that is a regular file fails clearly and creates nothing.
    #[test]
    fn regular_file_is_not_a_data_dir() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let err = SledStore::open(file.path()).expect_err("must fail");
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        assert!(err.to_string().contains("not a directory"), "{err}");
        assert!(file.path().is_file());
    }

    /// Garbage in sled's files is an open error, not a panic or an empty database.
    #[test]
    fn corrupt_database_files_fail_to_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStore::open(dir.path()).expect("open");
            store.append("doc", b"content").expect("append");
            store.flush().expect("flush");
        }
        std::fs::write(dir.path().join("conf"), vec![0xA5; 64]).expect("write conf");
        let err = SledStore::open(dir.path()).expect_err("corrupt conf must fail");
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    }

    /// A store whose marker file exists but whose database came back empty refuses to open.
    #[test]
    fn emptied_database_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The state sled leaves when its log was truncated: our marker file, an empty database.
        write_marker_file(&dir.path().join(MARKER_FILE)).expect("marker");
        let err = SledStore::open(dir.path()).expect_err("must refuse");
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        assert!(err.to_string().contains("lost its contents"), "{err}");
    }

    /// A non-empty directory that is not a weft store is refused, not filled with sled files.
    #[test]
    fn foreign_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("notes.txt"), b"mine").expect("write");
        let err = SledStore::open(dir.path()).expect_err("must refuse");
        assert!(
            err.to_string().contains("not a weft data directory"),
            "{err}"
        );
        assert!(!dir.path().join("db").exists());
        // A fresh (missing) directory is created and marked.
        let fresh = dir.path().join("a/b");
        drop(SledStore::open(&fresh).expect("create"));
        assert!(fresh.join(MARKER_FILE).is_file());
    }

    /// Malformed metadata is reported by meta() and skipped (not fatal) by list().
    #[test]
    fn corrupt_metadata_is_reported() {
        let (_dir, store) = open_temp();
        store.append("good", b"1").expect("append");
        store
            .docs
            .insert(doc_key(TAG_META, "bad"), &b"\x01short"[..])
            .expect("insert");
        assert!(
            matches!(store.meta("bad"), Err(StoreError::Corrupt { ref doc, .. }) if doc == "bad")
        );
        let ids: Vec<String> = store
            .list()
            .expect("list")
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, vec!["good".to_owned()]);
        assert!(matches!(
            store.append("", b"x"),
            Err(StoreError::InvalidDoc { .. })
        ));
        assert!(matches!(
            store.load("a\0b"),
            Err(StoreError::InvalidDoc { .. })
        ));
    }

    /// Big-endian keys keep log order past seq 255 and 65535, also for ranged compaction.
    #[test]
    fn big_endian_order_past_byte_boundaries() {
        assert!(seq_key(TAG_UPDATE, "d", 255) < seq_key(TAG_UPDATE, "d", 256));
        assert!(seq_key(TAG_UPDATE, "d", 65_535) < seq_key(TAG_UPDATE, "d", 65_536));
        assert!(seq_key(TAG_UPDATE, "d", u64::MAX) < seq_prefix(TAG_UPDATE, "d\u{1}"));
        let (_dir, store) = open_temp();
        let n = 66_000u64;
        for i in 1..=n {
            assert_eq!(store.append("d", &i.to_le_bytes()).expect("append"), i);
        }
        let doc = store.load("d").expect("load");
        assert_eq!(doc.updates.len(), 66_000);
        for (i, (seq, update)) in doc.updates.iter().enumerate() {
            let expected = i as u64 + 1;
            assert_eq!(
                (*seq, update.as_slice()),
                (expected, &expected.to_le_bytes()[..])
            );
        }
        store.compact("d", b"s", 65_536, None).expect("compact");
        let doc = store.load("d").expect("load");
        let seqs: Vec<u64> = doc.updates.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (65_537..=n).collect::<Vec<_>>());
    }

    /// A snapshot large enough for sled's blob files survives reopen; flush fsyncs the blob.
    #[test]
    fn large_snapshot_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        {
            let store = SledStore::open(dir.path()).expect("open");
            store.append("big", b"u1").expect("append");
            store.compact("big", &big, 1, None).expect("compact");
            store.flush().expect("flush");
            assert!(
                lock(&store.sync).synced_blob > 0,
                "expected a blob file to be synced"
            );
        }
        let store = SledStore::open(dir.path()).expect("reopen");
        let doc = store.load("big").expect("load");
        assert_eq!(doc.snapshot.as_deref(), Some(big.as_slice()));
        assert!(doc.updates.is_empty());
        assert_eq!(
            store.meta("big").expect("meta").expect("exists").size_bytes,
            3_000_000
        );
    }

    /// The readiness probe succeeds on a healthy store and leaves no key behind.
    #[test]
    fn check_writable_leaves_nothing() {
        let (_dir, store) = open_temp();
        store.check_writable().expect("writable");
        assert!(!store.docs.contains_key(PROBE_KEY).expect("get"));
        assert!(store.list().expect("list").is_empty());
    }

    /// Appends from many threads to many documents get unique, gap-free sequence numbers.
    #[test]
    fn concurrent_appends_and_flushes() {
        let (_dir, store) = open_temp();
        let store = Arc::new(store);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..200u32 {
                        let doc = format!("doc{}", (t + i) % 4);
                        store.append(&doc, &i.to_be_bytes()).expect("append");
                        if i % 50 == 0 {
                            store.flush().expect("flush");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        store.flush().expect("flush");
        let mut total = 0;
        for d in 0..4 {
            let doc = store.load(&format!("doc{d}")).expect("load");
            let seqs: Vec<u64> = doc.updates.iter().map(|(s, _)| *s).collect();
            assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
            total += seqs.len();
        }
        assert_eq!(total, 1600);
    }
}
