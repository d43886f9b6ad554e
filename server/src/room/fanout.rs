//! Fan-out: the room's members, the frames a batch queues for them ([`Target`]), and their
//! delivery once the batch is durable: one encoded `Bytes` shared by every recipient, pushed
//! into each member's bounded outbox. A member whose outbox is full is too slow; the outbox
//! closes its socket ([`CloseCode::TryAgainLater`]) and the room drops it at once.

use std::time::Instant;

use bytes::Bytes;
use tracing::info;
use weft_protocol::{AwarenessEntry, AwarenessUpdate, CloseCode, Control, Message, Role, UserInfo};

use crate::outbox::Outbox;
use crate::room::{ConnId, Room};

/// A connection in the room, as the room sees it.
pub(super) struct Member {
    /// Public id, sent in control messages.
    pub(super) uuid: String,
    /// Where its frames go.
    pub(super) outbox: Outbox,
    /// What it may do.
    pub(super) role: Role,
    /// Opted in to control messages with `hello`.
    pub(super) control: bool,
    /// Who it said it is in `hello`.
    pub(super) user: Option<UserInfo>,
    /// The user its token names.
    pub(super) subject: Option<String>,
    /// It was told, once, that its edits are refused because it may only read.
    pub(super) told_read_only: bool,
    /// It was told, once, that its edits are refused because the document is full.
    pub(super) told_full: bool,
}

/// Where a queued frame goes once the batch is durable.
pub(super) enum Target {
    /// Every member.
    All,
    /// One member.
    One(ConnId),
    /// Every member that opted in to control messages, except one.
    ControlExcept(Option<ConnId>),
    /// Every member that opted in to control messages and whose token names this user.
    ControlSubject(String),
}

impl Room {
    /// Queues an awareness update carrying `entries` for every member (nothing when empty).
    pub(super) fn queue_awareness(&mut self, entries: Vec<AwarenessEntry>) {
        if entries.is_empty() {
            return;
        }
        let frame = Message::Awareness(AwarenessUpdate { entries }).encode();
        self.queued.push((Target::All, Bytes::from(frame)));
    }

    /// Queues a control message for `target`.
    pub(super) fn queue_control(&mut self, target: Target, c: &Control) {
        let frame = Message::Control(c.clone()).encode();
        self.queued.push((target, Bytes::from(frame)));
    }

    /// Closes a member's socket with `code` and removes it from the room.
    pub(super) fn close_member(&mut self, conn: ConnId, code: CloseCode, reason: &str) {
        if let Some(m) = self.members.get(&conn) {
            m.outbox.close(code, reason);
        }
        self.leave(conn);
    }

    /// Closes every member with `code`.
    pub(super) fn close_all(&mut self, code: CloseCode, reason: &str) {
        let ids: Vec<ConnId> = self.members.keys().copied().collect();
        for id in ids {
            self.close_member(id, code, reason);
        }
    }

    /// Sends every queued frame to its members, then drops the members that were too slow to
    /// take theirs (which may queue more: awareness removals, `left` notices).
    pub(super) fn fan_out(&mut self) {
        let mut slow = Vec::new();
        let mut fanout = 0u64;
        let mut send = |id: ConnId, m: &Member, frame: Bytes| {
            fanout += 1;
            if !m.outbox.send(frame) {
                slow.push(id);
            }
        };
        for (target, frame) in self.queued.drain(..) {
            match target {
                Target::All => {
                    for (&id, m) in &self.members {
                        send(id, m, frame.clone());
                    }
                }
                Target::One(id) => {
                    if let Some(m) = self.members.get(&id) {
                        send(id, m, frame);
                    }
                }
                Target::ControlExcept(except) => {
                    for (&id, m) in &self.members {
                        if m.control && Some(id) != except {
                            send(id, m, frame.clone());
                        }
                    }
                }
                Target::ControlSubject(user) => {
                    for (&id, m) in &self.members {
                        if m.control && m.subject.as_deref() == Some(user.as_str()) {
                            send(id, m, frame.clone());
                        }
                    }
                }
            }
        }
        self.ctx.metrics.fanout.inc_by(fanout);
        self.last_sent = Instant::now();
        self.evict_slow(slow);
    }

    /// Drops members whose outbox was full.
    fn evict_slow(&mut self, mut slow: Vec<ConnId>) {
        slow.sort_unstable();
        slow.dedup();
        self.ctx.metrics.queue_full.inc_by(slow.len() as u64);
        for id in slow {
            // The outbox already closed the socket (`TryAgainLater`); drop it from the room now
            // so no later frame is silently skipped for it.
            info!(room = %self.name, conn = id, "member too slow; disconnected");
            self.leave(id);
        }
    }
}
