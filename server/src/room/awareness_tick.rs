//! Awareness coalescing: a room sends awareness changes at most once per [`AWARENESS_TICK`],
//! as one frame per member carrying every state that changed since the last one.
//!
//! Relaying each caret move to every member costs a frame per member per move: a crowd of N
//! clients moving every few seconds asks for N² frames per period (1,500 clients every 2 s:
//! 1.1 million frames a second), which no socket loop carries; members' send queues fill and
//! the whole room is closed as too slow in one wave. Coalesced, the room sends one frame per
//! member per tick, whatever the number of moves, and a client that moved twice within a tick
//! is sent only its newest state (the one a cursor shows).
//!
//! The first change after a quiet tick goes out at once (leading edge), so a small room, where
//! changes are rare, sees no added latency; only changes that follow within a tick wait, at
//! most one tick: [`AWARENESS_TICK`], or [`CROWD_TICK`] in a room of more than [`CROWD`].

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use weft_protocol::AwarenessEntry;

use crate::room::{ConnId, Room};

/// A changed entry and the connection that sent it (`None` for the room's own removals and
/// snapshots).
pub(crate) type Owned = (AwarenessEntry, Option<ConnId>);

/// Shortest interval between two awareness frames of one room. Short enough that a caret's
/// delivery stays well under the 50 ms a remote cursor may lag unnoticed.
pub(crate) const AWARENESS_TICK: Duration = Duration::from_millis(25);

/// The tick of a crowded room (more than [`CROWD`] members): every tick costs a frame per
/// member, so a crowd's tick is longer, halving what its presence costs the sockets.
pub(crate) const CROWD_TICK: Duration = Duration::from_millis(50);

/// Members above which a room counts as a crowd for its awareness tick.
pub(crate) const CROWD: usize = 250;

/// The awareness tick of a room with `members` members.
pub(crate) fn tick_for(members: usize) -> Duration {
    if members > CROWD {
        CROWD_TICK
    } else {
        AWARENESS_TICK
    }
}

/// Awareness changes not yet sent, and when the next frame may go.
#[derive(Debug, Default)]
pub(crate) struct AwarenessTick {
    /// Changed entries, newest per client id, in the order they first changed, with their
    /// senders.
    pending: Vec<Owned>,
    /// Client id → its index in `pending`.
    index: HashMap<u64, usize>,
    /// Until when a new frame must wait; `None` after a quiet tick.
    next: Option<Instant>,
    /// The current tick length (see [`tick_for`]).
    tick: Duration,
}

impl AwarenessTick {
    /// Adds accepted changes. Returns the entries to send now when the room has been quiet
    /// for a tick (leading edge); otherwise they wait for [`AwarenessTick::due`].
    pub(crate) fn add(
        &mut self,
        entries: Vec<AwarenessEntry>,
        owner: Option<ConnId>,
        now: Instant,
        members: usize,
    ) -> Option<Vec<Owned>> {
        if entries.is_empty() {
            return None;
        }
        self.tick = tick_for(members);
        for entry in entries {
            match self.index.get(&entry.client_id) {
                Some(&i) => self.pending[i] = (entry, owner),
                None => {
                    self.index.insert(entry.client_id, self.pending.len());
                    self.pending.push((entry, owner));
                }
            }
        }
        match self.next {
            Some(next) if now < next => None,
            _ => self.take(now),
        }
    }

    /// When the pending entries are due, if there are any.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.next.filter(|_| !self.pending.is_empty())
    }

    /// The tick has passed: the entries to send now, if any. A tick with nothing to send
    /// ends the quiet period, so the next change goes out at once.
    pub(crate) fn on_due(&mut self, now: Instant) -> Option<Vec<Owned>> {
        if self.pending.is_empty() {
            self.next = None;
            return None;
        }
        self.take(now)
    }

    /// Every pending entry, and a new tick starting `now`.
    fn take(&mut self, now: Instant) -> Option<Vec<Owned>> {
        self.next = Some(now + self.tick.max(AWARENESS_TICK));
        self.index.clear();
        Some(std::mem::take(&mut self.pending))
    }
}

impl Room {
    /// The room's awareness tick has passed: queues what changed since the last frame.
    pub(crate) fn send_awareness_tick(&mut self) {
        if let Some(entries) = self.awareness.on_due(Instant::now()) {
            self.queue_awareness_now(entries);
        }
    }
}

/// Waits until `due`, or for ever when nothing is pending (the run loop polls it only when
/// something is).
pub(crate) async fn awareness_due(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(client_id: u64, clock: u64) -> AwarenessEntry {
        AwarenessEntry {
            client_id,
            clock,
            state: "{}".into(),
        }
    }

    /// The first change goes out at once; changes within the tick wait, newest per client.
    #[test]
    fn leading_edge_then_coalesced() {
        let mut t = AwarenessTick::default();
        let t0 = Instant::now();
        let first = t.add(vec![entry(1, 1)], None, t0, 2).map(|e| e.len());
        assert_eq!(first, Some(1));
        assert!(t.due().is_none(), "nothing pending after the leading edge");
        assert!(t.add(vec![entry(1, 2)], None, t0, 2).is_none());
        assert!(t.add(vec![entry(2, 1), entry(1, 3)], None, t0, 2).is_none());
        assert_eq!(t.due(), Some(t0 + AWARENESS_TICK));
        let sent = t.on_due(t0 + AWARENESS_TICK).unwrap_or_default();
        let got: Vec<(u64, u64)> = sent.iter().map(|(e, _)| (e.client_id, e.clock)).collect();
        assert_eq!(got, vec![(1, 3), (2, 1)]);
    }

    /// A tick with nothing pending ends the quiet period: the next change is sent at once.
    #[test]
    fn quiet_tick_resets() {
        let mut t = AwarenessTick::default();
        let t0 = Instant::now();
        assert!(t.add(vec![entry(1, 1)], None, t0, 2).is_some());
        assert!(t.on_due(t0 + AWARENESS_TICK).is_none());
        assert!(t
            .add(vec![entry(1, 2)], None, t0 + AWARENESS_TICK, 2)
            .is_some());
    }

    /// A crowded room waits the longer tick.
    #[test]
    fn crowds_tick_slower() {
        let mut t = AwarenessTick::default();
        let t0 = Instant::now();
        assert!(t.add(vec![entry(1, 1)], None, t0, CROWD + 1).is_some());
        assert!(t.add(vec![entry(1, 2)], None, t0, CROWD + 1).is_none());
        assert_eq!(t.due(), Some(t0 + CROWD_TICK));
    }

    /// Changes after the tick has passed go at once even if the timer has not fired yet.
    #[test]
    fn late_change_goes_at_once() {
        let mut t = AwarenessTick::default();
        let t0 = Instant::now();
        assert!(t.add(vec![entry(1, 1)], None, t0, 2).is_some());
        assert!(t
            .add(vec![entry(2, 1)], None, t0 + AWARENESS_TICK, 2)
            .is_some());
        assert!(t.add(vec![], None, t0 + AWARENESS_TICK, 2).is_none());
    }

    /// Each pending entry keeps the connection that sent its newest state, so the frame can
    /// leave it out for that connection.
    #[test]
    fn entries_keep_their_newest_sender() {
        let mut t = AwarenessTick::default();
        let t0 = Instant::now();
        assert!(t.add(vec![entry(9, 1)], None, t0, 3).is_some());
        assert!(t.add(vec![entry(1, 1)], Some(10), t0, 3).is_none());
        assert!(t.add(vec![entry(2, 1)], Some(11), t0, 3).is_none());
        assert!(t.add(vec![entry(1, 2)], Some(12), t0, 3).is_none());
        let sent = t.on_due(t0 + AWARENESS_TICK).unwrap_or_default();
        let got: Vec<(u64, Option<ConnId>)> = sent.iter().map(|(e, o)| (e.client_id, *o)).collect();
        assert_eq!(got, vec![(1, Some(12)), (2, Some(11))]);
    }
}
