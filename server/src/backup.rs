//! The `weft backup` and `weft restore` commands, beside [`crate::cli`] at the top of the crate.
//!
//! `weft backup` cannot open a running server's data directory (the server holds sled's lock on
//! it), so it goes through the server: it reads the stream of `GET /api/backup` (format in
//! `store::backup`) and writes each document into a new data directory with
//! [`SledStore::import`], then flushes and writes `weft-backup.json` ([`BackupInfo`]) last. That
//! file is what marks the directory a complete backup: a download that fails half-way leaves
//! none, and `weft restore` refuses a directory without it. The directory is otherwise a normal
//! data directory (`weft --data DIR` serves it).
//!
//! `weft restore` runs with the server stopped: it opens the backup and the data directory as
//! stores and imports every document of one into the other, refusing (before writing
//! anything) to replace existing documents unless `--overwrite` is given.

use std::collections::HashSet;
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_protocol::{Limits, RoomName};
use yrs::updates::decoder::Decode as _;

use crate::config::{BackupArgs, RestoreArgs};
use crate::store::backup::{BackupMeta, Decoder, FormatError, Header, Record, Skipped, Trailer};
use crate::store::{now_ms, SledStore, Store, StoreError, StoredDoc};
use crate::token::{mint, unix_now, Access, AuthSecret, Claims, Scope};

/// The file that marks a directory as a complete backup.
pub(crate) const INFO_FILE: &str = "weft-backup.json";

/// How long `weft backup` waits to connect to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the backup stream may stall (one large document being loaded) before giving up.
const READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Lifetime of the admin token minted from `--auth-secret` when no `--token` is given.
const MINTED_TTL_SECS: u64 = 3600;
/// Document ids named in a refusal before "and N more".
const IDS_SHOWN: usize = 10;

/// Why `weft backup` failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackupError {
    /// The target directory already holds documents.
    #[error(
        "{} already holds {count} documents: back up into a new or empty directory",
        dir.display()
    )]
    TargetHasDocuments {
        /// The target.
        dir: PathBuf,
        /// How many.
        count: u64,
    },
    /// The target directory is open in another process (a server runs on it).
    #[error("{} is in use by another weft process: back up into another directory", dir.display())]
    TargetInUse {
        /// The target.
        dir: PathBuf,
    },
    /// The server could not be reached, or the request failed before an answer.
    // The cause is in `source`: `weft` prints it on the lines below ("Caused by").
    #[error("could not reach the server at {url}")]
    Unreachable {
        /// The server's URL.
        url: String,
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered the request with an error.
    #[error("the server refused the backup: HTTP {status} ({code}): {message}{hint}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The API's stable error code.
        code: String,
        /// The server's explanation.
        message: String,
        /// What to do about it, if we know.
        hint: &'static str,
    },
    /// The connection failed while the stream was arriving.
    #[error("the backup stream broke off after {documents} documents ({bytes} bytes)")]
    Interrupted {
        /// Documents received.
        documents: u64,
        /// Bytes received.
        bytes: u64,
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },
    /// The stream ended without its trailer.
    #[error(
        "the backup stream ended early, after {documents} of {listed} documents ({bytes} bytes): \
         the server stopped or the connection was cut"
    )]
    Truncated {
        /// Documents received.
        documents: u64,
        /// Documents the header announced.
        listed: u64,
        /// Bytes received.
        bytes: u64,
    },
    /// The server reported a failure in the stream.
    #[error("the server failed during the backup: {0}")]
    ServerFailed(String),
    /// The stream is not a well-formed backup.
    #[error("the backup stream is malformed: {0}")]
    Format(#[from] FormatError),
    /// The stream is well-formed but inconsistent (counts, order, duplicates, bad states).
    #[error("the backup stream is inconsistent: {0}")]
    Inconsistent(String),
    /// Writing the target failed.
    #[error("writing the backup failed: {0}")]
    Store(#[from] StoreError),
    /// Writing `weft-backup.json` failed.
    #[error("writing {} failed: {source}", path.display())]
    Info {
        /// The file.
        path: PathBuf,
        /// What the file system reported.
        #[source]
        source: std::io::Error,
    },
}

/// Why `weft restore` failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RestoreError {
    /// The source is not a complete backup.
    #[error(
        "{} is not a complete weft backup (no readable {INFO_FILE}): it is not a backup, or \
         `weft backup` did not finish writing it{detail}",
        dir.display()
    )]
    NotABackup {
        /// The source.
        dir: PathBuf,
        /// What was wrong with the file, if it exists.
        detail: String,
    },
    /// The data directory is locked by a running server.
    #[error("the data directory {} is in use: stop the server first", data.display())]
    InUse {
        /// The data directory.
        data: PathBuf,
    },
    /// The backup is locked by another process.
    #[error("the backup {} is in use by another weft process", dir.display())]
    BackupInUse {
        /// The source.
        dir: PathBuf,
    },
    /// The backup and the data directory are the same directory.
    #[error("{} is both the backup and the data directory", dir.display())]
    SameDirectory {
        /// The directory.
        dir: PathBuf,
    },
    /// Documents of the backup exist in the data directory and `--overwrite` was not given.
    #[error(
        "{count} documents of the backup already exist in {}: {ids}; nothing was restored. Pass \
         --overwrite to replace them with their backed-up copies",
        data.display()
    )]
    Exists {
        /// The data directory.
        data: PathBuf,
        /// How many.
        count: usize,
        /// The first few of them.
        ids: String,
    },
    /// A backed-up document's state does not decode.
    #[error("document {id:?} in the backup is damaged: {why}")]
    Damaged {
        /// The document.
        id: String,
        /// What yrs reported.
        why: String,
    },
    /// Reading the backup or writing the data directory failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// `weft-backup.json`: what a finished backup holds, written after everything else is durable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BackupInfo {
    /// Always `weft-backup`.
    pub(crate) format: String,
    /// The stream format version it was made from.
    pub(crate) version: u8,
    /// The server it was taken from.
    pub(crate) server: String,
    /// When the server listed the documents, milliseconds since the Unix epoch.
    pub(crate) started_ms: u64,
    /// When the backup was complete on disk.
    pub(crate) finished_ms: u64,
    /// Documents in the backup.
    pub(crate) documents: u64,
    /// Bytes of document state in the backup.
    pub(crate) bytes: u64,
    /// Listed documents that are not in it, and why.
    #[serde(default)]
    pub(crate) skipped: Vec<Skipped>,
}

impl BackupInfo {
    /// Listed documents that could not be read (not those deleted meanwhile).
    pub(crate) fn failed(&self) -> impl Iterator<Item = &Skipped> {
        self.skipped.iter().filter(|s| s.failed)
    }
}

/// Runs `weft backup`: returns what the finished backup holds (some listed documents may have
/// failed to be read; the caller reports them).
///
/// # Errors
/// [`BackupError`]; a partial backup is removed if the directory was new or empty, and otherwise
/// left without `weft-backup.json`, which `weft restore` refuses.
pub(crate) async fn backup(
    args: &BackupArgs,
    secret: Option<&AuthSecret>,
) -> Result<BackupInfo, BackupError> {
    let token = match (&args.token, secret) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(secret)) => Some(admin_token(secret)),
        (None, None) => None,
    };
    let target = Target::open(&args.to)?;
    match download(&args.url, token.as_deref(), &target.store).await {
        Ok(got) => target.finish(got, &args.url),
        Err(e) => {
            target.discard();
            Err(e)
        }
    }
}

/// A short-lived admin token for every document, for a backup run next to the server.
fn admin_token(secret: &AuthSecret) -> String {
    let claims = Claims {
        scope: Scope::AllDocs,
        role: Access::Admin,
        exp: unix_now().saturating_add(MINTED_TTL_SECS),
        sub: Some("weft-backup".into()),
    };
    mint(secret, &claims)
}

/// The directory a backup is written to.
struct Target {
    dir: PathBuf,
    store: SledStore,
    /// Whether everything in it is ours: it did not exist, or was empty.
    fresh: Fresh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fresh {
    Created,
    WasEmpty,
    Existing,
}

impl Target {
    /// Opens (creating) the target; refuses one that holds documents or is in use.
    fn open(dir: &Path) -> Result<Self, BackupError> {
        let fresh = match std::fs::read_dir(dir) {
            Ok(mut entries) => match entries.next() {
                None => Fresh::WasEmpty,
                Some(_) => Fresh::Existing,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Fresh::Created,
            // Let the store report it, with its wording for unreadable directories.
            Err(_) => Fresh::Existing,
        };
        let store = SledStore::open(dir).map_err(|e| match e {
            StoreError::Locked { .. } => BackupError::TargetInUse {
                dir: dir.to_owned(),
            },
            other => BackupError::Store(other),
        })?;
        let count = store.doc_count();
        if count > 0 {
            return Err(BackupError::TargetHasDocuments {
                dir: dir.to_owned(),
                count,
            });
        }
        Ok(Self {
            dir: dir.to_owned(),
            store,
            fresh,
        })
    }

    /// Makes the backup durable, then marks it complete.
    fn finish(self, got: Downloaded, url: &str) -> Result<BackupInfo, BackupError> {
        self.store.flush()?;
        let info = BackupInfo {
            format: "weft-backup".into(),
            version: crate::store::backup::VERSION,
            server: url.to_owned(),
            started_ms: got.header.started_ms,
            finished_ms: now_ms(),
            documents: got.documents,
            bytes: got.bytes,
            skipped: got.skipped,
        };
        write_info(&self.dir, &info)?;
        Ok(info)
    }

    /// Removes a failed backup if everything in the directory is ours; says what it did.
    fn discard(self) {
        let Self { dir, store, fresh } = self;
        drop(store);
        let removed = match fresh {
            Fresh::Created => std::fs::remove_dir_all(&dir),
            Fresh::WasEmpty => empty_dir(&dir),
            Fresh::Existing => {
                eprintln!(
                    "weft backup: {} holds an incomplete backup (no {INFO_FILE}); \
                     `weft restore` refuses it. Delete it before trying again",
                    dir.display()
                );
                return;
            }
        };
        match removed {
            Ok(()) => eprintln!(
                "weft backup: removed the incomplete backup from {}",
                dir.display()
            ),
            Err(e) => eprintln!(
                "weft backup: could not remove the incomplete backup from {}: {e}",
                dir.display()
            ),
        }
    }
}

/// Removes everything inside `dir`.
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Writes `weft-backup.json` durably: a temporary file, fsynced, renamed, directory fsynced.
fn write_info(dir: &Path, info: &BackupInfo) -> Result<(), BackupError> {
    let path = dir.join(INFO_FILE);
    let err = |source| BackupError::Info {
        path: path.clone(),
        source,
    };
    let json = serde_json::to_vec_pretty(info).map_err(|e| err(e.into()))?;
    let tmp = dir.join(format!("{INFO_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(&json).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)
}

/// What a complete stream delivered.
struct Downloaded {
    header: Header,
    documents: u64,
    bytes: u64,
    skipped: Vec<Skipped>,
}

/// Downloads the backup stream and writes each document into `store`.
async fn download(
    url: &str,
    token: Option<&str>,
    store: &SledStore,
) -> Result<Downloaded, BackupError> {
    let unreachable = |source| BackupError::Unreachable {
        url: url.to_owned(),
        source,
    };
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .build()
        .map_err(unreachable)?;
    let mut request = client.get(format!("{}/api/backup", url.trim_end_matches('/')));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let mut response = request.send().await.map_err(unreachable)?;
    if !response.status().is_success() {
        return Err(refusal(response).await);
    }
    let mut reader = Reader::default();
    let mut received = 0u64;
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|source| BackupError::Interrupted {
                documents: reader.documents,
                bytes: received,
                source,
            })?;
        let Some(chunk) = chunk else { break };
        received += chunk.len() as u64;
        reader.decoder.push(&chunk);
        while let Some(record) = reader.decoder.next()? {
            reader.accept(record, store)?;
        }
    }
    reader.finish(received)
}

/// The server's error answer, as [`BackupError::Refused`].
async fn refusal(response: reqwest::Response) -> BackupError {
    #[derive(Deserialize)]
    struct Body {
        code: String,
        message: String,
    }
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<Body>(&text) {
        Ok(body) => (body.code, body.message),
        Err(_) => (
            "unknown".to_owned(),
            text.trim().chars().take(500).collect(),
        ),
    };
    let hint = match status {
        401 | 403 => {
            "; pass an admin token for every document (`weft token --all-docs --role admin`) \
             with --token or WEFT_TOKEN"
        }
        404 => "; is this server an older weft without online backups?",
        _ => "",
    };
    BackupError::Refused {
        status,
        code,
        message,
        hint,
    }
}

/// Checks the order and counts of a stream's records while writing its documents.
#[derive(Default)]
struct Reader {
    decoder: Decoder,
    header: Option<Header>,
    trailer: Option<Trailer>,
    documents: u64,
    bytes: u64,
    skipped: Vec<Skipped>,
    seen: HashSet<String>,
}

impl Reader {
    /// Takes one record: checks it belongs where it is, and writes a document into `store`.
    fn accept(&mut self, record: Record, store: &SledStore) -> Result<(), BackupError> {
        let bad = |what: &str| Err(BackupError::Inconsistent(what.to_owned()));
        if self.trailer.is_some() {
            return bad("records after the end");
        }
        if self.header.is_none() && !matches!(record, Record::Header(_) | Record::Failed(_)) {
            return bad("the stream does not start with its header");
        }
        match record {
            Record::Header(_) if self.header.is_some() => return bad("a second header"),
            Record::Header(header) => self.header = Some(header),
            Record::Doc(meta, state) => {
                if !self.seen.insert(meta.id.clone()) {
                    return bad(&format!("document {:?} sent twice", meta.id));
                }
                check_state(&meta.id, &state).map_err(BackupError::Inconsistent)?;
                store.import(&meta, &state)?;
                self.documents += 1;
                self.bytes += state.len() as u64;
            }
            Record::Skipped(skipped) => {
                if !self.seen.insert(skipped.id.clone()) {
                    return bad(&format!("document {:?} sent twice", skipped.id));
                }
                self.skipped.push(skipped);
            }
            Record::Failed(message) => return Err(BackupError::ServerFailed(message)),
            Record::End(trailer) => self.trailer = Some(trailer),
        }
        Ok(())
    }

    /// At the end of the stream: everything announced arrived, and nothing else.
    fn finish(self, received: u64) -> Result<Downloaded, BackupError> {
        let listed = self.header.as_ref().map_or(0, |h| h.documents);
        let (Some(header), Some(trailer)) = (self.header, self.trailer) else {
            return Err(BackupError::Truncated {
                documents: self.documents,
                listed,
                bytes: received,
            });
        };
        if self.decoder.pending() > 0 {
            return Err(BackupError::Inconsistent(
                "bytes after the end record".into(),
            ));
        }
        let skipped = self.skipped.len() as u64;
        if trailer.documents != self.documents
            || trailer.skipped != skipped
            || listed != self.documents + skipped
        {
            return Err(BackupError::Inconsistent(format!(
                "{listed} documents listed, {} and {skipped} skipped received, the end record \
                 counts {} and {}",
                self.documents, trailer.documents, trailer.skipped
            )));
        }
        Ok(Downloaded {
            header,
            documents: self.documents,
            bytes: self.bytes,
            skipped: self.skipped,
        })
    }
}

/// Checks that `state` is one Yjs v1 update (empty means a document with no content yet).
fn check_state(id: &str, state: &[u8]) -> Result<(), String> {
    if state.is_empty() {
        return Ok(());
    }
    // yrs panics on some malformed input; a bad state must fail the document, not the command.
    match catch_unwind(AssertUnwindSafe(|| yrs::Update::decode_v1(state))) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("document {id:?}: its state does not decode: {e}")),
        Err(_) => Err(format!("document {id:?}: its state does not decode")),
    }
}

/// What `weft restore` did.
#[derive(Debug, Clone)]
pub(crate) struct Restored {
    /// Documents written.
    pub(crate) documents: u64,
    /// Of those, how many replaced an existing document.
    pub(crate) replaced: u64,
    /// Bytes of document state written.
    pub(crate) bytes: u64,
    /// The backup's own description.
    pub(crate) info: BackupInfo,
}

/// Runs `weft restore` (blocking): copies every document of the backup in `args.from` into
/// the data directory `data`.
///
/// # Errors
/// [`RestoreError`]; when documents exist and `--overwrite` is not given, nothing is written.
pub(crate) fn restore(args: &RestoreArgs, data: &Path) -> Result<Restored, RestoreError> {
    let info = read_info(&args.from)?;
    if same_dir(&args.from, data) {
        return Err(RestoreError::SameDirectory {
            dir: data.to_owned(),
        });
    }
    let source = SledStore::open(&args.from).map_err(|e| match e {
        StoreError::Locked { .. } => RestoreError::BackupInUse {
            dir: args.from.clone(),
        },
        other => RestoreError::Store(other),
    })?;
    let target = SledStore::open(data).map_err(|e| match e {
        StoreError::Locked { .. } => RestoreError::InUse {
            data: data.to_owned(),
        },
        other => RestoreError::Store(other),
    })?;
    let docs = source.list()?;
    let mut existing = Vec::new();
    for meta in &docs {
        if target.meta(&stored_name(&meta.id)?)?.is_some() {
            existing.push(meta.id.as_str());
        }
    }
    if !existing.is_empty() && !args.overwrite {
        return Err(RestoreError::Exists {
            data: data.to_owned(),
            count: existing.len(),
            ids: name_some(&existing),
        });
    }
    let replaced = existing.len() as u64;
    let mut bytes = 0u64;
    for meta in &docs {
        let state = state_of(&meta.id, source.load(&stored_name(&meta.id)?)?)?;
        target.import(&BackupMeta::from(meta.clone()), &state)?;
        bytes += state.len() as u64;
    }
    target.flush()?;
    Ok(Restored {
        documents: docs.len() as u64,
        replaced,
        bytes,
        info,
    })
}

/// Reads and checks `weft-backup.json`.
fn read_info(dir: &Path) -> Result<BackupInfo, RestoreError> {
    let not_a_backup = |detail: String| RestoreError::NotABackup {
        dir: dir.to_owned(),
        detail,
    };
    let bytes = std::fs::read(dir.join(INFO_FILE)).map_err(|e| not_a_backup(format!(" ({e})")))?;
    let info: BackupInfo =
        serde_json::from_slice(&bytes).map_err(|e| not_a_backup(format!(" ({e})")))?;
    if info.format != "weft-backup" {
        return Err(not_a_backup(format!(" (format {:?})", info.format)));
    }
    Ok(info)
}

/// Whether two paths name the same existing directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The first few ids, quoted, and how many more there are.
fn name_some(ids: &[&str]) -> String {
    let mut out: Vec<String> = ids
        .iter()
        .take(IDS_SHOWN)
        .map(|id| format!("{id:?}"))
        .collect();
    if ids.len() > IDS_SHOWN {
        out.push(format!("and {} more", ids.len() - IDS_SHOWN));
    }
    out.join(", ")
}

/// A stored document as one Yjs v1 update: its snapshot as is when it has no log (what `weft
/// backup` writes), else snapshot and log merged (a backup that was served and edited since).
pub(crate) fn state_of(id: &str, stored: StoredDoc) -> Result<Vec<u8>, RestoreError> {
    let mut parts: Vec<Vec<u8>> = stored.snapshot.into_iter().collect();
    parts.extend(stored.updates.into_iter().map(|(_, update)| update));
    let damaged = |why: String| RestoreError::Damaged {
        id: id.to_owned(),
        why,
    };
    if parts.len() == 1 {
        let state = parts.pop().unwrap_or_default();
        check_state(id, &state).map_err(damaged)?;
        return Ok(state);
    }
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    match catch_unwind(AssertUnwindSafe(|| yrs::merge_updates_v1(&parts))) {
        Ok(Ok(merged)) => Ok(merged),
        Ok(Err(e)) => Err(damaged(e.to_string())),
        Err(_) => Err(damaged("merging its log panicked".into())),
    }
}

/// The name of a document listed by a store: it passed validation when it was created, under
/// whatever `--max-room-name` that server had, so only the length limit is lifted here.
pub(crate) fn stored_name(id: &str) -> Result<RoomName, RestoreError> {
    let limits = Limits {
        max_room_name: id.len().max(Limits::DEFAULT.max_room_name),
        ..Limits::DEFAULT
    };
    RoomName::parse(id, &limits).map_err(|e| RestoreError::Damaged {
        id: id.to_owned(),
        why: format!("invalid document name: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn doc(id: &str) -> Record {
        let meta = BackupMeta {
            id: id.into(),
            title: None,
            title_pinned: false,
            created_ms: 1,
            updated_ms: 2,
            update_count: 1,
        };
        // The encoding of an empty Yjs document: no structs, no deletions.
        Record::Doc(meta, Bytes::from_static(&[0, 0]))
    }

    fn header(documents: u64) -> Record {
        Record::Header(Header {
            started_ms: 1,
            documents,
        })
    }

    fn end(documents: u64, skipped: u64) -> Record {
        Record::End(Trailer { documents, skipped })
    }

    /// Feeds `records` to a reader writing into a fresh store; the result of `finish`.
    fn read(records: Vec<Record>) -> Result<Downloaded, BackupError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open");
        let mut reader = Reader::default();
        for record in records {
            reader.accept(record, &store)?;
        }
        reader.finish(0)
    }

    /// A complete stream is accepted; missing trailers, miscounts, duplicates, records out of
    /// place and undecodable states are not.
    #[test]
    fn the_reader_checks_order_and_counts() {
        let got = read(vec![header(2), doc("a"), doc("b"), end(2, 0)]).expect("complete");
        assert_eq!((got.documents, got.bytes), (2, 4));
        let truncated = read(vec![header(2), doc("a")]);
        assert!(matches!(
            truncated,
            Err(BackupError::Truncated {
                documents: 1,
                listed: 2,
                ..
            })
        ));
        let miscount = read(vec![header(3), doc("a"), doc("b"), end(2, 0)]);
        assert!(matches!(miscount, Err(BackupError::Inconsistent(_))));
        let twice = read(vec![header(2), doc("a"), doc("a"), end(2, 0)]);
        assert!(matches!(twice, Err(BackupError::Inconsistent(_))));
        let headless = read(vec![doc("a"), end(1, 0)]);
        assert!(matches!(headless, Err(BackupError::Inconsistent(_))));
        let after_end = read(vec![header(0), end(0, 0), doc("a")]);
        assert!(matches!(after_end, Err(BackupError::Inconsistent(_))));
        let failed = read(vec![header(1), Record::Failed("disk on fire".into())]);
        assert!(matches!(failed, Err(BackupError::ServerFailed(m)) if m == "disk on fire"));
        let Record::Doc(meta, _) = doc("bad") else {
            unreachable!()
        };
        let garbage = Record::Doc(meta, Bytes::from_static(&[0xff; 9]));
        let bad = read(vec![header(1), garbage, end(1, 0)]);
        assert!(matches!(bad, Err(BackupError::Inconsistent(_))));
    }

    /// A document with a log as well as a snapshot is restored as their merge.
    #[test]
    fn state_of_merges_snapshot_and_log() {
        use yrs::{GetString as _, ReadTxn as _, Text as _, Transact as _};
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("content");
        let edit = |at: u32, s: &str| {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, at, s);
            txn.encode_update_v1()
        };
        let stored = StoredDoc {
            snapshot: Some(edit(0, "hello")),
            updates: vec![(2, edit(5, " world"))],
            covers: 0,
        };
        let merged = state_of("d", stored).expect("merges");
        let copy = yrs::Doc::new();
        let update = yrs::Update::decode_v1(&merged).expect("decodes");
        copy.transact_mut().apply_update(update).expect("applies");
        let txn = copy.transact();
        let text = txn.get_text("content").expect("text");
        assert_eq!(text.get_string(&txn), "hello world");
        assert_eq!(state_of("d", StoredDoc::default()).expect("empty"), b"");
        let twelve = name_some(&["a"; 12]);
        assert_eq!(twelve, format!("{}, and 2 more", ["\"a\""; 10].join(", ")));
    }
}
