//! What the room does for members that speak the Hocuspocus framing (`Joiner::hocuspocus`):
//! their frames are the y-websocket ones the room sends everybody (their connection puts the
//! document address in front), plus two bodies of Hocuspocus' own, encoded here without an
//! address:
//!
//! - **SyncStatus** (type 8): one per update or sync step 2 the member sent, and only once it is
//!   durable under the configured durability (strict: after the batch's flush; relaxed: when
//!   the flush the room waits on to say `saved` lands), so a provider's `unsyncedChanges`
//!   reaching 0 means "saved", the promise of the control channel's `saved`. A refused edit
//!   (a read-only member, a full document) is acknowledged with 0, as `@hocuspocus/server`
//!   does; providers count only the 1s.
//! - **Stateless** (type 5): a member's stateless message, relayed to the room's other
//!   Hocuspocus members, and the API's notices, as their control-message JSON.

use bytes::Bytes;
use weft_protocol::hocuspocus::Body;
use weft_protocol::Control;

use crate::config::Durability;
use crate::room::fanout::Target;
use crate::room::{ConnId, Room};

/// Acknowledgements owed to Hocuspocus members: those of this batch, and (relaxed durability)
/// those waiting for the flush that makes their writes durable.
#[derive(Debug, Default)]
pub(super) struct Acks {
    /// Owed for writes of the batch being handled: `(member, stored)`.
    batch: Vec<(ConnId, bool)>,
    /// Relaxed durability: owed once the pending flush lands.
    waiting: Vec<(ConnId, bool)>,
}

impl Room {
    /// Notes that `conn` is owed a SyncStatus for one write (`stored`: applied, or nothing to
    /// apply; false: refused), if it is a Hocuspocus member.
    pub(super) fn owe_ack(&mut self, conn: ConnId, stored: bool) {
        if self.members.get(&conn).is_some_and(|m| m.hocuspocus) {
            self.acks.batch.push((conn, stored));
        }
    }

    /// Queues the acknowledgements whose writes are durable now: every one, unless a relaxed
    /// flush is still pending (then they wait for [`Room::on_saved`]). Called once the batch's
    /// writes are durable (strict) or handed to the flusher (relaxed).
    pub(super) fn release_acks(&mut self) {
        let pending_flush =
            self.ctx.config.durability == Durability::Relaxed && self.unsaved.is_some();
        let batch = std::mem::take(&mut self.acks.batch);
        if pending_flush {
            self.acks.waiting.extend(batch);
            return;
        }
        let waiting = std::mem::take(&mut self.acks.waiting);
        for (conn, stored) in waiting.into_iter().chain(batch) {
            let frame = Bytes::from(Body::SyncStatus(stored).encode());
            self.queued.push((Target::One(conn), frame));
        }
    }

    /// The batch's writes were not saved: nothing is acknowledged (their members are closed).
    pub(super) fn drop_acks(&mut self) {
        self.acks.batch.clear();
        self.acks.waiting.clear();
    }

    /// A Hocuspocus member's stateless message: relayed to the room's other Hocuspocus
    /// members, within the member's control-message rate (like a typing hint).
    pub(super) fn stateless(&mut self, conn: ConnId, payload: &str) {
        let Some(m) = self.members.get(&conn) else {
            return;
        };
        if !m.hocuspocus || m.controls.check().is_err() {
            return;
        }
        let frame = Bytes::from(Body::Stateless(payload.to_owned()).encode());
        let target = Target::Hocuspocus {
            except: Some(conn),
            subject: None,
        };
        self.queued.push((target, frame));
    }

    /// Queues a notice for the Hocuspocus members (all, or those whose token names `to`) as a
    /// stateless message carrying its control JSON; returns how many it reaches.
    pub(super) fn queue_stateless_notice(&mut self, notice: &Control, to: Option<String>) -> u32 {
        let reached = self
            .members
            .values()
            .filter(|m| m.hocuspocus && (to.is_none() || m.subject == to))
            .count() as u32;
        if reached > 0 {
            let frame = Bytes::from(Body::Stateless(notice.to_json()).encode());
            let target = Target::Hocuspocus {
                except: None,
                subject: to,
            };
            self.queued.push((target, frame));
        }
        reached
    }
}

#[cfg(test)]
mod tests;
