//! Rebuilding a document from the store: its snapshot, then its log, each stored entry under
//! an in-flight mark of its own and through the same yrs guards as a live write. What does not
//! apply is quarantined so the rest still loads. A process that dies mid-load only makes the
//! entry it was replaying suspect; the next load replays it under a proving mark (see
//! `store::inflight`), so an unrelated kill never costs acknowledged data. The room loads this
//! way when it starts, and reloads whenever the document in memory can no longer be trusted
//! (yrs panicked, an append or a flush failed): the store is the truth. A store that failed
//! refuses to load a document with writes that never reached the disk.

use tracing::error;
use weft_protocol::RoomName;
use yrs::{Doc, GetString, ReadTxn, Transact};

use crate::room::failure::store_reason;
use crate::room::known_clocks::KnownClocks;
use crate::room::registry::RoomContext;
use crate::room::yrs_guards::{apply_guarded, contain, decode_update_with_parents};
use crate::room::{new_doc, Room};
use crate::store::inflight::{self, Applying};

/// A document rebuilt from the store, with what the room tracks about its stored form.
pub(crate) struct Loaded {
    /// The document.
    pub(crate) doc: Doc,
    /// Sequence number of the last update in the log (0: none).
    pub(super) last_seq: u64,
    /// Updates in the log.
    pub(super) log_len: u64,
    /// Bytes of those updates.
    pub(super) log_bytes: u64,
    /// Snapshot plus logged update bytes: what `--max-doc-bytes` is checked against.
    pub(super) stored_bytes: u64,
    /// Whether the store knows the document (metadata or content).
    pub(super) exists: bool,
    /// The document's clocks, as the replay left them.
    pub(super) clocks: KnownClocks,
}

/// Rebuilds a document from its snapshot and log. An update that fails (or panics), or whose
/// bytes crashed the process before, is moved to quarantine and the rest still loads; a snapshot
/// that fails refuses the whole document, so an empty one can never overwrite it.
pub(crate) fn load_doc(ctx: &RoomContext, name: &RoomName) -> Result<Loaded, String> {
    let stored = ctx.store.load(name).map_err(|e| store_reason(&e))?;
    let exists = stored.snapshot.is_some()
        || !stored.updates.is_empty()
        || matches!(ctx.store.meta(name), Ok(Some(_)));
    let doc = new_doc();
    let mut clocks = KnownClocks::default();
    if let Some(snapshot) = &stored.snapshot {
        apply_stored(ctx, name, Applying::Snapshot, &doc, &mut clocks, snapshot)
            .map_err(|e| format!("snapshot does not load: {e}"))?;
    }
    let mut loaded = Loaded {
        doc,
        last_seq: stored.covers,
        log_len: 0,
        log_bytes: 0,
        stored_bytes: stored.snapshot.as_ref().map_or(0, |s| s.len() as u64),
        exists,
        clocks,
    };
    for (seq, update) in &stored.updates {
        loaded.last_seq = *seq;
        let (doc, clocks) = (&loaded.doc, &mut loaded.clocks);
        match apply_stored(ctx, name, Applying::Stored(*seq), doc, clocks, update) {
            Ok(()) => {
                loaded.log_len += 1;
                loaded.log_bytes += update.len() as u64;
                loaded.stored_bytes += update.len() as u64;
            }
            Err(e) => {
                error!(room = %name, seq, error = %e, "stored update does not apply; quarantined");
                if let Err(qe) = ctx.store.quarantine(name, *seq, &e) {
                    error!(room = %name, seq, error = %qe, "quarantine failed");
                }
            }
        }
    }
    Ok(loaded)
}

/// Applies one stored update (or the snapshot) under an in-flight mark of its own, held only
/// while yrs works on these bytes (of the proving kind when a dead process left them suspect);
/// bytes proven to crash the process are not applied.
fn apply_stored(
    ctx: &RoomContext,
    name: &RoomName,
    applying: Applying,
    doc: &Doc,
    clocks: &mut KnownClocks,
    bytes: &[u8],
) -> Result<(), String> {
    let hash = inflight::hash(bytes);
    if ctx.inflight.is_refused(&hash) {
        return Err(format!(
            "refused: these bytes crashed the server before (sha256 {})",
            inflight::hex(&hash)
        ));
    }
    let _mark = ctx
        .inflight
        .mark_replay(name.as_str(), applying, &hash, bytes.len());
    #[cfg(feature = "fault-injection")]
    crate::testing::fault::before_replay(bytes);
    contain(|| {
        let (update, parents) = decode_update_with_parents(bytes)?;
        let mut txn = doc.transact_mut();
        // Stored before the write path refused such updates; applying one would make this
        // document differ from its own encoding. (A snapshot is such an encoding already.)
        match applying {
            Applying::Stored(_) => apply_guarded(&mut txn, update, &parents, clocks).map(|_| ()),
            _ => {
                clocks.reset();
                txn.apply_update(update).map_err(|e| e.to_string())
            }
        }
    })
    .unwrap_or_else(|_| Err("yrs panicked".into()))
}

/// The text of a document's `content` (empty when it has none).
pub(super) fn text_of(doc: &Doc) -> String {
    let txn = doc.transact();
    txn.get_text("content")
        .map(|t| t.get_string(&txn))
        .unwrap_or_default()
}

impl Room {
    /// Rebuilds the document from the store; when that fails, drops it and unloads the room
    /// (see [`Room::give_up`]).
    pub(super) fn reload(&mut self) {
        // Replies already queued may describe the discarded state; the reloaded document is the
        // durable truth, so members resync from it.
        match load_doc(&self.ctx, &self.name) {
            Ok(loaded) => {
                self.full_state = None;
                self.doc = loaded.doc;
                self.known = loaded.clocks;
                self.last_seq = loaded.last_seq;
                self.log_len = loaded.log_len;
                self.log_bytes = loaded.log_bytes;
                self.stored_bytes = loaded.stored_bytes;
                self.exists = loaded.exists;
                self.versions_reset();
                self.start_following();
            }
            // Keeping the document in memory would serve edits the store does not have.
            Err(e) => self.give_up(e),
        }
    }
}
