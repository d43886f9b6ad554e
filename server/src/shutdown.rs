//! Graceful shutdown as a value: one cancellation token every loop selects on, and one task
//! tracker that `serve` waits on so no socket or room task is cut off mid-write.
//!
//! axum's `with_graceful_shutdown` does not wait for tasks spawned in `on_upgrade`
//! (tokio-rs/axum#3003), so WebSocket and room tasks are tracked here instead.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared shutdown signal plus the tracker of every long-lived task.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Shutdown {
    /// A fresh, untriggered shutdown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything to stop: stop accepting, close sockets with 1001, flush rooms.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether shutdown has been asked for.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when shutdown is asked for.
    pub async fn triggered(&self) {
        self.token.cancelled().await
    }

    /// The token, for code that wants a child token or to select on it.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Spawns a task that shutdown will wait for.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(fut)
    }

    /// Wraps a future spawned elsewhere (axum spawns `on_upgrade`) so shutdown waits for it.
    pub fn track<F: std::future::Future>(
        &self,
        fut: F,
    ) -> impl std::future::Future<Output = F::Output> {
        self.tasks.track_future(fut)
    }

    /// Waits until every tracked task has finished. Call after [`Shutdown::trigger`].
    pub async fn wait_for_tasks(&self) {
        self.tasks.close();
        self.tasks.wait().await
    }
}
