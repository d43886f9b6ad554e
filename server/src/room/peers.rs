//! The room's peers: the same document's rooms on other nodes of a cluster (none on a single
//! node). Awareness crosses between them: this node's members' accepted entries and removals go
//! out as they happen, other nodes' entries come in under a stand-in connection per node
//! (`presence::REMOTE_BASE` and up) and are relayed to this node's members.
//!
//! A room that opens asks its peers for their members' states (`Query`); owners raise those
//! clocks by one (as a welcome does, see `room::presence`) and send them, so a member that
//! just joined here sees everyone within a round trip. Each room says `Alive` every few
//! seconds and `Bye` when it closes; a node not heard from for [`NODE_TIMEOUT`] is taken as
//! gone and its members' carets are removed, well before the 30 s clients wait themselves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_protocol::{AwarenessEntry, AwarenessUpdate, Control};

use crate::room::fanout::Target;
use crate::room::presence::REMOTE_BASE;
use crate::room::{ConnId, Room};
use crate::store::{PeerLink, PeerMessage};

/// How often a room tells its peers it is still open.
const ALIVE_EVERY: Duration = Duration::from_secs(3);

/// Silence after which a peer is taken as gone.
pub(super) const NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// The link to the peers and what the room knows of them.
#[derive(Default)]
pub(super) struct Peers {
    link: Option<PeerLink>,
    /// Each peer's stand-in connection and when it was last heard.
    nodes: HashMap<Arc<str>, (ConnId, Instant)>,
    next: ConnId,
    last_alive: Option<Instant>,
}

impl Peers {
    fn send(&self, msg: PeerMessage) {
        if let Some(link) = &self.link {
            let _ = link.outgoing.send(msg);
        }
    }

    fn send_entries(&self, entries: Vec<AwarenessEntry>) {
        if self.link.is_some() && !entries.is_empty() {
            self.send(PeerMessage::Awareness(AwarenessUpdate { entries }.encode()));
        }
    }

    /// The stand-in connection of `node`, noted as heard now.
    fn heard(&mut self, node: Arc<str>, now: Instant) -> ConnId {
        let next = &mut self.next;
        let entry = self.nodes.entry(node).or_insert_with(|| {
            *next += 1;
            (REMOTE_BASE + *next, now)
        });
        entry.1 = now;
        entry.0
    }

    /// Peers not heard from for [`NODE_TIMEOUT`], forgotten: their stand-in connections.
    fn silent(&mut self, now: Instant) -> Vec<ConnId> {
        let mut gone = Vec::new();
        self.nodes.retain(|_, (conn, heard)| {
            let silent = now.duration_since(*heard) >= NODE_TIMEOUT;
            if silent {
                gone.push(*conn);
            }
            !silent
        });
        gone
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.send(PeerMessage::Bye);
    }
}

/// The next message from a peer, or never without a link.
pub(super) async fn next_peer_message(peers: &mut Peers) -> (Arc<str>, PeerMessage) {
    match peers.link.as_mut() {
        Some(link) => match link.incoming.recv().await {
            Some(m) => m,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

impl Room {
    /// Opens the link to the peers and asks for their members' states.
    pub(super) fn start_peers(&mut self) {
        self.peers.link = self.ctx.store.peers(&self.name);
        self.peers.send(PeerMessage::Query);
        self.peers.send(PeerMessage::Alive);
        self.peers.last_alive = Some(Instant::now());
    }

    /// Tells the peers about this node's members' entries that changed (accepted updates,
    /// removals).
    pub(super) fn share_awareness(&self, entries: &[AwarenessEntry]) {
        self.peers.send_entries(entries.to_vec());
    }

    /// A member joined: the peers raise their members' clocks for it too.
    pub(super) fn peers_welcome(&self) {
        if self.peers.link.is_some() {
            self.peers.send(PeerMessage::Query);
            self.peers.send_entries(self.presence.local_entries());
        }
    }

    /// Handles a message from `node`.
    pub(super) fn on_peer(&mut self, node: Arc<str>, msg: PeerMessage) {
        let now = Instant::now();
        let conn = self.peers.heard(node, now);
        match msg {
            PeerMessage::Awareness(bytes) => {
                let Ok(update) = AwarenessUpdate::decode(&bytes, &self.ctx.config.limits()) else {
                    return;
                };
                let accepted = self.presence.apply_remote(conn, update, now);
                self.queue_awareness(accepted);
            }
            PeerMessage::Alive => {}
            PeerMessage::Query => {
                let raised = self.presence.raise_local();
                self.peers.send_entries(raised);
            }
            PeerMessage::Bye => {
                self.peers.nodes.retain(|_, (c, _)| *c != conn);
                let removed = self.presence.remove_connection(conn, now);
                self.queue_awareness(removed);
            }
            PeerMessage::Deleted => self.deleted_elsewhere(),
            PeerMessage::Control { json, to } => {
                if let Ok(control) = serde_json::from_str::<Control>(&json) {
                    self.control_from_peer(control, to);
                }
            }
        }
    }

    /// Tells the peers what the API did here that their members must hear: `control` (a
    /// notice, a title) for every member or those of user `to`.
    pub(super) fn share_control(&self, control: &Control, to: Option<String>) {
        if self.peers.link.is_some() {
            if let Ok(json) = serde_json::to_string(control) {
                self.peers.send(PeerMessage::Control { json, to });
            }
        }
    }

    /// Tells the peers the document went to the trash through this node.
    pub(super) fn share_deleted(&self) {
        self.peers.send(PeerMessage::Deleted);
    }

    fn control_from_peer(&mut self, control: Control, to: Option<String>) {
        match control {
            Control::Notice { level, text } => {
                self.notice(level, text, to);
            }
            Control::Title { title } => {
                self.queue_control(
                    Target::ControlExcept(None),
                    &Control::Title {
                        title: title.clone(),
                    },
                );
                self.title = Some(title);
                self.title_stale = false;
            }
            _ => {}
        }
    }

    /// Periodic: say `Alive`, forget silent peers and remove their members' entries.
    pub(super) fn peers_tick(&mut self, now: Instant) {
        if self.peers.link.is_none() {
            return;
        }
        if self
            .peers
            .last_alive
            .is_none_or(|t| now.duration_since(t) >= ALIVE_EVERY)
        {
            self.peers.send(PeerMessage::Alive);
            self.peers.last_alive = Some(now);
        }
        for conn in self.peers.silent(now) {
            let removed = self.presence.remove_connection(conn, now);
            self.queue_awareness(removed);
        }
    }
}
