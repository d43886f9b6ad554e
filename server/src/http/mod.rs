//! The axum `Router`, built in one place: the WebSocket endpoint `/ws/{room}`, the `/api`
//! routes, health checks, the operator endpoints (`dashboard`: `/metrics`, `/dashboard`), and
//! the browser editor's pages and assets (`pages`).
//! Handlers are thin: they validate, then hand over to `connection`. The echo router for the
//! WebSocket conformance run is here too, upgraded with the same settings.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::header::ORIGIN;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::Semaphore;
use tracing::warn;
use weft_protocol::RoomName;

pub(crate) mod api;
pub(crate) mod auth;
pub(crate) mod backup;
pub(crate) mod dashboard;
pub(crate) mod pages;

use crate::config::Config;
use crate::error::ApiError;
use crate::net::connection::{self, Peer};
use crate::net::echo::Echo;
use crate::net::socket::{self, AddressBudget, AddressLimiter};
use crate::room::registry::RoomContext;
use crate::shutdown::Shutdown;
use dashboard::Dashboard;

/// State shared by every handler.
pub(crate) struct AppState {
    pub(crate) ctx: Arc<RoomContext>,
    /// Counts open WebSockets: tower's concurrency limit does not see upgraded sockets, so each
    /// socket task holds a permit until it ends.
    pub(crate) connections: Arc<Semaphore>,
    /// Open WebSockets per client address, so one host cannot take every slot.
    pub(crate) per_ip: Arc<PerIp>,
    pub(crate) next_conn: AtomicU64,
    /// Bytes per second per client address, over all its WebSockets.
    pub(crate) address_bytes: Arc<AddressLimiter>,
    /// Snapshots for the operator dashboard.
    pub(crate) dashboard: Arc<Dashboard>,
}

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

/// Builds the application's router.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ws/{room}", get(ws_upgrade))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(api::routes(state.ctx.config.max_message))
        .merge(dashboard::routes())
        .merge(pages::routes())
        .fallback(pages::not_found)
        .with_state(state)
}

async fn ws_upgrade(
    State(state): State<Arc<AppState>>,
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

/// Admits (or refuses) one WebSocket to a document room.
fn upgrade(
    state: &Arc<AppState>,
    room: String,
    addr: SocketAddr,
    headers: &HeaderMap,
    params: &auth::WsParams,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let config = &state.ctx.config;
    let room = RoomName::parse(&room, &config.limits()).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_room",
        message: e.to_string(),
    })?;
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
    let ip_slot = state
        .per_ip
        .acquire(addr.ip(), config.max_connections_per_ip)
        .ok_or_else(|| {
            warn!(peer = %addr, room = %room, "connection refused: too many from this address");
            ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "too_many_connections_from_address",
                message: format!(
                    "the server allows {} connections from one address",
                    config.max_connections_per_ip
                ),
            }
        })?;
    let permit = state.connections.clone().try_acquire_owned().map_err(|_| {
        warn!(peer = %addr, room = %room, "connection refused: server at its connection limit");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "too_many_connections",
            message: format!("the server allows {} connections", config.max_connections),
        }
    })?;
    let peer = Peer {
        id: state.next_conn.fetch_add(1, Ordering::Relaxed),
        addr,
        room,
        role: grant.access.ws_role(),
        subject: grant.subject,
        budget: AddressBudget {
            limiter: state.address_bytes.clone(),
            ip: addr.ip(),
        },
    };
    let ctx = state.ctx.clone();
    let tracker = ctx.shutdown.clone();
    let connections = ctx.metrics.connections.clone();
    Ok(upgrade_settings(ws, config).on_upgrade(move |socket| {
        tracker.track(async move {
            connections.inc();
            connection::serve(socket, ctx, peer).await;
            connections.dec();
            drop((permit, ip_slot));
        })
    }))
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

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let store = state.ctx.store.clone();
    match tokio::task::spawn_blocking(move || store.check_writable()).await {
        Ok(Ok(())) => "ready".into_response(),
        Ok(Err(e)) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "store_unavailable",
            message: e.to_string(),
        }
        .into_response(),
        Err(e) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "store_unavailable",
            message: e.to_string(),
        }
        .into_response(),
    }
}
