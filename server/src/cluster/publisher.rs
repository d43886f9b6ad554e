//! Publishing updates to the cluster's log. A room appends; the update is queued here and
//! published in order with a window of acknowledgements outstanding; a flush waits until
//! JetStream has acknowledged everything appended before it (with replicas, a quorum of NATS
//! servers has it).
//!
//! Nothing appended is dropped: a publish that fails or is not acknowledged in time (NATS gone,
//! a stream leader being elected) is retried, with everything queued after it, under the same
//! message id, so JetStream stores each update once even when a first try did land. While that
//! lasts, flushes fail (nothing is acknowledged to clients) and [`Publisher::health`] says why.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use async_nats::jetstream::context::PublishAckFuture;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::cluster::connect::Nats;
use crate::cluster::names::NODE_HEADER;

/// Publishes in flight before the oldest one's acknowledgement is awaited.
const WINDOW: usize = 256;

/// Most unacknowledged bytes kept for retry; appends beyond it are refused.
const MAX_BACKLOG: u64 = 512 * 1024 * 1024;

/// Pause before publishing again after a failure, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One update on its way to the log.
struct Outgoing {
    /// Its place among this node's appends, from 1.
    n: u64,
    subject: String,
    payload: Bytes,
}

/// What appenders and flushers share with the publishing task.
struct Shared {
    /// Appends queued so far.
    appended: AtomicU64,
    /// Bytes queued and not yet acknowledged.
    backlog: AtomicU64,
    /// Why the last publish failed, and since when publishes have been failing (cleared by
    /// the next acknowledgement).
    failing: Mutex<Option<(Instant, String)>>,
}

/// The queue of updates to publish, and how far JetStream has acknowledged it.
pub(crate) struct Publisher {
    /// Locked while an append takes its number and is queued, so numbers reach the queue in
    /// order and "acknowledged up to n" means every append up to n.
    tx: Mutex<mpsc::UnboundedSender<Outgoing>>,
    shared: Arc<Shared>,
    acked: watch::Receiver<u64>,
}

/// An append the publisher refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppendError {
    /// Too many bytes wait for NATS already.
    #[error("{0} bytes wait for NATS to acknowledge them; edits are refused until it catches up")]
    Backlog(u64),
    /// The publishing task has stopped (the node is shutting down).
    #[error("the NATS publisher stopped")]
    Stopped,
}

impl Publisher {
    /// Starts the publishing task on the current (NATS) runtime.
    pub(crate) fn start(nats: Arc<Nats>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (acked_tx, acked) = watch::channel(0);
        let shared = Arc::new(Shared {
            appended: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            failing: Mutex::new(None),
        });
        tokio::spawn(publish(nats, rx, acked_tx, shared.clone()));
        Self {
            tx: Mutex::new(tx),
            shared,
            acked,
        }
    }

    /// Queues `update` for `subject`; returns its place among this node's appends.
    pub(crate) fn append(&self, subject: String, update: &[u8]) -> Result<u64, AppendError> {
        let backlog = self.shared.backlog.load(Ordering::Relaxed);
        if backlog > MAX_BACKLOG {
            return Err(AppendError::Backlog(backlog));
        }
        let payload = Bytes::copy_from_slice(update);
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.shared.appended.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared
            .backlog
            .fetch_add(update.len() as u64, Ordering::Relaxed);
        tx.send(Outgoing {
            n,
            subject,
            payload,
        })
        .map_err(|_| AppendError::Stopped)?;
        Ok(n)
    }

    /// How many appends were queued so far: a flush made now waits for this many.
    pub(crate) fn appended(&self) -> u64 {
        self.shared.appended.load(Ordering::SeqCst)
    }

    /// A receiver of how many appends JetStream has acknowledged, in order.
    pub(crate) fn acked(&self) -> watch::Receiver<u64> {
        self.acked.clone()
    }

    /// Why publishing is failing and for how long, if it is.
    pub(crate) fn failing(&self) -> Option<(Duration, String)> {
        let failing = self
            .shared
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        failing
            .as_ref()
            .map(|(since, why)| (since.elapsed(), why.clone()))
    }
}

/// The publishing task: keeps up to [`WINDOW`] publishes in flight and acknowledges in order;
/// on a failure, publishes the failed update and everything after it again.
async fn publish(
    nats: Arc<Nats>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    acked: watch::Sender<u64>,
    shared: Arc<Shared>,
) {
    let mut window: VecDeque<(Outgoing, Option<PublishAckFuture>)> = VecDeque::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        if window.is_empty() {
            match rx.recv().await {
                Some(out) => window.push_back((out, None)),
                None => return,
            }
        }
        while window.len() < WINDOW {
            match rx.try_recv() {
                Ok(out) => window.push_back((out, None)),
                Err(_) => break,
            }
        }
        let mut failed = None;
        for (out, ack) in window.iter_mut().filter(|(_, ack)| ack.is_none()) {
            match send(&nats, out).await {
                Ok(future) => *ack = Some(future),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none() {
            failed = settle(&mut window, &acked, &shared).await.err();
        }
        match failed {
            None => backoff = FIRST_BACKOFF,
            Some(why) => {
                note_failure(&shared, why);
                // Everything not yet acknowledged goes out again, in order, under its id.
                for (_, ack) in window.iter_mut() {
                    *ack = None;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Publishes `out` with this node's header and a message id JetStream deduplicates on.
async fn send(nats: &Nats, out: &Outgoing) -> Result<PublishAckFuture, String> {
    let mut headers = HeaderMap::new();
    headers.insert(NODE_HEADER, nats.node.as_str());
    headers.insert(NATS_MESSAGE_ID, format!("{}-{}", nats.node, out.n).as_str());
    nats.js
        .publish_with_headers(out.subject.clone(), headers, out.payload.clone())
        .await
        .map_err(|e| format!("publish to NATS failed: {e}"))
}

/// Awaits the acknowledgements of the window in order, popping each acknowledged update;
/// stops at the first failure.
async fn settle(
    window: &mut VecDeque<(Outgoing, Option<PublishAckFuture>)>,
    acked: &watch::Sender<u64>,
    shared: &Shared,
) -> Result<(), String> {
    while let Some((_, ack)) = window.front_mut() {
        let Some(future) = ack.take() else {
            return Ok(());
        };
        match future.await {
            Ok(_) => {
                let Some((out, _)) = window.pop_front() else {
                    return Ok(());
                };
                shared
                    .backlog
                    .fetch_sub(out.payload.len() as u64, Ordering::Relaxed);
                acked.send_replace(out.n);
                recovered(shared);
            }
            Err(e) => return Err(format!("NATS did not acknowledge an update: {e}")),
        }
    }
    Ok(())
}

fn note_failure(shared: &Shared, why: String) {
    let mut failing = shared.failing.lock().unwrap_or_else(|p| p.into_inner());
    if failing.is_none() {
        warn!(error = %why, "publishing to NATS fails; retrying, nothing is acknowledged meanwhile");
    }
    let since = failing
        .as_ref()
        .map_or_else(Instant::now, |(since, _)| *since);
    *failing = Some((since, why));
}

fn recovered(shared: &Shared) {
    let mut failing = shared.failing.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((since, _)) = failing.take() {
        info!(after = ?since.elapsed(), "publishing to NATS works again");
    }
}
