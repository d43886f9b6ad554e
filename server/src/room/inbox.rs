//! The room's inbox: the one way an update that no member sent reaches the document. Today that
//! is the HTTP API's writes (apply an update, replace or append text); another node's updates
//! or a restore come in the same way later. An [`Incoming`] update is validated, applied,
//! appended to the durable log and broadcast exactly like a member's write (through
//! `Room::integrate`), and answered with [`ApiReply::Written`] once durable; there is only no
//! member to refuse or close when it fails.
//!
//! Server-side edits are made here too: the room edits its own document (UTF-16 offsets, as Yjs
//! counts) and treats the resulting update as if it had arrived.

use tracing::error;
use yrs::updates::decoder::Decode;
use yrs::{GetString, Text, Transact, Update};

use crate::room::diff::{self, Budget, Rewrite};
use crate::room::yrs_guards::{contain, release_pending};
use crate::room::{ApiOp, ApiOpError, ApiReply, Room};

/// An update that reaches the room from no member.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A Yjs v1 update made elsewhere (the API's apply-update; another node, a restore).
    Update(Vec<u8>),
    /// A server-side edit: the text becomes this, by a diff planned on the room's task within
    /// [`Budget::InRoom`] (the API's `PUT text` when its rewrite keeps meeting other edits).
    Replace(String),
    /// A server-side edit planned away from the room (the API's `PUT text`): applied only if
    /// the text is still the one it was planned against, else answered
    /// [`ApiReply::BaseChanged`].
    Rewrite(Rewrite),
    /// A server-side edit: this text is added at the end (the API's append).
    Append(String),
}

impl Incoming {
    /// The inbox form of an API request that writes; any other request is handed back.
    pub(crate) fn from_api(op: ApiOp) -> Result<Self, ApiOp> {
        match op {
            ApiOp::ApplyUpdate(update) => Ok(Incoming::Update(update)),
            ApiOp::SetText(text) => Ok(Incoming::Replace(text)),
            ApiOp::Rewrite(rewrite) => Ok(Incoming::Rewrite(rewrite)),
            ApiOp::Append(text) => Ok(Incoming::Append(text)),
            other => Err(other),
        }
    }

    /// The API request this is the inbox form of (the inverse of [`Incoming::from_api`]).
    pub(crate) fn into_api(self) -> ApiOp {
        match self {
            Incoming::Update(update) => ApiOp::ApplyUpdate(update),
            Incoming::Replace(text) => ApiOp::SetText(text),
            Incoming::Rewrite(rewrite) => ApiOp::Rewrite(rewrite),
            Incoming::Append(text) => ApiOp::Append(text),
        }
    }
}

impl Room {
    /// Takes an update from no member: applies, stores and queues its broadcast like a
    /// member's write. A document that does not exist is not written (`NotFound`): the API
    /// creates documents explicitly, and a write must not bring a deleted one back.
    /// A write that changed the document counts `author` as one of its authors.
    pub(super) fn receive(
        &mut self,
        incoming: Incoming,
        author: &str,
    ) -> Result<ApiReply, ApiOpError> {
        let reply = self.receive_unattributed(incoming)?;
        if let ApiReply::Written { changed: true, .. } = reply {
            self.authors.record(author);
        }
        Ok(reply)
    }

    /// [`Room::receive`] without counting the author.
    fn receive_unattributed(&mut self, incoming: Incoming) -> Result<ApiReply, ApiOpError> {
        if !self.exists {
            return Err(ApiOpError::NotFound);
        }
        match incoming {
            Incoming::Update(update) => {
                let changed = self.integrate(update)?;
                Ok(ApiReply::Written {
                    version: self.last_seq,
                    changed,
                })
            }
            Incoming::Replace(new) => self.local_edit(|text, txn| {
                let old = text.get_string(txn);
                replace_text(text, txn, &old, &new);
            }),
            Incoming::Rewrite(rewrite) => {
                let mut moved = false;
                let written = self.local_edit(|text, txn| {
                    if text.get_string(txn) == rewrite.base {
                        diff::apply(text, txn, &rewrite.splices);
                    } else {
                        moved = true;
                    }
                })?;
                Ok(if moved {
                    ApiReply::BaseChanged
                } else {
                    written
                })
            }
            Incoming::Append(tail) => self.local_edit(|text, txn| {
                let end = text.len(txn);
                text.insert(txn, end, &tail);
            }),
        }
    }

    /// Edits `content` on the server (UTF-16 offsets, as Yjs counts), then stores and
    /// broadcasts the resulting update like a member's.
    pub(super) fn local_edit(
        &mut self,
        edit: impl FnOnce(&yrs::TextRef, &mut yrs::TransactionMut<'_>),
    ) -> Result<ApiReply, ApiOpError> {
        self.full_state = None;
        let encoded = contain(|| {
            let text = self.doc.get_or_insert_text("content");
            let mut txn = self.doc.transact_mut();
            edit(&text, &mut txn);
            let update = txn.encode_update_v1();
            release_pending(&mut txn);
            update
        });
        let Ok(update) = encoded else {
            error!(room = %self.name, "yrs panicked during a server-side edit");
            self.reload();
            return Err(ApiOpError::Unavailable(
                "editing the document failed".into(),
            ));
        };
        let max = self.ctx.config.max_doc_bytes;
        if self.stored_bytes.saturating_add(update.len() as u64) > max {
            // Already applied in memory: the store is the truth, so rebuild from it.
            self.reload();
            return Err(ApiOpError::TooLarge(max));
        }
        let changed = match Update::decode_v1(&update) {
            Ok(u) => !u.is_empty(),
            Err(_) => true,
        };
        if changed {
            self.store_and_broadcast(update).map_err(ApiOpError::from)?;
        }
        Ok(ApiReply::Written {
            version: self.last_seq,
            changed,
        })
    }
}

/// Turns `old` into `new` with a diff planned within [`Budget::InRoom`] (linear in the text:
/// minimal for a small change, the changed middle replaced whole otherwise), in UTF-16 offsets
/// (the unit of the room's documents and of Yjs), so text outside the changed spans keeps its
/// identity and remote cursors anchored there stay where they are.
fn replace_text(text: &yrs::TextRef, txn: &mut yrs::TransactionMut<'_>, old: &str, new: &str) {
    diff::apply(text, txn, &diff::plan(old, new, Budget::InRoom));
}

#[cfg(test)]
mod tests {
    use yrs::{ReadTxn, StateVector};

    use super::*;
    use crate::room::new_doc;

    /// A replace edits only the changed span, in UTF-16 units: emoji (surrogate pairs) before,
    /// inside and after the change survive, and a peer's concurrent insert is kept.
    #[test]
    fn replace_is_a_minimal_utf16_diff() {
        let doc = new_doc();
        let text = doc.get_or_insert_text("content");
        text.insert(&mut doc.transact_mut(), 0, "👋 héllo wörld 🎉 end");
        // A peer that saw the same start inserts concurrently near the end.
        let peer = new_doc();
        let state = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        peer.transact_mut()
            .apply_update(Update::decode_v1(&state).expect("decode"))
            .expect("apply");
        let peer_text = peer.get_or_insert_text("content");
        let end = peer_text.len(&peer.transact());
        let concurrent = {
            let mut txn = peer.transact_mut();
            peer_text.insert(&mut txn, end, "!");
            txn.encode_update_v1()
        };
        let replace = |new: &str| {
            let old = text.get_string(&doc.transact());
            let mut txn = doc.transact_mut();
            replace_text(&text, &mut txn, &old, new);
            txn.encode_update_v1()
        };
        let update = replace("👋 hello 🌍 wörld 🎉 end");
        assert_eq!(text.get_string(&doc.transact()), "👋 hello 🌍 wörld 🎉 end");
        // Minimal: the update carries the few changed characters, not the whole text.
        let whole = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert!(
            update.len() < whole.len(),
            "{} >= {}",
            update.len(),
            whole.len()
        );
        doc.transact_mut()
            .apply_update(Update::decode_v1(&concurrent).expect("decode"))
            .expect("apply");
        assert_eq!(
            text.get_string(&doc.transact()),
            "👋 hello 🌍 wörld 🎉 end!"
        );
        assert!(
            replace("👋 hello 🌍 wörld 🎉 end!").len() <= 2,
            "no-op replace is empty"
        );
    }
}
