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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use weft_protocol::{AwarenessEntry, AwarenessUpdate};

use crate::room::authors::awareness_name;
use crate::room::ConnId;

/// JS peers drop a state not renewed for 30 s (`outdatedTimeout` in awareness.js); the server
/// sweeps with the same deadline so a vanished peer's cursor disappears everywhere.
pub(crate) const STATE_TTL: Duration = Duration::from_secs(30);

/// JSON `null`: the state that announces a client's removal.
const NULL_STATE: &str = "null";

#[derive(Debug)]
struct Known {
    clock: u64,
    /// `None` once removed; the clock is kept so a stale re-add cannot resurrect it.
    state: Option<String>,
    owner: ConnId,
    /// Last renewal, or the removal time of a tombstone.
    renewed: Instant,
    /// The owning connection has gone; the entry only guards against echoes until swept.
    orphaned: bool,
}

/// What an incoming awareness update did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Entries that took effect, to broadcast to the room.
    pub(crate) accepted: Vec<AwarenessEntry>,
    /// Entries refused because another connection owns the client id (and the entry was not a
    /// mere echo of what is already known), or because the connection already owns an id: a
    /// likely spoof.
    pub(crate) foreign: usize,
}

/// Awareness states of one room.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    known: HashMap<u64, Known>,
}

impl Presence {
    /// Applies an update sent by `conn`, keeping only entries it may make.
    pub(crate) fn apply(&mut self, conn: ConnId, update: AwarenessUpdate, now: Instant) -> Applied {
        let mut out = Applied::default();
        for entry in update.entries {
            let removal = entry.is_removal();
            let owns_nothing = !self.owns_any(conn);
            match self.known.get_mut(&entry.client_id) {
                Some(k) if k.orphaned && k.owner != conn => {
                    // The owner reconnecting; anyone else is echoing a departed client.
                    if owns_nothing && !removal {
                        *k = Known {
                            clock: entry.clock.max(k.clock),
                            state: Some(entry.state.clone()),
                            owner: conn,
                            renewed: now,
                            orphaned: false,
                        };
                        out.accepted.push(entry);
                    }
                }
                Some(k) if k.owner != conn => {
                    if entry.clock > k.clock {
                        out.foreign += 1;
                    }
                }
                Some(k) => {
                    let newer = entry.clock > k.clock;
                    let removes_live = entry.clock == k.clock && removal && k.state.is_some();
                    if newer || removes_live {
                        k.clock = entry.clock;
                        k.state = (!removal).then(|| entry.state.clone());
                        k.renewed = now;
                        out.accepted.push(entry);
                    }
                }
                None if removal => {}
                // One client id per connection, as every stock client has; a connection
                // inventing more would be filling the room with ghost cursors.
                None if !owns_nothing => out.foreign += 1,
                None => {
                    self.known.insert(
                        entry.client_id,
                        Known {
                            clock: entry.clock,
                            state: Some(entry.state.clone()),
                            owner: conn,
                            renewed: now,
                            orphaned: false,
                        },
                    );
                    out.accepted.push(entry);
                }
            }
        }
        out
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

    /// Every live state, for a joining connection or a query-awareness.
    pub(crate) fn snapshot(&self) -> AwarenessUpdate {
        let entries = self
            .known
            .iter()
            .filter_map(|(&client_id, k)| {
                k.state.as_ref().map(|s| AwarenessEntry {
                    client_id,
                    clock: k.clock,
                    state: s.clone(),
                })
            })
            .collect();
        AwarenessUpdate { entries }
    }

    /// Number of client ids with a live state.
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.known.values().filter(|k| k.state.is_some()).count()
    }
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
        let mut p = Presence::default();
        let t = Instant::now();
        assert_eq!(p.apply(1, upd(7, 1, "{}"), t).accepted.len(), 1);
        let spoof = p.apply(2, upd(7, 5, "null"), t);
        assert_eq!((spoof.accepted.len(), spoof.foreign), (0, 1));
        assert_eq!(p.live(), 1);
    }

    /// Older clocks are ignored; an equal clock with null removes (awareness.js rule).
    #[test]
    fn clock_rules() {
        let mut p = Presence::default();
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
        let mut p = Presence::default();
        let t = Instant::now();
        p.apply(1, upd(7, 4, "{}"), t);
        p.apply(2, upd(8, 1, "{}"), t);
        let gone = p.remove_connection(1, t);
        assert_eq!(gone.len(), 1);
        assert_eq!(
            (gone[0].client_id, gone[0].clock, gone[0].is_removal()),
            (7, 4, true)
        );
        assert_eq!(p.snapshot().entries.len(), 1);
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
        let mut p = Presence::default();
        let t = Instant::now();
        assert_eq!(p.apply(1, upd(7, 1, "{}"), t).accepted.len(), 1);
        let second = p.apply(1, upd(9, 1, "{}"), t);
        assert_eq!((second.accepted.len(), second.foreign), (0, 1));
        assert_eq!(p.live(), 1);
    }

    /// Echoes of another live client's current state are dropped without counting as spoofs.
    #[test]
    fn echoes_are_quiet() {
        let mut p = Presence::default();
        let t = Instant::now();
        p.apply(1, upd(7, 2, "{}"), t);
        p.apply(2, upd(8, 1, "{}"), t);
        let echo = p.apply(2, upd(7, 2, "{}"), t);
        assert_eq!((echo.accepted.len(), echo.foreign), (0, 0));
    }

    /// Tombstones are forgotten after the TTL, so the table does not grow with every visitor.
    #[test]
    fn tombstones_expire() {
        let mut p = Presence::default();
        let t = Instant::now();
        p.apply(1, upd(7, 1, "{}"), t);
        p.remove_connection(1, t);
        assert!(p.sweep(t + STATE_TTL).is_empty());
        assert!(p.known.is_empty());
    }

    /// States not renewed within the TTL are swept.
    #[test]
    fn sweep_expires_stale_states() {
        let mut p = Presence::default();
        let t = Instant::now();
        p.apply(1, upd(7, 1, "{}"), t);
        p.apply(2, upd(8, 1, "{}"), t + Duration::from_secs(20));
        let swept = p.sweep(t + STATE_TTL);
        assert_eq!(swept.len(), 1);
        assert_eq!(swept[0].client_id, 7);
        assert_eq!(p.live(), 1);
    }
}
