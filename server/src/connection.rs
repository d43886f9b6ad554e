//! One task per WebSocket: the reader decodes frames and hands them to the room; a writer task
//! drains a bounded queue onto the socket, pings, and performs the close handshake.
//!
//! A member whose queue fills is closed with 1013 (try again later): it reconnects and resyncs,
//! instead of silently missing an update or growing server memory.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weft_protocol::{decode_frame, Message, Role, RoomName};

use crate::config::Config;

use crate::room::{Command, ConnId, JoinError, Joiner};
use crate::rooms::RoomContext;

/// After a close frame is sent, how long the peer has to answer before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// How long a close frame may take to write to a peer that stopped reading.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the server ends a connection.
#[derive(Debug, Clone)]
enum Ending {
    /// Send a close frame with this code and reason.
    Close(u16, String),
    /// Drop the socket without a handshake (the peer is unresponsive).
    Terminate(&'static str),
}

/// Asks a connection to end; the first reason given wins.
#[derive(Clone, Default)]
struct Closer {
    token: CancellationToken,
    ending: Arc<Mutex<Option<Ending>>>,
}

impl Closer {
    fn end(&self, ending: Ending) {
        if let Ok(mut slot) = self.ending.lock() {
            slot.get_or_insert(ending);
        }
        self.token.cancel();
    }

    fn ending(&self) -> Option<Ending> {
        self.ending.lock().ok().and_then(|slot| slot.clone())
    }
}

/// The room's way to reach one connection: a bounded frame queue plus a way to close it.
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Bytes>,
    closer: Closer,
}

impl Outbox {
    /// Queues a frame. Returns false when the queue is full: the connection is then being
    /// closed with 1013 and must be dropped from the room.
    pub(crate) fn send(&self, frame: Bytes) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.closer
                    .end(Ending::Close(1013, "too slow: send queue full".into()));
                false
            }
            // The connection is already going; its reader will tell the room.
            Err(mpsc::error::TrySendError::Closed(_)) => true,
        }
    }

    /// Closes the connection with a close frame.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        self.closer.end(Ending::Close(code, reason.to_owned()));
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl Outbox {
    /// An outbox with no socket behind it, for harnesses that drive a room directly: frames
    /// queue in `tx`, and [`Outbox::closed_with`] tells whether the room closed it.
    pub(crate) fn detached(tx: mpsc::Sender<Bytes>) -> Self {
        Self {
            tx,
            closer: Closer::default(),
        }
    }

    /// The close code and reason the room asked for, if it closed this outbox.
    pub(crate) fn closed_with(&self) -> Option<(u16, String)> {
        match self.closer.ending() {
            Some(Ending::Close(code, reason)) => Some((code, reason)),
            _ => None,
        }
    }
}

/// Who is on the other end and what they asked for.
pub(crate) struct Peer {
    /// Internal connection id.
    pub(crate) id: ConnId,
    /// Remote address, for logs.
    pub(crate) addr: SocketAddr,
    /// The room requested in the URL.
    pub(crate) room: RoomName,
    /// What the connection may do (from its token; `Write` in open mode).
    pub(crate) role: Role,
    /// The user its token names, if any.
    pub(crate) subject: Option<String>,
}

/// Serves one upgraded WebSocket until it closes.
pub(crate) async fn serve(socket: WebSocket, ctx: Arc<RoomContext>, peer: Peer) {
    let uuid = uuid::Uuid::new_v4().to_string();
    let (sink, stream) = socket.split();
    let (tx, rx) = mpsc::channel(ctx.config.send_queue.max(1));
    let closer = Closer::default();
    let alive = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn(write_loop(
        sink,
        rx,
        closer.clone(),
        alive.clone(),
        ctx.config.ping_interval(),
    ));
    let joiner = Joiner {
        id: peer.id,
        uuid: uuid.clone(),
        outbox: Outbox {
            tx,
            closer: closer.clone(),
        },
        role: peer.role,
        subject: peer.subject.clone(),
    };
    let room = match ctx.join(&peer.room, joiner).await {
        Ok(room) => Some(room),
        Err(e) => {
            let (code, reason) = match &e {
                JoinError::Full(_) => (1013, e.to_string()),
                _ => (1011, e.to_string()),
            };
            warn!(room = %peer.room, peer = %peer.addr, reason, "join refused");
            closer.end(Ending::Close(code, reason));
            None
        }
    };
    if room.is_some() {
        info!(room = %peer.room, peer = %peer.addr, conn = %uuid, role = ?peer.role, "connected");
    }
    let mut stream = stream;
    let mut peer_closed = false;
    if let Some(room) = &room {
        peer_closed = read_loop(&mut stream, &ctx, room, &peer, &closer, &alive).await;
        room.send(Command::Leave(peer.id)).await;
    }
    // If we initiated the close, give the peer a moment to answer it so the handshake completes.
    if !peer_closed && !matches!(closer.ending(), Some(Ending::Terminate(_))) {
        closer.token.cancel();
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
    }
    closer.token.cancel();
    let _ = writer.await;
    let why = match closer.ending() {
        Some(Ending::Close(code, reason)) => format!("server closed with {code}: {reason}"),
        Some(Ending::Terminate(why)) => format!("terminated: {why}"),
        None => "peer closed".to_owned(),
    };
    info!(room = %peer.room, peer = %peer.addr, conn = %uuid, why, "disconnected");
}

/// Reads until the peer closes, an error, or a close request; returns whether the peer's side of
/// the stream has ended (so no handshake is left to wait for).
async fn read_loop(
    stream: &mut SplitStream<WebSocket>,
    ctx: &RoomContext,
    room: &crate::room::RoomHandle,
    peer: &Peer,
    closer: &Closer,
    alive: &AtomicBool,
) -> bool {
    let limits = ctx.config.limits();
    let rate = InboundRate::new(&ctx.config);
    let mut close_received = false;
    let handshake = tokio::time::sleep(ctx.config.handshake_timeout());
    tokio::pin!(handshake);
    let mut handshaken = false;
    loop {
        let msg = tokio::select! {
            biased;
            _ = closer.token.cancelled() => return false,
            _ = ctx.shutdown.triggered() => {
                closer.end(Ending::Close(1001, "server shutting down".into()));
                return false;
            }
            _ = &mut handshake, if !handshaken => {
                info!(room = %peer.room, peer = %peer.addr, "no sync step 1 in time");
                closer.end(Ending::Close(1008, "no sync step 1 within the handshake timeout".into()));
                return false;
            }
            msg = stream.next() => msg,
        };
        let msg = match msg {
            None => return true,
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                if is_too_long(&e) {
                    closer.end(Ending::Close(1009, "message too big".into()));
                    return false;
                }
                debug!(room = %peer.room, error = %e, "socket error");
                closer.end(Ending::Terminate("socket error"));
                return true;
            }
        };
        alive.store(true, Ordering::Relaxed);
        if close_received {
            // After the peer's close only the end of the stream is expected.
            continue;
        }
        match msg {
            WsMessage::Binary(frame) if !rate.allows(frame.len()) => {
                warn!(room = %peer.room, peer = %peer.addr, "rate limit exceeded");
                closer.end(Ending::Close(1008, "rate limit exceeded".into()));
                return false;
            }
            WsMessage::Binary(frame) => match decode_frame(&frame, &limits) {
                Ok(msgs) => {
                    handshaken |= msgs.iter().any(|m| matches!(m, Message::SyncStep1(_)));
                    if !room.send(Command::Messages(peer.id, msgs)).await {
                        closer.end(Ending::Close(1011, "room closed".into()));
                        return false;
                    }
                }
                Err(e) => {
                    warn!(room = %peer.room, peer = %peer.addr, error = %e, "undecodable frame");
                    closer.end(Ending::Close(1007, truncate_reason(&e.to_string())));
                    return false;
                }
            },
            WsMessage::Text(_) => {
                closer.end(Ending::Close(
                    1003,
                    "text frames are not supported; send binary y-websocket messages".into(),
                ));
                return false;
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            WsMessage::Close(frame) => {
                debug!(room = %peer.room, ?frame, "peer sent close");
                // tungstenite queues the reply; it is flushed as we keep reading to the end.
                close_received = true;
            }
        }
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut rx: mpsc::Receiver<Bytes>,
    closer: Closer,
    alive: Arc<AtomicBool>,
    ping_every: Duration,
) {
    let mut ping = tokio::time::interval(ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            biased;
            _ = closer.token.cancelled() => break,
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                tokio::select! {
                    sent = sink.send(WsMessage::Binary(frame)) => if sent.is_err() {
                        closer.end(Ending::Terminate("write failed"));
                        break;
                    },
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
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(
            CLOSE_WRITE_TIMEOUT,
            sink.send(WsMessage::Close(Some(frame))),
        )
        .await;
    }
}

/// Token buckets for what one connection sends: frames and bytes per second.
struct InboundRate {
    frames: DefaultDirectRateLimiter,
    bytes: DefaultDirectRateLimiter,
}

impl InboundRate {
    fn new(config: &Config) -> Self {
        let per_sec = |n: u32| NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
        let frame_rate = per_sec(config.max_frames_per_sec);
        let byte_rate = per_sec(config.max_bytes_per_sec);
        // One maximal message must always fit, or a legitimate large paste could never pass.
        let max_message = u32::try_from(config.max_message).unwrap_or(u32::MAX);
        let byte_burst = per_sec(max_message.max(byte_rate.get().saturating_mul(2)));
        Self {
            frames: RateLimiter::direct(
                Quota::per_second(frame_rate)
                    .allow_burst(per_sec(frame_rate.get().saturating_mul(2))),
            ),
            bytes: RateLimiter::direct(Quota::per_second(byte_rate).allow_burst(byte_burst)),
        }
    }

    /// Takes one frame of `len` bytes from the buckets; false when either is empty.
    fn allows(&self, len: usize) -> bool {
        let len =
            NonZeroU32::new(u32::try_from(len).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        self.frames.check().is_ok() && matches!(self.bytes.check_n(len), Ok(Ok(())))
    }
}

/// Whether a read error is tungstenite refusing a message over the configured size.
fn is_too_long(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(tungstenite::Error::Capacity(_)) = err.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Close reasons are limited to 123 bytes by RFC 6455.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Close reasons never exceed the 123 bytes RFC 6455 allows, even mid-character.
    #[test]
    fn reasons_are_truncated_on_char_boundaries() {
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= 123);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
