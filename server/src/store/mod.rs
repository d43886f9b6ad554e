//! Document store: the [`Store`] trait that rooms persist through, and its sled implementation.
//!
//! Each document has an append-only log of Yjs v1 updates keyed by (document, sequence), at most
//! one snapshot, and a small metadata record. Compaction writes a new snapshot and deletes the
//! updates it covers in one atomic batch. Nothing is durable until [`Store::flush`] returns; the
//! server's group-commit task calls it once to cover many appends across rooms.
//!
//! Layout of [`SledStore`]: one sled tree `docs` (keys compare as bytes, integers are big-endian,
//! document ids are [`RoomName`]s, so never empty and never with `\0`), so every multi-key
//! change is one `Tree::apply_batch`:
//!
//! | key                          | value                                         |
//! |------------------------------|-----------------------------------------------|
//! | `m\0{doc}`                   | metadata, fixed binary encoding (`MetaRec`)   |
//! | `s\0{doc}`                   | snapshot (one Yjs v1 update)                  |
//! | `s\0{doc}\0{i}{n}`           | piece `i` of `n` of a larger snapshot         |
//! | `u\0{doc}\0{seq: u64 BE}`    | logged update                                 |
//! | `u\0{doc}\0{seq}{i}{n}`      | piece `i` of `n` of a larger logged update    |
//! | `q\0{doc}\0{seq: u64 BE}`    | quarantined update, with reason and time      |
//! | `q\0{doc}\0{seq}{i}{n}`      | piece `i` of `n` of a larger quarantine entry |
//! | `r\0{sha256: 32 bytes}`      | refused update hash, with time and reason     |
//! | `p\0probe`                   | transient key of [`Store::check_writable`]    |
//!
//! `i` and `n` are u32 BE. No value sled is given exceeds a piece, 1/128 of a log segment (64
//! KiB for new stores): see "Segment size" below and `pieces.rs`. Values written whole by
//! earlier versions, of any size, are still read.
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
//! while every waiting typist's edit rode on it. New stores use 8 MiB segments (`open.rs`); a
//! store created with another segment size keeps it (sled refuses to change it), read from
//! sled's `conf` file. Worse, a blob write that fails (a full disk, a removed directory) wedges
//! sled 0.34.7's log: every later flush waits forever. So values are stored in pieces small
//! enough that even a leaf full of them stays far below the blob threshold (`pieces.rs`).
//!
//! Failure: nothing waits on a flush without bound. Flushes run on the store's own thread and
//! callers wait at most the flush deadline (10 s by default, [`SledStore::open_with`]). A flush
//! that fails or misses it, a write sled refuses, or a data directory found removed or replaced
//! (checked after every flush and by [`Store::health`]) puts the store in the *failed* state
//! for good: every write returns [`StoreError::Failed`] at once without touching sled, and
//! flushes fail at once. Reads keep working from what sled has, except that [`Store::load`]
//! refuses a document with writes no successful flush covered: sled still holds them in
//! memory, and they were never saved. (After an I/O error of its own sled may also refuse a
//! read that would restructure a page; that read then fails with the I/O error.) A restart on
//! a working disk is the way back.
//!
//! Files: this module holds the trait and its types; `keys.rs` the key layout and record
//! encodings, `pieces.rs` values in pieces, `sled_store.rs` [`SledStore`], `cache.rs` its
//! metadata cache (`slots.rs`: its slots, loaded and marked dirty), `open.rs` opening a data
//! directory, `flusher.rs` the flush thread and its deadline, `health.rs` the failed state,
//! `fsync.rs` the syncs sled leaves out; `commit.rs` batches flushes across rooms and
//! `inflight.rs` keeps the crash marks beside the database; `revocations.rs` the token
//! revocations, `history.rs` the documents' version histories, `trash.rs` the trash records and
//! `offsets.rs` the awareness clock offsets, each in a tree of its own.

mod cache;
mod flusher;
mod fsync;
mod health;
mod keys;
mod offsets;
mod open;
mod pieces;
mod revocations;
mod sled_store;
mod slots;
#[cfg(test)]
mod tests;
mod trash;

pub(crate) mod backup;
pub(crate) mod commit;
pub(crate) mod history;
pub(crate) mod inflight;
pub(crate) mod log;
pub(crate) mod peers;

pub use history::HistoryStore;
pub use log::Followed;
pub use peers::{NodeStatus, PeerLink, PeerMessage};
pub use sled_store::SledStore;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use weft_protocol::RoomName;

/// Errors from the document store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the data directory's lock.
    #[error(
        "data directory {} is locked: another weft process is probably using it (stop it, or \
         give this one another --data)",
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
    /// The store has failed (a flush failed or missed its deadline, or the data directory was
    /// removed): it refuses every write until the process restarts. The reason says why, for
    /// example "disk full (ENOSPC): ...", "data directory removed: ...", "flush timed out
    /// after 10 s".
    #[error("the document store failed: {0}; writes are refused until restart")]
    Failed(Arc<str>),
    /// The store cannot be reached for now (a cluster's NATS servers are unreachable or did not
    /// acknowledge in time): nothing written since is acknowledged, and it is retried until
    /// they are back.
    #[error("the document store is unavailable: {0}")]
    Unavailable(Arc<str>),
    /// The document id cannot be used as a store key (empty or containing `\0`).
    #[error("invalid document id {doc:?}: {why}")]
    InvalidDoc {
        /// The rejected id.
        doc: String,
        /// Which rule it broke.
        why: &'static str,
    },
}

impl StoreError {
    /// The store holds something about `doc` it cannot read: `what`.
    pub(crate) fn corrupt(doc: &str, what: impl Into<String>) -> Self {
        StoreError::Corrupt {
            doc: doc.to_owned(),
            what: what.into(),
        }
    }
}

/// Locks `mutex`, also after a panic elsewhere: cached state is changed only after the sled
/// call it mirrors succeeded, so a panic while the lock was held cannot have left it
/// half-updated.
pub(super) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Everything stored for one document, in replay order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredDoc {
    /// The latest snapshot, if the document was ever compacted; apply it first.
    pub snapshot: Option<Vec<u8>>,
    /// Logged updates after the snapshot as `(seq, update)`, ascending by `seq`.
    pub updates: Vec<(u64, Vec<u8>)>,
    /// The log position the snapshot covers when `updates` is empty (a cluster's log is read
    /// from there on); 0 for stores whose positions all come from `updates`.
    pub covers: u64,
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
    /// Whether the title was set explicitly (through the API), so edits no longer replace it.
    pub title_pinned: bool,
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
    fn load(&self, doc: &RoomName) -> Result<StoredDoc, StoreError>;
    /// Appends one update and returns its sequence number; not durable until [`Store::flush`].
    fn append(&self, doc: &RoomName, update: &[u8]) -> Result<u64, StoreError>;
    /// Atomically writes `snapshot`, deletes logged updates with `seq <= upto_seq`, and updates
    /// the metadata (size; title if `Some`, unchanged if `None`). Later updates stay.
    fn compact(
        &self,
        doc: &RoomName,
        snapshot: &[u8],
        upto_seq: u64,
        title: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Moves logged update `seq` to quarantine with `reason` and the time; a no-op if absent.
    fn quarantine(&self, doc: &RoomName, seq: u64, reason: &str) -> Result<(), StoreError>;
    /// Sets the automatic title of `doc` (its first line), creating its metadata if the
    /// document is new; does nothing once a title was pinned.
    fn set_title(&self, doc: &RoomName, title: &str) -> Result<(), StoreError>;
    /// Sets a title chosen explicitly (through the API); edits no longer replace it.
    fn pin_title(&self, doc: &RoomName, title: &str) -> Result<(), StoreError>;
    /// Returns the metadata of `doc`, or `None` if the document does not exist.
    fn meta(&self, doc: &RoomName) -> Result<Option<DocMeta>, StoreError>;
    /// Lists the metadata of every document, sorted by id, without reading content.
    fn list(&self) -> Result<Vec<DocMeta>, StoreError>;
    /// As [`Store::list`], with every `title` left `None`: what a listing sorts and pages by,
    /// without decoding every document's title (the page's titles come from [`Store::meta`]).
    fn list_untitled(&self) -> Result<Vec<DocMeta>, StoreError> {
        self.list()
    }
    /// How many documents are stored, without reading them (for metrics).
    fn doc_count(&self) -> u64;
    /// Deletes snapshot, log, quarantine and metadata of `doc`; `true` if anything existed.
    fn delete(&self, doc: &RoomName) -> Result<bool, StoreError>;
    /// Records that updates whose SHA-256 is `hash` must never be applied again (one crashed
    /// the process), with `reason`; recording the same hash again keeps the first record.
    fn refuse(&self, hash: &[u8; 32], reason: &str) -> Result<(), StoreError>;
    /// Every hash recorded with [`Store::refuse`].
    fn refused(&self) -> Result<Vec<[u8; 32]>, StoreError>;
    /// Blocks until everything written before the call is durable, for at most the store's
    /// flush deadline: a flush that fails or misses it fails the store ([`StoreError::Failed`]).
    fn flush(&self) -> Result<(), StoreError>;
    /// Whether the store still takes writes, without writing: [`StoreError::Failed`] once it
    /// has failed, or when its data directory is found removed or replaced (which fails it).
    fn health(&self) -> Result<(), StoreError>;
    /// [`Store::health`], then writes, removes and flushes a probe key: fails if the store cannot
    /// write to disk. Bounded by the flush deadline; immediate once the store has failed.
    fn check_writable(&self) -> Result<(), StoreError>;
    /// Records durably (flushed before it returns) that tokens for `doc` issued before `before`
    /// (Unix seconds) are refused; an earlier time than one recorded changes nothing. Stores
    /// that keep no revocations refuse.
    fn revoke_tokens(&self, doc: &RoomName, before: u64) -> Result<(), StoreError> {
        let _ = (doc, before);
        Err(StoreError::Failed(
            "this store keeps no token revocations".into(),
        ))
    }
    /// Every revocation recorded with [`Store::revoke_tokens`], as `(document, time)`.
    fn revocations(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(Vec::new())
    }
    /// Records that `doc` is in the trash since `at_ms` (Unix ms), keeping its content; a
    /// document already there keeps its first time. Durable after [`Store::flush`]. Stores
    /// that keep no trash refuse.
    fn move_to_trash(&self, doc: &RoomName, at_ms: u64) -> Result<(), StoreError> {
        let _ = (doc, at_ms);
        Err(StoreError::Failed("this store keeps no trash".into()))
    }
    /// Takes `doc` out of the trash (restore, or after a purge); `true` if it was there.
    fn take_from_trash(&self, doc: &RoomName) -> Result<bool, StoreError> {
        let _ = doc;
        Ok(false)
    }
    /// When `doc` was moved to the trash (Unix ms), or `None` if it is not there.
    fn trashed(&self, doc: &RoomName) -> Result<Option<u64>, StoreError> {
        let _ = doc;
        Ok(None)
    }
    /// Every document in the trash as `(document, time moved there)`, sorted by id.
    fn trash(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(Vec::new())
    }
    /// Where documents' version histories are kept, made durable by [`Store::flush`] like the
    /// documents; `None` for a store that keeps no history.
    fn history(&self) -> Option<history::HistoryStore> {
        None
    }
    /// Raises, durably, the reservation of awareness clock offsets by `count` and returns where
    /// it was (see `room::clocks`). Stores that keep none return 0: offsets then restart at 0.
    fn reserve_awareness_offsets(&self, count: u64) -> Result<u64, StoreError> {
        let _ = count;
        Ok(0)
    }
    /// For a store shared by several nodes: the updates other nodes log to `doc` after
    /// position `after` (see [`log::DurableLog::follow`]); `None` for a store of one node.
    fn follow(&self, doc: &RoomName, after: u64) -> Option<tokio::sync::mpsc::Receiver<Followed>> {
        let _ = (doc, after);
        None
    }
    /// For a store shared by several nodes: a link to the rooms of `doc` on the other nodes
    /// (awareness, liveness); `None` for a store of one node.
    fn peers(&self, doc: &RoomName) -> Option<PeerLink> {
        let _ = doc;
        None
    }
    /// For a store shared by several nodes: token revocations other nodes record, as
    /// `(document, before)`, as they happen; `None` for a store of one node.
    fn revocations_elsewhere(&self) -> Option<tokio::sync::mpsc::Receiver<(String, u64)>> {
        None
    }
    /// For a store shared by several nodes: notes this node's status (`mine`, announced to the
    /// others) and returns every node heard from lately, this one first; `None` for a store of
    /// one node.
    fn cluster_nodes(&self, mine: NodeStatus) -> Option<Vec<NodeStatus>> {
        let _ = mine;
        None
    }
}

/// Now, in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
