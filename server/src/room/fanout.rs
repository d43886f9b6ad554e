//! Fan-out: the room's members, the frames a batch queues for them ([`Target`]), and their
//! delivery once the batch is durable: one encoded `Bytes` shared by every recipient, pushed
//! into each member's bounded outbox. A member whose outbox is full is too slow; the outbox
//! closes its socket ([`CloseCode::TryAgainLater`]) and the room drops it at once.

use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tracing::info;
use weft_protocol::{AwarenessEntry, AwarenessUpdate, CloseCode, Control, Message, Role, UserInfo};

use crate::outbox::Outbox;
use crate::room::{ConnId, Room};

/// Control messages a member may send per second that the room acts on (relays a typing hint,
/// answers a repeated `hello`); more are dropped. Typing hints are hints: a client sends one
/// when typing starts or stops, so a real one never comes near this.
const CONTROLS_PER_SEC: NonZeroU32 = NonZeroU32::new(10).expect("non-zero");

/// Control messages a member may send at once before [`CONTROLS_PER_SEC`] applies.
const CONTROLS_BURST: NonZeroU32 = NonZeroU32::new(20).expect("non-zero");

/// Why a member is closed when what the room must send it would overflow its outbox: the
/// reason its outbox gives for the same at fan-out.
const TOO_SLOW: &str = "too slow: send queue full";

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
    /// Its control messages the room acts on (see [`CONTROLS_PER_SEC`]).
    pub(super) controls: DefaultDirectRateLimiter,
    /// It speaks the Hocuspocus framing (see `room::hocuspocus`).
    pub(super) hocuspocus: bool,
    /// Bytes queued in this batch for it alone (sync step 2, awareness snapshots): copies that
    /// are not in its outbox yet but will be.
    pub(super) pending: usize,
}

impl Member {
    /// A member that joins now.
    pub(super) fn new(
        uuid: String,
        outbox: Outbox,
        role: Role,
        subject: Option<String>,
        hocuspocus: bool,
    ) -> Self {
        Member {
            hocuspocus,
            uuid,
            outbox,
            role,
            control: false,
            user: None,
            subject,
            told_read_only: false,
            told_full: false,
            controls: RateLimiter::direct(
                Quota::per_second(CONTROLS_PER_SEC).allow_burst(CONTROLS_BURST),
            ),
            pending: 0,
        }
    }

    /// Whether its outbox is more than half full (bytes or frames): a hint is not worth the
    /// room it would take from what it must receive.
    fn busy(&self) -> bool {
        let queued = &self.outbox.queued;
        let tx = &self.outbox.tx;
        queued.now.load(Ordering::Relaxed) > queued.max / 2 || tx.capacity() < tx.max_capacity() / 2
    }
}

/// Where a queued frame goes once the batch is durable.
pub(super) enum Target {
    /// Every member.
    All,
    /// Every member but these (sorted): the owners of entries in a coalesced awareness frame,
    /// which get their own frame without them.
    AllExcept(Vec<ConnId>),
    /// One member.
    One(ConnId),
    /// Every member that opted in to control messages, except one.
    ControlExcept(Option<ConnId>),
    /// Every member that opted in to control messages and whose token names this user.
    ControlSubject(String),
    /// A hint (typing) from this member: like `ControlExcept`, but skipping members whose
    /// outbox is more than half full.
    Hint(ConnId),
    /// Every Hocuspocus member, except one, and only those whose token names `subject` when
    /// given (stateless messages).
    Hocuspocus {
        /// The member not to send it to (its sender).
        except: Option<ConnId>,
        /// The user whose members get it, or all.
        subject: Option<String>,
    },
}

impl Room {
    /// Queues an awareness update carrying `entries` (removals and snapshots the room makes, no
    /// sender) for every member, at once or with the room's next awareness frame.
    pub(super) fn queue_awareness(&mut self, entries: Vec<AwarenessEntry>) {
        self.coalesce_awareness(entries, None);
    }

    /// Queues an awareness update `conn` sent: `relayed` for the others, with the room's next
    /// awareness frame, and `echo` (its own clocks, see `room::presence`) for itself at once.
    /// Nothing when `relayed` is empty.
    pub(super) fn queue_awareness_from(
        &mut self,
        conn: ConnId,
        relayed: Vec<AwarenessEntry>,
        echo: Vec<AwarenessEntry>,
    ) {
        if relayed.is_empty() {
            return;
        }
        let frame = Message::Awareness(AwarenessUpdate { entries: echo }).encode();
        self.queued.push((Target::One(conn), Bytes::from(frame)));
        self.coalesce_awareness(relayed, Some(conn));
    }

    fn coalesce_awareness(&mut self, entries: Vec<AwarenessEntry>, owner: Option<ConnId>) {
        let now = tokio::time::Instant::now();
        let members = self.members.len();
        if let Some(batch) = self.awareness.add(entries, owner, now, members) {
            self.queue_awareness_now(batch);
        }
    }

    /// Queues a coalesced awareness batch now: one frame shared by every member that owns none
    /// of its entries, and for each owner the batch without its own entries, whose relayed
    /// clocks it must never see (it would adopt them as its own).
    pub(super) fn queue_awareness_now(&mut self, batch: Vec<(AwarenessEntry, Option<ConnId>)>) {
        if batch.is_empty() {
            return;
        }
        let mut owners: Vec<ConnId> = batch.iter().filter_map(|(_, o)| *o).collect();
        owners.sort_unstable();
        owners.dedup();
        for &owner in &owners {
            let others: Vec<AwarenessEntry> = batch
                .iter()
                .filter(|(_, o)| *o != Some(owner))
                .map(|(e, _)| e.clone())
                .collect();
            if !others.is_empty() {
                let frame = Message::Awareness(AwarenessUpdate { entries: others }).encode();
                self.queued.push((Target::One(owner), Bytes::from(frame)));
            }
        }
        let entries = batch.into_iter().map(|(e, _)| e).collect();
        let frame = Bytes::from(Message::Awareness(AwarenessUpdate { entries }).encode());
        let target = if owners.is_empty() {
            Target::All
        } else {
            Target::AllExcept(owners)
        };
        self.queued.push((target, frame));
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
                Target::All | Target::AllExcept(_) => {
                    for (&id, m) in &self.members {
                        let skip = matches!(&target, Target::AllExcept(except) if except.binary_search(&id).is_ok());
                        if !skip {
                            send(id, m, frame.clone());
                        }
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
                Target::Hocuspocus { except, subject } => {
                    for (&id, m) in &self.members {
                        let addressed = subject.is_none() || m.subject == subject;
                        if m.hocuspocus && Some(id) != except && addressed {
                            send(id, m, frame.clone());
                        }
                    }
                }
                Target::Hint(from) => {
                    for (&id, m) in &self.members {
                        if m.control && id != from && !m.busy() {
                            send(id, m, frame.clone());
                        }
                    }
                }
            }
        }
        self.ctx.metrics.fanout.inc_by(fanout);
        self.last_sent = Instant::now();
        self.members.values_mut().for_each(|m| m.pending = 0);
        self.evict_slow(slow);
    }

    /// Counts `bytes` more queued for `conn` alone in this batch; false when that, with what
    /// its outbox holds, is over its limit: the member is then closed as too slow at once
    /// (as its outbox would at fan-out), before more copies are built for it.
    pub(super) fn reserve(&mut self, conn: ConnId, bytes: usize) -> bool {
        let Some(m) = self.members.get_mut(&conn) else {
            return false;
        };
        m.pending = m.pending.saturating_add(bytes);
        let queued = &m.outbox.queued;
        if queued.now.load(Ordering::Relaxed).saturating_add(m.pending) <= queued.max {
            return true;
        }
        m.outbox.close(CloseCode::TryAgainLater, TOO_SLOW);
        self.evict_slow(vec![conn]);
        false
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
