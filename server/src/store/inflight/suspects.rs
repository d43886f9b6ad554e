//! The suspicions: stored entries (a snapshot or an update replayed at load) that were inside
//! yrs when a process died, not proven guilty yet (see the [`inflight`](super) docs). They live
//! in `weft-suspects` beside `weft-inflight`, as records in the marks' slot format with a zero
//! boot id: a suspicion outlives a reboot, which costs no more than one proving replay.
//!
//! The file is small (one slot per suspicion, usually none) and replaced whole: written beside,
//! fsynced, renamed over the old one, directory fsynced. A crash at any point leaves the old
//! list or the new one, never a torn one; a suspicion must be durable before the mark that
//! raised it is erased, or the proof could never happen.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{cut_name, encode_mark, lock, read_marks, Applying, LeftMark, UpdateHash, SLOT};

/// The file beside `weft-inflight` that holds the suspicions.
pub(super) const SUSPECTS_FILE: &str = "weft-suspects";

/// Boot id written into suspicion records: none, so every boot reads them.
const ANY_BOOT: [u8; 16] = [0; 16];

/// The suspicions of a data directory, in memory and on disk.
pub(super) struct Suspects {
    /// `weft-suspects`; `None` when nothing is kept (harnesses without a data directory).
    path: Option<PathBuf>,
    list: Mutex<Vec<LeftMark>>,
}

impl Suspects {
    /// Reads the suspicions of data directory `dir` (none if the file does not exist yet).
    pub(super) fn open(dir: &Path) -> io::Result<Self> {
        let path = dir.join(SUSPECTS_FILE);
        let list = match File::open(&path) {
            Ok(file) => read_marks(&file, &ANY_BOOT)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path: Some(path),
            list: Mutex::new(list),
        })
    }

    /// No suspicions, none kept.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(super) fn disabled() -> Self {
        Self {
            path: None,
            list: Mutex::new(Vec::new()),
        }
    }

    /// The suspicion on entry `applying` of `doc` holding bytes `hash`, if there is one.
    pub(super) fn find(
        &self,
        doc: &str,
        applying: Applying,
        hash: &UpdateHash,
    ) -> Option<LeftMark> {
        let list = lock(&self.list);
        if list.is_empty() {
            return None;
        }
        let doc = cut_name(doc);
        list.iter()
            .find(|s| s.doc == doc && s.applying == applying && s.hash == *hash)
            .cloned()
    }

    /// Records the suspicion a left mark raises, durably, once.
    pub(super) fn add(&self, mark: &LeftMark) -> io::Result<()> {
        let mut list = lock(&self.list);
        if list.iter().any(|s| same_entry(s, mark)) {
            return Ok(());
        }
        list.push(LeftMark {
            proving: false,
            ..mark.clone()
        });
        self.save(&list)
    }

    /// Drops the suspicion on the entry `mark` names (cleared or proven), durably.
    pub(super) fn remove(&self, mark: &LeftMark) -> io::Result<()> {
        let mut list = lock(&self.list);
        let before = list.len();
        list.retain(|s| !same_entry(s, mark));
        if list.len() == before {
            return Ok(());
        }
        self.save(&list)
    }

    /// Replaces the file with `list`: a crash leaves the old list or this one.
    fn save(&self, list: &[LeftMark]) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut bytes = Vec::with_capacity(list.len() * SLOT);
        for s in list {
            let mut record = encode_mark(&s.doc, s.applying, false, &s.hash, s.size, &ANY_BOOT);
            record.resize(SLOT, 0);
            bytes.extend_from_slice(&record);
        }
        let fresh = path.with_extension("new");
        let mut file = File::create(&fresh)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&fresh, path)?;
        sync_dir(path.parent())
    }
}

/// Whether two marks name the same stored entry with the same bytes.
fn same_entry(a: &LeftMark, b: &LeftMark) -> bool {
    a.doc == b.doc && a.applying == b.applying && a.hash == b.hash
}

/// Makes a rename in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: Option<&Path>) -> io::Result<()> {
    match dir {
        Some(dir) if dir.as_os_str().is_empty() => File::open(".")?.sync_all(),
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Windows makes a rename durable with the file; directories cannot be opened for a sync.
#[cfg(windows)]
fn sync_dir(_dir: Option<&Path>) -> io::Result<()> {
    Ok(())
}
