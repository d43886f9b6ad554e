//! The way to reach one connection: [`Outbox`], a bounded queue of outgoing messages plus a way
//! to close it. The room fans frames out into members' outboxes; the socket loop (`net::socket`)
//! drains them. It sits below both so that the room never imports the network layer.
//!
//! A connection whose queue fills is closed with 1013 (try again later): a y-websocket client
//! reconnects and resyncs, instead of silently missing an update or growing server memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tungstenite::{Message as WsMessage, Utf8Bytes};
use weft_protocol::CloseCode;

/// A data message, either way: what a handler receives and what an [`Outbox`] queues.
///
/// Both variants are reference-counted buffers, so queueing one frame for many sockets clones a
/// pointer, never the bytes.
#[derive(Debug, Clone)]
pub(crate) enum Data {
    /// A binary message.
    Binary(Bytes),
    /// A text message (tungstenite has checked it is UTF-8).
    Text(Utf8Bytes),
}

/// Why a connection ends.
#[derive(Debug, Clone)]
pub(crate) enum Ending {
    /// Send a close frame with this code and reason, then wait briefly for the peer's answer.
    Close(CloseCode, String),
    /// Drop the socket without a handshake (the peer is unresponsive or already gone).
    Terminate(&'static str),
}

/// Asks a connection to end; the first reason given wins.
#[derive(Clone, Default)]
pub(crate) struct Closer {
    pub(crate) token: CancellationToken,
    ending: Arc<Mutex<Option<Ending>>>,
}

impl Closer {
    pub(crate) fn end(&self, ending: Ending) {
        if let Ok(mut slot) = self.ending.lock() {
            slot.get_or_insert(ending);
        }
        self.token.cancel();
    }

    pub(crate) fn ending(&self) -> Option<Ending> {
        self.ending.lock().ok().and_then(|slot| slot.clone())
    }
}

/// The way to reach one connection: a bounded queue of outgoing messages plus a way to close it.
#[derive(Clone)]
pub(crate) struct Outbox {
    pub(crate) tx: mpsc::Sender<Data>,
    pub(crate) closer: Closer,
    pub(crate) queued: Arc<QueuedBytes>,
}

/// Bytes waiting in one connection's queue, and how many may wait. A frame count alone does
/// not bound memory: 1,024 queued frames of a large paste are gigabytes.
#[derive(Debug)]
pub(crate) struct QueuedBytes {
    pub(crate) now: AtomicUsize,
    pub(crate) max: usize,
}

impl Outbox {
    /// Queues a binary frame. Returns false when the queue is full: the connection is then being
    /// closed with 1013 and must be dropped from the room.
    pub(crate) fn send(&self, frame: Bytes) -> bool {
        self.send_data(Data::Binary(frame))
    }

    /// Queues a message of either kind; false when the queue is full, as for [`Outbox::send`].
    pub(crate) fn send_data(&self, data: Data) -> bool {
        let len = data.len();
        let total = self.queued.now.fetch_add(len, Ordering::AcqRel) + len;
        let sent = if total > self.queued.max {
            Err(mpsc::error::TrySendError::Full(data))
        } else {
            self.tx.try_send(data)
        };
        match sent {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued.now.fetch_sub(len, Ordering::AcqRel);
                self.closer.end(Ending::Close(
                    CloseCode::TryAgainLater,
                    "too slow: send queue full".into(),
                ));
                false
            }
            // The connection is already going; its reader will tell the handler.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued.now.fetch_sub(len, Ordering::AcqRel);
                true
            }
        }
    }

    /// Closes the connection with a close frame.
    pub(crate) fn close(&self, code: CloseCode, reason: &str) {
        self.closer
            .end(Ending::Close(code, truncate_reason(reason)));
    }
}

/// `reason` cut to the 123 bytes a WebSocket close frame may carry, on a character boundary.
pub(crate) fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

#[cfg(any(test, feature = "fuzzing"))]
impl Outbox {
    /// An outbox with no socket behind it, for harnesses that drive a room directly: frames
    /// queue in `tx`, and [`Outbox::closed_with`] tells whether the room closed it.
    pub(crate) fn detached(tx: mpsc::Sender<Data>) -> Self {
        Self {
            tx,
            closer: Closer::default(),
            queued: Arc::new(QueuedBytes {
                now: AtomicUsize::new(0),
                max: usize::MAX,
            }),
        }
    }

    /// The close code and reason the room asked for, if it closed this outbox.
    pub(crate) fn closed_with(&self) -> Option<(CloseCode, String)> {
        match self.closer.ending() {
            Some(Ending::Close(code, reason)) => Some((code, reason)),
            _ => None,
        }
    }
}

impl Data {
    /// Payload length in bytes.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Binary(b) => b.len(),
            Self::Text(t) => t.len(),
        }
    }

    /// The WebSocket message that carries it.
    pub(crate) fn into_message(self) -> WsMessage {
        match self {
            Self::Binary(frame) => WsMessage::Binary(frame),
            Self::Text(text) => WsMessage::Text(text),
        }
    }
}
