//! The log of refused requests and WebSockets, kept readable under a flood: the same refusal
//! (same code, same client address) is logged once per [`INTERVAL`], and the next line for it
//! says how many were not logged in between ("(37 more since)"). A client reconnecting
//! hundreds of times a second then costs a line every ten seconds, not hundreds a second.
//! Every refusal log line in `http` goes through [`RefusalLog::refused`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn, Level};

use crate::error::ApiError;
use crate::http::extract::ClientAddr;

/// How long identical refusals stay quiet after one was logged.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

/// Distinct (code, address) pairs remembered at once; beyond it (many addresses refused within
/// one interval) further refusals are only counted, and the count is logged at the next sweep.
const MAX_KEYS: usize = 10_000;

/// Logs a line at `level` (INFO or WARN; anything else is WARN).
macro_rules! at_level {
    ($level:expr, $($arg:tt)+) => {
        if $level == Level::INFO {
            info!($($arg)+)
        } else {
            warn!($($arg)+)
        }
    };
}

/// When each (code, address) pair was last logged and how many were not logged since.
pub(crate) struct RefusalLog {
    state: Mutex<State>,
}

/// The table behind [`RefusalLog`].
struct State {
    seen: HashMap<(&'static str, IpAddr), Seen>,
    /// Refusals not logged because the table was full.
    overflow: u64,
    swept: Instant,
}

/// One pair's last line.
struct Seen {
    logged: Instant,
    suppressed: u64,
    level: Level,
}

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Log it, saying how many identical ones were not logged since the previous line.
    Log { more: u64 },
    /// Stay quiet: an identical one was logged less than [`INTERVAL`] ago.
    Quiet,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                seen: HashMap::new(),
                overflow: 0,
                swept: Instant::now(),
            }),
        }
    }
}

impl RefusalLog {
    /// Logs (or counts) that `what` (`"WebSocket"`, `"request"`) from `client` for `target` (a
    /// room or a path) was refused with `e`.
    pub(crate) fn refused(
        &self,
        level: Level,
        what: &'static str,
        client: ClientAddr,
        target: &str,
        e: &ApiError,
    ) {
        let Verdict::Log { more } = self.verdict(e.code, client.ip(), level, Instant::now()) else {
            return;
        };
        let since = if more > 0 {
            format!(" ({more} more since)")
        } else {
            String::new()
        };
        at_level!(
            level,
            peer = %client,
            target,
            code = e.code,
            reason = %e.message,
            "{what} refused{since}"
        );
    }

    /// Decides whether a refusal with `code` for `ip` at `now` is logged.
    fn verdict(&self, code: &'static str, ip: IpAddr, level: Level, now: Instant) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.sweep(now);
        let full = state.seen.len() >= MAX_KEYS;
        match state.seen.get_mut(&(code, ip)) {
            Some(seen) if now.duration_since(seen.logged) < INTERVAL => {
                seen.suppressed += 1;
                Verdict::Quiet
            }
            Some(seen) => {
                let more = std::mem::take(&mut seen.suppressed);
                seen.logged = now;
                Verdict::Log { more }
            }
            None if full => {
                state.overflow += 1;
                Verdict::Quiet
            }
            None => {
                let seen = Seen {
                    logged: now,
                    suppressed: 0,
                    level,
                };
                state.seen.insert((code, ip), seen);
                Verdict::Log { more: 0 }
            }
        }
    }
}

impl State {
    /// Once per [`INTERVAL`]: forgets pairs not logged for two intervals (one refused again
    /// after its first interval is logged then, with its count), logging the counts of those
    /// refused meanwhile, so a burst that stopped is still accounted for.
    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.swept) < INTERVAL {
            return;
        }
        self.swept = now;
        self.seen.retain(|(code, ip), seen| {
            if now.duration_since(seen.logged) < INTERVAL * 2 {
                return true;
            }
            if seen.suppressed > 0 {
                let more = seen.suppressed;
                at_level!(seen.level, peer = %ip, code, "{more} more refused since");
            }
            false
        });
        if self.overflow > 0 {
            let more = std::mem::take(&mut self.overflow);
            warn!("{more} more refusals from other addresses, not logged one by one");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first refusal is logged; identical ones within the interval are counted, and the
    /// first one after it is logged with that count. Another code or address has its own.
    #[test]
    fn identical_refusals_are_logged_once_per_interval() {
        let log = RefusalLog::default();
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let warn = Level::WARN;
        assert_eq!(log.verdict("x", a, warn, at(0)), Verdict::Log { more: 0 });
        for s in 0..5 {
            assert_eq!(log.verdict("x", a, warn, at(s)), Verdict::Quiet);
        }
        assert_eq!(log.verdict("y", a, warn, at(1)), Verdict::Log { more: 0 });
        assert_eq!(log.verdict("x", b, warn, at(1)), Verdict::Log { more: 0 });
        assert_eq!(log.verdict("x", a, warn, at(10)), Verdict::Log { more: 5 });
        assert_eq!(log.verdict("x", a, warn, at(11)), Verdict::Quiet);
    }

    /// Pairs quiet for an interval are forgotten at the next sweep, so the table holds recent
    /// refusals only; a forgotten pair starts over.
    #[test]
    fn quiet_pairs_are_forgotten() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        let warn = Level::WARN;
        for i in 0..100u8 {
            log.verdict("x", [10, 0, 0, i].into(), warn, t0);
        }
        let later = t0 + INTERVAL * 3;
        let ip: IpAddr = [10, 0, 0, 200].into();
        assert_eq!(log.verdict("x", ip, warn, later), Verdict::Log { more: 0 });
        let state = log.state.lock().expect("lock");
        assert_eq!(state.seen.len(), 1);
    }
}
