//! Cluster mode: many Weft nodes serving one set of documents kept in NATS JetStream, so that
//! "saved" means a quorum of NATS servers has the edit and losing a machine loses nothing.
//!
//! - `connect.rs`: the connection, and the stream, bucket and object store created or checked.
//! - `runtime.rs`: the NATS client's own runtime, so blocking store calls never deadlock.
//! - `names.rs`: subjects, keys and object names of a document.
//! - `publisher.rs`: updates published in order, acknowledged, retried until they land.
//! - `store.rs`: [`NatsStore`], the [`Store`](crate::store::Store) of a node; `docs.rs` loads,
//!   compacts and deletes a document, `meta.rs` keeps its metadata, `kvs.rs` the small shared
//!   records (trash, revocations, refusals, clock offsets).
//! - `history.rs`: documents' version histories, shared by every node; `lease.rs`: which node
//!   records a document's versions.
//! - `follow.rs`: a room's follower of its document's log, delivering other nodes' updates;
//!   `cursor.rs` reads a log in order from a position (for following and loading).
//! - `nodes.rs`: the list of nodes the dashboard shows.
//! - `peers.rs`: a room's link to the same document's rooms on other nodes (awareness).
//! - `feed.rs`: the change feed of the whole cluster, one stream; `hooks.rs`: the webhook
//!   queues on it, shared by the nodes.

mod buckets;
mod connect;
mod cursor;
mod docs;
pub(crate) mod feed;
pub(crate) mod follow;
mod history;
#[cfg(test)]
mod history_tests;
mod hooks;
mod kvs;
mod lease;
mod meta;
mod names;
mod nodes;
mod peers;
mod publisher;
mod runtime;
mod store;

use std::sync::Arc;

pub(crate) use store::NatsStore;

use crate::config::NatsArgs;

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No NATS server of the list answered.
    #[error("cannot reach NATS at {urls}: {reason} (is nats-server running with JetStream, -js?)")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// What the client reported.
        reason: String,
    },
    /// The credentials file could not be read.
    #[error("cannot read the NATS credentials file {path}: {reason}")]
    Credentials {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The server has JetStream disabled.
    #[error("NATS at {urls} runs without JetStream; start nats-server with -js (and a store directory, -sd)")]
    NoJetStream {
        /// The URLs tried.
        urls: String,
    },
    /// A stream or bucket could not be created or read.
    #[error("cannot set up {what} in JetStream: {reason}")]
    Setup {
        /// The stream or bucket.
        what: &'static str,
        /// What JetStream answered.
        reason: String,
    },
    /// `--nats-replicas` differs from what the existing stream has.
    #[error("stream {stream} keeps {has} replicas but --nats-replicas asks for {asked}; drop the flag to use the stream as it is, or change the stream with `nats stream edit {stream} --replicas {asked}`")]
    Replicas {
        /// The stream.
        stream: &'static str,
        /// Its replicas.
        has: usize,
        /// What was asked.
        asked: usize,
    },
    /// The client's runtime could not start.
    #[error("cannot start the NATS client's thread: {0}")]
    Runtime(#[from] std::io::Error),
}

impl ClusterError {
    fn setup(what: &'static str, e: impl std::fmt::Display) -> Self {
        ClusterError::Setup {
            what,
            reason: e.to_string(),
        }
    }
}

/// Connects this node to the cluster of `args`: its store, ready to use.
pub(crate) fn open(
    args: &NatsArgs,
    node_name: &str,
    flush_deadline: std::time::Duration,
) -> Result<NatsStore, ClusterError> {
    let rt = Arc::new(runtime::NatsRuntime::start()?);
    let (args2, name) = (args.clone(), node_name.to_owned());
    let nats = rt
        .call(std::time::Duration::from_secs(30), async move {
            connect::connect(&args2, &name).await
        })
        .map_err(|e| ClusterError::Connect {
            urls: args.urls.join(","),
            reason: e.to_string(),
        })??;
    Ok(NatsStore::new(rt, Arc::new(nats), flush_deadline))
}
