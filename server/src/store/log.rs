//! The durable update log, as a room sees it: append an update and get its sequence number,
//! then ask for everything appended so far to be made durable and get a future that says when.
//! [`DurableLog`] is the only way a room adds to a document's history, so another backend (a
//! cluster's replicated log, a log that also keeps versions) plugs in here without touching
//! validation or fan-out in the room.
//!
//! [`StoreLog`] is today's implementation: appends go to the [`Store`] (sled), durability comes
//! from [`GroupCommit`], one flush shared by every room. What rewrites a document's stored form
//! rather than adding to it (compaction's snapshot, titles, quarantine, delete) and loading stay
//! on [`Store`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use weft_protocol::RoomName;

use crate::config::Durability;
use crate::store::commit::{CommitResult, GroupCommit};
use crate::store::{Store, StoreError};

/// Resolves once the updates appended before it was made are durable, or with why they
/// cannot be made so.
pub(crate) type Durable = Pin<Box<dyn Future<Output = CommitResult> + Send>>;

/// Where a room appends its document's updates, and how it learns they are durable.
pub(crate) trait DurableLog: Send + Sync + 'static {
    /// Appends one update to `doc`'s log and returns its sequence number (per document,
    /// increasing, never reused). It is not durable until a [`DurableLog::durable`] made after
    /// it resolves.
    fn append(&self, doc: &RoomName, update: &[u8]) -> Result<u64, StoreError>;

    /// Makes every update appended so far durable. `Strict`: a flush starts when the future is
    /// first polled, and it resolves with that flush's outcome. `Relaxed`: a flush comes within
    /// the configured interval, and the future resolves when one covering these updates has
    /// succeeded (a failed flush is retried, not reported).
    fn durable(&self, durability: Durability) -> Durable;

    /// Other writers' updates to `doc` logged after position `after`, in log order, while the
    /// receiver is kept; `None` when this node is the only writer (a single node).
    fn follow(&self, doc: &RoomName, after: u64) -> Option<mpsc::Receiver<Followed>> {
        let _ = (doc, after);
        None
    }
}

/// An entry of a followed log: another writer's update to apply, or only the position of one
/// of this node's own (already in the document), so the room knows how far its document
/// covers the log.
#[derive(Debug)]
pub struct Followed {
    /// Its position in the log.
    pub seq: u64,
    /// The update, when another node wrote it.
    pub update: Option<bytes::Bytes>,
}

/// Today's log: sled's update keys, made durable by the group commit.
pub(crate) struct StoreLog {
    store: Arc<dyn Store>,
    commit: GroupCommit,
}

impl StoreLog {
    /// A log appending to `store` and flushing through `commit`.
    pub(crate) fn new(store: Arc<dyn Store>, commit: GroupCommit) -> Self {
        Self { store, commit }
    }
}

impl DurableLog for StoreLog {
    fn append(&self, doc: &RoomName, update: &[u8]) -> Result<u64, StoreError> {
        self.store.append(doc, update)
    }

    fn durable(&self, durability: Durability) -> Durable {
        match durability {
            Durability::Strict => {
                let commit = self.commit.clone();
                Box::pin(async move { commit.commit().await })
            }
            Durability::Relaxed => {
                let flush = self.commit.mark_dirty();
                let mut flushed = self.commit.flushed();
                Box::pin(async move {
                    match flushed.wait_for(|done| *done >= flush).await {
                        Ok(_) => Ok(()),
                        Err(_) => Err(Arc::from("committer stopped")),
                    }
                })
            }
        }
    }

    fn follow(&self, doc: &RoomName, after: u64) -> Option<mpsc::Receiver<Followed>> {
        self.store.follow(doc, after)
    }
}
