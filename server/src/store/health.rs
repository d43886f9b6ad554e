//! Whether the store can still take writes: once a flush fails or misses its deadline, or the
//! data directory is found removed or replaced, the store is *failed* for good (until the
//! process restarts). Writes are then refused with [`StoreError::Failed`] without touching
//! sled, whose state after an I/O error is not trusted; reads keep working from what it has.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::StoreError;

/// The store's failure, once there is one; shared by the store and its flush thread.
pub(super) struct Health {
    /// The first failure's reason; never replaced.
    failed: OnceLock<Arc<str>>,
    /// The data directory as opened, to notice it being removed or replaced.
    dir: DirIdentity,
}

impl Health {
    /// A healthy store on the directory `dir` describes.
    pub(super) fn new(dir: DirIdentity) -> Self {
        Self {
            failed: OnceLock::new(),
            dir,
        }
    }

    /// `Err(StoreError::Failed)` once the store has failed.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        match self.failed.get() {
            Some(reason) => Err(StoreError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// The failure's reason, if the store has failed.
    pub(super) fn failure(&self) -> Option<Arc<str>> {
        self.failed.get().cloned()
    }

    /// Puts the store into the failed state with `reason` (the first reason stays) and returns
    /// the error writes now get.
    pub(super) fn fail(&self, reason: impl Into<String>) -> StoreError {
        let reason = reason.into();
        let mut first = false;
        let kept = self.failed.get_or_init(|| {
            first = true;
            Arc::from(reason.as_str())
        });
        if first {
            tracing::error!(
                reason = %kept,
                "store failed: refusing writes until restart; reads still served"
            );
        }
        StoreError::Failed(kept.clone())
    }

    /// Fails the store for a write that sled refused, and returns the error to report.
    pub(super) fn fail_on(&self, err: &sled::Error) -> StoreError {
        self.fail(describe(err))
    }

    /// Checks that the data directory still holds the files the store opened; fails the store
    /// if not.
    pub(super) fn check_dir(&self) -> Result<(), StoreError> {
        self.check()?;
        self.dir.check().map_err(|reason| self.fail(reason))
    }
}

/// Says what went wrong in a sled error, naming the common causes plainly.
pub(super) fn describe(err: &sled::Error) -> String {
    match err {
        sled::Error::Io(e) => describe_io(e),
        other => format!("storage error: {other}"),
    }
}

/// Says what went wrong in an I/O error. sled copies errors by kind and debug text, without
/// the OS code, so the text is checked too.
pub(super) fn describe_io(err: &io::Error) -> String {
    let text = err.to_string();
    let has = |code: i32, words: &str| err.raw_os_error() == Some(code) || text.contains(words);
    let cause = match err.kind() {
        io::ErrorKind::StorageFull => "disk full (ENOSPC)",
        io::ErrorKind::QuotaExceeded => "disk quota exceeded (EDQUOT)",
        io::ErrorKind::FileTooLarge => "file too large for its file system or limit (EFBIG)",
        io::ErrorKind::NotFound => "data directory removed (ENOENT)",
        _ if has(28, "No space left") => "disk full (ENOSPC)",
        _ if has(27, "File too large") => "file too large for its file system or limit (EFBIG)",
        _ => return format!("I/O error: {text}"),
    };
    format!("{cause}: {text}")
}

/// The identity of a data directory's marker file and sled log, as opened.
pub(super) struct DirIdentity {
    /// The data directory.
    dir: PathBuf,
    /// The files checked and what they were at open: (name, device, inode).
    files: Vec<(&'static str, FileId)>,
}

/// Device and inode of a file (both 0 where the platform has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64);

impl FileId {
    fn of(md: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            Self(md.dev(), md.ino())
        }
        #[cfg(not(unix))]
        {
            let _ = md;
            Self(0, 0)
        }
    }
}

impl DirIdentity {
    /// Records the identity of `names` (files that must exist) in `dir`.
    pub(super) fn of(dir: &Path, names: &[&'static str]) -> io::Result<Self> {
        let mut files = Vec::with_capacity(names.len());
        for &name in names {
            files.push((name, FileId::of(&std::fs::metadata(dir.join(name))?)));
        }
        Ok(Self {
            dir: dir.to_owned(),
            files,
        })
    }

    /// `Err(reason)` when a file is gone or is another file than at open: writes would land in
    /// files nobody finds at the next start.
    fn check(&self) -> Result<(), String> {
        for (name, id) in &self.files {
            let path = self.dir.join(name);
            match std::fs::metadata(&path) {
                Ok(md) if FileId::of(&md) == *id => {}
                Ok(_) => {
                    return Err(format!(
                        "data directory replaced: {} is not the file the store opened",
                        path.display()
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(format!(
                        "data directory removed: {} no longer exists",
                        path.display()
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "data directory unreadable: {}: {e}",
                        path.display()
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Common causes are named; the first failure stays.
    #[test]
    fn failures_are_named_and_sticky() {
        let full = sled::Error::Io(io::Error::from_raw_os_error(28));
        assert!(
            describe(&full).starts_with("disk full (ENOSPC)"),
            "{}",
            describe(&full)
        );
        // As sled's `Clone` copies it: kind and debug text, no OS code.
        let copied = io::Error::other("Os { code: 28, message: \"No space left on device\" }");
        assert!(describe_io(&copied).starts_with("disk full"));
        let gone = io::Error::from(io::ErrorKind::NotFound);
        assert!(describe_io(&gone).starts_with("data directory removed"));

        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), b"x").expect("write");
        let health = Health::new(DirIdentity::of(dir.path(), &["f"]).expect("identity"));
        health.check_dir().expect("healthy");
        let err = health.fail("first");
        assert_eq!(
            err.to_string(),
            StoreError::Failed(Arc::from("first")).to_string()
        );
        health.fail("second");
        assert_eq!(health.failure().as_deref(), Some("first"));
        assert!(matches!(health.check(), Err(StoreError::Failed(r)) if &*r == "first"));
    }

    /// A removed or replaced file fails the check.
    #[test]
    fn removed_or_replaced_files_are_noticed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").expect("write");
        let identity = DirIdentity::of(dir.path(), &["f"]).expect("identity");
        identity.check().expect("unchanged");
        let moved = dir.path().join("g");
        std::fs::rename(&file, &moved).expect("rename");
        std::fs::write(&file, b"x").expect("write");
        let replaced = identity.check().expect_err("replaced");
        assert!(replaced.contains("replaced"), "{replaced}");
        std::fs::remove_file(&file).expect("remove");
        let removed = identity.check().expect_err("removed");
        assert!(removed.contains("removed"), "{removed}");
    }
}
