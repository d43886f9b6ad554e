//! Crash containment beyond panics: in-flight marks, suspicions and the refused-update set.
//!
//! yrs panics are caught (`catch_unwind`), but an abort, a stack overflow or a segfault inside
//! yrs takes the whole process down, and a document whose log holds the culprit would take it
//! down again at every load. So before the server hands bytes to yrs (a member's or the API's
//! update, a stored update or snapshot replayed at load) it writes a mark — "document D is
//! applying update H (SHA-256) of N bytes" — into a slot of the file `weft-inflight` in the data
//! directory, and clears the slot right after. A mark covers one entry only: one update, or
//! during a load one stored entry (its decoding, the guards, the apply and the commit, all yrs
//! work on those bytes), never the whole replay. The write is a `pwrite` into the page cache
//! without fsync: a process crash keeps the page cache, and an fsync per keystroke would double
//! the latency of every edit. (sled 0.34 could not hold the mark: it buffers writes in the
//! process and flushes every 500 ms.)
//!
//! At start-up, [`InFlight::open`] reads the marks left behind; each names bytes that were inside
//! yrs when the process died, not necessarily bytes that killed it: a SIGKILL or the OOM killer
//! during a load almost always lands inside some entry's mark. What a mark leads to depends on
//! its kind:
//!
//! - **A member's or the API's update** (`Remote`): refused at once (hash recorded in the
//!   store's refused set, so every room refuses the same bytes with 1007 from then on). It was
//!   never stored nor acknowledged, so refusing it loses nothing, and it is what stops a client
//!   from crashing the server again by re-sending the same bytes after its reconnect.
//! - **A stored entry replayed at load** (`Stored`, `Snapshot`): acknowledged data, so the mark
//!   is only a *suspicion*. It is recorded in `weft-suspects` (see [`suspects`]) and nothing is
//!   refused or quarantined. The next load of that document replays the entry, in the same
//!   place of the replay, under a mark of the *proving* kind; if that apply returns, the
//!   suspicion is cleared (the document loads normally). The retry is in place rather than on
//!   an empty document because yrs crashes depend on the document an update meets: an entry
//!   tried alone could pass, be cleared, and crash the full load again at every start.
//! - **A proving mark**: the same bytes were inside yrs when the process died twice, the second
//!   time under a mark of their own: that is the proof. The hash is refused, an update is
//!   moved to quarantine (the document loads without it), a snapshot refuses its document
//!   (503 `snapshot does not load`) rather than let an empty one overwrite it; the suspicion is
//!   dropped.
//!
//! So a stored entry that really crashes yrs costs two restarts (one more than a member's
//! update), and an unrelated death costs nothing: a load it interrupted just runs again. Only two
//! unrelated deaths inside the same entry's apply, in a row, would blame it. Marks from an
//! earlier boot are ignored (a power cut can persist a mark whose clear it lost); suspicions,
//! which are fsynced, outlive reboots and are proved at the next load.
//!
//! Slots: applies run concurrently in several rooms, so each apply takes a free slot (a tiny
//! mutex-guarded free list) and returns it when its [`Mark`] drops; the file grows to the
//! largest number of concurrent applies, a few KiB.
//!
//! Refusal works on exact bytes: a client that re-sends the same content in a different
//! encoding (a reconnecting y-websocket client's sync step 2 merges its pending edits) is not
//! recognised, and a process killed by something else (SIGKILL, OOM) in the microseconds of a
//! member's apply blames that update. Both are reported in the ERROR log with the update's size
//! and hash.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Mutex, PoisonError, RwLock};

use sha2::{Digest, Sha256};
use tracing::{error, info, warn};
use weft_protocol::{Limits, RoomName};

use crate::store::{Store, StoreError};

mod suspects;

use suspects::Suspects;

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
    /// The kind byte and sequence number of a mark; `proving` only exists for stored entries.
    fn encode(self, proving: bool) -> (u8, u64) {
        match (self, proving) {
            (Applying::Remote, _) => (1, 0),
            (Applying::Stored(seq), false) => (2, seq),
            (Applying::Snapshot, false) => (3, 0),
            (Applying::Stored(seq), true) => (4, seq),
            (Applying::Snapshot, true) => (5, 0),
        }
    }

    fn decode(kind: u8, seq: u64) -> Option<(Self, bool)> {
        match kind {
            1 => Some((Applying::Remote, false)),
            2 => Some((Applying::Stored(seq), false)),
            3 => Some((Applying::Snapshot, false)),
            4 => Some((Applying::Stored(seq), true)),
            5 => Some((Applying::Snapshot, true)),
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
    /// Whether this was the proving replay of a suspect stored entry (then it is guilty).
    pub(crate) proving: bool,
    /// Update size in bytes.
    pub(crate) size: u64,
    /// SHA-256 of the update.
    pub(crate) hash: UpdateHash,
}

impl LeftMark {
    /// What the marked bytes were, for logs and refusal reasons.
    fn describe(&self) -> String {
        let proving = if self.proving {
            " to prove a suspicion"
        } else {
            ""
        };
        match self.applying {
            Applying::Remote => "an update sent by a client".to_owned(),
            Applying::Stored(seq) => format!("stored update {seq}, replayed at load{proving}"),
            Applying::Snapshot => format!("the snapshot, replayed at load{proving}"),
        }
    }
}

/// The marks file, the suspicions and the set of refused update hashes, shared by every room of
/// a server.
pub(crate) struct InFlight {
    file: Option<File>,
    free: Mutex<Vec<u32>>,
    next_slot: Mutex<u32>,
    boot: [u8; 16],
    refused: RwLock<HashSet<UpdateHash>>,
    suspects: Suspects,
}

/// A slot holding one mark; dropping it clears the mark (also when a panic unwinds), and for a
/// proving replay the suspicion it was proving: the apply returned, the process survived.
#[must_use = "the mark is cleared when this guard drops"]
pub(crate) struct Mark<'a> {
    owner: &'a InFlight,
    slot: Option<u32>,
    proving: Option<LeftMark>,
}

impl Drop for Mark<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            if let Some(file) = &self.owner.file {
                if let Err(e) = write_at(file, &[0], slot_offset(slot) + KIND_AT as u64) {
                    warn!(error = %e, "could not clear an in-flight mark");
                }
            }
            lock(&self.owner.free).push(slot);
        }
        if let Some(suspect) = self.proving.take() {
            // Should the cleared list not be saved, the suspicion is proved again at the next
            // load: harmless.
            match self.owner.suspects.remove(&suspect) {
                Ok(()) => {
                    info!(doc = %suspect.doc, hash = %hex(&suspect.hash), what = suspect.describe(),
                    "suspicion cleared: the suspect entry applied again without killing the process")
                }
                Err(e) => warn!(error = %e, "could not save the cleared suspicion"),
            }
        }
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
    /// Opens the marks file of data directory `dir` and settles what a crash left there (see
    /// [`settle`]); the marks are erased only once that is durable, so a crash in between only
    /// repeats it. The refused set starts with every hash the store has recorded.
    ///
    /// # Errors
    /// When the marks or suspects file cannot be read or written, or the store fails.
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
        let suspects = Suspects::open(dir)?;
        settle(&left, store, &suspects)?;
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
                suspects,
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
        self.write_mark(doc, applying, false, hash, size)
    }

    /// Marks a stored entry about to be replayed at load, like [`InFlight::mark`]; when a mark
    /// left by a dead process made these bytes suspect, the mark is of the proving kind and the
    /// suspicion is cleared when the guard drops.
    pub(crate) fn mark_replay(
        &self,
        doc: &str,
        applying: Applying,
        hash: &UpdateHash,
        size: usize,
    ) -> Mark<'_> {
        let suspect = self.suspects.find(doc, applying, hash);
        if let Some(s) = &suspect {
            warn!(doc, hash = %hex(hash), what = s.describe(),
                "replaying a suspect entry under a proving mark: should the process die now, it is refused at the next start");
        }
        let mut mark = self.write_mark(doc, applying, suspect.is_some(), hash, size);
        mark.proving = suspect;
        mark
    }

    fn write_mark(
        &self,
        doc: &str,
        applying: Applying,
        proving: bool,
        hash: &UpdateHash,
        size: usize,
    ) -> Mark<'_> {
        let Some(file) = &self.file else {
            return Mark {
                owner: self,
                slot: None,
                proving: None,
            };
        };
        let slot = lock(&self.free).pop().unwrap_or_else(|| {
            let mut next = lock(&self.next_slot);
            *next += 1;
            *next - 1
        });
        let record = encode_mark(doc, applying, proving, hash, size as u64, &self.boot);
        if let Err(e) = write_at(file, &record, slot_offset(slot)) {
            warn!(error = %e, "could not write an in-flight mark");
        }
        Mark {
            owner: self,
            slot: Some(slot),
            proving: None,
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
            suspects: Suspects::disabled(),
        }
    }
}

/// Acts on the marks a dead process left: a member's update is refused; a stored entry replayed
/// at load becomes a suspicion (saved durably, nothing refused); a proving replay is the proof,
/// so its hash is refused, a stored update quarantined and the suspicion dropped. The store is
/// flushed before the suspicions are dropped.
fn settle(left: &[LeftMark], store: &dyn Store, suspects: &Suspects) -> Result<(), OpenError> {
    // The empty update every client sends cannot crash yrs; refusing it on a mark left by an
    // unrelated kill would lock every client out.
    let empty = hash(&[0, 0]);
    let mut blamed = Vec::new();
    for mark in left {
        if mark.hash == empty {
            warn!(doc = %mark.doc, "the process died while applying an empty update: not refused");
        } else if mark.applying == Applying::Remote || mark.proving {
            blame(store, mark)?;
            blamed.push(mark);
        } else {
            suspects.add(mark)?;
            warn!(doc = %mark.doc, hash = %hex(&mark.hash), size = mark.size, what = mark.describe(),
                "the previous process died while replaying this stored entry; suspect, not refused: the next load of the document proves or clears it");
        }
    }
    if blamed.is_empty() {
        return Ok(());
    }
    store.flush()?;
    for mark in blamed.into_iter().filter(|m| m.proving) {
        suspects.remove(mark)?;
    }
    Ok(())
}

/// Refuses the bytes a left mark names, and quarantines a stored update.
fn blame(store: &dyn Store, mark: &LeftMark) -> Result<(), StoreError> {
    let what = mark.describe();
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
    Ok(())
}

/// Why the marks file could not be settled at start-up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// Reading or writing `weft-inflight` or `weft-suspects` failed.
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
    proving: bool,
    hash: &UpdateHash,
    size: u64,
    boot: &[u8; 16],
) -> Vec<u8> {
    let name = cut_name(doc).as_bytes();
    let (kind, seq) = applying.encode(proving);
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

/// `doc` cut to the [`MAX_NAME`] bytes a mark keeps (at a character boundary).
fn cut_name(doc: &str) -> &str {
    let mut cut = doc.len().min(MAX_NAME);
    while !doc.is_char_boundary(cut) {
        cut -= 1;
    }
    &doc[..cut]
}

fn decode_mark(slot: &[u8], boot: &[u8; 16]) -> Option<LeftMark> {
    let field = |at: usize, len: usize| slot.get(at..at + len);
    if field(0, 4)? != MAGIC {
        return None;
    }
    let kind = *slot.get(KIND_AT)?;
    let seq = u64::from_be_bytes(field(5, 8)?.try_into().ok()?);
    let (applying, proving) = Applying::decode(kind, seq)?;
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
        proving,
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

    /// A store with updates 1 ("first") and 2 ("killer") in document "doc", and its data dir.
    fn store_with_log() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(&dir.path().join("db")).expect("store");
        store.append(&room("doc"), b"first").expect("append");
        store.append(&room("doc"), b"killer").expect("append");
        (dir, store)
    }

    /// Whether stored update 2 of "doc" ("killer") is suspect.
    fn killer_suspect(inflight: &InFlight) -> bool {
        let found = inflight
            .suspects
            .find("doc", Applying::Stored(2), &hash(b"killer"));
        found.is_some()
    }

    /// A member's update left marked (the process died) is refused at the next open; a stored
    /// update left marked is only suspect: neither refused nor quarantined. A cleared mark
    /// leaves nothing.
    #[test]
    fn left_remote_marks_are_refused_and_replay_marks_suspected() {
        let (dir, store) = store_with_log();
        let (inflight, left) = InFlight::open(dir.path(), &store).expect("open");
        assert!(left.is_empty());
        drop(inflight.mark("doc", Applying::Remote, &hash(b"fine"), 4));
        let kept = inflight.mark_replay("doc", Applying::Stored(2), &hash(b"killer"), 6);
        let other = inflight.mark("other", Applying::Remote, &hash(b"bad"), 3);
        // Simulate the process dying: the guards never run.
        std::mem::forget(kept);
        std::mem::forget(other);
        drop(inflight);

        let (inflight, mut left) = InFlight::open(dir.path(), &store).expect("reopen");
        left.sort_by(|a, b| a.doc.cmp(&b.doc));
        let replayed = LeftMark {
            doc: "doc".into(),
            applying: Applying::Stored(2),
            proving: false,
            size: 6,
            hash: hash(b"killer"),
        };
        let remote = LeftMark {
            doc: "other".into(),
            applying: Applying::Remote,
            proving: false,
            size: 3,
            hash: hash(b"bad"),
        };
        assert_eq!(left, vec![replayed, remote]);
        assert!(inflight.is_refused(&hash(b"bad")));
        assert!(!inflight.is_refused(&hash(b"killer")));
        assert!(!inflight.is_refused(&hash(b"fine")));
        assert!(killer_suspect(&inflight));
        let stored = store.load(&room("doc")).expect("load");
        assert_eq!(stored.updates.len(), 2, "nothing quarantined on suspicion");
        assert!(store.quarantined(&room("doc")).expect("q").is_empty());
        drop(inflight);

        // Consumed: a third open finds no marks; the refusal and the suspicion persist.
        let (inflight, left) = InFlight::open(dir.path(), &store).expect("third open");
        assert!(left.is_empty());
        assert!(inflight.is_refused(&hash(b"bad")));
        assert!(killer_suspect(&inflight));
    }

    /// Suspect → proving → refused: the replay after a suspicion is marked as proving, and a
    /// death during it refuses the bytes, quarantines the update and drops the suspicion.
    #[test]
    fn death_during_a_proving_replay_is_proof() {
        let (dir, store) = store_with_log();
        let (inflight, _) = InFlight::open(dir.path(), &store).expect("open");
        let replay = inflight.mark_replay("doc", Applying::Stored(2), &hash(b"killer"), 6);
        std::mem::forget(replay);
        drop(inflight);
        let (inflight, _) = InFlight::open(dir.path(), &store).expect("suspect");
        assert!(killer_suspect(&inflight));
        assert!(!inflight.is_refused(&hash(b"killer")));

        let proving = inflight.mark_replay("doc", Applying::Stored(2), &hash(b"killer"), 6);
        assert!(
            proving.proving.is_some(),
            "a suspect entry is replayed as proving"
        );
        std::mem::forget(proving);
        drop(inflight);

        let (inflight, left) = InFlight::open(dir.path(), &store).expect("proof");
        assert_eq!(left.len(), 1);
        assert!(left[0].proving);
        assert!(inflight.is_refused(&hash(b"killer")));
        assert!(!killer_suspect(&inflight), "a proven suspicion is dropped");
        let stored = store.load(&room("doc")).expect("load");
        assert_eq!(stored.updates, vec![(1, b"first".to_vec())]);
        assert_eq!(store.quarantined(&room("doc")).expect("q")[0].seq, 2);
        drop(inflight);
        let (inflight, left) = InFlight::open(dir.path(), &store).expect("after");
        assert!(left.is_empty());
        assert!(inflight.is_refused(&hash(b"killer")));
        assert!(!killer_suspect(&inflight));
    }

    /// A proving replay that returns clears the suspicion, on disk too; the snapshot is never
    /// refused, and the next replay of it is an ordinary one.
    #[test]
    fn clean_proving_replay_clears_the_suspicion() {
        let (dir, store) = store_with_log();
        let snapshot = hash(b"snapshot");
        let (inflight, _) = InFlight::open(dir.path(), &store).expect("open");
        std::mem::forget(inflight.mark_replay("doc", Applying::Snapshot, &snapshot, 8));
        drop(inflight);
        let (inflight, _) = InFlight::open(dir.path(), &store).expect("suspect");
        let suspect = |i: &InFlight| i.suspects.find("doc", Applying::Snapshot, &snapshot);
        assert!(suspect(&inflight).is_some());
        // Another document's or another entry's replay does not prove it.
        assert!(inflight
            .mark_replay("doc", Applying::Stored(1), &snapshot, 8)
            .proving
            .is_none());

        drop(inflight.mark_replay("doc", Applying::Snapshot, &snapshot, 8));
        assert!(suspect(&inflight).is_none());
        let next = inflight.mark_replay("doc", Applying::Snapshot, &snapshot, 8);
        assert!(next.proving.is_none());
        std::mem::forget(next);
        drop(inflight);

        // The cleared list was saved; the ordinary mark left after it is a fresh suspicion only.
        let (inflight, left) = InFlight::open(dir.path(), &store).expect("reopen");
        assert_eq!(left.len(), 1);
        assert!(!left[0].proving);
        assert!(!inflight.is_refused(&snapshot));
        assert!(suspect(&inflight).is_some());
        drop(inflight.mark_replay("doc", Applying::Snapshot, &snapshot, 8));
        drop(inflight);
        let (inflight, _) = InFlight::open(dir.path(), &store).expect("clean");
        assert!(suspect(&inflight).is_none());
        assert!(!inflight.is_refused(&snapshot));
    }

    /// A proving mark whose document name is not a valid room name still refuses its hash;
    /// only the quarantine is skipped, and the start-up goes on.
    #[test]
    fn left_mark_with_an_invalid_name_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(&dir.path().join("db")).expect("store");
        let (inflight, _) = InFlight::open(dir.path(), &store).expect("open");
        let mark = inflight.write_mark("bad\nname", Applying::Stored(1), true, &hash(b"x"), 1);
        std::mem::forget(mark);
        drop(inflight);
        let (inflight, left) = InFlight::open(dir.path(), &store).expect("reopen");
        assert_eq!(left.len(), 1);
        assert!(inflight.is_refused(&hash(b"x")));
    }

    /// Marks from another boot and garbled slots are ignored; every kind round-trips.
    #[test]
    fn foreign_boot_and_garbage_are_ignored() {
        let boot = [7; 16];
        for (applying, proving) in [
            (Applying::Remote, false),
            (Applying::Stored(9), false),
            (Applying::Snapshot, false),
            (Applying::Stored(9), true),
            (Applying::Snapshot, true),
        ] {
            let mut slot = encode_mark("d", applying, proving, &hash(b"x"), 1, &boot);
            slot.resize(SLOT, 0);
            let mark = decode_mark(&slot, &boot).expect("decodes");
            assert_eq!((mark.applying, mark.proving), (applying, proving));
        }
        let record = encode_mark("d", Applying::Remote, false, &hash(b"x"), 1, &boot);
        let mut slot = record.clone();
        slot.resize(SLOT, 0);
        assert!(decode_mark(&slot, &boot).is_some());
        assert!(decode_mark(&slot, &[8; 16]).is_none());
        slot[30] ^= 1;
        assert!(decode_mark(&slot, &boot).is_none());
        assert!(decode_mark(&[0xff; SLOT], &boot).is_none());
    }
}
