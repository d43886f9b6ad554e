//! Writes into the document: a member's update (refused for readers and past the size limit,
//! closing the sender when it is invalid or crashed yrs), and the path every remote update
//! takes, a member's or the inbox's: validate (the yrs guards), apply under an in-flight mark,
//! append to the durable log, queue the broadcast. Nothing leaves the room before the batch is
//! durable (`Room::finish_batch`).

use base64::Engine as _;
use bytes::Bytes;
use tracing::{error, warn};
use weft_protocol::{encode_sync, CloseCode, Control, Message, Role, SYNC_UPDATE};
use yrs::{Doc, Transact};

use crate::feed::log::flags;
use crate::room::failure::store_reason;
use crate::room::fanout::Target;
use crate::room::known_clocks::KnownClocks;
use crate::room::yrs_guards::{
    apply_guarded, contain, decode_update, decode_update_with_parents, Panicked,
};
use crate::room::{ApiOpError, ConnId, Room};
use crate::store::inflight::{self, Applying};
use crate::store::StoreError;

/// Why a write into the document failed.
#[derive(Debug)]
pub(super) enum WriteError {
    /// It would take the document past `--max-doc-bytes` (this many bytes).
    TooLarge(u64),
    /// It does not decode, or yrs or a guard refused it.
    Invalid(String),
    /// yrs panicked; the document was rebuilt from the store.
    Poisoned,
    /// The store refused the append (this reason); the document was rebuilt from the store.
    Storage(String),
    /// The store has failed (this reason) and refuses every write.
    StoreFailed(String),
    /// The same bytes crashed the process before (see `inflight`); this is their hash, in hex.
    Refused(String),
}

impl From<WriteError> for ApiOpError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::TooLarge(max) => ApiOpError::TooLarge(max),
            WriteError::Invalid(e) => ApiOpError::Invalid(e),
            WriteError::Poisoned => {
                ApiOpError::Invalid("the update crashed the document engine".into())
            }
            WriteError::Storage(e) => ApiOpError::Storage(e),
            WriteError::StoreFailed(e) => ApiOpError::StoreFailed(e),
            WriteError::Refused(hash) => ApiOpError::Invalid(format!(
                "this update crashed the server before and is refused (sha256 {hash})"
            )),
        }
    }
}

impl Room {
    /// A member's update (sync step 2 or update message).
    pub(super) fn write(&mut self, conn: ConnId, update: Vec<u8>) {
        let Some(m) = self.members.get(&conn) else {
            return;
        };
        if m.role == Role::Read {
            self.refuse_read_only(conn, &update);
            return;
        }
        let control = m.control;
        match self.integrate(update) {
            Ok(changed) => {
                if changed {
                    let author = self.author_of(conn);
                    self.attribute(&author);
                }
                self.owe_ack(conn, true);
            }
            Err(e) => {
                if matches!(e, WriteError::TooLarge(_)) {
                    self.owe_ack(conn, false);
                }
                self.write_failed(conn, control, e);
            }
        }
    }

    /// A reader sent an update: refused, and told so once if it was a real edit.
    fn refuse_read_only(&mut self, conn: ConnId, update: &[u8]) {
        // Every client answers the server's step 1 with a step 2, empty when it has no
        // edits of its own: only a real edit earns the (one) refusal.
        let is_edit = contain(|| decode_update(update).map(|u| !u.is_empty()))
            .is_ok_and(|r| r.unwrap_or(true));
        // A Hocuspocus member learns it from the acknowledgement, as from `@hocuspocus/server`.
        self.owe_ack(conn, !is_edit);
        let Some(m) = self.members.get_mut(&conn) else {
            return;
        };
        if m.hocuspocus {
            return;
        }
        if is_edit && !std::mem::replace(&mut m.told_read_only, true) {
            let frame = refusal(
                m.control,
                "read_only",
                "this connection is read-only; edits are not saved",
            );
            self.queued.push((Target::One(conn), frame));
        }
    }

    /// A member's write failed: tell it (once) when the document is full, else close it.
    fn write_failed(&mut self, conn: ConnId, control: bool, e: WriteError) {
        match e {
            WriteError::TooLarge(max) => {
                let Some(m) = self.members.get_mut(&conn) else {
                    return;
                };
                if !std::mem::replace(&mut m.told_full, true) {
                    warn!(room = %self.name, conn, max, "document size limit reached; write refused");
                    let frame = refusal(
                        control,
                        "document_too_large",
                        &format!(
                            "the document reached its size limit of {max} bytes; edits are not saved"
                        ),
                    );
                    self.queued.push((Target::One(conn), frame));
                }
            }
            WriteError::Invalid(e) => {
                warn!(room = %self.name, conn, error = %e, "refused an invalid update");
                self.close_member(conn, CloseCode::InvalidData, "invalid update");
            }
            WriteError::Poisoned => self.close_member(
                conn,
                CloseCode::Internal,
                "update crashed the document engine",
            ),
            WriteError::Storage(reason) | WriteError::StoreFailed(reason) => {
                self.not_saved(conn, &reason)
            }
            WriteError::Refused(hash) => {
                warn!(room = %self.name, conn, sha256 = %hash,
                    "refused an update that crashed the server before; closing the sender");
                self.close_member(
                    conn,
                    CloseCode::InvalidData,
                    "update refused: it crashed the server before",
                );
            }
        }
    }

    /// Applies a remote update (a member's or the inbox's), stores it and queues its broadcast.
    /// Returns false when the update was empty (nothing stored or sent).
    pub(super) fn integrate(&mut self, update: Vec<u8>) -> Result<bool, WriteError> {
        let max = self.ctx.config.max_doc_bytes;
        if self.stored_bytes.saturating_add(update.len() as u64) > max {
            return Err(WriteError::TooLarge(max));
        }
        let hash = inflight::hash(&update);
        if self.ctx.inflight.is_refused(&hash) {
            return Err(WriteError::Refused(inflight::hex(&hash)));
        }
        // Apply before persist: the store sees the bytes only after yrs took them without
        // crashing. Should yrs take the process down, the mark tells the next start which bytes.
        let mark =
            self.ctx
                .inflight
                .mark(self.name.as_str(), Applying::Remote, &hash, update.len());
        #[cfg(feature = "fault-injection")]
        crate::testing::fault::before_apply(&update);
        let applied = apply_remote(&self.doc, &mut self.known, &update);
        drop(mark);
        // Even an update that fails may have changed the document (or its pending part). One
        // that changed nothing keeps the cached encoding: every joiner answers the room's step 1
        // with such an empty step 2, and dropping the cache for each made a storm of joiners of
        // a large document encode it again for nearly every one (and hold each copy).
        if !matches!(applied, Ok(Ok(false))) {
            self.full_state = None;
        }
        match applied {
            Ok(Ok(true)) => {}
            // Nothing new: the empty step 2 every client answers the server's step 1 with, or a
            // reconnecting client's step 2, which always repeats its whole delete set. Storing
            // and broadcasting those would grow every log by one entry per reconnect.
            Ok(Ok(false)) => return Ok(false),
            Ok(Err(e)) => return Err(WriteError::Invalid(e)),
            Err(Panicked) => {
                // The document in memory may be half-modified: rebuild it from the store,
                // which never saw the offending bytes.
                let b64 = base64::engine::general_purpose::STANDARD.encode(&update);
                error!(room = %self.name, bytes = %b64,
                    "yrs panicked applying an update; reloading the document");
                self.reload();
                return Err(WriteError::Poisoned);
            }
        }
        self.store_and_broadcast(update)?;
        Ok(true)
    }

    /// Appends an update already applied to the document to the durable log, then queues its
    /// broadcast.
    pub(super) fn store_and_broadcast(&mut self, update: Vec<u8>) -> Result<(), WriteError> {
        match self.ctx.log.append(&self.name, &update) {
            Ok(seq) => {
                let created = if self.exists { 0 } else { flags::CREATED };
                self.feed_changed(flags::UPDATED | created);
                self.ctx.metrics.updates_applied.inc();
                self.last_seq = seq;
                self.log_len += 1;
                self.log_bytes += update.len() as u64;
                self.batch_bytes += update.len() as u64;
                self.stored_bytes += update.len() as u64;
                self.dirty = true;
                self.title_stale = true;
                self.exists = true;
                self.versions_saw(&update);
            }
            Err(e) => {
                // Not durable, so it must not be acknowledged: drop the in-memory copy too (and
                // the room, when the store no longer has what it acknowledged before).
                error!(room = %self.name, error = %e, "store append failed");
                self.reload();
                let reason = store_reason(&e);
                return Err(match e {
                    StoreError::Failed(_) => WriteError::StoreFailed(reason),
                    _ => WriteError::Storage(reason),
                });
            }
        }
        self.queued
            .push((Target::All, Bytes::from(encode_sync(SYNC_UPDATE, &update))));
        Ok(())
    }

    /// yrs panicked on remote data: the document in memory may be half-modified, so it is
    /// rebuilt from the store (which never saw the offending bytes) and the sender is closed.
    pub(super) fn poisoned(&mut self, conn: ConnId, bytes: &[u8], during: &str) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        error!(room = %self.name, conn, during, bytes = %b64,
            "yrs panicked on remote data; closing the sender and reloading the document");
        self.close_member(
            conn,
            CloseCode::Internal,
            "update crashed the document engine",
        );
        self.reload();
    }
}

/// Tells a writer, once, why its edits are not saved: a control error for Weft-aware clients,
/// the y-protocols auth permission-denied message for stock ones.
fn refusal(control: bool, code: &str, message: &str) -> Bytes {
    let frame = if control {
        Message::Control(Control::Error {
            code: code.into(),
            message: message.into(),
        })
    } else {
        Message::PermissionDenied(message.into())
    };
    Bytes::from(frame.encode())
}

/// Validates and applies `update` (the guards read the document's clocks from `known`):
/// whether it changed the document or is held back for missing dependencies (false: nothing
/// to store), why it was refused, or a yrs panic.
fn apply_remote(
    doc: &Doc,
    known: &mut KnownClocks,
    update: &[u8],
) -> Result<Result<bool, String>, Panicked> {
    contain(|| {
        let (decoded, parents) = decode_update_with_parents(update)?;
        if decoded.is_empty() {
            return Ok(false);
        }
        let mut txn = doc.transact_mut();
        let pending = apply_guarded(&mut txn, decoded, &parents, known)?;
        // An update waiting for missing dependencies changes nothing yet but must be kept,
        // or a restart would lose it once they arrive.
        Ok(txn.has_changes() || pending)
    })
}
