//! What bounds the WebSockets one client address, and the whole server, may hold or open: open
//! sockets per address ([`PerIp`]) and in total (a semaphore), held together as [`Slots`] for
//! a socket's life, and new connections per address per second ([`ConnectRate`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::OwnedSemaphorePermit;

/// Counts open WebSockets per client IP address.
#[derive(Default)]
pub(crate) struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerIp`]; released when dropped.
pub(crate) struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// Takes a slot for `ip` unless it already has `max` connections open.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What a socket holds until it ends, admitted or being refused in a close frame: its place
/// among its address's connections and among the server's.
pub(crate) struct Slots {
    /// Its place among the server's connections (`--max-connections`).
    pub(crate) _permit: OwnedSemaphorePermit,
    /// Its place among its address's connections (`--max-connections-per-ip`).
    pub(crate) _ip: IpSlot,
}

/// How often the table of connect buckets drops addresses that have been quiet.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// New WebSocket connections per client address per second (`--max-connects-per-sec`, bursts
/// of twice that). A client that reconnects at once after every close (a provider speaking
/// another protocol, closed with 1007 each time) is held to this rate instead of hundreds of
/// handshakes a second.
pub(crate) struct ConnectRate {
    /// `None` when the limit is off (0).
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
    swept: Mutex<Instant>,
}

impl ConnectRate {
    /// A limit of `per_sec` connections per address per second; 0 for none.
    pub(crate) fn new(per_sec: u32) -> Self {
        let limiter = NonZeroU32::new(per_sec).map(|rate| {
            let burst = NonZeroU32::new(per_sec.saturating_mul(2)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limiter,
            clock: DefaultClock::default(),
            swept: Mutex::new(Instant::now()),
        }
    }

    /// Counts one connection attempt from `ip`; `Err` with how long until the next one is
    /// allowed when it is over the rate.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        self.sweep(limiter);
        limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets addresses whose buckets have refilled, at most once per [`SWEEP_EVERY`], so the
    /// table holds recent clients only (without a task of its own).
    fn sweep(&self, limiter: &DefaultKeyedRateLimiter<IpAddr>) {
        let mut swept = self.swept.lock().unwrap_or_else(|p| p.into_inner());
        if swept.elapsed() < SWEEP_EVERY {
            return;
        }
        *swept = Instant::now();
        drop(swept);
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of twice the rate passes, the next attempt waits; other addresses are not
    /// affected; 0 turns the limit off.
    #[test]
    fn connects_are_limited_per_address() {
        let rate = ConnectRate::new(2);
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        for _ in 0..4 {
            assert!(rate.check(a).is_ok());
        }
        let wait = rate.check(a).expect_err("over the burst");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(rate.check(b).is_ok());
        let off = ConnectRate::new(0);
        assert!((0..1000).all(|_| off.check(a).is_ok()));
    }
}
