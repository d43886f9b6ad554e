//! Updates other nodes of a cluster wrote to this room's document, delivered by the log's
//! follower (`ctx.log.follow`). They were validated and made durable where they were written:
//! here they are applied and broadcast to this node's members, never logged again. The
//! follower also reports the positions of this node's own updates, so `last_seq` is how far the
//! document in memory covers the log (what a compaction here may claim to cover).

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{error, warn};
use weft_protocol::{encode_sync, SYNC_UPDATE};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, Transact, Update};

use crate::room::fanout::Target;
use crate::room::yrs_guards::{contain, Panicked};
use crate::room::{Room, MAX_BATCH};
use crate::store::log::Followed;

/// The next entry of `follow`, or never when there is no follower (a single node) or it ended.
pub(super) async fn next_followed(follow: &mut Option<mpsc::Receiver<Followed>>) -> Followed {
    match follow {
        Some(rx) => match rx.recv().await {
            Some(f) => f,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

impl Room {
    /// Starts following the document's log from the position the document covers.
    pub(super) fn start_following(&mut self) {
        self.follow = self.ctx.log.follow(&self.name, self.last_seq);
    }

    /// Applies `first` and whatever else the follower has ready (up to a batch).
    pub(super) fn on_followed(&mut self, first: Followed) {
        self.apply_followed(first);
        for _ in 1..MAX_BATCH {
            let Some(next) = self.follow.as_mut().and_then(|rx| rx.try_recv().ok()) else {
                break;
            };
            self.apply_followed(next);
        }
    }

    fn apply_followed(&mut self, followed: Followed) {
        self.last_seq = self.last_seq.max(followed.seq);
        let Some(update) = followed.update else {
            return;
        };
        self.full_state = None;
        match apply_replica(&self.doc, &update) {
            Ok(Ok(true)) => {
                self.log_len += 1;
                self.log_bytes += update.len() as u64;
                self.stored_bytes += update.len() as u64;
                self.title_stale = true;
                self.exists = true;
                self.versions_saw(&update);
                self.queued
                    .push((Target::All, Bytes::from(encode_sync(SYNC_UPDATE, &update))));
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                warn!(room = %self.name, seq = followed.seq, error = %e,
                    "an update from another node does not apply; skipped");
            }
            Err(Panicked) => {
                error!(room = %self.name, seq = followed.seq,
                    "yrs panicked on an update from another node; reloading the document");
                self.reload();
            }
        }
    }
}

/// Applies an update another node logged; whether it changed the document (or is held for
/// missing dependencies, which the log will bring).
fn apply_replica(doc: &Doc, update: &[u8]) -> Result<Result<bool, String>, Panicked> {
    contain(|| {
        let decoded = Update::decode_v1(update).map_err(|e| e.to_string())?;
        let mut txn = doc.transact_mut();
        txn.apply_update(decoded).map_err(|e| e.to_string())?;
        let store = txn.store();
        let pending = store.pending_update().is_some() || store.pending_ds().is_some();
        Ok(txn.has_changes() || pending)
    })
}
