//! The store's flush thread, and the deadline on waiting for it.
//!
//! sled's flush can block forever (a failed blob write in sled 0.34.7 leaves its log waiting on
//! a writer that never finishes). So no caller runs the flush itself: one thread of the store's
//! own does, and callers wait for it at most the flush deadline. A flush that fails or misses
//! the deadline fails the store ([`Health`]); the thread may stay stuck, but nobody waits on it
//! again, and it holds no lock that reads or the metadata cache need.
//!
//! Flushes coalesce: a flush covers every request made before it started, so many callers
//! (the group commit, readiness probes, shutdown) share one.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::health::{describe, Health};
use super::lock;
use super::StoreError;

/// How long a caller waits for a flush by default before the store is declared failed.
pub(super) const FLUSH_DEADLINE: Duration = Duration::from_secs(10);

/// The work of one flush: make everything written so far durable.
pub(super) type FlushWork = Box<dyn FnMut() -> Result<(), StoreError> + Send>;

/// Handle to the flush thread.
pub(super) struct Flusher {
    /// State shared with the thread.
    shared: Arc<Shared>,
    /// The store's health, failed by a flush error or a missed deadline.
    health: Arc<Health>,
    /// How long a caller waits.
    deadline: Duration,
    /// The thread, joined on a clean stop.
    thread: Option<JoinHandle<()>>,
}

/// What callers and the thread share.
struct Shared {
    /// Request and completion counters, under the lock the condition variables use.
    state: Mutex<State>,
    /// Wakes the thread when a flush is requested or it must stop.
    work: Condvar,
    /// Wakes callers when a flush ends.
    done: Condvar,
    /// Copy of `State::requested`, readable without the lock.
    requested: AtomicU64,
    /// Copy of `State::completed`, readable without the lock.
    completed: AtomicU64,
}

/// Flush numbering: a request takes the next number; a flush covers every number requested
/// before it started.
#[derive(Default)]
struct State {
    /// Highest number requested.
    requested: u64,
    /// Highest number a started flush covers.
    started: u64,
    /// Highest number a successful flush covered.
    completed: u64,
    /// The store is closing: the thread ends.
    stop: bool,
}

impl Flusher {
    /// Starts the flush thread running `work`; callers wait at most `deadline`.
    pub(super) fn start(
        work: FlushWork,
        health: Arc<Health>,
        deadline: Duration,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            requested: AtomicU64::new(0),
            completed: AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("weft-store-flush".into())
            .spawn({
                let shared = shared.clone();
                let health = health.clone();
                move || run(&shared, &health, work)
            })?;
        Ok(Self {
            shared,
            health,
            deadline,
            thread: Some(thread),
        })
    }

    /// Waits until a flush that started after this call has succeeded, for at most the
    /// deadline.
    ///
    /// # Errors
    /// [`StoreError::Failed`] when the store has failed, the flush failed, or the deadline
    /// passed (which fails the store).
    pub(super) fn flush(&self) -> Result<(), StoreError> {
        self.health.check()?;
        let deadline = Instant::now() + self.deadline;
        let mut state = lock(&self.shared.state);
        state.requested += 1;
        let ticket = state.requested;
        self.shared.requested.store(ticket, Ordering::SeqCst);
        self.shared.work.notify_one();
        loop {
            if state.completed >= ticket {
                return Ok(());
            }
            self.health.check()?;
            let now = Instant::now();
            if now >= deadline {
                drop(state);
                return Err(self.health.fail(format!(
                    "flush timed out after {} s",
                    self.deadline.as_secs_f32()
                )));
            }
            state = self
                .shared
                .done
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// The number the next flush request takes: a write made now is durable once
    /// [`Flusher::completed`] reaches it.
    pub(super) fn next_number(&self) -> u64 {
        self.shared.requested.load(Ordering::SeqCst) + 1
    }

    /// The highest request number a successful flush has covered.
    pub(super) fn completed(&self) -> u64 {
        self.shared.completed.load(Ordering::SeqCst)
    }

    /// Stops the thread; waits for it to end only when `join` (a thread stuck in sled would
    /// never end).
    pub(super) fn stop(&mut self, join: bool) {
        lock(&self.shared.state).stop = true;
        self.shared.work.notify_all();
        if let Some(thread) = self.thread.take().filter(|_| join) {
            if thread.join().is_err() {
                tracing::error!("the store's flush thread panicked");
            }
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop(false);
    }
}

/// The flush thread: runs one flush per batch of requests until stopped.
fn run(shared: &Shared, health: &Health, mut work: FlushWork) {
    loop {
        let target = {
            let mut state = lock(&shared.state);
            while state.requested == state.started && !state.stop {
                state = shared
                    .work
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if state.stop {
                return;
            }
            state.started = state.requested;
            state.started
        };
        // After a failure nothing is flushed: sled's state is no longer trusted. A panic inside
        // sled fails the store now rather than leaving callers to their deadline.
        let result = health.check().and_then(|()| {
            std::panic::catch_unwind(AssertUnwindSafe(&mut work))
                .unwrap_or_else(|_| Err(StoreError::Failed(Arc::from("flush panicked"))))
        });
        let mut state = lock(&shared.state);
        match result {
            Ok(()) => {
                state.completed = target;
                shared.completed.store(target, Ordering::SeqCst);
            }
            Err(e) => {
                health.fail(reason(&e));
            }
        }
        drop(state);
        shared.done.notify_all();
    }
}

/// The failure reason a flush error gives the store.
fn reason(err: &StoreError) -> String {
    match err {
        StoreError::Io(e) => describe(e),
        StoreError::Failed(reason) => reason.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::health::DirIdentity;
    use std::sync::mpsc;

    fn health() -> (tempfile::TempDir, Arc<Health>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = DirIdentity::of(dir.path(), &[]).expect("identity");
        (dir, Arc::new(Health::new(identity)))
    }

    /// Flushes run on the thread, coalesce, and count as completed.
    #[test]
    fn flushes_complete_and_number() {
        let (_dir, health) = health();
        let runs = Arc::new(AtomicU64::new(0));
        let counted = runs.clone();
        let work: FlushWork = Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let mut flusher = Flusher::start(work, health, Duration::from_secs(5)).expect("start");
        assert_eq!(flusher.next_number(), 1);
        flusher.flush().expect("flush");
        flusher.flush().expect("flush");
        assert_eq!(flusher.completed(), 2);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        flusher.stop(true);
    }

    /// A flush that hangs fails the store at the deadline; later flushes fail at once and the
    /// stuck thread is left behind.
    #[test]
    fn a_hung_flush_fails_the_store_at_the_deadline() {
        let (_dir, health) = health();
        let (release, hang) = mpsc::channel::<()>();
        let hang = Mutex::new(hang);
        let work: FlushWork = Box::new(move || {
            let _ = lock(&hang).recv();
            Ok(())
        });
        let mut flusher =
            Flusher::start(work, health.clone(), Duration::from_millis(200)).expect("start");
        let err = flusher.flush().expect_err("must time out");
        assert!(
            matches!(&err, StoreError::Failed(r) if r.contains("timed out")),
            "{err}"
        );
        assert!(health.check().is_err());
        let again = flusher.flush().expect_err("failed for good");
        assert_eq!(again.to_string(), err.to_string());
        flusher.stop(false);
        drop(release);
    }

    /// A flush that panics fails the store at once.
    #[test]
    fn a_panicking_flush_fails_the_store() {
        let (_dir, health) = health();
        let work: FlushWork = Box::new(|| panic!("sled bug"));
        let mut flusher =
            Flusher::start(work, health.clone(), Duration::from_secs(60)).expect("start");
        let err = flusher.flush().expect_err("must fail");
        assert!(err.to_string().contains("flush panicked"), "{err}");
        flusher.stop(true);
    }

    /// A flush error fails the store with its reason.
    #[test]
    fn a_failed_flush_fails_the_store() {
        let (_dir, health) = health();
        let work: FlushWork = Box::new(|| {
            Err(StoreError::Io(sled::Error::Io(
                std::io::Error::from_raw_os_error(28),
            )))
        });
        let mut flusher =
            Flusher::start(work, health.clone(), Duration::from_secs(5)).expect("start");
        let err = flusher.flush().expect_err("must fail");
        assert!(err.to_string().contains("disk full (ENOSPC)"), "{err}");
        assert_eq!(flusher.completed(), 0);
        flusher.stop(true);
    }
}
