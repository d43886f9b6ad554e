//! Where a WebSocket is served: the per-socket loop, generic over a [`Handler`] that decides what
//! the data messages mean (the y-websocket room in `connection`, the echo in `echo`).
//!
//! The loop owns the socket mechanics that must behave the same whatever is served: a reader
//! with the inbound rate limit and the handler's handshake deadline, a writer task draining a
//! bounded queue ([`Outbox`]) and pinging, and the ending: which close code a failure maps to
//! and the close handshake. The Autobahn conformance cases (`tests/tests/conformance.rs`) run
//! this loop with the echo handler, so what they check is what the room path runs.
//!
//! A connection whose queue fills is closed with 1013 (try again later): a y-websocket client
//! reconnects and resyncs, instead of silently missing an update or growing server memory.
//!
//! A peer that breaks the protocol gets a close frame before the socket is dropped, as RFC 6455
//! asks ("_Fail the WebSocket Connection_", section 7.1.7): 1002 for a framing error, 1007 for
//! text or a close reason that is not UTF-8, 1009 for a message over the size limit.

use std::future::Future;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, StreamExt};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::coding::{CloseCode as WsCloseCode, Data as FrameData, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame};
use tungstenite::Message as WsMessage;
use weft_protocol::CloseCode;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::net::metered::ReadMeter;
use crate::net::upgrade::{WebSocket, WRITE_BUFFER};
use crate::outbox::{Closer, Data, Ending, Outbox, QueuedBytes};
use crate::shutdown::Shutdown;

/// After a close frame is sent, how long the peer has to answer before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// How long a close frame may take to write to a peer that stopped reading.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the socket loop hands a connection's messages to.
///
/// The futures must be `Send` because the socket task is spawned on the multi-threaded runtime.
pub(crate) trait Handler: Send {
    /// Starts serving, given the way to reach the peer. An error ends the connection before
    /// anything is read; [`Handler::closed`] is then not called.
    fn open(&mut self, outbox: Outbox) -> impl Future<Output = Result<(), Ending>> + Send;

    /// Handles one data message (within the rate limit). Returns whether the peer has now
    /// completed the handler's handshake, or how to end the connection.
    fn message(&mut self, data: Data) -> impl Future<Output = Result<Progress, Ending>> + Send;

    /// Reading has ended (the peer closed, failed, or the connection is being closed): release
    /// what [`Handler::open`] took.
    fn closed(&mut self) -> impl Future<Output = ()> + Send;

    /// How long a new peer has to complete the handler's handshake, and the reason sent with the
    /// 1008 close when it does not; `None` when there is no handshake.
    fn handshake(&self) -> Option<(Duration, &'static str)> {
        None
    }

    /// The client address's shared byte budget, if the handler's connections have one.
    fn address_budget(&self) -> Option<AddressBudget> {
        None
    }

    /// Where the writer counts the frames and bytes it sends; `None` counts nothing.
    fn metrics(&self) -> Option<Arc<Metrics>> {
        None
    }
}

/// What a handled message did to the handler's handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Nothing changed.
    Continue,
    /// The peer has completed the handshake: its deadline no longer applies.
    Handshaken,
}

/// Serves one upgraded WebSocket with `handler` until it closes; returns how it ended (`None`:
/// the peer closed).
///
/// Limits, queue depth and ping interval come from `config`; `shutdown` closes it with 1001.
pub(crate) async fn serve<H: Handler>(
    socket: WebSocket,
    handler: &mut H,
    config: &Config,
    shutdown: &Shutdown,
    meter: Option<Arc<ReadMeter>>,
) -> Option<Ending> {
    let (sink, mut stream) = socket.split();
    let (tx, rx) = mpsc::channel(config.send_queue.max(1));
    let queued = queue_budget(config);
    let closer = Closer::default();
    let alive = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn(write_loop(
        sink,
        rx,
        closer.clone(),
        alive.clone(),
        config.ping_interval(),
        handler.metrics(),
        queued.clone(),
    ));
    let outbox = Outbox {
        tx,
        closer: closer.clone(),
        queued,
    };
    let mut peer_closed = false;
    // One-off steps are boxed: an idle connection's task is as large as its biggest await
    // point, and joining a room or waiting out a close are far larger than the read loop.
    match Box::pin(handler.open(outbox)).await {
        Ok(()) => {
            let mut reader = Reader {
                closer: &closer,
                alive: &alive,
                rate: InboundRate::new(config, handler.address_budget()),
                shutdown,
                meter,
            };
            peer_closed = reader.run(&mut stream, handler).await;
            Box::pin(handler.closed()).await;
        }
        Err(ending) => closer.end(ending),
    }
    // If we initiated the close, give the peer a moment to answer it so the handshake completes.
    if !peer_closed && !matches!(closer.ending(), Some(Ending::Terminate(_))) {
        closer.token.cancel();
        let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(_)) = stream.next().await {}
        }))
        .await;
    }
    closer.token.cancel();
    let _ = writer.await;
    let ending = closer.ending();
    if let Some(m) = handler.metrics() {
        m.disconnected(&disconnect_label(ending.as_ref()));
    }
    ending
}

/// The bytes one connection may have queued: one maximal message must always fit, or a big
/// document could never be sent.
fn queue_budget(config: &Config) -> Arc<QueuedBytes> {
    Arc::new(QueuedBytes {
        now: AtomicUsize::new(0),
        max: config.send_queue_bytes.max(config.max_message),
    })
}

/// How `/metrics` labels an ending: the close code sent, `dropped` without a close frame,
/// `peer` when the client closed.
fn disconnect_label(ending: Option<&Ending>) -> String {
    match ending {
        Some(Ending::Close(code, _)) => code.to_string(),
        Some(Ending::Terminate(_)) => "dropped".to_owned(),
        None => "peer".to_owned(),
    }
}

/// The reading half of one connection.
struct Reader<'a> {
    closer: &'a Closer,
    alive: &'a AtomicBool,
    rate: InboundRate,
    shutdown: &'a Shutdown,
    /// Charged by the stream for what it reads; settled here as each whole message arrives.
    meter: Option<Arc<ReadMeter>>,
}

impl Reader<'_> {
    /// Reads until the peer closes, an error, or a close request; returns whether the peer's
    /// side of the stream has ended (so no handshake is left to wait for).
    async fn run<H: Handler>(
        &mut self,
        stream: &mut SplitStream<WebSocket>,
        handler: &mut H,
    ) -> bool {
        let deadline = handler.handshake();
        let handshake = tokio::time::sleep(deadline.map_or(Duration::MAX, |(within, _)| within));
        tokio::pin!(handshake);
        let mut handshaken = deadline.is_none();
        let mut close_received = false;
        loop {
            let msg = tokio::select! {
                biased;
                _ = self.closer.token.cancelled() => return false,
                _ = self.shutdown.triggered() => {
                    self.closer.end(Ending::Close(CloseCode::GoingAway, "server shutting down".into()));
                    return false;
                }
                _ = &mut handshake, if !handshaken => {
                    let reason = deadline.map_or("handshake timeout", |(_, reason)| reason);
                    info!(reason, "handshake deadline passed");
                    self.closer.end(Ending::Close(CloseCode::Policy, reason.into()));
                    return false;
                }
                msg = stream.next() => msg,
            };
            let msg = match msg {
                None => return true,
                Some(Ok(msg)) => msg,
                Some(Err(e)) => return self.failed(&e),
            };
            self.alive.store(true, Ordering::Relaxed);
            if let Some(meter) = &self.meter {
                meter.settle();
            }
            if close_received {
                // After the peer's close only the end of the stream is expected.
                continue;
            }
            let Some(data) = data_of(msg, &mut close_received) else {
                continue;
            };
            if !self.admit(data.len()).await {
                return false;
            }
            match handler.message(data).await {
                Ok(Progress::Continue) => {}
                Ok(Progress::Handshaken) => handshaken = true,
                Err(ending) => {
                    self.closer.end(ending);
                    return false;
                }
            }
        }
    }
}

impl Reader<'_> {
    /// Admits one message of `len` bytes within the connection's rates, waiting (not reading:
    /// TCP pushes back on the client) while its buckets refill. False, with the connection
    /// being closed, when it has been over its rate for [`THROTTLE_LIMIT`] or is closing.
    async fn admit(&mut self, len: usize) -> bool {
        let len =
            NonZeroU32::new(u32::try_from(len).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        let mut pending = [true; 3];
        let mut waited = false;
        loop {
            let next = self.rate.try_take(len, &mut pending);
            let wait = match next {
                Ok(None) => break,
                Ok(Some(wait)) => wait,
                Err(()) => return self.over_rate(),
            };
            waited = true;
            let since = *self.rate.throttled_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= THROTTLE_LIMIT {
                return self.over_rate();
            }
            tokio::select! {
                _ = tokio::time::sleep(wait.min(THROTTLE_LIMIT)) => {}
                _ = self.closer.token.cancelled() => return false,
                _ = self.shutdown.triggered() => return false,
            }
        }
        if !waited {
            self.rate.throttled_since = None;
        }
        true
    }

    /// Closes a connection that stayed over its rate.
    fn over_rate(&self) -> bool {
        warn!("rate limit exceeded for {THROTTLE_LIMIT:?}");
        self.closer.end(Ending::Close(
            CloseCode::Policy,
            "rate limit exceeded".into(),
        ));
        false
    }

    /// Ends the connection after a read error; the peer's side of the stream is over.
    fn failed(&self, e: &tungstenite::Error) -> bool {
        let ending = read_failure(e);
        debug!(error = %e, ?ending, "socket read failed");
        // tungstenite fuses the stream after an error: nothing more can be read, so there is no
        // close reply to wait for.
        self.closer.end(ending);
        true
    }
}

/// The data a message carries for the handler; `None` for control frames (a peer's close is
/// noted in `close_received`: tungstenite queues the reply, flushed as we keep reading).
fn data_of(msg: WsMessage, close_received: &mut bool) -> Option<Data> {
    match msg {
        WsMessage::Binary(frame) => Some(Data::Binary(frame)),
        WsMessage::Text(text) => Some(Data::Text(text)),
        WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => None,
        WsMessage::Close(frame) => {
            debug!(?frame, "peer sent close");
            *close_received = true;
            None
        }
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut rx: mpsc::Receiver<Data>,
    closer: Closer,
    alive: Arc<AtomicBool>,
    ping_every: Duration,
    metrics: Option<Arc<Metrics>>,
    queued: Arc<QueuedBytes>,
) {
    let mut ping = tokio::time::interval(ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            biased;
            _ = closer.token.cancelled() => break,
            data = rx.recv() => {
                let Some(data) = data else {
                    // Every sender is gone: the room dropped this member, or refused it (room
                    // full) before `open` returned the reason. Wait for the connection to end
                    // so the close frame below carries that reason instead of no frame at all.
                    closer.token.cancelled().await;
                    break;
                };
                tokio::select! {
                    sent = write_queued(&mut sink, &mut rx, data, &queued, metrics.as_deref()) => {
                        if sent.is_err() {
                            closer.end(Ending::Terminate("write failed"));
                            break;
                        }
                    }
                    _ = closer.token.cancelled() => break,
                }
            }
            _ = ping.tick() => {
                // The reference server terminates a peer that did not answer the previous ping.
                if !alive.swap(false, Ordering::Relaxed) {
                    closer.end(Ending::Terminate("no answer to ping"));
                    break;
                }
                let ping_sent = tokio::time::timeout(ping_every, sink.send(WsMessage::Ping(Bytes::new())));
                if !matches!(ping_sent.await, Ok(Ok(()))) {
                    closer.end(Ending::Terminate("ping could not be sent"));
                    break;
                }
            }
        }
    }
    if let Some(Ending::Close(code, reason)) = closer.ending() {
        send_close(&mut sink, &mut rx, code, reason).await;
    }
}

/// Most frames one wake-up of the writer hands the socket before flushing.
const COALESCE_FRAMES: usize = 64;

/// Most bytes one wake-up of the writer hands the socket before flushing.
const COALESCE_BYTES: usize = 256 * 1024;

/// Largest frame the writer sends: a longer message goes out in fragments of this size, each a
/// slice of the shared buffer, so tungstenite's per-socket write buffer (which keeps its largest
/// size for good) never grows past [`WRITE_BUFFER`] plus one fragment.
pub(crate) const FRAGMENT: usize = WRITE_BUFFER / 2;

/// Writes `first` and whatever else is already queued (up to [`COALESCE_FRAMES`] and
/// [`COALESCE_BYTES`]) into the socket's buffer, then flushes once: one `send` per wake-up
/// instead of one per frame, the largest cost of a busy room (the kernel's TCP send path).
async fn write_queued(
    sink: &mut SplitSink<WebSocket, WsMessage>,
    rx: &mut mpsc::Receiver<Data>,
    first: Data,
    queued: &QueuedBytes,
    metrics: Option<&Metrics>,
) -> Result<(), tungstenite::Error> {
    let (mut frames, mut bytes) = (0usize, 0usize);
    let mut next = Some(first);
    while let Some(data) = next.take() {
        let len = data.len();
        queued.now.fetch_sub(len, Ordering::AcqRel);
        feed(sink, data).await?;
        if let Some(m) = metrics {
            m.messages_out.inc();
            m.bytes_out.inc_by(len as u64);
        }
        frames += 1;
        bytes += len;
        if frames < COALESCE_FRAMES && bytes < COALESCE_BYTES {
            next = rx.try_recv().ok();
        }
    }
    sink.flush().await
}

/// Hands one message to the socket: whole when it fits in a [`FRAGMENT`], else as a run of
/// fragments (RFC 6455 section 5.4; every WebSocket client reassembles them).
async fn feed<S>(sink: &mut S, data: Data) -> Result<(), tungstenite::Error>
where
    S: Sink<WsMessage, Error = tungstenite::Error> + Unpin,
{
    if data.len() <= FRAGMENT {
        return sink.feed(data.into_message()).await;
    }
    let (payload, first) = match data {
        Data::Binary(b) => (b, FrameData::Binary),
        Data::Text(t) => (Bytes::from(t), FrameData::Text),
    };
    let mut start = 0;
    while start < payload.len() {
        let end = (start + FRAGMENT).min(payload.len());
        let opcode = OpCode::Data(if start == 0 {
            first
        } else {
            FrameData::Continue
        });
        let frame = Frame::message(payload.slice(start..end), opcode, end == payload.len());
        sink.feed(WsMessage::Frame(frame)).await?;
        start = end;
    }
    Ok(())
}

/// Sends the close frame, after what was queued before the close was decided (an echo, a last
/// update) — the peer expects it in order — unless the peer stopped reading (1013).
async fn send_close(
    sink: &mut SplitSink<WebSocket, WsMessage>,
    rx: &mut mpsc::Receiver<Data>,
    code: CloseCode,
    reason: String,
) {
    if code != CloseCode::TryAgainLater {
        rx.close();
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
            while let Ok(data) = rx.try_recv() {
                if feed(sink, data).await.is_err() {
                    break;
                }
            }
        })
        .await;
    }
    // Whatever ended the connection, a reason past 123 bytes would make the frame invalid.
    let frame = CloseFrame {
        code: WsCloseCode::from(code.code()),
        reason: truncate_reason(&reason).into(),
    };
    let _ = tokio::time::timeout(
        CLOSE_WRITE_TIMEOUT,
        sink.send(WsMessage::Close(Some(frame))),
    )
    .await;
}

/// Token buckets for what one connection sends: frames and bytes per second, and the bytes of
/// its client address over all its connections.
struct InboundRate {
    frames: DefaultDirectRateLimiter,
    bytes: DefaultDirectRateLimiter,
    address: Option<AddressBudget>,
    clock: DefaultClock,
    /// Since when every message has had to wait for the buckets; `None` while the connection
    /// keeps within its rate.
    throttled_since: Option<Instant>,
}

/// How long a connection may stay over its rate, read only as fast as the rate allows all
/// along, before it is closed with 1008. A burst from a well-formed client (a paste of
/// thousands of one-character transactions) is slowed down, with TCP pushing back on the
/// client, and loses nothing; only a sustained flood is closed.
const THROTTLE_LIMIT: Duration = Duration::from_secs(5);

fn per_sec(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

/// `--max-bytes-per-sec`, with a burst that always fits one maximal message, or a legitimate
/// large paste could never pass.
fn byte_quota(config: &Config) -> Quota {
    let byte_rate = per_sec(config.max_bytes_per_sec);
    let max_message = u32::try_from(config.max_message).unwrap_or(u32::MAX);
    let byte_burst = per_sec(max_message.max(byte_rate.get().saturating_mul(2)));
    Quota::per_second(byte_rate).allow_burst(byte_burst)
}

impl InboundRate {
    fn new(config: &Config, address: Option<AddressBudget>) -> Self {
        let frame_rate = per_sec(config.max_frames_per_sec);
        Self {
            frames: RateLimiter::direct(
                Quota::per_second(frame_rate)
                    .allow_burst(per_sec(frame_rate.get().saturating_mul(2))),
            ),
            bytes: RateLimiter::direct(byte_quota(config)),
            address,
            clock: DefaultClock::default(),
            throttled_since: None,
        }
    }

    /// Takes one frame of `len` bytes from every bucket it has not yet been taken from
    /// (`pending`: frames, bytes, address bytes); how long to wait before trying again when a
    /// bucket is empty, or why the frame can never pass.
    fn try_take(&self, len: NonZeroU32, pending: &mut [bool; 3]) -> Result<Option<Duration>, ()> {
        let now = self.clock.now();
        if pending[0] {
            match self.frames.check() {
                Ok(()) => pending[0] = false,
                Err(not_until) => return Ok(Some(not_until.wait_time_from(now))),
            }
        }
        if pending[1] {
            match self.bytes.check_n(len) {
                Ok(Ok(())) => pending[1] = false,
                Ok(Err(not_until)) => return Ok(Some(not_until.wait_time_from(now))),
                Err(_) => return Err(()),
            }
        }
        if pending[2] {
            if let Some(a) = &self.address {
                match a.limiter.check_key_n(&a.ip, len) {
                    Ok(Ok(())) => {}
                    Ok(Err(not_until)) => return Ok(Some(not_until.wait_time_from(now))),
                    Err(_) => return Err(()),
                }
            }
            pending[2] = false;
        }
        Ok(None)
    }
}

/// Byte buckets per client address, shared by all its connections./// Byte buckets per client address, shared by all its connections.
pub(crate) type AddressLimiter = DefaultKeyedRateLimiter<IpAddr>;

/// A fresh per-address limiter with the `--max-bytes-per-sec` quota. Addresses not seen for a
/// while are forgotten by [`AddressLimiter::retain_recent`], which the server calls regularly.
pub(crate) fn address_limiter(config: &Config) -> AddressLimiter {
    RateLimiter::keyed(byte_quota(config))
}

/// A connection's share of its client address's byte budget. Without it, a client that
/// reconnects after each 1008 would start every connection with a full bucket.
#[derive(Clone)]
pub(crate) struct AddressBudget {
    /// The shared buckets.
    pub(crate) limiter: Arc<AddressLimiter>,
    /// This connection's client address.
    pub(crate) ip: IpAddr,
}

/// How to end a connection whose read failed: a close frame with the RFC 6455 code when the
/// peer broke the protocol, a plain drop when the transport itself is gone.
fn read_failure(e: &tungstenite::Error) -> Ending {
    match e {
        tungstenite::Error::Capacity(_) => {
            Ending::Close(CloseCode::TooBig, "message too big".into())
        }
        // The peer dropped the TCP connection: nobody is left to read a close frame.
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            Ending::Terminate("peer reset without closing handshake")
        }
        tungstenite::Error::Protocol(p) => {
            Ending::Close(CloseCode::Protocol, truncate_reason(&p.to_string()))
        }
        tungstenite::Error::Utf8(_) => {
            Ending::Close(CloseCode::InvalidData, "invalid UTF-8".into())
        }
        _ => Ending::Terminate("socket error"),
    }
}

/// Close reasons are cut where the outbox cuts them (shared with the room).
pub(crate) use crate::outbox::truncate_reason;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio_tungstenite::WebSocketStream;
    use tungstenite::protocol::{Role, WebSocketConfig};

    /// Reads server frames (unmasked) off `raw` until one is final: (opcode, final, length).
    async fn read_frames(raw: &mut tokio::io::DuplexStream) -> Vec<(u8, bool, usize)> {
        let mut frames = Vec::new();
        loop {
            let mut head = [0u8; 2];
            raw.read_exact(&mut head).await.expect("frame header");
            let len = match head[1] & 0x7f {
                126 => usize::from(raw.read_u16().await.expect("length")),
                127 => usize::try_from(raw.read_u64().await.expect("length")).expect("fits"),
                n => usize::from(n),
            };
            let mut payload = vec![0u8; len];
            raw.read_exact(&mut payload).await.expect("payload");
            let fin = head[0] & 0x80 != 0;
            frames.push((head[0] & 0x0f, fin, len));
            if fin {
                return frames;
            }
        }
    }

    /// A message over one fragment leaves as a binary frame and continuations of at most
    /// [`FRAGMENT`] bytes each, the last one final; a small one leaves whole.
    #[tokio::test]
    async fn large_messages_leave_in_fragments() {
        let (server, mut raw) = tokio::io::duplex(1 << 20);
        let config = WebSocketConfig::default().write_buffer_size(WRITE_BUFFER);
        let mut ws = WebSocketStream::from_raw_socket(server, Role::Server, Some(config)).await;
        let big = Bytes::from(vec![7u8; 3 * FRAGMENT + 10]);
        let reader = tokio::spawn(async move {
            let big = read_frames(&mut raw).await;
            let small = read_frames(&mut raw).await;
            (big, small)
        });
        feed(&mut ws, Data::Binary(big)).await.expect("feed");
        feed(&mut ws, Data::Binary(Bytes::from_static(b"small")))
            .await
            .expect("feed");
        ws.flush().await.expect("flush");
        let (big, small) = reader.await.expect("reader");
        let (binary, continuation) = (0x2, 0x0);
        assert_eq!(
            big,
            vec![
                (binary, false, FRAGMENT),
                (continuation, false, FRAGMENT),
                (continuation, false, FRAGMENT),
                (continuation, true, 10),
            ]
        );
        assert_eq!(small, vec![(binary, true, 5)]);
    }

    /// Close reasons never exceed the 123 bytes RFC 6455 allows, even mid-character.
    #[test]
    fn reasons_are_truncated_on_char_boundaries() {
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= 123);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    /// Framing errors close with 1002, bad UTF-8 with 1007, oversize with 1009, and a vanished
    /// peer is dropped without a close frame.
    #[test]
    fn read_failures_map_to_rfc_close_codes() {
        let code = |e: tungstenite::Error| match read_failure(&e) {
            Ending::Close(code, _) => Some(code),
            Ending::Terminate(_) => None,
        };
        assert_eq!(
            code(tungstenite::Error::Protocol(
                ProtocolError::ControlFrameTooBig
            )),
            Some(CloseCode::Protocol)
        );
        assert_eq!(
            code(tungstenite::Error::Utf8("bad byte".into())),
            Some(CloseCode::InvalidData)
        );
        assert_eq!(
            code(tungstenite::Error::Capacity(
                tungstenite::error::CapacityError::MessageTooLong {
                    size: 2,
                    max_size: 1
                }
            )),
            Some(CloseCode::TooBig)
        );
        assert_eq!(
            code(tungstenite::Error::Protocol(
                ProtocolError::ResetWithoutClosingHandshake
            )),
            None
        );
        assert_eq!(code(tungstenite::Error::ConnectionClosed), None);
    }
}
