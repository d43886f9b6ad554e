//! What the sled store fsyncs itself: sled 0.34.7 leaves its log without an fsync and its blob
//! files without any sync, so [`Store::flush`](super::Store::flush) would not be durable on its
//! own (see the [`store`](super) docs, "Durability").

use std::io;
use std::path::{Path, PathBuf};

/// The files [`Store::flush`](super::Store::flush) syncs after sled's own flush: sled 0.34.7's
/// `Db::flush` on Linux only calls `sync_file_range` on its log (no fsync: no device cache flush,
/// no size metadata), and never syncs the large-value files it writes under `blobs/`.
pub(super) struct SyncState {
    /// A second descriptor of sled's log file `db` (fsync acts on the file, not the descriptor).
    db_file: std::fs::File,
    /// sled's `blobs/` directory of large values.
    blobs_dir: PathBuf,
    /// Highest blob file (named by log sequence number) already fsynced.
    pub(super) synced_blob: u64,
}

impl SyncState {
    /// The sync state of the sled database in `dir`, which must already exist.
    pub(super) fn new(dir: &Path) -> io::Result<Self> {
        Ok(Self {
            db_file: std::fs::File::open(dir.join("db"))?,
            blobs_dir: dir.join("blobs"),
            synced_blob: 0,
        })
    }

    /// Makes what `db.flush()` wrote durable: fdatasync the log, fsync new blob files and their
    /// directory.
    pub(super) fn sync(&mut self) -> Result<(), sled::Error> {
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

/// fsyncs a directory, so the entries created in it survive a power cut.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
