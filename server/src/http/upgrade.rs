//! The WebSocket upgrade of `/ws/{room}`: admission in named steps (a valid room name, the
//! origin and token, a connection slot), then the socket handed to `connection`; and the echo
//! endpoint for the conformance run, upgraded with the same settings.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::header::ORIGIN;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tokio::sync::OwnedSemaphorePermit;
use tracing::warn;
use weft_protocol::RoomName;

use crate::config::Config;
use crate::error::ApiError;
use crate::http::auth::{self, Grant};
use crate::http::AppState;
use crate::net::connection::{self, Peer};
use crate::net::echo::Echo;
use crate::net::socket::{self, AddressBudget};
use crate::shutdown::Shutdown;

/// Counts open WebSockets per client IP address.
#[derive(Default)]
pub(crate) struct PerIp {
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One connection's place in [`PerIp`]; released when dropped.
pub(crate) struct IpSlot {
    table: Arc<PerIp>,
    ip: std::net::IpAddr,
}

impl PerIp {
    /// Takes a slot for `ip` unless it already has `max` connections open.
    fn acquire(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<IpSlot> {
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

pub(super) async fn ws_upgrade(
    State(state): State<AppState>,
    Path(room): Path<String>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(params): Query<auth::WsParams>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    upgrade(&state, room, addr, &headers, &params, ws).inspect_err(|e| {
        state.ctx.metrics.refused(e.code);
    })
}

/// Admits (or refuses) one WebSocket to a document room: a valid name, the origin and token,
/// then a connection slot.
fn upgrade(
    state: &AppState,
    room: String,
    addr: SocketAddr,
    headers: &HeaderMap,
    params: &auth::WsParams,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let config = &state.ctx.config;
    let room = RoomName::parse(&room, &config.limits())
        .map_err(|e| ApiError::bad_request("invalid_room", e.to_string()))?;
    let grant = match auth::ws_access(config, headers, params, &room, addr) {
        Ok(grant) => grant,
        // Browsers hide the status of a refused upgrade (pages only see close code 1006), so a
        // page from an allowed origin is told in a close frame instead: 4000 + the HTTP status,
        // with the stable error code as the reason.
        Err(e) if headers.contains_key(ORIGIN) && e.code != "origin_not_allowed" => {
            return Ok(refuse_in_band(ws, state, e));
        }
        Err(e) => return Err(e),
    };
    let slots = state.take_slots(addr, &room)?;
    let peer = state.peer(addr, room, grant);
    Ok(serve_upgraded(ws, state, peer, slots))
}

/// What an admitted socket holds until it ends: its place among its address's connections and
/// among the server's.
struct Slots {
    _permit: OwnedSemaphorePermit,
    _ip: IpSlot,
}

impl AppState {
    /// Takes a connection slot for `addr`: 429 when its address has as many open as it may,
    /// 503 when the server does.
    fn take_slots(&self, addr: SocketAddr, room: &RoomName) -> Result<Slots, ApiError> {
        let config = &self.ctx.config;
        let max_per_ip = config.max_connections_per_ip;
        let ip = self.per_ip.acquire(addr.ip(), max_per_ip).ok_or_else(|| {
            warn!(peer = %addr, room = %room, "connection refused: too many from this address");
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections_from_address",
                format!("the server allows {max_per_ip} connections from one address"),
            )
        })?;
        let permit = self.connections.clone().try_acquire_owned().map_err(|_| {
            warn!(peer = %addr, room = %room, "connection refused: server at its connection limit");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                format!("the server allows {} connections", config.max_connections),
            )
        })?;
        Ok(Slots {
            _permit: permit,
            _ip: ip,
        })
    }

    /// The admitted connection from `addr` to `room`, with its id, role and byte budget.
    fn peer(&self, addr: SocketAddr, room: RoomName, grant: Grant) -> Peer {
        Peer {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            addr,
            room,
            role: grant.access.ws_role(),
            subject: grant.subject,
            budget: AddressBudget {
                limiter: self.address_bytes.clone(),
                ip: addr.ip(),
            },
        }
    }
}

/// Completes the upgrade and serves `peer` in its room until the socket ends, holding `slots`
/// until then.
fn serve_upgraded(ws: WebSocketUpgrade, state: &AppState, peer: Peer, slots: Slots) -> Response {
    let ctx = state.ctx.clone();
    let tracker = ctx.shutdown.clone();
    let connections = ctx.metrics.connections.clone();
    upgrade_settings(ws, &state.ctx.config).on_upgrade(move |socket| {
        tracker.track(async move {
            connections.inc();
            connection::serve(socket, ctx, peer).await;
            connections.dec();
            drop(slots);
        })
    })
}

/// The WebSocket settings every upgrade uses, production's `/ws/{room}` and the echo endpoint
/// the conformance run tests alike, so that run checks what production runs.
fn upgrade_settings(ws: WebSocketUpgrade, config: &Config) -> WebSocketUpgrade {
    ws
        // tungstenite reserves its whole read buffer per socket (128 KiB by default), which was
        // most of an idle connection's memory; y-websocket frames are small and the buffer
        // grows for the rare large one.
        .read_buffer_size(READ_BUFFER)
        .max_message_size(config.max_message)
        .max_frame_size(config.max_message)
}

/// What the echo endpoint's handlers share.
#[derive(Clone)]
struct EchoState {
    config: Arc<Config>,
    shutdown: Shutdown,
}

/// A router that echoes WebSocket messages at `/`: the production socket loop and upgrade
/// settings with the echo handler in place of a room, for the conformance run.
pub(crate) fn echo_router(config: Arc<Config>, shutdown: Shutdown) -> Router {
    Router::new()
        .route("/", get(echo_upgrade))
        .with_state(EchoState { config, shutdown })
}

async fn echo_upgrade(State(state): State<EchoState>, ws: WebSocketUpgrade) -> Response {
    let tracker = state.shutdown.clone();
    upgrade_settings(ws, &state.config).on_upgrade(move |socket| {
        tracker.track(async move {
            socket::serve(socket, &mut Echo::default(), &state.config, &state.shutdown).await;
        })
    })
}

/// Completes the upgrade only to close at once with `4000 + status` and the error's code.
fn refuse_in_band(ws: WebSocketUpgrade, state: &AppState, e: ApiError) -> Response {
    state.ctx.metrics.refused(e.code);
    let code = 4000 + e.status.as_u16();
    let tracker = state.ctx.shutdown.clone();
    ws.on_upgrade(move |mut socket| {
        tracker.track(async move {
            let frame = CloseFrame {
                code,
                reason: e.code.into(),
            };
            if socket.send(WsMessage::Close(Some(frame))).await.is_ok() {
                // Let the client answer so the close handshake completes.
                let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, socket.recv()).await;
            }
        })
    })
}

/// Initial read buffer of a WebSocket. Held by every idle socket, so small: y-websocket frames
/// are mostly tens of bytes, and a larger frame reserves room for itself when its header
/// arrives (2 KiB instead of 8 KiB took 5.5 KiB off each idle connection).
const READ_BUFFER: usize = 2 * 1024;

/// How long a refused-in-band socket waits for the client's close reply.
const CLOSE_REPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
