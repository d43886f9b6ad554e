//! `/readyz`: whether the store can write, checked by writing, removing and flushing a probe
//! key. That costs a disk flush, and the endpoint needs no token, so the answer is cached for
//! [`FRESH`]: one probe runs at a time, callers that arrive meanwhile wait for it and share its
//! answer, and a load balancer (or anyone else) asking a thousand times a second costs one
//! flush a second.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::room::registry::RoomContext;

/// How long a probe's answer is given out before the next caller probes again.
pub(crate) const FRESH: Duration = Duration::from_secs(1);

/// The last probe's answer, behind the lock a probe holds while it runs.
#[derive(Default)]
pub(crate) struct Readiness {
    last: Mutex<Option<Probe>>,
}

/// One probe's answer and when it was taken.
struct Probe {
    at: Instant,
    result: Result<(), String>,
}

impl Readiness {
    /// Whether the store of `ctx` can write: the cached answer if it is fresh, else a new
    /// probe's. `Err` says why not.
    pub(crate) async fn check(&self, ctx: &RoomContext) -> Result<(), String> {
        // Held across the probe, so concurrent callers queue here and find its answer.
        let mut last = self.last.lock().await;
        if let Some(probe) = last.as_ref().filter(|p| p.at.elapsed() < FRESH) {
            return probe.result.clone();
        }
        let store = ctx.store.clone();
        ctx.metrics.readiness_probes.inc();
        let result = match tokio::task::spawn_blocking(move || store.check_writable()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        *last = Some(Probe {
            at: Instant::now(),
            result: result.clone(),
        });
        result
    }
}
