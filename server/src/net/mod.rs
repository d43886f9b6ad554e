//! The network layer: where TCP connections are accepted (`accept`: limits and deadlines for
//! plain HTTP), where a request becomes a WebSocket (`upgrade`), where a WebSocket is served
//! (`socket`: the per-socket loop, limits and close handshake), what its frames mean
//! (`connection`: y-websocket, decoded and handed to a room; `hocuspocus`: the Hocuspocus
//! framing, several documents per socket, each a member of its room), and the echo handler the
//! conformance run talks to (`echo`).

pub(crate) mod accept;
pub(crate) mod connection;
pub(crate) mod echo;
pub(crate) mod hocuspocus;
pub(crate) mod metered;
pub(crate) mod quiet;
pub(crate) mod socket;
pub(crate) mod upgrade;
