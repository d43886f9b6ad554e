//! Fault injection for crash-containment tests, compiled only with the `fault-injection` cargo
//! feature (never in a normal build): no input is known to crash yrs 0.28 outright, so tests
//! make the apply path abort the process on demand, or stop a load where they want to kill it.
//!
//! `WEFT_FAULT_ABORT_ON_UPDATE_CONTAINING=<hex>`: any update (a member's, the API's, or a stored
//! one replayed at load) whose bytes contain that byte string aborts the process right before
//! yrs sees it, after its in-flight mark is written: exactly where a crash inside yrs would hit.
//!
//! `WEFT_FAULT_PAUSE_LOAD=<n>`: the n-th stored entry (snapshot or update, counted from 1 over
//! every load of this process) stops under its in-flight mark, after printing
//! [`PAUSED`] to stderr, and never goes on: a test waits for that line and kills the process
//! there, as an unrelated SIGKILL or the OOM killer would in the middle of a load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable holding the hex marker.
const ENV: &str = "WEFT_FAULT_ABORT_ON_UPDATE_CONTAINING";
/// The environment variable holding the number of the stored entry to stop at.
const PAUSE_ENV: &str = "WEFT_FAULT_PAUSE_LOAD";
/// What a paused load prints (followed by the entry's number): the test's cue to kill.
pub(crate) const PAUSED: &str = "fault injection: load paused under the in-flight mark of entry";

/// Aborts the process if `update` contains the configured marker.
pub(crate) fn before_apply(update: &[u8]) {
    static MARKER: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    let marker = MARKER.get_or_init(|| {
        let hex = std::env::var(ENV).ok()?;
        let marker = parse_hex(hex.trim());
        if marker.is_none() {
            tracing::error!("{ENV} is not an even-length hex string; fault injection is off");
        }
        marker
    });
    let Some(marker) = marker.as_deref().filter(|m| !m.is_empty()) else {
        return;
    };
    if update.windows(marker.len()).any(|w| w == marker) {
        eprintln!(
            "fault injection: update of {} bytes contains the marker; aborting",
            update.len()
        );
        std::process::abort();
    }
}

/// Counts a stored entry about to be replayed (its mark already written) and blocks this thread
/// for good if it is the one `WEFT_FAULT_PAUSE_LOAD` names; then [`before_apply`].
pub(crate) fn before_replay(bytes: &[u8]) {
    static PAUSE_AT: OnceLock<Option<u64>> = OnceLock::new();
    static REPLAYED: AtomicU64 = AtomicU64::new(0);
    let pause_at = *PAUSE_AT.get_or_init(|| {
        let n = std::env::var(PAUSE_ENV).ok()?;
        let n = n.trim().parse().ok();
        if n.is_none() {
            tracing::error!("{PAUSE_ENV} is not a number; no load pauses");
        }
        n
    });
    let entry = REPLAYED.fetch_add(1, Ordering::SeqCst) + 1;
    if pause_at == Some(entry) {
        eprintln!("{PAUSED} {entry}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    before_apply(bytes);
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 == 1 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
