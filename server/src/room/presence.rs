//! The room's awareness table: who is here, their cursor state, and which connection owns each
//! Yjs client id.
//!
//! yrs' `Awareness` neither tracks ownership nor expires states, and the server never needs to
//! look inside a state, so the room keeps this table instead and relays JSON states verbatim.
//! Rules follow y-protocols `awareness.js`: an entry applies when its clock is newer than the
//! known one, or equal with a `null` state (removal).
//!
//! Stock y-websocket clients re-send every awareness change they receive, other clients'
//! states included. Those echoes are dropped quietly: a live id stays with its owner, and the id
//! of a connection that just left stays removed (a tombstone) unless a connection that owns no
//! id claims it, which is the owner coming back on a new socket.
//!
//! Clock translation: the room relays each state at `clock + offset`, the offset given to its
//! client id when it appears (see `room::clocks`). Peers keep the clock of a removal, and a
//! client coming back announces itself with the clock it had (y-websocket issue #122), so
//! relayed verbatim it would be ignored until its renewal 15 s later. When the owner reclaims a
//! tombstone, it gets a new offset that puts its clock above the removal; after a restart,
//! every client id gets an offset above any an earlier process used. Later clocks from the
//! same connection keep their offset, so each client id's relayed clock only grows, and the
//! removals the room relays (on leave, on expiry) carry the relayed clock too. The sender gets
//! its own entries back with the clocks it gave: a client adopts a higher clock for itself from
//! an echo, which would add the offset again with every round trip.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_protocol::{AwarenessEntry, AwarenessUpdate};

use crate::room::authors::awareness_name;
use crate::room::clocks::ClockOffsets;
use crate::room::ConnId;

/// JS peers drop a state not renewed for 30 s (`outdatedTimeout` in awareness.js); the server
/// sweeps with the same deadline so a vanished peer's cursor disappears everywhere.
pub(crate) const STATE_TTL: Duration = Duration::from_secs(30);

/// JSON `null`: the state that announces a client's removal.
const NULL_STATE: &str = "null";

#[derive(Debug)]
struct Known {
    /// The clock relayed last: the owner's clock plus `offset`.
    clock: u64,
    /// What the room adds to the owner's clocks (see the module doc).
    offset: u64,
    /// `None` once removed; the clock is kept so a stale re-add cannot resurrect it.
    state: Option<String>,
    owner: ConnId,
    /// Last renewal, or the removal time of a tombstone.
    renewed: Instant,
    /// The owning connection has gone; the entry only guards against echoes until swept.
    orphaned: bool,
}

impl Known {
    /// A live state `owner` announced, relayed at `clock`.
    fn live(clock: u64, offset: u64, state: &str, owner: ConnId, now: Instant) -> Self {
        Known {
            clock,
            offset,
            state: Some(state.to_owned()),
            owner,
            renewed: now,
            orphaned: false,
        }
    }
}

/// What an incoming awareness update did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Entries that took effect, with the clocks the room relays, for every other member.
    pub(crate) accepted: Vec<AwarenessEntry>,
    /// The same entries with the clocks the sender gave, echoed back to it.
    pub(crate) echo: Vec<AwarenessEntry>,
    /// Entries refused because another connection owns the client id (and the entry was not a
    /// mere echo of what is already known), or because the connection already owns an id: a
    /// likely spoof.
    pub(crate) foreign: usize,
}

/// What one entry did.
enum Outcome {
    /// It took effect; relay it at this clock.
    Relay(u64),
    /// An echo, a stale clock, or the removal of an unknown id: nothing to do.
    Drop,
    /// It touched an id another connection owns, or a second id of its sender.
    Foreign,
}

/// Awareness states of one room.
#[derive(Debug)]
pub(crate) struct Presence {
    known: HashMap<u64, Known>,
    /// Where new offsets come from.
    offsets: Arc<ClockOffsets>,
}

impl Presence {
    /// An empty table whose client ids take their offsets from `offsets`.
    pub(crate) fn new(offsets: Arc<ClockOffsets>) -> Self {
        Presence {
            known: HashMap::new(),
            offsets,
        }
    }

    /// Applies an update sent by `conn`, keeping only entries it may make.
    pub(crate) fn apply(&mut self, conn: ConnId, update: AwarenessUpdate, now: Instant) -> Applied {
        let mut out = Applied::default();
        for entry in update.entries {
            match self.apply_one(conn, &entry, now) {
                Outcome::Relay(clock) => {
                    out.accepted.push(AwarenessEntry {
                        client_id: entry.client_id,
                        clock,
                        state: entry.state.clone(),
                    });
                    out.echo.push(entry);
                }
                Outcome::Drop => {}
                Outcome::Foreign => out.foreign += 1,
            }
        }
        out
    }

    fn apply_one(&mut self, conn: ConnId, e: &AwarenessEntry, now: Instant) -> Outcome {
        let removal = e.is_removal();
        let owns_nothing = !self.owns_any(conn);
        let Some(k) = self.known.get_mut(&e.client_id) else {
            // One client id per connection, as every stock client has; a connection
            // inventing more would be filling the room with ghost cursors.
            if removal {
                return Outcome::Drop;
            } else if !owns_nothing {
                return Outcome::Foreign;
            }
            let offset = self.offsets.take();
            let clock = e.clock.saturating_add(offset);
            let known = Known::live(clock, offset, &e.state, conn, now);
            self.known.insert(e.client_id, known);
            return Outcome::Relay(clock);
        };
        if k.owner != conn {
            // A client id lives on one connection: a newer clock here outranks a claim another
            // node relayed (the client moved here before that node's removal arrived); an
            // echo of the relayed state has no newer clock.
            let moved_here = is_remote(k.owner) && e.clock > k.clock;
            if !k.orphaned && !moved_here {
                return if e.clock > k.clock {
                    Outcome::Foreign
                } else {
                    Outcome::Drop
                };
            }
            // The owner reconnecting; anyone else is echoing a departed client.
            if !owns_nothing || removal {
                return Outcome::Drop;
            }
            // Above the removal peers hold, whatever clock the owner comes back with.
            let above = k.clock.saturating_add(1).saturating_sub(e.clock);
            let offset = self.offsets.take().max(above);
            let clock = e.clock.saturating_add(offset);
            *k = Known::live(clock, offset, &e.state, conn, now);
            return Outcome::Relay(clock);
        }
        let clock = e.clock.saturating_add(k.offset);
        let newer = clock > k.clock;
        let removes_live = clock == k.clock && removal && k.state.is_some();
        if !(newer || removes_live) {
            return Outcome::Drop;
        }
        k.clock = clock;
        k.state = (!removal).then(|| e.state.clone());
        k.renewed = now;
        Outcome::Relay(clock)
    }

    /// The `user.name` in the live awareness state `conn` owns, if it gave one.
    pub(crate) fn name_of(&self, conn: ConnId) -> Option<String> {
        self.known
            .values()
            .filter(|k| k.owner == conn && !k.orphaned)
            .find_map(|k| k.state.as_deref().and_then(awareness_name))
    }

    fn owns_any(&self, conn: ConnId) -> bool {
        self.known.values().any(|k| k.owner == conn && !k.orphaned)
    }

    /// Removes the states of every client id `conn` owned; returns the removals to broadcast.
    /// The ids stay as tombstones for [`STATE_TTL`] so echoes from other clients stay out.
    pub(crate) fn remove_connection(&mut self, conn: ConnId, now: Instant) -> Vec<AwarenessEntry> {
        let mut removed = Vec::new();
        for (&client_id, k) in &mut self.known {
            if k.owner != conn || k.orphaned {
                continue;
            }
            if k.state.take().is_some() {
                removed.push(removal(client_id, k.clock));
            }
            k.orphaned = true;
            k.renewed = now;
        }
        removed
    }

    /// Removes states not renewed within [`STATE_TTL`] and forgets old tombstones; returns the
    /// removals to broadcast.
    pub(crate) fn sweep(&mut self, now: Instant) -> Vec<AwarenessEntry> {
        let mut removed = Vec::new();
        self.known.retain(|&client_id, k| {
            let stale = now.duration_since(k.renewed) >= STATE_TTL;
            if k.orphaned {
                return !stale;
            }
            if k.state.is_some() && stale {
                k.state = None;
                removed.push(removal(client_id, k.clock));
            }
            true
        });
        removed
    }

    /// Every live state, for a joining connection or a query-awareness from `viewer`: its own
    /// states with the clocks it gave (as in [`Applied::echo`]), the others' as relayed.
    pub(crate) fn snapshot(&self, viewer: ConnId) -> AwarenessUpdate {
        let entries = self
            .known
            .iter()
            .filter_map(|(&client_id, k)| {
                let own = k.owner == viewer && !k.orphaned;
                k.state.as_ref().map(|s| AwarenessEntry {
                    client_id,
                    clock: if own {
                        k.clock.saturating_sub(k.offset)
                    } else {
                        k.clock
                    },
                    state: s.clone(),
                })
            })
            .collect();
        AwarenessUpdate { entries }
    }

    /// Every live state, for a connection joining now, each relayed one clock higher than
    /// before. A client back on a new socket has removed every peer's state locally but holds
    /// the clocks it last got, so a snapshot at those clocks would be ignored; the raised
    /// offset keeps each id's later clocks above this one for the members already here too.
    /// Entries other nodes relayed are raised by their owners instead (see `room::peers`).
    pub(crate) fn welcome(&mut self, joiner: ConnId) -> AwarenessUpdate {
        self.raise_local();
        self.snapshot(joiner)
    }

    /// Raises the relayed clock of every live state of this node's members by one (see
    /// [`Presence::welcome`]); returns them at the raised clocks, for other nodes.
    pub(crate) fn raise_local(&mut self) -> Vec<AwarenessEntry> {
        let mut raised = Vec::new();
        for (&client_id, k) in &mut self.known {
            if k.orphaned || is_remote(k.owner) {
                continue;
            }
            if let Some(state) = &k.state {
                k.offset = k.offset.saturating_add(1);
                k.clock = k.clock.saturating_add(1);
                raised.push(AwarenessEntry {
                    client_id,
                    clock: k.clock,
                    state: state.clone(),
                });
            }
        }
        raised
    }

    /// Applies entries another node relayed for its members; `node` is that node's stand-in
    /// connection ([`is_remote`]). Clocks are taken as relayed (the owner's node translated
    /// them), so every node relays a client id at the same clocks. Entries of this node's own
    /// members are left alone. A removal orphans the entry: the client left that node and may
    /// come back on any. Returns what took effect, to relay to this node's members.
    pub(crate) fn apply_remote(
        &mut self,
        node: ConnId,
        update: AwarenessUpdate,
        now: Instant,
    ) -> Vec<AwarenessEntry> {
        let mut accepted = Vec::new();
        for e in update.entries {
            let removal = e.is_removal();
            match self.known.get_mut(&e.client_id) {
                None if removal => continue,
                None => {
                    let known = Known::live(e.clock, 0, &e.state, node, now);
                    self.known.insert(e.client_id, known);
                }
                Some(k) => {
                    if !k.orphaned && !is_remote(k.owner) {
                        continue;
                    }
                    let removes_live = e.clock == k.clock && removal && k.state.is_some();
                    if !(e.clock > k.clock || removes_live) {
                        continue;
                    }
                    *k = Known::live(e.clock, 0, &e.state, node, now);
                    if removal {
                        k.state = None;
                        k.orphaned = true;
                    }
                }
            }
            accepted.push(e);
        }
        accepted
    }

    /// Every live state of this node's members at the clocks relayed, for other nodes.
    pub(crate) fn local_entries(&self) -> Vec<AwarenessEntry> {
        self.known
            .iter()
            .filter(|(_, k)| !k.orphaned && !is_remote(k.owner))
            .filter_map(|(&client_id, k)| {
                Some(AwarenessEntry {
                    client_id,
                    clock: k.clock,
                    state: k.state.clone()?,
                })
            })
            .collect()
    }

    /// Number of client ids with a live state.
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.known.values().filter(|k| k.state.is_some()).count()
    }
}

/// Connection ids from here up stand for other nodes of a cluster (see `room::peers`); the
/// server numbers its connections from 1, far below.
pub(crate) const REMOTE_BASE: ConnId = u64::MAX / 2;

/// Whether `conn` stands for another node rather than a member of this one.
pub(crate) fn is_remote(conn: ConnId) -> bool {
    conn >= REMOTE_BASE
}

fn removal(client_id: u64, clock: u64) -> AwarenessEntry {
    AwarenessEntry {
        client_id,
        clock,
        state: NULL_STATE.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Presence {
        Presence::new(ClockOffsets::unpersisted(0))
    }

    fn upd(client_id: u64, clock: u64, state: &str) -> AwarenessUpdate {
        AwarenessUpdate {
            entries: vec![AwarenessEntry {
                client_id,
                clock,
                state: state.into(),
            }],
        }
    }

    /// A connection cannot change or remove a client id another connection owns.
    #[test]
    fn foreign_ids_are_refused() {
        let mut p = table();
        let t = Instant::now();
        assert_eq!(p.apply(1, upd(7, 1, "{}"), t).accepted.len(), 1);
        let spoof = p.apply(2, upd(7, 5, "null"), t);
        assert_eq!((spoof.accepted.len(), spoof.foreign), (0, 1));
        assert_eq!(p.live(), 1);
    }

    /// Older clocks are ignored; an equal clock with null removes (awareness.js rule).
    #[test]
    fn clock_rules() {
        let mut p = table();
        let t = Instant::now();
        p.apply(1, upd(7, 3, "{\"a\":1}"), t);
        assert!(p.apply(1, upd(7, 2, "{\"a\":2}"), t).accepted.is_empty());
        assert!(p.apply(1, upd(7, 3, "{\"a\":2}"), t).accepted.is_empty());
        assert_eq!(p.apply(1, upd(7, 3, "null"), t).accepted.len(), 1);
        assert_eq!(p.live(), 0);
        // A stale re-add after removal stays out.
        assert!(p.apply(1, upd(7, 2, "{}"), t).accepted.is_empty());
    }

    /// A closing connection's states come back as null removals, others stay.
    #[test]
    fn connection_removal() {
        let mut p = table();
        let t = Instant::now();
        p.apply(1, upd(7, 4, "{}"), t);
        p.apply(2, upd(8, 1, "{}"), t);
        let gone = p.remove_connection(1, t);
        assert_eq!(gone.len(), 1);
        assert_eq!(
            (gone[0].client_id, gone[0].clock, gone[0].is_removal()),
            (7, 4, true)
        );
        assert_eq!(p.snapshot(0).entries.len(), 1);
        // Connection 2 echoing 7's last state (as y-websocket clients do) cannot resurrect it.
        let echo = p.apply(2, upd(7, 4, "{}"), t);
        assert_eq!((echo.accepted.len(), echo.foreign), (0, 0));
        // The owner reconnecting on a fresh socket, even with its old clock, gets it back.
        assert_eq!(p.apply(3, upd(7, 4, "{}"), t).accepted.len(), 1);
        assert_eq!(p.live(), 2);
    }

    /// A connection owns one client id; a second one is refused.
    #[test]
    fn one_client_id_per_connection() {
        let mut p = table();
        let t = Instant::now();
        assert_eq!(p.apply(1, upd(7, 1, "{}"), t).accepted.len(), 1);
        let second = p.apply(1, upd(9, 1, "{}"), t);
        assert_eq!((second.accepted.len(), second.foreign), (0, 1));
        assert_eq!(p.live(), 1);
    }

    /// Echoes of another live client's current state are dropped without counting as spoofs.
    #[test]
    fn echoes_are_quiet() {
        let mut p = table();
        let t = Instant::now();
        p.apply(1, upd(7, 2, "{}"), t);
        p.apply(2, upd(8, 1, "{}"), t);
        let echo = p.apply(2, upd(7, 2, "{}"), t);
        assert_eq!((echo.accepted.len(), echo.foreign), (0, 0));
    }

    /// Tombstones are forgotten after the TTL, so the table does not grow with every visitor.
    #[test]
    fn tombstones_expire() {
        let mut p = table();
        let t = Instant::now();
        p.apply(1, upd(7, 1, "{}"), t);
        p.remove_connection(1, t);
        assert!(p.sweep(t + STATE_TTL).is_empty());
        assert!(p.known.is_empty());
    }

    /// States not renewed within the TTL are swept.
    #[test]
    fn sweep_expires_stale_states() {
        let mut p = table();
        let t = Instant::now();
        p.apply(1, upd(7, 1, "{}"), t);
        p.apply(2, upd(8, 1, "{}"), t + Duration::from_secs(20));
        let swept = p.sweep(t + STATE_TTL);
        assert_eq!(swept.len(), 1);
        assert_eq!(swept[0].client_id, 7);
        assert_eq!(p.live(), 1);
    }

    /// The owner coming back on a new socket with the clock its peers hold the removal at is
    /// relayed above that removal, and its later clocks keep the same offset.
    #[test]
    fn returning_owner_is_relayed_above_its_removal() {
        let mut p = table();
        let t = Instant::now();
        p.apply(2, upd(8, 1, "{}"), t);
        let first = p.apply(1, upd(7, 3, "{\"a\":1}"), t).accepted[0].clock;
        let gone = p.remove_connection(1, t);
        assert_eq!(
            gone[0].clock, first,
            "the removal carries the relayed clock"
        );
        let back = p.apply(3, upd(7, 3, "{\"a\":1}"), t);
        assert_eq!(
            back.echo[0].clock, 3,
            "the sender's echo keeps its own clock"
        );
        let relayed = back.accepted[0].clock;
        assert!(
            relayed > first,
            "{relayed} must be above the removal at {first}"
        );
        let moved = p.apply(3, upd(7, 4, "{\"a\":2}"), t);
        assert_eq!(moved.accepted[0].clock, relayed + 1);
        let left = p.apply(3, upd(7, 4, "null"), t);
        assert_eq!(
            (left.accepted[0].clock, left.accepted[0].is_removal()),
            (relayed + 1, true),
            "an equal-clock removal is relayed at the equal relayed clock"
        );
        assert_eq!(p.live(), 1);
    }

    /// Even an owner that returns with a lower clock than before is relayed above its removal.
    #[test]
    fn returning_with_a_lower_clock() {
        let mut p = table();
        let t = Instant::now();
        let first = p.apply(1, upd(7, 500, "{}"), t).accepted[0].clock;
        p.remove_connection(1, t);
        let back = p.apply(2, upd(7, 2, "{}"), t).accepted[0].clock;
        assert!(back > first);
    }

    /// A viewer's snapshot shows its own state with its own clock, others' as relayed.
    #[test]
    fn snapshot_for_a_viewer() {
        let mut p = Presence::new(ClockOffsets::unpersisted(100));
        let t = Instant::now();
        p.apply(1, upd(7, 3, "{}"), t);
        p.apply(2, upd(8, 5, "{}"), t);
        let clocks = |viewer| {
            let mut v: Vec<_> = p
                .snapshot(viewer)
                .entries
                .iter()
                .map(|e| (e.client_id, e.clock))
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(clocks(1), vec![(7, 3), (8, 106)]);
        assert_eq!(clocks(9), vec![(7, 103), (8, 106)]);
    }

    /// After a restart (a new table on the same store) a client id announced with the clock it
    /// had is relayed above every clock the previous process relayed for it.
    #[test]
    fn restart_relays_above_the_previous_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Instant::now();
        let mut before = 0;
        for _ in 0..3 {
            let store: Arc<dyn crate::store::Store> =
                Arc::new(crate::store::SledStore::open(dir.path()).expect("open"));
            let mut p = Presence::new(ClockOffsets::start(store));
            let now = p.apply(1, upd(7, 3, "{}"), t).accepted[0].clock;
            assert!(now > before, "{now} must be above {before}");
            // A few reconnects raise the offset within the process.
            for conn in 2..6 {
                p.remove_connection(conn - 1, t);
                before = p.apply(conn, upd(7, 3, "{}"), t).accepted[0].clock;
            }
        }
    }

    /// A joiner gets states above the clocks it may hold from before; the owner's next clock
    /// is relayed above that for everyone.
    #[test]
    fn welcome_raises_clocks() {
        let mut p = table();
        let t = Instant::now();
        let held = p.apply(1, upd(7, 3, "{}"), t).accepted[0].clock;
        let welcome = p.welcome(2);
        assert_eq!(welcome.entries[0].clock, held + 1);
        let next = p.apply(1, upd(7, 4, "{}"), t).accepted[0].clock;
        assert_eq!(next, held + 2);
        assert_eq!(
            p.snapshot(1).entries[0].clock,
            4,
            "the owner still sees its own clock"
        );
    }

    /// Another node's entries are relayed at its clocks, never displace a member's own id,
    /// are not raised by a welcome here, and a removal from that node lets the client claim
    /// its id on this node.
    #[test]
    fn remote_entries() {
        let mut p = table();
        let t = Instant::now();
        let node = REMOTE_BASE + 1;
        let got = p.apply_remote(node, upd(9, 40, r#"{"n":1}"#), t);
        assert_eq!(got[0].clock, 40, "relayed as the owner's node relays it");
        assert!(
            p.apply_remote(node, upd(9, 40, r#"{"n":2}"#), t).is_empty(),
            "not newer"
        );
        // A member's own id is not taken over by a remote claim.
        let mine = p.apply(1, upd(5, 1, "{}"), t).accepted[0].clock;
        assert!(p.apply_remote(node, upd(5, mine + 10, "{}"), t).is_empty());
        // A welcome raises this node's members only.
        let welcome = p.welcome(2);
        let of = |id| {
            welcome
                .entries
                .iter()
                .find(|e| e.client_id == id)
                .map(|e| e.clock)
        };
        assert_eq!(of(9), Some(40));
        assert_eq!(of(5), Some(mine + 1));
        assert_eq!(
            p.local_entries().len(),
            1,
            "only this node's members go to peers"
        );
        // An echo of the relayed state by a connection owning nothing claims nothing ...
        assert_eq!(p.apply(3, upd(9, 40, r#"{"n":1}"#), t).accepted.len(), 0);
        // ... but after that node's removal the client may come back here.
        assert_eq!(p.apply_remote(node, upd(9, 40, "null"), t).len(), 1);
        let back = p.apply(3, upd(9, 2, "{}"), t).accepted;
        assert!(back[0].clock > 40, "relayed above the removal peers hold");
    }

    /// A node gone (`Bye`, or silent) takes its members' entries along.
    #[test]
    fn a_gone_node_takes_its_entries() {
        let mut p = table();
        let t = Instant::now();
        let node = REMOTE_BASE + 1;
        p.apply_remote(node, upd(9, 4, "{}"), t);
        p.apply_remote(node, upd(10, 4, "{}"), t);
        let removed = p.remove_connection(node, t);
        assert_eq!(removed.len(), 2);
        assert_eq!(p.live(), 0);
    }
}
