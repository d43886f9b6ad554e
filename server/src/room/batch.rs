//! The end of a batch: one request to the durable log makes every write of the batch durable
//! (strict: awaited here; relaxed: the room says `saved` when the flush lands), then the API
//! replies are answered and every queued frame fans out, in order. A batch that cannot be made
//! durable acknowledges nothing: its members are told `not_saved` and closed, its replies fail
//! and the document is rebuilt from the store (see `failure.rs`).

use std::sync::atomic::Ordering;

use tracing::error;
use weft_protocol::Control;

use crate::config::Durability;
use crate::room::fanout::Target;
use crate::room::{ApiOpError, Room};
use crate::store::commit::CommitResult;
use crate::store::log::Durable;

/// Relaxed durability: what the room waits for to say `saved`, and the version it will name.
pub(super) type Unsaved = Option<(Durable, u64)>;

/// Waits for the flush `unsaved` names and gives its outcome and version; pends for ever when
/// there is none (the run loop polls it only when there is one).
pub(super) async fn saved(unsaved: &mut Unsaved) -> (CommitResult, u64) {
    match unsaved {
        Some((durable, version)) => (durable.as_mut().await, *version),
        None => std::future::pending().await,
    }
}

impl Room {
    /// Makes the batch durable, then sends everything it produced.
    pub(crate) async fn finish_batch(&mut self) {
        self.live
            .stored_bytes
            .store(self.stored_bytes, Ordering::Relaxed);
        let flushed = self.dirty;
        self.batch_bytes = 0;
        if self.relaxed_flush_lost() {
            return;
        }
        self.feed_mark();
        if self.dirty {
            self.dirty = false;
            if let Err(e) = self.make_durable().await {
                self.not_durable(&e);
                return;
            }
        }
        self.send_replies(None);
        self.release_acks();
        if flushed && self.ctx.config.durability == Durability::Strict {
            let saved = Control::Saved {
                version: self.last_seq,
            };
            self.queue_control(Target::ControlExcept(None), &saved);
        }
        if self.queued.is_empty() {
            return;
        }
        self.fan_out();
        if !self.queued.is_empty() {
            // Leaving slow members queued awareness removals and `left` notices.
            Box::pin(self.finish_batch()).await;
        }
        if self.compaction_due() && self.failed.is_none() {
            self.compact().await;
        }
    }

    /// Asks the durable log for the batch's writes: strict durability waits for them, relaxed
    /// notes what to wait for before saying `saved`.
    async fn make_durable(&mut self) -> CommitResult {
        let durability = self.ctx.config.durability;
        let durable = self.ctx.log.durable(durability);
        match durability {
            Durability::Strict => durable.await,
            Durability::Relaxed => {
                self.unsaved = Some((durable, self.last_seq));
                Ok(())
            }
        }
    }

    /// Relaxed durability: the flush covering the edits up to `version` is done (or failed for
    /// good); say `saved` to the members that listen.
    /// A flush that failed takes the path of a strict one: every member told and closed.
    pub(super) async fn on_saved(&mut self, (result, version): (CommitResult, u64)) {
        self.unsaved = None;
        match result {
            Ok(()) => {
                self.queue_control(Target::ControlExcept(None), &Control::Saved { version });
                self.finish_batch().await;
            }
            Err(e) => self.not_durable(&e),
        }
    }

    /// Relaxed durability: whether edits already broadcast wait for a flush the store can no
    /// longer make (it failed since, perhaps through another room's flush); if so they are
    /// treated as a failed flush. True when they were.
    fn relaxed_flush_lost(&mut self) -> bool {
        if self.unsaved.is_none() {
            return false;
        }
        let Some(reason) = self.store_failure() else {
            return false;
        };
        self.not_durable(&reason);
        true
    }

    /// The batch could not be made durable: nothing of it is acknowledged.
    fn not_durable(&mut self, e: &str) {
        error!(room = %self.name, error = %e, "flush failed; nothing acknowledged");
        self.drop_acks();
        self.writes_lost(e);
    }

    /// Answers the API requests of a batch: with their results once the batch is durable, or
    /// with `error` when it could not be made durable.
    pub(super) fn send_replies(&mut self, error: Option<ApiOpError>) {
        for (reply, result) in self.replies.drain(..) {
            let result = match &error {
                Some(e) => Err(e.clone()),
                None => result,
            };
            let _ = reply.send(result);
        }
    }
}
