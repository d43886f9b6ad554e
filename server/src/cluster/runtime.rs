//! The NATS client's own runtime: one worker thread that runs the connection, the publisher and
//! the followers. The [`Store`](crate::store::Store) trait is blocking (sled is), and callers
//! may sit on a single-threaded runtime; blocking such a thread on a future that needs that same
//! thread would never finish. Running NATS on a runtime of its own makes a blocking call a plain
//! wait on a channel, bounded by a deadline.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};

/// A call on the NATS runtime did not finish within its deadline.
#[derive(Debug, thiserror::Error)]
#[error("NATS did not answer within {0:?}")]
pub(crate) struct TimedOut(pub(crate) Duration);

/// The runtime the NATS client lives on; shut down (without waiting) when dropped.
pub(crate) struct NatsRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl NatsRuntime {
    /// Starts the runtime's worker thread.
    pub(crate) fn start() -> std::io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weft-nats")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Self {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Where tasks of the NATS client are spawned.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `fut` on the NATS runtime and blocks the calling thread until it finishes, for at
    /// most `deadline`.
    pub(crate) fn call<T: Send + 'static>(
        &self,
        deadline: Duration,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, TimedOut> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.handle.spawn(async move {
            if let Ok(out) = tokio::time::timeout(deadline, fut).await {
                let _ = tx.send(out);
            }
        });
        // A little past the deadline: the task itself gives up at it, and then drops `tx`.
        rx.recv_timeout(deadline + Duration::from_millis(250))
            .map_err(|_| TimedOut(deadline))
    }
}

impl Drop for NatsRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Dropping a runtime waits for its tasks, which is refused inside another runtime.
            rt.shutdown_background();
        }
    }
}
