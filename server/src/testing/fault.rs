//! Fault injection for crash-containment tests, compiled only with the `fault-injection` cargo
//! feature (never in a normal build): no input is known to crash yrs 0.28 outright, so tests
//! make the apply path abort the process on demand.
//!
//! `WEFT_FAULT_ABORT_ON_UPDATE_CONTAINING=<hex>`: any update (a member's, the API's, or a stored
//! one replayed at load) whose bytes contain that byte string aborts the process right before
//! yrs sees it, after its in-flight mark is written: exactly where a crash inside yrs would hit.

use std::sync::OnceLock;

/// The environment variable holding the hex marker.
const ENV: &str = "WEFT_FAULT_ABORT_ON_UPDATE_CONTAINING";

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

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 == 1 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
