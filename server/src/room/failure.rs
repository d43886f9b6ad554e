//! When a room's writes cannot be saved: an append the store refused, a flush that failed or
//! timed out (strict: the batch's own; relaxed: the background one, or the store found failed
//! on a later batch). Every member is told "not saved" and why (a control `error` with code
//! `not_saved` for clients that opted in, then a close with [`CloseCode::Internal`]), the API
//! requests of the batch fail with [`ApiOpError::StoreFailed`], and the document is rebuilt
//! from the store. When the store refuses that (it holds writes of this document that never
//! reached the disk), the in-memory document is dropped and the room stops without compacting
//! or flushing: serving it would present edits nobody saved as the document. A later join then
//! loads it afresh and is refused with the store's reason.

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::error;
use weft_protocol::{CloseCode, Control, Message};

use crate::room::{drain, new_doc, refuse, ApiOpError, Command, ConnId, JoinError, Room};
use crate::store::StoreError;

/// Code of the control `error` a member gets when its edits could not be saved.
const NOT_SAVED: &str = "not_saved";

/// The reason a store error gives: the failure itself for a failed store (its `Display` adds
/// that writes are refused until restart), the whole message otherwise.
pub(super) fn store_reason(e: &StoreError) -> String {
    match e {
        StoreError::Failed(reason) => reason.to_string(),
        other => other.to_string(),
    }
}

impl Room {
    /// Why the store refuses writes, if it does; asked without writing.
    pub(super) fn store_failure(&self) -> Option<String> {
        self.ctx.store.health().err().map(|e| store_reason(&e))
    }

    /// Tells member `conn` that its edits are not saved and why, then closes it.
    pub(super) fn not_saved(&mut self, conn: ConnId, reason: &str) {
        if let Some(m) = self.members.get(&conn) {
            if m.control {
                let error = Control::Error {
                    code: NOT_SAVED.into(),
                    message: reason.into(),
                };
                // Straight into its outbox: the batch's queue is not sent after a failure.
                m.outbox.send(Bytes::from(Message::Control(error).encode()));
            }
        }
        self.close_member(conn, CloseCode::Internal, &format!("not saved: {reason}"));
    }

    /// The writes of this room could not be made durable (`reason`): nothing of the batch is
    /// acknowledged, every member is told and closed, and the document is rebuilt from the
    /// store, or the room gives up when the store refuses to.
    pub(super) fn writes_lost(&mut self, reason: &str) {
        error!(room = %self.name, error = %reason, "writes not saved; closing every member");
        let ids: Vec<ConnId> = self.members.keys().copied().collect();
        for id in ids {
            self.not_saved(id, reason);
        }
        self.queued.clear();
        self.unsaved = None;
        self.send_replies(Some(ApiOpError::StoreFailed(reason.to_owned())));
        self.reload();
    }

    /// The document in memory can no longer be trusted and the store will not rebuild it
    /// (`reason`): drop it, close every member, fail the batch's requests, and stop after this
    /// batch. Members hear "not saved" when the store has failed (their edits may be lost).
    pub(super) fn give_up(&mut self, reason: String) {
        error!(room = %self.name, error = %reason, "document cannot be rebuilt; unloading the room");
        let failure = self.store_failure();
        let ids: Vec<ConnId> = self.members.keys().copied().collect();
        for id in ids {
            match &failure {
                Some(failure) => self.not_saved(id, failure),
                None => self.close_member(id, CloseCode::Internal, "document unavailable"),
            }
        }
        self.doc = new_doc();
        self.known.reset();
        self.full_state = None;
        self.queued.clear();
        self.unsaved = None;
        self.dirty = false;
        let error = self.refusal_for(&reason);
        self.send_replies(Some(error));
        self.failed = Some(reason);
    }

    /// What a request gets from a room that gave up (or a document that does not load) with
    /// `reason`: `StoreFailed` while the store has failed, else `Unavailable`.
    pub(super) fn refusal_for(&self, reason: &str) -> ApiOpError {
        failed_or_unavailable(self.store_failure().is_some(), reason)
    }

    /// After [`Room::give_up`]: leave the registry and refuse whatever the mailbox holds with
    /// the reason. Nothing is compacted or flushed.
    pub(super) async fn stop_failed(self, mut rx: mpsc::Receiver<Command>, reason: String) {
        self.registration.release();
        let join = JoinError::LoadFailed(reason.clone());
        let api = self.refusal_for(&reason);
        drain(&mut rx, |cmd| refuse(cmd, &join, &api)).await;
        error!(room = %self.name, "room unloaded: its document could not be kept");
    }
}

/// `StoreFailed(reason)` when the store has failed, else `Unavailable(reason)`.
pub(super) fn failed_or_unavailable(store_failed: bool, reason: &str) -> ApiOpError {
    if store_failed {
        ApiOpError::StoreFailed(reason.to_owned())
    } else {
        ApiOpError::Unavailable(reason.to_owned())
    }
}
