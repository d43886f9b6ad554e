//! Log lines about connections that a client can repeat at will, kept readable under a flood:
//! a client speaking another protocol at `/ws/{doc}` (a Hocuspocus provider) is closed with
//! 1007 and reconnects hundreds of times a second. The same (close code, client address) is
//! logged once per [`INTERVAL`], and the next line for it says how many were not logged in
//! between. The HTTP layer's refusals have their own log of the same kind.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use weft_protocol::CloseCode;

/// How long identical lines stay quiet after one was logged.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

/// Pairs remembered at once; past it the table is cleared (a flood from many addresses then
/// logs a line per address and interval, still bounded).
const MAX_KEYS: usize = 10_000;

/// When each (code, address) was last logged, and how many were not logged since.
#[derive(Default)]
struct Table {
    seen: HashMap<(CloseCode, IpAddr), (Instant, u64)>,
}

/// Whether to log an ending with `code` for a client at `ip` now: `Some(n)` with the number of
/// identical endings not logged since the last line, `None` to stay quiet.
pub(crate) fn should_log(code: CloseCode, ip: IpAddr) -> Option<u64> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    let mut table = TABLE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    if table.seen.len() >= MAX_KEYS {
        table.seen.clear();
    }
    match table.seen.get_mut(&(code, ip)) {
        Some((logged, suppressed)) if now.duration_since(*logged) < INTERVAL => {
            *suppressed += 1;
            None
        }
        Some((logged, suppressed)) => {
            *logged = now;
            Some(std::mem::take(suppressed))
        }
        None => {
            table.seen.insert((code, ip), (now, 0));
            Some(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first ending of a kind is logged, repeats within the interval are counted, and
    /// another code or address is logged on its own.
    #[test]
    fn repeats_are_counted_not_logged() {
        let ip = IpAddr::from([127, 0, 0, 77]);
        assert_eq!(should_log(CloseCode::InvalidData, ip), Some(0));
        assert_eq!(should_log(CloseCode::InvalidData, ip), None);
        assert_eq!(should_log(CloseCode::InvalidData, ip), None);
        assert_eq!(should_log(CloseCode::Unsupported, ip), Some(0));
        assert_eq!(
            should_log(CloseCode::InvalidData, IpAddr::from([127, 0, 0, 78])),
            Some(0)
        );
    }
}
