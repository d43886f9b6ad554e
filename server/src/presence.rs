//! The room's awareness table: who is here, their cursor state, and which connection owns each
//! Yjs client id.
//!
//! yrs' `Awareness` neither tracks ownership nor expires states, and the server never needs to
//! look inside a state, so the room keeps this table instead and relays JSON states verbatim.
//! Rules follow y-protocols `awareness.js`: an entry applies when its clock is newer than the
//! known one, or equal with a `null` state (removal).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use weft_protocol::{AwarenessEntry, AwarenessUpdate};

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
    renewed: Instant,
}

/// What an incoming awareness update did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Entries that took effect, to broadcast to the room.
    pub(crate) accepted: Vec<AwarenessEntry>,
    /// Entries refused because another connection owns the client id.
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
            match self.known.get_mut(&entry.client_id) {
                Some(k) if k.owner != conn => out.foreign += 1,
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
                None => {
                    self.known.insert(
                        entry.client_id,
                        Known {
                            clock: entry.clock,
                            state: Some(entry.state.clone()),
                            owner: conn,
                            renewed: now,
                        },
                    );
                    out.accepted.push(entry);
                }
            }
        }
        out
    }

    /// Forgets every client id `conn` owned; returns the removals to broadcast.
    pub(crate) fn remove_connection(&mut self, conn: ConnId) -> Vec<AwarenessEntry> {
        let mut removed = Vec::new();
        self.known.retain(|&client_id, k| {
            if k.owner != conn {
                return true;
            }
            if k.state.is_some() {
                removed.push(removal(client_id, k.clock));
            }
            false
        });
        removed
    }

    /// Removes states not renewed within [`STATE_TTL`]; returns the removals to broadcast.
    pub(crate) fn sweep(&mut self, now: Instant) -> Vec<AwarenessEntry> {
        let mut removed = Vec::new();
        for (&client_id, k) in &mut self.known {
            if k.state.is_some() && now.duration_since(k.renewed) >= STATE_TTL {
                k.state = None;
                removed.push(removal(client_id, k.clock));
            }
        }
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
        let gone = p.remove_connection(1);
        assert_eq!(gone.len(), 1);
        assert_eq!(
            (gone[0].client_id, gone[0].clock, gone[0].is_removal()),
            (7, 4, true)
        );
        assert_eq!(p.snapshot().entries.len(), 1);
        // The id is free again for whoever reconnects with it.
        assert_eq!(p.apply(3, upd(7, 5, "{}"), t).accepted.len(), 1);
    }

    /// States not renewed within the TTL are swept.
    #[test]
    fn sweep_expires_stale_states() {
        let mut p = Presence::default();
        let t = Instant::now();
        p.apply(1, upd(7, 1, "{}"), t);
        p.apply(1, upd(8, 1, "{}"), t + Duration::from_secs(20));
        let swept = p.sweep(t + STATE_TTL);
        assert_eq!(swept.len(), 1);
        assert_eq!(swept[0].client_id, 7);
        assert_eq!(p.live(), 1);
    }
}
