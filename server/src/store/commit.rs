//! Group commit: one store flush covers every write that arrived while the previous flush ran,
//! across all rooms, so the fsync cost is shared instead of paid per keystroke.
//!
//! In strict durability a room awaits [`GroupCommit::commit`] before it broadcasts. In relaxed
//! durability it calls [`GroupCommit::mark_dirty`] and the committer flushes within the
//! configured interval.
//!
//! No wait here is unbounded: [`Store::flush`] returns within the store's flush deadline, with
//! [`StoreError::Failed`](crate::store::StoreError::Failed) when the flush failed or missed it,
//! and at once after that; every waiter of that flush gets the same error.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::error;

use crate::store::Store;

/// Outcome of a flush, shared by every waiter of that flush.
pub(crate) type CommitResult = Result<(), Arc<str>>;

type Waiter = oneshot::Sender<CommitResult>;

/// Handle to the committer task.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    tx: mpsc::UnboundedSender<Waiter>,
    dirty: Arc<AtomicBool>,
    /// Number of the last flush that started; flushes are numbered from 1.
    started: Arc<AtomicU64>,
    /// Number of the last flush that succeeded, for relaxed rooms waiting to say `saved`.
    done: watch::Receiver<u64>,
}

impl GroupCommit {
    /// Starts the committer task for `store`; in relaxed mode it also flushes dirty data every
    /// `relaxed_interval`.
    pub(crate) fn start(
        store: Arc<dyn Store>,
        relaxed_interval: Duration,
        on_flush: impl Fn(Duration) + Send + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let dirty = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicU64::new(0));
        let (done_tx, done) = watch::channel(0);
        let task = Committer {
            store,
            rx,
            dirty: dirty.clone(),
            started: started.clone(),
            done: done_tx,
            relaxed_interval,
            on_flush: Box::new(on_flush),
            last_error: None,
        };
        // Not tracked by the shutdown tracker on purpose: rooms flush through it while they shut
        // down, so it must outlive them; it ends when the last handle is dropped.
        tokio::spawn(task.run());
        Self {
            tx,
            dirty,
            started,
            done,
        }
    }

    /// Waits until everything written to the store before this call is durable.
    pub(crate) async fn commit(&self) -> CommitResult {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(tx)
            .map_err(|_| Arc::<str>::from("committer stopped"))?;
        rx.await
            .unwrap_or_else(|_| Err(Arc::from("committer stopped")))
    }

    /// Notes unflushed writes, for relaxed durability: they are flushed within the interval.
    /// Returns the number of the first flush that will cover them (see [`GroupCommit::flushed`]).
    pub(crate) fn mark_dirty(&self) -> u64 {
        // Read after the writes: any flush numbered higher starts later, so it covers them.
        let target = self.started.load(Ordering::Acquire) + 1;
        self.dirty.store(true, Ordering::Release);
        target
    }

    /// Follows the number of the last successful flush.
    pub(crate) fn flushed(&self) -> watch::Receiver<u64> {
        self.done.clone()
    }
}

struct Committer {
    store: Arc<dyn Store>,
    rx: mpsc::UnboundedReceiver<Waiter>,
    dirty: Arc<AtomicBool>,
    started: Arc<AtomicU64>,
    done: watch::Sender<u64>,
    relaxed_interval: Duration,
    on_flush: Box<dyn Fn(Duration) + Send>,
    /// The last flush error logged: a failed store fails every flush, logged once.
    last_error: Option<Arc<str>>,
}

impl Committer {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(self.relaxed_interval.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut waiters = Vec::new();
            tokio::select! {
                first = self.rx.recv() => match first {
                    Some(w) => waiters.push(w),
                    None => break,
                },
                _ = tick.tick() => {
                    if !self.dirty.load(Ordering::Acquire) {
                        continue;
                    }
                }
            }
            // Everyone who asked while we were busy rides on this one flush.
            while let Ok(w) = self.rx.try_recv() {
                waiters.push(w);
            }
            let result = self.flush().await;
            for w in waiters {
                let _ = w.send(result.clone());
            }
        }
        // Last handle gone (shutdown): make sure nothing relaxed is left behind.
        if self.dirty.load(Ordering::Acquire) {
            let _ = self.flush().await;
        }
    }

    async fn flush(&mut self) -> CommitResult {
        self.dirty.store(false, Ordering::Release);
        let number = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        let store = self.store.clone();
        let started = Instant::now();
        let result = match tokio::task::spawn_blocking(move || store.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Arc::from(e.to_string())),
            Err(e) => Err(Arc::from(format!("flush task failed: {e}"))),
        };
        (self.on_flush)(started.elapsed());
        match &result {
            Ok(()) => {
                self.done.send_replace(number);
            }
            Err(e) => {
                if self.last_error.as_ref() != Some(e) {
                    error!(error = %e, "store flush failed: edits are not durable");
                    self.last_error = Some(e.clone());
                }
                self.dirty.store(true, Ordering::Release);
            }
        }
        result
    }
}
