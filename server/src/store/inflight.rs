//! Crash containment beyond panics: in-flight marks and the refused-update set.
//!
//! yrs panics are caught (`catch_unwind`), but an abort, a stack overflow or a segfault inside
//! yrs takes the whole process down, and a document whose log holds the culprit would take it
//! down again at every load. So before the server hands bytes to yrs (a member's or the API's
//! update, a stored update or snapshot replayed at load) it writes a mark — "document D is
//! applying update H (SHA-256) of N bytes" — into a slot of the file `weft-inflight` in the data
//! directory, and clears the slot right after. The write is a `pwrite` into the page cache
//! without fsync: a process crash keeps the page cache, and an fsync per keystroke would double
//! the latency of every edit. (sled 0.34 could not hold the mark: it buffers writes in the
//! process and flushes every 500 ms.)
//!
//! At start-up, [`InFlight::open`] reads the marks left behind. Each one names an update that
//! was inside yrs when the process died: it is logged (ERROR), its hash is recorded in the
//! store's refused set so every room refuses the same bytes from then on, and a stored update
//! that was being replayed is moved to quarantine so the document loads without it. Marks from
//! an earlier boot are ignored (a power cut can persist a mark whose clear it lost).
//!
//! Slots: applies run concurrently in several rooms, so each apply takes a free slot (a tiny
//! mutex-guarded free list) and returns it when its [`Mark`] drops; the file grows to the
//! largest number of concurrent applies, a few KiB.
//!
//! Refusal works on exact bytes: a client that re-sends the same content in a different
//! encoding (a reconnecting y-websocket client's sync step 2 merges its pending edits) is not
//! recognised, and a process killed by something else (SIGKILL, OOM) in the microseconds of an
//! apply blames that update. Both are reported in the ERROR log with the update's size and hash.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Mutex, PoisonError, RwLock};

use sha2::{Digest, Sha256};
use tracing::{error, warn};
use weft_protocol::{Limits, RoomName};

use crate::store::{Store, StoreError};

/// SHA-256 of an update's bytes: what the refused set holds.
pub(crate) type UpdateHash = [u8; 32];

/// The file beside sled's that holds the marks.
pub(crate) const INFLIGHT_FILE: &str = "weft-inflight";

/// Bytes per slot: the fixed header, a room name of up to [`MAX_NAME`] bytes, a checksum.
const SLOT: usize = 1024;
const MAGIC: &[u8; 4] = b"WIF1";
const HEADER: usize = 4 + 1 + 8 + 8 + 32 + 16 + 2;
const CHECKSUM: usize = 8;
/// Longest room name kept in a mark; longer names are cut (the hash still identifies the update,
/// and a refused hash is quarantined wherever it is replayed).
const MAX_NAME: usize = SLOT - HEADER - CHECKSUM;
/// Offset of the kind byte, which alone is rewritten to clear a slot.
const KIND_AT: usize = 4;

/// What the marked bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applying {
    /// An update from a member or the API, not yet stored.
    Remote,
    /// Stored update `seq`, replayed while loading the document.
    Stored(u64),
    /// The document's snapshot, replayed while loading it.
    Snapshot,
}

impl Applying {
    fn encode(self) -> (u8, u64) {
        match self {
            Applying::Remote => (1, 0),
            Applying::Stored(seq) => (2, seq),
            Applying::Snapshot => (3, 0),
        }
    }

    fn decode(kind: u8, seq: u64) -> Option<Self> {
        match kind {
            1 => Some(Applying::Remote),
            2 => Some(Applying::Stored(seq)),
            3 => Some(Applying::Snapshot),
            _ => None,
        }
    }
}

/// A mark found at start-up: this update was inside yrs when the process died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeftMark {
    /// The document (cut to [`MAX_NAME`] bytes).
    pub(crate) doc: String,
    /// What was being applied.
    pub(crate) applying: Applying,
    /// Update size in bytes.
    pub(crate) size: u64,
    /// SHA-256 of the update.
    pub(crate) hash: UpdateHash,
}

/// The marks file plus the set of refused update hashes, shared by every room of a server.
pub(crate) struct InFlight {
    file: Option<File>,
    free: Mutex<Vec<u32>>,
    next_slot: Mutex<u32>,
    boot: [u8; 16],
    refused: RwLock<HashSet<UpdateHash>>,
}

/// A slot holding one mark; dropping it clears the mark (also when a panic unwinds).
#[must_use = "the mark is cleared when this guard drops"]
pub(crate) struct Mark<'a> {
    owner: &'a InFlight,
    slot: Option<u32>,
}

impl Drop for Mark<'_> {
    fn drop(&mut self) {
        let Some(slot) = self.slot else { return };
        if let Some(file) = &self.owner.file {
            if let Err(e) = write_at(file, &[0], slot_offset(slot) + KIND_AT as u64) {
                warn!(error = %e, "could not clear an in-flight mark");
            }
        }
        lock(&self.owner.free).push(slot);
    }
}

/// SHA-256 of `bytes`.
pub(crate) fn hash(bytes: &[u8]) -> UpdateHash {
    Sha256::digest(bytes).into()
}

/// Lower-case hex of a hash, for logs.
pub(crate) fn hex(hash: &UpdateHash) -> String {
    use std::fmt::Write as _;
    hash.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl InFlight {
    /// Opens the marks file of data directory `dir` and settles what a crash left there: each
    /// mark is logged, its hash refused in `store`, a replayed stored update quarantined; the
    /// store is flushed before the marks are erased, so a crash in between only repeats this.
    /// The refused set starts with every hash the store has recorded.
    ///
    /// # Errors
    /// When the file cannot be read or written, or the store fails.
    pub(crate) fn open(dir: &Path, store: &dyn Store) -> Result<(Self, Vec<LeftMark>), OpenError> {
        let path = dir.join(INFLIGHT_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let boot = boot_id();
        let left = read_marks(&file, &boot)?;
        // The empty update every client sends cannot crash yrs; refusing it on a mark left by an
        // unrelated kill would lock every client out.
        let empty = hash(&[0, 0]);
        for mark in &left {
            if mark.hash == empty {
                warn!(doc = %mark.doc, "the process died while applying an empty update: not refused");
                continue;
            }
            let what = match mark.applying {
                Applying::Remote => "an update sent by a client".to_owned(),
                Applying::Stored(seq) => format!("stored update {seq}, replayed at load"),
                Applying::Snapshot => "the snapshot, replayed at load".to_owned(),
            };
            error!(doc = %mark.doc, hash = %hex(&mark.hash), size = mark.size, what,
                "the previous process died while applying this update; refusing these bytes from now on");
            let reason = format!(
                "the process died while applying {what} of document {:?} ({} bytes)",
                mark.doc, mark.size
            );
            store.refuse(&mark.hash, &reason)?;
            if let Applying::Stored(seq) = mark.applying {
                quarantine_left(store, mark, seq, &reason)?;
            }
        }
        if !left.is_empty() {
            store.flush()?;
        }
        file.set_len(0)?;
        file.sync_all()?;
        let refused = store.refused()?.into_iter().collect();
        Ok((
            Self {
                file: Some(file),
                free: Mutex::new(Vec::new()),
                next_slot: Mutex::new(0),
                boot,
                refused: RwLock::new(refused),
            },
            left,
        ))
    }

    /// Marks that `doc` is about to apply `bytes` (whose hash is `hash`) until the returned
    /// guard drops. A mark that cannot be written is logged and skipped: containment is best
    /// effort and must not refuse edits.
    pub(crate) fn mark(
        &self,
        doc: &str,
        applying: Applying,
        hash: &UpdateHash,
        size: usize,
    ) -> Mark<'_> {
        let Some(file) = &self.file else {
            return Mark {
                owner: self,
                slot: None,
            };
        };
        let slot = lock(&self.free).pop().unwrap_or_else(|| {
            let mut next = lock(&self.next_slot);
            *next += 1;
            *next - 1
        });
        let record = encode_mark(doc, applying, hash, size as u64, &self.boot);
        if let Err(e) = write_at(file, &record, slot_offset(slot)) {
            warn!(error = %e, "could not write an in-flight mark");
        }
        Mark {
            owner: self,
            slot: Some(slot),
        }
    }

    /// Whether updates with this hash are refused (one crashed the process before).
    pub(crate) fn is_refused(&self, hash: &UpdateHash) -> bool {
        self.refused
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(hash)
    }

    /// Marks are not kept (for harnesses that have no data directory of their own).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn disabled() -> Self {
        Self {
            file: None,
            free: Mutex::new(Vec::new()),
            next_slot: Mutex::new(0),
            boot: [0; 16],
            refused: RwLock::new(HashSet::new()),
        }
    }
}

/// Why the marks file could not be settled at start-up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// Reading or writing `weft-inflight` failed.
    #[error("in-flight marks file: {0}")]
    Io(#[from] io::Error),
    /// Recording a refused hash or a quarantine failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Quarantines stored update `seq` named by a left mark. The name comes from disk: one that is
/// not a valid room name is logged and skipped, as the refused hash still quarantines the
/// update wherever it is replayed.
fn quarantine_left(
    store: &dyn Store,
    mark: &LeftMark,
    seq: u64,
    reason: &str,
) -> Result<(), StoreError> {
    // Marks hold names of up to `MAX_NAME` bytes, whatever limit the server ran with.
    let limits = Limits {
        max_room_name: MAX_NAME,
        ..Limits::DEFAULT
    };
    match RoomName::parse(&mark.doc, &limits) {
        Ok(doc) => store.quarantine(&doc, seq, reason),
        Err(e) => {
            warn!(doc = %mark.doc, seq, error = %e,
                "not quarantining the update: the mark's document name is invalid");
            Ok(())
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain integers inside: nothing can be half-updated by a panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn slot_offset(slot: u32) -> u64 {
    u64::from(slot) * SLOT as u64
}

/// `[magic 4][kind 1][seq 8][size 8][sha256 32][boot id 16][name len 2][name][checksum 8]`;
/// the checksum (first 8 bytes of the SHA-256 of everything before it) rejects torn or stale
/// garbage after a power cut.
fn encode_mark(
    doc: &str,
    applying: Applying,
    hash: &UpdateHash,
    size: u64,
    boot: &[u8; 16],
) -> Vec<u8> {
    let mut cut = doc.len().min(MAX_NAME);
    while !doc.is_char_boundary(cut) {
        cut -= 1;
    }
    let name = &doc.as_bytes()[..cut];
    let (kind, seq) = applying.encode();
    let mut out = Vec::with_capacity(HEADER + name.len() + CHECKSUM);
    out.extend_from_slice(MAGIC);
    out.push(kind);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(hash);
    out.extend_from_slice(boot);
    out.extend_from_slice(&u16::try_from(name.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(name);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum[..CHECKSUM]);
    out
}

fn decode_mark(slot: &[u8], boot: &[u8; 16]) -> Option<LeftMark> {
    let field = |at: usize, len: usize| slot.get(at..at + len);
    if field(0, 4)? != MAGIC {
        return None;
    }
    let kind = *slot.get(KIND_AT)?;
    let seq = u64::from_be_bytes(field(5, 8)?.try_into().ok()?);
    let applying = Applying::decode(kind, seq)?;
    let size = u64::from_be_bytes(field(13, 8)?.try_into().ok()?);
    let hash: UpdateHash = field(21, 32)?.try_into().ok()?;
    let mark_boot: [u8; 16] = field(53, 16)?.try_into().ok()?;
    let name_len = usize::from(u16::from_be_bytes(field(69, 2)?.try_into().ok()?));
    let name = field(HEADER, name_len)?;
    let sum = field(HEADER + name_len, CHECKSUM)?;
    if Sha256::digest(&slot[..HEADER + name_len])[..CHECKSUM] != *sum {
        warn!("ignoring a garbled in-flight mark");
        return None;
    }
    let doc = String::from_utf8_lossy(name).into_owned();
    if &mark_boot != boot {
        warn!(doc, hash = %hex(&hash),
            "ignoring an in-flight mark from an earlier boot: a power cut or reboot, not a crash, may have left it");
        return None;
    }
    Some(LeftMark {
        doc,
        applying,
        size,
        hash,
    })
}

fn read_marks(file: &File, boot: &[u8; 16]) -> io::Result<Vec<LeftMark>> {
    let bytes = io::Read::bytes(io::BufReader::new(file)).collect::<io::Result<Vec<u8>>>()?;
    Ok(bytes
        .chunks(SLOT)
        .filter_map(|slot| decode_mark(slot, boot))
        .collect())
}

/// This boot's id (Linux `boot_id`), so marks left before a reboot are told apart; zeros where
/// there is none (then every left mark counts).
fn boot_id() -> [u8; 16] {
    let raw = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let digest = Sha256::digest(raw.trim().as_bytes());
    let mut out = [0; 16];
    if !raw.trim().is_empty() {
        out.copy_from_slice(&digest[..16]);
    }
    out
}

#[cfg(unix)]
fn write_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

#[cfg(windows)]
fn write_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        done +=
            std::os::windows::fs::FileExt::seek_write(file, &bytes[done..], offset + done as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::room;
    use crate::store::SledStore;

    /// A mark written and not cleared (the process died) is found by the next open, its hash is
    /// refused, and a replayed stored update is quarantined; a cleared mark leaves nothing.
    #[test]
    fn left_marks_are_refused_and_quarantined() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(&dir.path().join("db")).expect("store");
        store.append(&room("doc"), b"first").expect("append");
        store.append(&room("doc"), b"killer").expect("append");
        let (inflight, left) = InFlight::open(dir.path(), &store).expect("open");
        assert!(left.is_empty());
        drop(inflight.mark("doc", Applying::Remote, &hash(b"fine"), 4));
        let kept = inflight.mark("doc", Applying::Stored(2), &hash(b"killer"), 6);
        let other = inflight.mark("other", Applying::Remote, &hash(b"bad"), 3);
        // Simulate the process dying: the guards never run.
        std::mem::forget(kept);
        std::mem::forget(other);
        drop(inflight);

        let (inflight, mut left) = InFlight::open(dir.path(), &store).expect("reopen");
        left.sort_by(|a, b| a.doc.cmp(&b.doc));
        assert_eq!(
            left,
            vec![
                LeftMark {
                    doc: "doc".into(),
                    applying: Applying::Stored(2),
                    size: 6,
                    hash: hash(b"killer"),
                },
                LeftMark {
                    doc: "other".into(),
                    applying: Applying::Remote,
                    size: 3,
                    hash: hash(b"bad"),
                },
            ]
        );
        assert!(inflight.is_refused(&hash(b"killer")));
        assert!(inflight.is_refused(&hash(b"bad")));
        assert!(!inflight.is_refused(&hash(b"fine")));
        let stored = store.load(&room("doc")).expect("load");
        assert_eq!(stored.updates, vec![(1, b"first".to_vec())]);
        assert_eq!(
            store.quarantined(&room("doc")).expect("quarantined")[0].seq,
            2
        );
        drop(inflight);

        // Consumed: a third open finds no marks, and the refusals persist.
        let (inflight, left) = InFlight::open(dir.path(), &store).expect("third open");
        assert!(left.is_empty());
        assert!(inflight.is_refused(&hash(b"killer")));
    }

    /// A left mark whose document name is not a valid room name still refuses its hash; only
    /// the quarantine is skipped, and the start-up goes on.
    #[test]
    fn left_mark_with_an_invalid_name_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(&dir.path().join("db")).expect("store");
        let (inflight, _) = InFlight::open(dir.path(), &store).expect("open");
        std::mem::forget(inflight.mark("bad\nname", Applying::Stored(1), &hash(b"x"), 1));
        drop(inflight);
        let (inflight, left) = InFlight::open(dir.path(), &store).expect("reopen");
        assert_eq!(left.len(), 1);
        assert!(inflight.is_refused(&hash(b"x")));
    }

    /// Marks from another boot and garbled slots are ignored.
    #[test]
    fn foreign_boot_and_garbage_are_ignored() {
        let boot = [7; 16];
        let record = encode_mark("d", Applying::Remote, &hash(b"x"), 1, &boot);
        let mut slot = record.clone();
        slot.resize(SLOT, 0);
        assert!(decode_mark(&slot, &boot).is_some());
        assert!(decode_mark(&slot, &[8; 16]).is_none());
        slot[30] ^= 1;
        assert!(decode_mark(&slot, &boot).is_none());
        assert!(decode_mark(&[0xff; SLOT], &boot).is_none());
    }
}
