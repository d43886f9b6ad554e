//! `weft migrate`: copies every document from one store into another, beside [`crate::cli`]
//! at the top of the crate. Either side is a data directory ([`SledStore`]) or a cluster's
//! NATS JetStream ([`NatsStore`]), so one server moves into a cluster and back.
//!
//! A document travels as one Yjs update (its snapshot and log merged, `backup::state_of`),
//! with its title (pinned or automatic), its times and its place in the trash; the token
//! revocations follow. Into a data directory it is written as `weft restore` writes it
//! ([`SledStore::import`]); into NATS it is appended as the document's first update, its title
//! set, and once the flush is acknowledged its metadata is written out and its times set.
//! Nothing is reported as moved before the destination's flush succeeded, and every moved
//! document is then loaded back from the destination and its text compared with the source's.
//! Version history moves too: every version of each moved document, under its id, in order
//! (its deltas refer to the versions before it).

use std::collections::HashMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use weft_protocol::RoomName;

use crate::backup::{state_of, stored_name, RestoreError};
use crate::cluster::{self, ClusterError, NatsStore};
use crate::config::{MigrateArgs, NatsArgs};
use crate::store::backup::BackupMeta;
use crate::store::{DocMeta, SledStore, Store, StoreError};

/// The name the migration's connection has in NATS's list of connections.
const NODE_NAME: &str = "weft-migrate";

/// How an argument of `--from`/`--to` starts when it names NATS servers, not a directory.
const NATS_SCHEMES: [&str; 4] = ["nats://", "tls://", "ws://", "wss://"];

/// Bytes copied between intermediate flushes: a large store must not pile up in memory
/// unacknowledged (NATS's publisher refuses appends beyond a backlog of 512 MiB).
const FLUSH_EVERY: u64 = 64 * 1024 * 1024;

/// Why `weft migrate` stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    /// `--from` and `--to` name the same store.
    #[error("--from and --to are the same store ({0}): nothing to move")]
    SameStore(String),
    /// The source directory is not a data directory.
    #[error("the source {} is not a weft data directory: {why}", path.display())]
    NotADataDir {
        /// The directory.
        path: PathBuf,
        /// What is missing.
        why: &'static str,
    },
    /// A data directory could not be opened (locked by a running server, unreadable, ...).
    #[error("the {side}: {error}")]
    Open {
        /// `source` or `destination`.
        side: &'static str,
        /// The store's own explanation.
        error: StoreError,
    },
    /// NATS could not be reached or set up.
    #[error("the {side}: {error}")]
    Cluster {
        /// `source` or `destination`.
        side: &'static str,
        /// What went wrong.
        error: ClusterError,
    },
    /// Reading the source's list, trash or revocations failed.
    #[error("reading the source failed: {0}")]
    Source(StoreError),
    /// One document could not be read, merged or written: the migration stops there.
    #[error(
        "document {id:?} could not be copied: {why}. The migration stopped and reports nothing \
         as moved; documents copied before it may be in the destination already: run it again \
         with --overwrite"
    )]
    Doc {
        /// The document.
        id: String,
        /// What went wrong.
        why: String,
    },
    /// A revocation could not be written.
    #[error("the token revocation of {id:?} could not be copied: {error}")]
    Revocation {
        /// Its document.
        id: String,
        /// What the destination reported.
        error: StoreError,
    },
    /// The destination did not make the copies durable.
    #[error(
        "the destination did not confirm that the copies are saved: {0}. Nothing is reported as \
         moved: run the migration again with --overwrite"
    )]
    Flush(StoreError),
}

/// One side of a migration, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    /// A data directory.
    Dir(PathBuf),
    /// NATS server URLs.
    Nats(Vec<String>),
}

impl Location {
    /// Reads `--from`/`--to`: URLs when it starts with a NATS scheme, else a path.
    fn parse(arg: &str) -> Self {
        let arg = arg.trim();
        if NATS_SCHEMES.iter().any(|s| arg.starts_with(s)) {
            let urls = arg.split(',').map(str::trim).filter(|u| !u.is_empty());
            Location::Nats(urls.map(str::to_owned).collect())
        } else {
            Location::Dir(PathBuf::from(arg))
        }
    }

    /// Whether `self` and `other` are the same store.
    fn same_as(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::Dir(a), Location::Dir(b)) => {
                a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
            }
            (Location::Nats(a), Location::Nats(b)) => {
                let (mut a, mut b) = (a.clone(), b.clone());
                a.sort();
                b.sort();
                a == b
            }
            _ => false,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Dir(path) => write!(f, "{}", path.display()),
            Location::Nats(urls) => f.write_str(&urls.join(",")),
        }
    }
}

/// An open store, source or destination.
enum Side {
    Sled(Box<SledStore>),
    Nats(Box<NatsStore>),
}

impl Side {
    /// Opens `at` as the `side` (`source` or `destination`); the credentials in `nats` apply
    /// when it is NATS. A source directory must already be a data directory.
    fn open(
        at: &Location,
        side: &'static str,
        nats: &NatsArgs,
        deadline: Duration,
    ) -> Result<Self, MigrateError> {
        match at {
            Location::Dir(path) => {
                if side == "source" {
                    check_data_dir(path)?;
                }
                let store =
                    SledStore::open(path).map_err(|error| MigrateError::Open { side, error })?;
                Ok(Side::Sled(Box::new(store)))
            }
            Location::Nats(urls) => {
                let args = NatsArgs {
                    urls: urls.clone(),
                    ..nats.clone()
                };
                let store = cluster::open(&args, NODE_NAME, deadline)
                    .map_err(|error| MigrateError::Cluster { side, error })?;
                Ok(Side::Nats(Box::new(store)))
            }
        }
    }

    /// The store, for what both kinds do alike.
    fn store(&self) -> &dyn Store {
        match self {
            Side::Sled(s) => s.as_ref(),
            Side::Nats(s) => s.as_ref(),
        }
    }

    /// Writes `doc` with the metadata `meta` and the content `state` (one Yjs update).
    fn put(&self, doc: &RoomName, meta: &DocMeta, state: &[u8]) -> Result<(), StoreError> {
        match self {
            Side::Sled(s) => s.import(&BackupMeta::from(meta.clone()), state),
            Side::Nats(s) => {
                // Zero bytes are not a Yjs update: a document with a title and no content.
                if !state.is_empty() {
                    s.append(doc, state)?;
                }
                match (&meta.title, meta.title_pinned) {
                    (Some(title), true) => s.pin_title(doc, title),
                    (Some(title), false) => s.set_title(doc, title),
                    (None, _) => Ok(()),
                }
            }
        }
    }

    /// Removes the destination's own copy of `doc` (content, trash record, history).
    fn clear(&self, doc: &RoomName) -> Result<(), StoreError> {
        let store = self.store();
        store.delete(doc)?;
        store.take_from_trash(doc)?;
        if let Some(history) = store.history() {
            history.delete_doc(doc)?;
        }
        Ok(())
    }

    /// Makes everything written durable; for NATS, also writes the metadata out at once and
    /// gives each moved document its own times.
    fn settle(&self, moved: &[Moved]) -> Result<(), StoreError> {
        self.store().flush()?;
        if let Side::Nats(s) = self {
            s.write_metadata()?;
            for m in moved {
                s.set_times(&m.name, m.created_ms, m.updated_ms)?;
            }
        }
        Ok(())
    }
}

/// Refuses a source directory that holds no weft store, before sled would create one there.
fn check_data_dir(path: &Path) -> Result<(), MigrateError> {
    let why = if !path.is_dir() {
        "it does not exist or is not a directory"
    } else if !path.join("db").exists() && !path.join("weft-store").exists() {
        "it holds no weft database"
    } else {
        return Ok(());
    };
    Err(MigrateError::NotADataDir {
        path: path.to_owned(),
        why,
    })
}

/// One document moved.
#[derive(Debug, Clone)]
pub(crate) struct Moved {
    name: RoomName,
    /// Bytes of its state.
    pub(crate) bytes: u64,
    /// Whether it is in the trash.
    pub(crate) in_trash: bool,
    /// Whether it replaced the destination's copy.
    pub(crate) replaced: bool,
    created_ms: u64,
    updated_ms: u64,
    /// SHA-256 of its text and the text's length in characters, to check the copy against.
    text: ([u8; 32], usize),
}

/// What `weft migrate` did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    /// Where the documents came from and went.
    from: String,
    to: String,
    /// Documents moved, in id order.
    pub(crate) moved: Vec<Moved>,
    /// Documents left out because the destination has them.
    pub(crate) skipped: Vec<String>,
    /// Moved documents whose copy reads back differently, and how.
    pub(crate) mismatched: Vec<(String, String)>,
    /// Token revocations copied.
    pub(crate) revocations: usize,
    /// Versions of history moved, and the documents they belong to.
    pub(crate) history: (u64, u64),
}

impl Report {
    /// What went wrong, if anything: skipped documents or copies that read back differently.
    pub(crate) fn problems(&self) -> Option<String> {
        let mut out = Vec::new();
        if !self.skipped.is_empty() {
            out.push(format!(
                "{} skipped because the destination already has them (pass --overwrite to \
                 replace them)",
                count(self.skipped.len(), "document")
            ));
        }
        if !self.mismatched.is_empty() {
            out.push(format!(
                "{} read back from the destination with a different text",
                count(self.mismatched.len(), "document")
            ));
        }
        (!out.is_empty()).then(|| out.join("; "))
    }
}

/// Runs `weft migrate` (blocking): moves every document of `args.from` into `args.to`, with
/// the NATS credentials of `nats` and the flush deadline `deadline`.
///
/// # Errors
/// [`MigrateError`]: a store that cannot be opened, or a document, revocation or flush that
/// fails; what could not be moved for a reason of its own is in the [`Report`] instead.
pub(crate) fn migrate(
    args: &MigrateArgs,
    nats: &NatsArgs,
    deadline: Duration,
) -> Result<Report, MigrateError> {
    let (from, to) = (Location::parse(&args.from), Location::parse(&args.to));
    if from.same_as(&to) {
        return Err(MigrateError::SameStore(from.to_string()));
    }
    let source = Side::open(&from, "source", nats, deadline)?;
    let dest = Side::open(&to, "destination", nats, deadline)?;
    let docs = source.store().list().map_err(MigrateError::Source)?;
    let trash: HashMap<String, u64> = source
        .store()
        .trash()
        .map_err(MigrateError::Source)?
        .into_iter()
        .collect();
    let mut report = Report {
        from: from.to_string(),
        to: to.to_string(),
        ..Report::default()
    };
    let mut unflushed = 0u64;
    for meta in &docs {
        if unflushed >= FLUSH_EVERY {
            dest.store().flush().map_err(MigrateError::Flush)?;
            unflushed = 0;
        }
        let trashed = trash.get(&meta.id).copied();
        match copy(&source, &dest, meta, trashed, args.overwrite) {
            Ok(Some(moved)) => {
                unflushed += moved.bytes;
                report.moved.push(moved);
            }
            Ok(None) => report.skipped.push(meta.id.clone()),
            Err(why) => {
                return Err(MigrateError::Doc {
                    id: meta.id.clone(),
                    why,
                })
            }
        }
    }
    report.history = copy_history(&source, &dest, &report.moved)?;
    report.revocations = copy_revocations(&source, &dest)?;
    dest.settle(&report.moved).map_err(MigrateError::Flush)?;
    for moved in &report.moved {
        if let Err(why) = verify(&dest, moved) {
            report.mismatched.push((moved.name.to_string(), why));
        }
    }
    Ok(report)
}

/// Copies the version history of each moved document: every version under its id, oldest
/// first. Returns how many versions, of how many documents.
fn copy_history(source: &Side, dest: &Side, moved: &[Moved]) -> Result<(u64, u64), MigrateError> {
    let (Some(from), Some(to)) = (source.store().history(), dest.store().history()) else {
        return Ok((0, 0));
    };
    let (mut versions, mut docs) = (0u64, 0u64);
    for m in moved {
        let list = from.list(&m.name).map_err(MigrateError::Source)?;
        for v in &list {
            let body = from.body(&m.name, v.id).map_err(MigrateError::Source)?;
            let Some(body) = body else { continue };
            to.put(&m.name, v, &body).map_err(|e| MigrateError::Doc {
                id: m.name.to_string(),
                why: format!("writing version {} failed: {e}", v.id),
            })?;
            versions += 1;
        }
        docs += u64::from(!list.is_empty());
    }
    Ok((versions, docs))
}

/// The store's name of a listed document.
fn room(id: &str) -> Result<RoomName, MigrateError> {
    stored_name(id).map_err(|e| MigrateError::Doc {
        id: id.to_owned(),
        why: damage(e),
    })
}

/// What a `backup` helper reported, without its wording about backups.
fn damage(e: RestoreError) -> String {
    match e {
        RestoreError::Damaged { why, .. } => why,
        other => other.to_string(),
    }
}

/// Copies one document; `None` when the destination has it and `overwrite` is not set.
fn copy(
    source: &Side,
    dest: &Side,
    meta: &DocMeta,
    trashed: Option<u64>,
    overwrite: bool,
) -> Result<Option<Moved>, String> {
    let name = stored_name(&meta.id).map_err(damage)?;
    let (src, dst) = (source.store(), dest.store());
    let exists = |e: StoreError| format!("cannot check the destination: {e}");
    let replaced =
        dst.meta(&name).map_err(exists)?.is_some() || dst.trashed(&name).map_err(exists)?.is_some();
    if replaced {
        if !overwrite {
            return Ok(None);
        }
        dest.clear(&name)
            .map_err(|e| format!("cannot delete the destination's copy: {e}"))?;
    }
    let stored = src
        .load(&name)
        .map_err(|e| format!("cannot read it: {e}"))?;
    let state = state_of(&meta.id, stored).map_err(damage)?;
    let text = text_of(&state)?;
    dest.put(&name, meta, &state)
        .map_err(|e| format!("cannot write it: {e}"))?;
    if let Some(at_ms) = trashed {
        dst.move_to_trash(&name, at_ms)
            .map_err(|e| format!("cannot put it in the trash: {e}"))?;
    }
    Ok(Some(Moved {
        name,
        bytes: state.len() as u64,
        in_trash: trashed.is_some(),
        replaced,
        created_ms: meta.created_ms,
        updated_ms: meta.updated_ms,
        text: fingerprint(&text),
    }))
}

/// Copies every token revocation of the source; how many.
fn copy_revocations(source: &Side, dest: &Side) -> Result<usize, MigrateError> {
    let revocations = source.store().revocations().map_err(MigrateError::Source)?;
    for (id, before) in &revocations {
        let name = room(id)?;
        dest.store()
            .revoke_tokens(&name, *before)
            .map_err(|error| MigrateError::Revocation {
                id: id.clone(),
                error,
            })?;
    }
    Ok(revocations.len())
}

/// Loads `moved` back from the destination and compares its text with the source's.
fn verify(dest: &Side, moved: &Moved) -> Result<(), String> {
    let stored = dest
        .store()
        .load(&moved.name)
        .map_err(|e| format!("cannot be read back: {e}"))?;
    let state = state_of(moved.name.as_str(), stored).map_err(damage)?;
    let (hash, chars) = fingerprint(&text_of(&state)?);
    if hash != moved.text.0 {
        return Err(format!(
            "its text in the destination ({chars} characters) differs from the source's ({} \
             characters)",
            moved.text.1
        ));
    }
    Ok(())
}

/// The text of `content` in a document whose state is `state` (empty: no content yet).
fn text_of(state: &[u8]) -> Result<String, String> {
    use yrs::updates::decoder::Decode as _;
    use yrs::{GetString as _, ReadTxn as _, Transact as _};
    if state.is_empty() {
        return Ok(String::new());
    }
    // yrs panics on some malformed input: a bad document must fail alone, with a message.
    let read = catch_unwind(AssertUnwindSafe(|| {
        let update = yrs::Update::decode_v1(state).map_err(|e| e.to_string())?;
        let doc = yrs::Doc::new();
        doc.transact_mut()
            .apply_update(update)
            .map_err(|e| e.to_string())?;
        let txn = doc.transact();
        Ok::<_, String>(
            txn.get_text("content")
                .map(|t| t.get_string(&txn))
                .unwrap_or_default(),
        )
    }));
    match read {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(format!("its content does not decode: {e}")),
        Err(_) => Err("its content does not decode".to_owned()),
    }
}

/// What the copy's text is checked against.
fn fingerprint(text: &str) -> ([u8; 32], usize) {
    (Sha256::digest(text.as_bytes()).into(), text.chars().count())
}

/// `1 document`, `2 documents`.
fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// Bytes as people read them: `812 bytes`, `3.4 kB`, `1.0 MB` (powers of 1000).
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} bytes");
    }
    // One decimal is shown: f64's precision is plenty.
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "from {} to {}:", self.from, self.to)?;
        let width = self.moved.iter().map(|m| m.name.as_str().chars().count());
        let width = width.max().unwrap_or(0);
        for m in &self.moved {
            let trash = if m.in_trash { ", in trash" } else { "" };
            let replaced = if m.replaced { ", replaced" } else { "" };
            let id = m.name.as_str();
            writeln!(f, "  {id:<width$}  {}{trash}{replaced}", size(m.bytes))?;
        }
        for id in &self.skipped {
            writeln!(f, "  skipped {id:?}: the destination already has it")?;
        }
        for (id, why) in &self.mismatched {
            writeln!(f, "  error: {id:?} does not read back the same: {why}")?;
        }
        let bytes = self.moved.iter().map(|m| m.bytes).sum();
        let trashed = self.moved.iter().filter(|m| m.in_trash).count();
        writeln!(
            f,
            "moved {} ({}), {trashed} in the trash, {}; {} skipped",
            count(self.moved.len(), "document"),
            size(bytes),
            count(self.revocations, "token revocation"),
            self.skipped.len()
        )?;
        let (versions, docs) = self.history;
        if versions > 0 {
            writeln!(
                f,
                "and their history: {} of {}",
                count(versions as usize, "version"),
                count(docs as usize, "document")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
