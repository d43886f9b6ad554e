//! The change feed of a cluster: one log shared by every node (kept in NATS JetStream by the
//! cluster module, which implements [`SharedLog`]). A node appends the events its own rooms and
//! API calls report; the log numbers them (its sequence is the event's `seq`, the same on every
//! node); each node mirrors the whole log into a sled tree of its own, which `GET /api/changes`,
//! the event stream and search read exactly as they read a single node's feed. Webhooks are
//! delivered from a work queue on the log shared by the nodes ([`SharedQueue`]), so each event
//! goes out once for the cluster.
//!
//! The feed only knows these traits: the layers below never import the cluster module.

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::feed::event::{Event, Record};

/// One event on its way to the shared log.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// Unique among every node's events: a retried append whose first try did land is stored
    /// once (the log drops a repeated id).
    pub(crate) id: String,
    /// When the event was recorded (RFC 3339).
    pub(crate) at: String,
    /// What happened.
    pub(crate) event: Event,
}

/// The log every node of a cluster appends its events to and reads all events from.
pub(crate) trait SharedLog: Send + Sync + 'static {
    /// Appends `out` after everything appended before; resolves once the log has stored it,
    /// with its seq.
    fn append(&self, out: Outgoing) -> BoxFuture<'_, Result<u64, String>>;

    /// The delivery queue of webhook endpoint `url`, shared by every node: each event is
    /// handed to one node at a time, in order, and handed again (to any node) when that node
    /// neither finishes nor reports progress within `ack_wait`. A new endpoint starts with the
    /// events appended from now on.
    fn queue(
        &self,
        url: String,
        ack_wait: Duration,
    ) -> BoxFuture<'_, Result<Box<dyn SharedQueue>, String>>;

    /// Moves endpoint `url`'s queue back to the events after `since` (a redelivery).
    fn rewind(
        &self,
        url: String,
        since: u64,
        ack_wait: Duration,
    ) -> BoxFuture<'_, Result<(), String>>;
}

/// One endpoint's queue, as one node takes events from it.
pub(crate) trait SharedQueue: Send {
    /// The next event for this node, waiting up to `wait`; `None` when none came.
    fn next(&mut self, wait: Duration) -> BoxFuture<'_, Result<Option<Job>, String>>;

    /// The seq of the last event the cluster finished with, and how many wait after it.
    fn position(&mut self) -> BoxFuture<'_, Result<(u64, u64), String>>;
}

/// An event taken from a [`SharedQueue`], to finish with [`JobAck::done`].
pub(crate) struct Job {
    /// The event.
    pub(crate) record: Record,
    /// How it is reported back.
    pub(crate) ack: Box<dyn JobAck>,
}

/// How a node reports back on a [`Job`].
pub(crate) trait JobAck: Send + Sync {
    /// Still working on it: the queue does not hand it to another node yet.
    fn progress(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Finished (delivered or given up on): the queue moves on.
    fn done(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Not finished and not going to be here (the node stops): hand it to another node now.
    fn release(&self) -> BoxFuture<'_, Result<(), String>>;
}
