//! Opening a [`SledStore`]: the data directory checks, sled's configuration (cache, segment size),
//! waiting out a lock another store still holds, and the marker file and key that turn a database
//! sled silently recovered as empty into a refusal to start.

use std::io;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cache::{write_dirty_meta, Cache, DirtyList};
use super::flusher::{FlushWork, Flusher, FLUSH_DEADLINE};
use super::fsync::{sync_dir, SyncState};
use super::health::{DirIdentity, Health};
use super::keys::TAG_META;
use super::lock;
use super::pieces::piece_len;
use super::sled_store::SledStore;
use super::StoreError;

/// How long `open` waits for a held lock before reporting [`StoreError::Locked`].
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// File in the data directory that marks it as a weft store (see [`SledStore::open`]).
const MARKER_FILE: &str = "weft-store";
/// Key in sled's default tree that must exist whenever [`MARKER_FILE`] does.
const MARKER_KEY: &[u8] = b"weft-store-marker";

/// sled's page cache size.
const STORE_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// sled log segment size of new stores (see the [`store`](super) docs); sled allows up to 16 MiB.
const SEGMENT_BYTES: usize = 8 << 20;

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
        Self::open_with(path, Self::DEFAULT_FLUSH_DEADLINE)
    }

    /// How long a flush may take by default before the store is declared failed.
    pub const DEFAULT_FLUSH_DEADLINE: Duration = FLUSH_DEADLINE;

    /// [`SledStore::open`], with callers of [`Store::flush`](super::Store::flush) waiting at
    /// most `flush_deadline` before the store is declared failed.
    ///
    /// # Errors
    /// As [`SledStore::open`]; also [`StoreError::Open`] when the flush thread cannot start.
    pub fn open_with(path: &Path, flush_deadline: Duration) -> Result<Self, StoreError> {
        let open_err = |source: sled::Error| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let had_marker = check_data_dir(path).map_err(open_err)?;
        let (db, segment_size) = open_db(path)?;
        let docs = db.open_tree("docs").map_err(open_err)?;
        let sync = check_and_mark(path, &db, had_marker).map_err(open_err)?;
        let identity =
            DirIdentity::of(path, &[MARKER_FILE, "db"]).map_err(|e| open_err(e.into()))?;
        let health = Arc::new(Health::new(identity));
        let doc_count = docs.scan_prefix([TAG_META, 0]).keys().count() as u64;
        let dirty: Arc<DirtyList> = Arc::default();
        let sync = Arc::new(Mutex::new(sync));
        let work = flush_work(&db, &docs, &dirty, &sync, &health);
        let flusher =
            Flusher::start(work, health.clone(), flush_deadline).map_err(|e| open_err(e.into()))?;
        tracing::debug!(path = %path.display(), recovered = db.was_recovered(), doc_count, "store opened");
        Ok(Self {
            path: path.to_owned(),
            db,
            docs,
            cache: Mutex::new(Cache::new()),
            dirty,
            #[cfg(test)]
            sync,
            doc_count: AtomicU64::new(doc_count),
            piece: piece_len(segment_size),
            health,
            flusher,
        })
    }
}

/// One flush, run on the flush thread: dirty metadata, sled's flush, the syncs sled leaves
/// out, then a check that the files flushed are still the data directory's (a flush into a
/// removed directory succeeds, and is lost).
fn flush_work(
    db: &sled::Db,
    docs: &sled::Tree,
    dirty: &Arc<DirtyList>,
    sync: &Arc<Mutex<SyncState>>,
    health: &Arc<Health>,
) -> FlushWork {
    let (db, docs, dirty, sync, health) = (
        db.clone(),
        docs.clone(),
        dirty.clone(),
        sync.clone(),
        health.clone(),
    );
    Box::new(move || {
        write_dirty_meta(&docs, &dirty)?;
        db.flush()?;
        lock(&sync).sync()?;
        health.check_dir()
    })
}

/// Makes sure `path` is a directory that may hold a store (creating it if missing), and returns
/// whether it has the marker file.
fn check_data_dir(path: &Path) -> Result<bool, sled::Error> {
    match std::fs::metadata(path) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => {
            return Err(sled::Error::Io(io::Error::new(
                io::ErrorKind::NotADirectory,
                "the path exists but is not a directory",
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir_all(path)?,
        Err(e) => return Err(e.into()),
    }
    // Fail clearly on an unreadable directory rather than somewhere inside sled.
    let mut entries = std::fs::read_dir(path)?;
    let had_marker = path.join(MARKER_FILE).try_exists()?;
    let mut has_sled_db = false;
    for name in ["db", "conf"] {
        has_sled_db |= path.join(name).try_exists()?;
    }
    if !had_marker && !has_sled_db && entries.next().is_some() {
        return Err(invalid_data(
            "the directory is not empty and is not a weft data directory",
        ));
    }
    Ok(had_marker)
}

/// Opens the sled database in `path`, retrying for up to [`LOCK_WAIT`] while its lock is held;
/// returns it with its log segment size.
fn open_db(path: &Path) -> Result<(sled::Db, usize), StoreError> {
    let open_err = |source: sled::Error| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    // sled caches up to 1 GiB of pages by default. Open documents live in their rooms' yrs
    // docs, so the store's cache mostly holds recent writes and metadata: a bounded 64 MiB
    // keeps the server's memory tracking its open documents.
    let segment_size = existing_segment_size(path).unwrap_or(SEGMENT_BYTES);
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(STORE_CACHE_BYTES)
        .segment_size(segment_size);
    let started = Instant::now();
    let mut backoff = Duration::from_millis(5);
    loop {
        // sled 0.34 can panic on some corrupt files; report that as an open failure.
        match std::panic::catch_unwind(AssertUnwindSafe(|| config.open())) {
            Ok(Ok(db)) => return Ok((db, segment_size)),
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
    }
}

/// Refuses a database that lost its contents, marks a new one (key first, then file), and
/// returns the sync state of the open database.
fn check_and_mark(path: &Path, db: &sled::Db, had_marker: bool) -> Result<SyncState, sled::Error> {
    // sled recovers a truncated or garbled log as an empty database without an error; the
    // marker (a file beside it and a key inside it) turns that into a refusal to start.
    let has_marker_key = db.contains_key(MARKER_KEY)?;
    if had_marker && !has_marker_key {
        return Err(invalid_data(
            "the database lost its contents (the weft-store marker file exists but the \
             database is empty): refusing to start on an empty store; restore the \
             directory from a backup or move it away",
        ));
    }
    let mut sync = SyncState::new(path)?;
    if !has_marker_key {
        db.insert(MARKER_KEY, &b"1"[..])?;
        db.flush()?;
        sync.sync()?;
    }
    if !had_marker {
        // Only after the marker key is durable, or a power cut could fake "lost contents".
        write_marker_file(&path.join(MARKER_FILE))?;
        sync_dir(path)?;
    }
    Ok(sync)
}

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

fn invalid_data(msg: &str) -> sled::Error {
    sled::Error::Io(io::Error::new(io::ErrorKind::InvalidData, msg.to_owned()))
}

/// Writes and syncs the marker file at `path`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{open_temp, room};
    use crate::store::Store;

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
            store.append(&room("doc"), b"first").expect("append");
            store.flush().expect("flush");
        }
        let store = SledStore::open(old.path()).expect("reopen it");
        store.append(&room("doc"), b"second").expect("append");
        store.flush().expect("flush");
        assert_eq!(existing_segment_size(old.path()), Some(512 * 1024));
        let loaded = store.load(&room("doc")).expect("load");
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
            store.append(&room("doc"), &update).expect("append");
            store.flush().expect("flush");
        }
        let blobs = std::fs::read_dir(dir.path().join("blobs"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(blobs, 0, "sled wrote pages of 32 KiB updates as blob files");
        assert_eq!(store.load(&room("doc")).expect("load").updates.len(), 64);
    }

    /// A store with sled's older 512 KiB segments (blob threshold 128 KiB) stores large updates
    /// and snapshots in pieces small enough for its leaves too: no blob file.
    #[test]
    fn older_segment_size_stores_large_values_without_blobs() {
        let old = tempfile::tempdir().expect("tempdir");
        drop(sled::Config::new().path(old.path()).open().expect("sled"));
        let store = SledStore::open(old.path()).expect("open");
        assert_eq!(store.piece, 4 * 1024);
        let update: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
        for _ in 0..4 {
            store.append(&room("doc"), &update).expect("append");
            store.flush().expect("flush");
        }
        store
            .compact(&room("doc"), &update, 2, None)
            .expect("compact");
        store.flush().expect("flush");
        assert_eq!(crate::store::tests::blob_files(old.path()), 0);
        let loaded = store.load(&room("doc")).expect("load");
        assert!(loaded.snapshot.as_deref() == Some(update.as_slice()));
        assert_eq!(loaded.updates.len(), 2);
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
            store.append(&room("doc"), b"content").expect("append");
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
}
