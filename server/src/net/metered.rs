//! Bytes read from WebSockets that are not yet a whole message, bounded per client address and
//! for the whole server.
//!
//! tungstenite buffers a frame (and a fragmented message) until it is complete, up to
//! `--max-message`: eight sockets each holding 15 MiB of an unfinished frame cost 123 MB before
//! any message-level limit saw a byte. So every accepted TCP stream is wrapped in [`Metered`],
//! which, once its connection is a WebSocket ([`ReadMeter::activate`]), counts what it reads
//! until the socket loop has received a whole message ([`ReadMeter::settle`]). A connection
//! holding more than [`FLOOR`] unsettled bytes stops reading (TCP pushes back on the client)
//! while its address holds more than its share or the server holds more than its cap, and is
//! dropped if that lasts [`STALL_LIMIT`]. Small messages always pass: no connection is stopped
//! below the floor, so the budget cannot deadlock the ordinary traffic.
//!
//! Plain HTTP requests are not metered here: their headers and bodies are bounded by the
//! header deadline, the request deadline and the body limits.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Unsettled bytes a connection may always hold: a typical frame and then some, so ordinary
/// messages never wait for the budget.
pub(crate) const FLOOR: usize = 64 * 1024;

/// How long a connection may wait for the read budget before it is dropped.
pub(crate) const STALL_LIMIT: Duration = Duration::from_secs(10);

/// How often a waiting connection looks at the budget again.
const RETRY: Duration = Duration::from_millis(10);

/// The server-wide and per-address totals of unsettled bytes.
#[derive(Debug)]
pub(crate) struct ReadBudget {
    total: AtomicUsize,
    /// Mirrors `total` for `/metrics`.
    gauge: Gauge,
    max_total: usize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    max_per_address: usize,
}

impl ReadBudget {
    /// A budget of `max_total` unsettled bytes for the server and `max_per_address` for one
    /// client address, reporting its total in `gauge`.
    pub(crate) fn new(max_total: usize, max_per_address: usize, gauge: Gauge) -> Arc<Self> {
        Arc::new(Self {
            total: AtomicUsize::new(0),
            gauge,
            max_total,
            per_address: Mutex::new(HashMap::new()),
            max_per_address,
        })
    }

    /// Unsettled bytes held now by every WebSocket.
    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    fn charge(&self, ip: IpAddr, n: usize) {
        self.total.fetch_add(n, Ordering::AcqRel);
        self.gauge.inc_by(i64::try_from(n).unwrap_or(i64::MAX));
        *self.table().entry(ip).or_default() += n;
    }

    fn release(&self, ip: IpAddr, n: usize) {
        if n == 0 {
            return;
        }
        self.total.fetch_sub(n, Ordering::AcqRel);
        self.gauge.dec_by(i64::try_from(n).unwrap_or(i64::MAX));
        let mut table = self.table();
        if let Some(held) = table.get_mut(&ip) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                table.remove(&ip);
            }
        }
    }

    /// Whether `ip` (or the server) holds more than it may.
    fn over(&self, ip: IpAddr) -> bool {
        self.total() > self.max_total
            || self.table().get(&ip).copied().unwrap_or(0) > self.max_per_address
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One connection's share of the [`ReadBudget`], shared by its [`Metered`] stream (which
/// charges what it reads) and its socket loop (which settles whole messages).
#[derive(Debug)]
pub(crate) struct ReadMeter {
    budget: Arc<ReadBudget>,
    /// The client address the bytes are charged to, once the connection is a WebSocket.
    ip: OnceLock<IpAddr>,
    unsettled: AtomicUsize,
}

impl ReadMeter {
    /// A meter charging `budget`, inactive until [`ReadMeter::activate`].
    pub(crate) fn new(budget: Arc<ReadBudget>) -> Arc<Self> {
        Arc::new(Self {
            budget,
            ip: OnceLock::new(),
            unsettled: AtomicUsize::new(0),
        })
    }

    /// Starts metering: the connection is now a WebSocket of client address `ip`.
    pub(crate) fn activate(&self, ip: IpAddr) {
        let _ = self.ip.set(ip);
    }

    /// A whole message (or control frame) arrived: what was read so far is no longer held.
    /// tungstenite reads ahead at most its read buffer, so the error is a few KiB at most.
    pub(crate) fn settle(&self) {
        let n = self.unsettled.swap(0, Ordering::AcqRel);
        if let Some(ip) = self.ip.get() {
            self.budget.release(*ip, n);
        }
    }

    fn charge(&self, n: usize) {
        if let Some(ip) = self.ip.get() {
            self.unsettled.fetch_add(n, Ordering::AcqRel);
            self.budget.charge(*ip, n);
        }
    }

    /// Whether this connection must wait before reading more.
    fn must_wait(&self) -> bool {
        let Some(ip) = self.ip.get() else {
            return false;
        };
        self.unsettled.load(Ordering::Acquire) > FLOOR && self.budget.over(*ip)
    }
}

impl Drop for ReadMeter {
    fn drop(&mut self) {
        self.settle();
    }
}

/// A stream whose reads are charged to a [`ReadMeter`].
pub(crate) struct Metered<IO> {
    io: IO,
    meter: Arc<ReadMeter>,
    retry: Option<Pin<Box<Sleep>>>,
    waiting_since: Option<Instant>,
}

impl<IO> Metered<IO> {
    /// Wraps `io`, charging its reads to `meter`.
    pub(crate) fn new(io: IO, meter: Arc<ReadMeter>) -> Self {
        Self {
            io,
            meter,
            retry: None,
            waiting_since: None,
        }
    }

    /// Ready when the connection may read; an error when it has waited too long.
    fn poll_budget(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Some(retry) = self.retry.as_mut() {
                ready!(retry.as_mut().poll(cx));
                self.retry = None;
            }
            if !self.meter.must_wait() {
                self.waiting_since = None;
                return Poll::Ready(Ok(()));
            }
            let since = *self.waiting_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= STALL_LIMIT {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the server's budget for unfinished WebSocket messages stayed exhausted",
                )));
            }
            self.retry = Some(Box::pin(tokio::time::sleep(RETRY)));
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Metered<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_budget(cx))?;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        this.meter.charge(buf.filled().len() - before);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Metered<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// Reads are charged only once the meter is active, settle releases them, and a connection
    /// over the floor waits while its address is over its share, then reads on once another
    /// connection's message settles.
    #[tokio::test]
    async fn unsettled_bytes_are_bounded_per_address() {
        let budget = ReadBudget::new(usize::MAX, FLOOR * 2, Gauge::default());
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let meter = ReadMeter::new(budget.clone());
        let mut metered = Metered::new(server, meter.clone());
        let chunk = vec![7u8; FLOOR];
        client.write_all(&chunk).await.expect("write");
        let mut got = vec![0u8; FLOOR];
        metered.read_exact(&mut got).await.expect("read");
        assert_eq!(budget.total(), 0, "not a WebSocket yet: nothing charged");

        meter.activate(IP);
        let other = ReadMeter::new(budget.clone());
        other.activate(IP);
        other.charge(FLOOR * 3);
        client.write_all(&chunk).await.expect("write");
        client.write_all(&chunk).await.expect("write");
        metered.read_exact(&mut got).await.expect("below the floor");
        metered
            .read_exact(&mut got[..1])
            .await
            .expect("at the floor");
        let blocked =
            tokio::time::timeout(Duration::from_millis(100), metered.read(&mut got)).await;
        assert!(
            blocked.is_err(),
            "over the floor and the address's share: waits"
        );
        other.settle();
        let read = tokio::time::timeout(STALL_LIMIT, metered.read(&mut got)).await;
        assert!(
            matches!(read, Ok(Ok(n)) if n > 0),
            "reads on once the address is under"
        );
        meter.settle();
        drop(meter);
        assert_eq!(budget.total(), 0);
    }
}
