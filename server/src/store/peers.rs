//! What a room exchanges with the rooms of the same document on other nodes of a cluster:
//! awareness (cursors, names) and whether each node is still there. A single node has no peers.
//! The transport (core NATS in a cluster) delivers at most once and may drop: presence renews
//! itself, so nothing here is durable.

use std::sync::Arc;

use tokio::sync::mpsc;

/// One message between the rooms of a document on different nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMessage {
    /// Awareness entries of the sender's members (an encoded y-protocols awareness update),
    /// at the clocks the sender relays.
    Awareness(Vec<u8>),
    /// The sender still has the room open.
    Alive,
    /// The sender just opened the room (or welcomed a member): owners, raise your members'
    /// clocks and send them.
    Query,
    /// The sender closed the room: its members' entries go.
    Bye,
}

/// A room's link to its peers: send on `outgoing`, receive `(node, message)` on `incoming`.
/// Dropping both ends the link.
#[derive(Debug)]
pub struct PeerLink {
    /// Messages to every other node with the room open.
    pub outgoing: mpsc::UnboundedSender<PeerMessage>,
    /// Messages from them, with the sending node's id.
    pub incoming: mpsc::Receiver<(Arc<str>, PeerMessage)>,
}
