//! The HTTP API's requests inside the room ([`ApiOp`]): reads see exactly what members see
//! (and in strict durability are answered only once that is durable, like a broadcast),
//! writes go through the inbox (`Room::receive`) and are broadcast like a member's, `Create`
//! seeds the document once, a notice reaches the opted-in members, and `Delete` closes every
//! member ([`CloseCode::Deleted`]) and stops the room so nothing it held can write the document
//! back.

use std::sync::atomic::Ordering;

use tracing::{error, info};
use weft_protocol::{CloseCode, Control, NoticeLevel};
use yrs::{ReadTxn, StateVector, Text, Transact};

use crate::feed::log::flags;
use crate::room::authors::ANONYMOUS;
use crate::room::compact::MAX_TITLE_CHARS;
use crate::room::failure::store_reason;
use crate::room::fanout::Target;
use crate::room::inbox::Incoming;
use crate::room::load::text_of;
use crate::room::yrs_guards::{contain, decode_state_vector};
use crate::room::{title_of, ApiOp, ApiOpError, ApiReply, Room};
use crate::store::{now_ms, StoreError};

impl Room {
    /// Runs one API request; writes are queued for broadcast like a member's.
    pub(super) fn api(&mut self, op: ApiOp) -> Result<ApiReply, ApiOpError> {
        if !self.exists && !matches!(op, ApiOp::Create { .. }) {
            return Err(ApiOpError::NotFound);
        }
        match op {
            ApiOp::Create {
                text,
                title,
                author,
            } => {
                let seeded = text.as_deref().is_some_and(|t| !t.is_empty());
                let created = self.create(text, title)?;
                if seeded {
                    self.attribute(&author);
                }
                Ok(created)
            }
            ApiOp::GetText => {
                let text = contain(|| self.text())
                    .map_err(|_| ApiOpError::Unavailable("reading the text failed".into()))?;
                Ok(ApiReply::Text(text))
            }
            ApiOp::GetUpdate(sv) => self.get_update(sv.as_deref()),
            ApiOp::SetText(text) => self.receive(Incoming::Replace(text), ANONYMOUS),
            ApiOp::Rewrite(rewrite) => self.receive(Incoming::Rewrite(rewrite), ANONYMOUS),
            ApiOp::Append(text) => self.receive(Incoming::Append(text), ANONYMOUS),
            ApiOp::ApplyUpdate(update) => self.receive(Incoming::Update(update), ANONYMOUS),
            ApiOp::Notice { level, text, to } => {
                let notice = Control::Notice {
                    level,
                    text: text.clone(),
                };
                self.share_control(&notice, to.clone());
                Ok(self.notice(level, text, to))
            }
            ApiOp::Delete => self.delete(),
            ApiOp::SetTitle(title) => self.rename(title),
            // A loaded document is not in the trash (see `room::trash`).
            ApiOp::Restore | ApiOp::Purge => Err(ApiOpError::NotFound),
            // Answered by the recorder, never here (see `Room::handle`).
            ApiOp::RecordVersion(_) => Err(ApiOpError::Unavailable(
                "versions are recorded by the room's recorder".into(),
            )),
        }
    }

    /// `GetUpdate`: the state as one update, relative to the state vector `sv` when given.
    fn get_update(&mut self, sv: Option<&[u8]>) -> Result<ApiReply, ApiOpError> {
        let encoded = contain(|| {
            let sv = match sv {
                Some(sv) => decode_state_vector(sv)
                    .map_err(|e| ApiOpError::Invalid(format!("state vector: {e}")))?,
                None => StateVector::default(),
            };
            Ok(self.doc.transact().encode_state_as_update_v1(&sv))
        });
        match encoded {
            Ok(result) => result.map(ApiReply::Update),
            Err(_) => {
                error!(room = %self.name, "yrs panicked encoding the state for the API");
                self.reload();
                Err(ApiOpError::Unavailable(
                    "encoding the document failed".into(),
                ))
            }
        }
    }

    /// `Notice`: queued for every opted-in member and Hocuspocus member (as a stateless
    /// message), or those whose token names `to`.
    pub(super) fn notice(
        &mut self,
        level: NoticeLevel,
        text: String,
        to: Option<String>,
    ) -> ApiReply {
        let notice = Control::Notice { level, text };
        let stateless = self.queue_stateless_notice(&notice, to.clone());
        let delivered = self
            .members
            .values()
            .filter(|m| m.control && (to.is_none() || m.subject == to))
            .count() as u32;
        let target = match to {
            Some(user) => Target::ControlSubject(user),
            None => Target::ControlExcept(None),
        };
        self.queue_control(target, &notice);
        ApiReply::Delivered(delivered + stateless)
    }

    /// `Create`: seeds the text in the room that owns the document, so it happens once. A
    /// title over [`MAX_TITLE_CHARS`] is refused.
    fn create(
        &mut self,
        text: Option<String>,
        title: Option<String>,
    ) -> Result<ApiReply, ApiOpError> {
        if title
            .as_deref()
            .is_some_and(|t| t.chars().nth(MAX_TITLE_CHARS).is_some())
        {
            return Err(ApiOpError::TitleTooLong(MAX_TITLE_CHARS));
        }
        if self.exists {
            return Err(ApiOpError::Exists);
        }
        let text = text.unwrap_or_default();
        let written = match title {
            // A title given explicitly stays, whatever the first line becomes.
            Some(title) => self.ctx.store.pin_title(&self.name, &title).map(|()| title),
            None => {
                let title = title_of(&text).unwrap_or_default();
                self.ctx.store.set_title(&self.name, &title).map(|()| title)
            }
        };
        let title = written.map_err(|e| api_store_error(&e))?;
        self.title = Some(title);
        self.feed_changed(flags::CREATED);
        self.exists = true;
        self.dirty = true;
        if text.is_empty() {
            return Ok(ApiReply::Written {
                version: self.last_seq,
                changed: true,
            });
        }
        let written = self.local_edit(|t, txn| t.insert(txn, 0, &text));
        // The title given (or the first line) was just written; edits refresh it later.
        self.title_stale = false;
        written
    }

    /// `Delete`: moves the document to the trash and closes every member; the room then stops
    /// (content and history stay for a restore).
    fn delete(&mut self) -> Result<ApiReply, ApiOpError> {
        self.ctx
            .store
            .move_to_trash(&self.name, now_ms())
            .map_err(|e| api_store_error(&e))?;
        self.share_deleted();
        let closed = self.close_for_delete();
        self.feed_deleted();
        // The trash record must reach disk before the reply; nothing compacts afterwards.
        self.dirty = true;
        info!(room = %self.name, closed, "document moved to the trash");
        Ok(ApiReply::Deleted(closed))
    }

    /// Closes every member with [`CloseCode::Deleted`] and marks the room to stop after this
    /// batch without writing the document again; returns how many were closed.
    fn close_for_delete(&mut self) -> u32 {
        let closed = self.members.len() as u32;
        for m in self.members.values() {
            m.outbox.close(CloseCode::Deleted, "document deleted");
        }
        self.members.clear();
        self.live.users.store(0, Ordering::Relaxed);
        self.queued.clear();
        self.exists = false;
        self.deleted = true;
        self.log_len = 0;
        self.log_bytes = 0;
        self.title_stale = false;
        closed
    }

    /// Another node moved the document to the trash: its members here are closed as there,
    /// and the room stops.
    pub(super) fn deleted_elsewhere(&mut self) {
        let closed = self.close_for_delete();
        info!(room = %self.name, closed, "document moved to the trash on another node");
    }

    /// `SetTitle`: pins an explicit title (edits no longer replace it) and tells every editor
    /// listening, so open tabs show it without a reload.
    fn rename(&mut self, title: String) -> Result<ApiReply, ApiOpError> {
        if title.chars().nth(MAX_TITLE_CHARS).is_some() {
            return Err(ApiOpError::TitleTooLong(MAX_TITLE_CHARS));
        }
        self.ctx
            .store
            .pin_title(&self.name, &title)
            .map_err(|e| api_store_error(&e))?;
        let control = Control::Title {
            title: title.clone(),
        };
        self.share_control(&control, None);
        self.queue_control(Target::ControlExcept(None), &control);
        self.title = Some(title);
        self.title_stale = false;
        // The reply waits for the flush that makes the title durable.
        self.dirty = true;
        Ok(ApiReply::Titled)
    }

    /// The text of `content`.
    pub(super) fn text(&self) -> String {
        text_of(&self.doc)
    }
}

/// A store error as the API reports it: `StoreFailed` once the store has failed.
fn api_store_error(e: &StoreError) -> ApiOpError {
    match e {
        StoreError::Failed(_) => ApiOpError::StoreFailed(store_reason(e)),
        _ => ApiOpError::Storage(e.to_string()),
    }
}
