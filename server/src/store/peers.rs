//! What a room exchanges with the rooms of the same document on other nodes of a cluster:
//! awareness (cursors, names), whether each node is still there, and what the API did on one
//! node that the members on the others must hear (a notice, a new title, a delete). A single node has no peers.
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
    /// The document was moved to the trash through the sender: close and stop.
    Deleted,
    /// A control message (a notice, a new title) for the members, as JSON, to those whose
    /// token names the user if one is given.
    Control {
        /// The control message's JSON.
        json: String,
        /// Only members whose token's subject is this.
        to: Option<String>,
    },
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

/// One node of a cluster as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// The node's name (`--node-name`).
    pub name: String,
    /// Open WebSocket connections.
    pub connections: i64,
    /// Open rooms.
    pub rooms: u64,
    /// Seconds since it was last heard from (0 for this node).
    #[serde(default)]
    pub seen_secs_ago: u64,
    /// Whether it is the node answering.
    #[serde(default)]
    pub this: bool,
}
