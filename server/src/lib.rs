//! # weft-server
//!
//! The Weft collaboration server: y-websocket rooms over axum, durable in sled.
//!
//! ## Layers
//! Each folder is a layer; a lower one never imports a higher one (see `docs/architecture.md`
//! for the path of one frame from socket to disk to every member).
//! - top: [`config`] (flags and safe defaults), [`token`] (signed access tokens), `error`
//!   (`ApiError`, what every HTTP handler returns), `outbox` (a connection's bounded send queue,
//!   shared by the room and the socket loop), [`shutdown`], `metrics` and [`Stats`].
//! - `store/`: where bytes hit disk. The [`Store`] trait and its sled backend, group commit (one
//!   flush for every write that arrived meanwhile) and the in-flight marks that let a restart
//!   refuse bytes that crashed the process.
//! - `feed/`: the change feed: events with a durable global seq, recorded from what rooms
//!   report (between `store/` and `room/`); `webhooks/`: their signed, retried delivery.
//! - `room/`: one actor per open document, sole owner of the yrs `Doc` and the awareness table:
//!   validate → apply → make durable → fan out; compaction; the registry of open rooms.
//! - `net/`: the TCP accept loop (HTTP connection cap, deadlines, the read budget for
//!   unfinished WebSocket messages), the per-socket loop (limits, writer queue, close
//!   handshake), the y-websocket connection that decodes frames with `weft-protocol` and hands
//!   them to a room, and the echo handler for the conformance run.
//! - `http/`: the axum `Router` built in one place, the JSON API, the dashboard and `/metrics`,
//!   the embedded editor pages, and the access policy (which token covers what).
//! - `server` and [`cli`]: wiring, the binaries' entry point (`arenas`: the binary restarts
//!   itself once with glibc's malloc arenas capped); `backup`: the `weft backup` and
//!   `weft restore` commands; `migrate`: `weft migrate`, between a data directory and a cluster.
//! - `testing/`: fuzz harnesses, bench hooks and fault injection, behind features.
//!
//! A frame's path: `net::socket` (read) → `net::connection` (decode) → `room` (validate, apply,
//! append) → `store::commit` (flush) → `room` (broadcast one shared `Bytes`) → each member's
//! `outbox` → its `net::socket` writer.

pub mod cli;
pub mod config;
pub mod shutdown;
pub mod token;

mod arenas;
mod backup;
mod cluster;
mod error;
mod feed;
mod http;
mod metrics;
mod migrate;
mod net;
mod outbox;
mod room;
mod search;
mod server;
mod stats;
mod store;
mod testing;
mod webhooks;

#[cfg(feature = "bench-internals")]
pub use testing::bench;
#[cfg(feature = "bench-internals")]
pub use testing::bench_history;
#[cfg(any(test, feature = "fuzzing"))]
pub use testing::fuzzing;

pub use config::{Cli, Config, Durability};
pub use server::{serve_echo, Server, ServerError};
pub use shutdown::Shutdown;
pub use stats::Stats;
pub use store::{
    DocMeta, Followed, HistoryStore, NodeStatus, PeerLink, PeerMessage, SledStore, Store,
    StoreError,
};
