//! One endpoint's delivery task in a cluster: instead of walking this node's feed from a
//! cursor of its own, it takes events from the endpoint's queue shared by every node
//! ([`SharedQueue`]), so each event is delivered once by the cluster, and delivers each with
//! the same POST, retries and giving up as a single node ([`Delivery::deliver`]). While an
//! event is retried the node tells the queue it is still on it; an event this node stops
//! working on (shutdown) is released at once to another node, and one whose node died goes to
//! another node after the ack wait.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::config::Config;
use crate::feed::shared::{Job, SharedLog, SharedQueue};
use crate::webhooks::deliver::{Delivery, Outcome};
use crate::webhooks::lock;

/// How long one fetch waits for an event before the task looks at redeliveries and shutdown.
const FETCH_WAIT: Duration = Duration::from_secs(5);

/// The least time a node has to deliver an event (or report progress) before the queue hands
/// it to another node.
const MIN_ACK_WAIT: Duration = Duration::from_secs(30);

/// How long the queue waits on a node: well above one attempt's timeout.
pub(super) fn ack_wait(config: &Config) -> Duration {
    MIN_ACK_WAIT.max(Duration::from_millis(config.webhook_timeout_ms) * 3)
}

impl Delivery {
    fn ack_wait(&self) -> Duration {
        ack_wait(&self.config)
    }

    /// Delivers from the shared queue until shutdown.
    pub(super) async fn run_shared(self, shared: Arc<dyn SharedLog>) {
        info!(url = %self.endpoint.url, "webhook delivery started (cluster queue)");
        let url = self.endpoint.url.clone();
        let mut queue: Option<Box<dyn SharedQueue>> = None;
        loop {
            let rewind = lock(&self.endpoint.state).rewind.take();
            if let Some(since) = rewind {
                if let Err(e) = shared.rewind(url.clone(), since, self.ack_wait()).await {
                    warn!(%url, error = %e, "webhooks: redelivery failed");
                }
                let mut s = lock(&self.endpoint.state);
                s.retrying_since = None;
                s.cursor = since;
                drop(s);
                queue = None;
            }
            let q = match &mut queue {
                Some(q) => q,
                None => match shared.queue(url.clone(), self.ack_wait()).await {
                    Ok(q) => queue.insert(q),
                    Err(e) => {
                        warn!(%url, error = %e, "webhooks: cannot reach the cluster's queue");
                        if self.pause(Duration::from_secs(1)).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let next = tokio::select! {
                next = q.next(FETCH_WAIT) => next,
                _ = self.endpoint.rewound.notified() => continue,
                _ = self.shutdown.triggered() => return,
            };
            match next {
                Ok(Some(job)) => {
                    if self.finish(job).await {
                        return;
                    }
                }
                Ok(None) => self.note_position(q.as_mut()).await,
                Err(e) => {
                    warn!(%url, error = %e, "webhooks: fetching from the cluster's queue failed");
                    queue = None;
                    if self.pause(Duration::from_secs(1)).await {
                        return;
                    }
                }
            }
        }
    }

    /// Delivers `job`'s event, telling the queue while it takes long, and reports back; true
    /// when the server is stopping.
    async fn finish(&self, job: Job) -> bool {
        let seq = job.record.seq;
        let outcome = {
            let deliver = self.deliver(&job.record);
            tokio::pin!(deliver);
            let mut tick = tokio::time::interval(self.ack_wait() / 3);
            tick.tick().await;
            loop {
                tokio::select! {
                    outcome = &mut deliver => break outcome,
                    _ = tick.tick() => {
                        if let Err(e) = job.ack.progress().await {
                            warn!(url = %self.endpoint.url, seq, error = %e, "webhooks: cannot report progress");
                        }
                    }
                }
            }
        };
        match outcome {
            Outcome::Done => {
                if let Err(e) = job.ack.done().await {
                    // The queue hands it out again after the ack wait: at least once.
                    warn!(url = %self.endpoint.url, seq, error = %e, "webhooks: cannot acknowledge a delivery");
                }
                self.advance(seq);
                false
            }
            // The queue is replaced: the event comes again from it if it is after `since`.
            Outcome::Rewound => false,
            Outcome::Stopping => {
                let _ = job.ack.release().await;
                true
            }
        }
    }

    /// Shows where the cluster is with this endpoint (other nodes deliver too).
    async fn note_position(&self, q: &mut dyn SharedQueue) {
        if let Ok((floor, _)) = q.position().await {
            let mut s = lock(&self.endpoint.state);
            if s.rewind.is_none() {
                s.cursor = floor;
            }
        }
    }
}
