//! # `weft-relay`: a null relay, the floor `tests/bench/compare.sh` shows beside the servers
//!
//! A y-websocket-shaped server that keeps no document: each binary frame a member sends is
//! forwarded, as it is, to every other member of its room (the room is the URL path). It does
//! what a naive forwarder does and nothing more: one socket write per frame per member, no
//! storage, no CRDT, no coalescing. The one exception is the sync handshake: a sync step 1 is
//! answered with an empty sync step 2 (and not forwarded), so that y-websocket clients (and
//! `weft-bench`) count themselves synced. A fresh joiner therefore gets nothing of what was
//! said before it came: the relay suits the typing and presence scenarios, not the ones that
//! join an existing document (`big-doc`, `join-storm`).
//!
//! ```text
//! cargo run --release -p weft-tests --bin weft-relay -- --bind 127.0.0.1:9000
//! weft-bench --url 'ws://127.0.0.1:9000/{room}' --scenario hot-room
//! ```
//!
//! A member whose send queue holds [`QUEUE`] frames is dropped (as a server would close a
//! member that stopped reading); the count goes to stderr when the relay stops.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use weft_protocol::{encode_sync, SYNC_STEP2};

/// Frames queued for one member before it is dropped as too slow.
const QUEUE: usize = 16 * 1024;

/// Largest message accepted (as Weft's default `--max-message`).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "weft-relay",
    about = "Null y-websocket relay: forwards frames, keeps nothing"
)]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:9000")]
    bind: SocketAddr,
}

/// One room's members: connection id → its send queue.
type Members = HashMap<u64, mpsc::Sender<Bytes>>;

/// Every room by name.
#[derive(Default)]
struct Rooms {
    rooms: Mutex<HashMap<String, Members>>,
    next_id: AtomicU64,
    dropped: AtomicU64,
}

impl Rooms {
    /// Adds a member to `room`; returns its id.
    fn join(&self, room: &str, tx: mpsc::Sender<Bytes>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.entry(room.to_owned()).or_default().insert(id, tx);
        id
    }

    /// Removes a member; the room goes with its last member.
    fn leave(&self, room: &str, id: u64) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = rooms.get_mut(room) {
            m.remove(&id);
            if m.is_empty() {
                rooms.remove(room);
            }
        }
    }

    /// Queues `frame` for every member of `room` but `from`; drops members whose queue is full.
    fn forward(&self, room: &str, from: u64, frame: &Bytes) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let Some(members) = rooms.get_mut(room) else {
            return;
        };
        let before = members.len();
        members.retain(|&id, tx| id == from || tx.try_send(frame.clone()).is_ok());
        let gone = before - members.len();
        self.dropped.fetch_add(gone as u64, Ordering::Relaxed);
    }
}

/// Whether a y-websocket frame is a sync step 1 (`messageSync`, `messageYjsSyncStep1`).
fn is_step1(frame: &[u8]) -> bool {
    frame.len() >= 2 && frame[0] == 0 && frame[1] == 0
}

/// Serves one connection until either side ends it.
async fn serve(stream: TcpStream, rooms: Arc<Rooms>) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut path = String::new();
    // tungstenite's handshake callback type fixes the error variant's size.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_owned();
        Ok(resp)
    };
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
        .await
        .context("handshake")?;
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
    let id = rooms.join(&path, tx.clone());
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if sink.send(WsMessage::Binary(frame)).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    // An empty Yjs update: no structs, an empty delete set.
    let empty_step2 = Bytes::from(encode_sync(SYNC_STEP2, &[0, 0]));
    while let Some(msg) = source.next().await {
        match msg {
            Ok(WsMessage::Binary(frame)) if is_step1(&frame) => {
                if tx.try_send(empty_step2.clone()).is_err() {
                    break;
                }
            }
            Ok(WsMessage::Binary(frame)) => rooms.forward(&path, id, &frame),
            Ok(WsMessage::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    rooms.leave(&path, id);
    drop(tx);
    let _ = writer.await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.bind.ip().is_loopback(),
        "weft-relay only listens on loopback"
    );
    let listener = TcpListener::bind(args.bind).await?;
    let rooms = Arc::new(Rooms::default());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let rooms = Arc::clone(&rooms);
                tokio::spawn(async move {
                    let _ = serve(stream, rooms).await;
                });
            }
            _ = &mut stop => break,
            _ = term.recv() => break,
        }
    }
    eprintln!(
        "weft-relay: {} members dropped as too slow",
        rooms.dropped.load(Ordering::Relaxed)
    );
    Ok(())
}
