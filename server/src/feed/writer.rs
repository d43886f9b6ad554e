//! The feed's side of a cluster's shared log ([`super::shared`]): the writer appends what this
//! node's rooms handed over, one event after the other (so a document's events stay in the
//! order of its changes), and settles their marks once the log has stored them; the mirror
//! records what the log holds (every node's events, numbered by the log) into the tree readers
//! read, and announces it.
//!
//! The marks stay in the node's own tree, which the cluster's store flushes with every flush
//! (before it acknowledges edits): a node that dies before appending what its marks owe
//! appends it when it starts again ([`Feed::recover`]).

use std::sync::Arc;

use crate::feed::event::{rfc3339, Record};
use crate::feed::shared::{Outgoing, SharedLog};
use crate::feed::{lock, Feed};
use crate::store::{now_ms, StoreError};

impl Feed {
    /// In a cluster, the shared log this feed appends to.
    pub(crate) fn shared(&self) -> Option<Arc<dyn SharedLog>> {
        self.shared.clone()
    }

    /// Appends whatever was handed over to `shared`, in order, and settles the marks of what
    /// landed. Returns `None`: readers see the events once the mirror has them.
    ///
    /// # Errors
    /// When an append fails: it and everything after it stay queued, with their ids, so the
    /// retry stores an event whose first try did land only once.
    pub(super) async fn append_shared(
        &self,
        shared: &dyn SharedLog,
    ) -> Result<Option<u64>, StoreError> {
        let mut counter = self.next.lock().await;
        let mut items = std::mem::take(&mut *lock(&self.queue)).items;
        let at = rfc3339(now_ms());
        let mut done = 0;
        let mut failed = None;
        for p in items.iter_mut() {
            if let Some(event) = &p.event {
                let id = p.id.get_or_insert_with(|| {
                    *counter += 1;
                    format!("{}-{}", self.origin, *counter)
                });
                let out = Outgoing {
                    id: id.clone(),
                    at: at.clone(),
                    event: event.clone(),
                };
                if let Err(e) = shared.append(out).await {
                    failed = Some(e);
                    break;
                }
            }
            done += 1;
        }
        let rest = items.split_off(done);
        let settles: Vec<(u64, String)> = items.into_iter().flat_map(|p| p.settles).collect();
        let settled = self.marks.settle(&settles);
        if let Some(e) = failed {
            self.requeue(rest);
            return Err(StoreError::Unavailable(
                format!("appending to the cluster's change feed failed: {e}").into(),
            ));
        }
        settled.map(|()| None)
    }

    /// The seq the mirror of the shared log expects next.
    pub(crate) fn mirror_next(&self) -> Result<u64, StoreError> {
        self.log.next_seq()
    }

    /// Records `records` (from the shared log, in order) into the mirror and lets readers see
    /// them.
    ///
    /// # Errors
    /// When the tree refuses them.
    pub(crate) fn mirrored(&self, records: &[Record]) -> Result<(), StoreError> {
        let Some(last) = records.last().map(|r| r.seq) else {
            return Ok(());
        };
        self.log.store(records)?;
        self.head.send_replace(last);
        Ok(())
    }

    /// The shared log no longer keeps what the mirror misses before `first` (the mirror was
    /// away longer than the events are kept): a `since` before it is refused as expired.
    ///
    /// # Errors
    /// When the tree refuses the note.
    pub(crate) fn mirror_missed(&self, first: u64) -> Result<(), StoreError> {
        self.log.skip_to(first)
    }
}
