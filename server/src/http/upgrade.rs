//! The WebSocket upgrade of `/ws/{room}`: admission in named steps, then the socket handed to
//! `connection`; and the echo endpoint for the conformance run, upgraded with the same
//! settings.
//!
//! Admission, in order: the address's connect rate (429), a valid room name (400), the origin
//! (403), the token (401/403), then a connection slot for the address (429) and the server
//! (503). How a refusal is told depends on what a client can do with it:
//!
//! - **The token** (401/403): the upgrade is accepted and closed at once with 4401/4403 and the
//!   error code as the reason. Browsers hide a refused upgrade's status (pages see only 1006),
//!   and stock y-websocket treats it as a network error and retries for ever; y-websocket 3
//!   stops on 4400-4499. The refusing socket holds a connection slot (per address and in
//!   total) while it closes, with a few KiB of buffers; when no slot is free the refusal is
//!   plain HTTP instead.
//! - **The limits** (429/503) and **invalid names** (400): plain HTTP, so a client that is
//!   over a limit gets no socket to hold. y-websocket counts a refused handshake as a failed
//!   attempt and backs off (to 2.5 s by default), exactly as it would after a 1013 close;
//!   older versions reset their backoff whenever a socket opens, so an accepted-then-closed
//!   socket would make them retry every 100 ms. A connect-rate refusal says when to retry
//!   (`Retry-After`).
//! - **The origin** (403): plain HTTP, and never in-band: a page of another site learns
//!   nothing.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tracing::Level;
use tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::Message as WsMessage;
use weft_protocol::{CloseCode, RoomName};

use crate::config::Config;
use crate::error::ApiError;
use crate::http::admission::Slots;
use crate::http::auth::{self, Grant};
use crate::http::extract::ClientAddr;
use crate::http::AppState;
use crate::net::connection::{self, Peer};
use crate::net::echo::Echo;
use crate::net::metered::ReadMeter;
use crate::net::socket::{self, AddressBudget};
use crate::net::upgrade::{Upgrade as WebSocketUpgrade, WebSocket};
use crate::shutdown::Shutdown;

/// `GET /ws/{room}`: admits the socket to its room, or refuses it as the module describes.
pub(super) async fn ws_upgrade(
    State(state): State<AppState>,
    Path(room): Path<String>,
    client: ClientAddr,
    headers: HeaderMap,
    Query(params): Query<auth::WsParams>,
    meter: Option<Extension<Arc<ReadMeter>>>,
    ws: WebSocketUpgrade,
) -> Response {
    match admit(&state, &room, client, &headers, &params) {
        Ok((mut peer, slots)) => {
            peer.meter = meter.map(|Extension(m)| {
                m.activate(client.ip());
                m
            });
            serve_upgraded(ws, &state, peer, slots)
        }
        Err(refusal) => refuse(ws, &state, client, &room, refusal),
    }
}

/// A refused upgrade and how its client is told.
pub(super) enum Refusal {
    /// With the HTTP status; `retry_after` when the client may try again that soon.
    Http {
        error: ApiError,
        retry_after: Option<Duration>,
    },
    /// In a close frame, on a socket that holds `slots` until it is closed.
    InBand(ApiError, Slots),
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Self::Http {
            error,
            retry_after: None,
        }
    }
}

/// Admits (or refuses) one WebSocket to a document room, in the order the module describes.
fn admit(
    state: &AppState,
    room: &str,
    client: ClientAddr,
    headers: &HeaderMap,
    params: &auth::WsParams,
) -> Result<(Peer, Slots), Refusal> {
    let config = &state.ctx.config;
    state
        .connects
        .check(client.ip())
        .map_err(|wait| Refusal::Http {
            error: connecting_too_fast(config),
            retry_after: Some(wait),
        })?;
    let room = RoomName::parse(room, &config.limits())
        .map_err(|e| ApiError::bad_request("invalid_room", e.to_string()))?;
    auth::ws_origin(config, headers)?;
    let grant = match auth::ws_token(config, &state.ctx.revocations, headers, params, &room) {
        Ok(grant) => grant,
        Err(e) => {
            return Err(match state.take_slots(client) {
                Ok(slots) => Refusal::InBand(e, slots),
                Err(_) => e.into(),
            })
        }
    };
    let slots = state.take_slots(client)?;
    Ok((state.peer(client, room, grant), slots))
}

/// 429 `too_many_connects`: the address opens sockets faster than `--max-connects-per-sec`.
pub(super) fn connecting_too_fast(config: &Config) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_connects",
        format!(
            "the server allows {} new connections a second from one address",
            config.max_connects_per_sec
        ),
    )
}

/// Counts, logs and answers a refusal: token refusals at INFO (a stale tab), the rest at WARN.
pub(super) fn refuse(
    ws: WebSocketUpgrade,
    state: &AppState,
    client: ClientAddr,
    room: &str,
    refusal: Refusal,
) -> Response {
    let error = match &refusal {
        Refusal::Http { error, .. } | Refusal::InBand(error, _) => error,
    };
    state.ctx.metrics.refused(error.code);
    let level = if error.code.starts_with("token_") {
        Level::INFO
    } else {
        Level::WARN
    };
    state
        .refusals
        .refused(level, "WebSocket", client, room, error);
    match refusal {
        Refusal::InBand(error, slots) => refuse_in_band(ws, state, error, slots),
        Refusal::Http { error, retry_after } => {
            let mut response = error.into_response();
            if let Some(wait) = retry_after {
                let secs = wait.as_secs_f64().ceil().max(1.0).to_string();
                if let Ok(value) = HeaderValue::from_str(&secs) {
                    response.headers_mut().insert(RETRY_AFTER, value);
                }
            }
            response
        }
    }
}

impl AppState {
    /// Takes a connection slot for `client`: 429 when its address has as many open as it may,
    /// 503 when the server does.
    pub(super) fn take_slots(&self, client: ClientAddr) -> Result<Slots, ApiError> {
        let config = &self.ctx.config;
        let max_per_ip = config.max_connections_per_ip;
        let ip = self
            .per_ip
            .acquire(client.ip(), max_per_ip)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_connections_from_address",
                    format!("the server allows {max_per_ip} connections from one address"),
                )
            })?;
        let permit = self.connections.clone().try_acquire_owned().map_err(|_| {
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

    /// The admitted connection from `client` to `room`, with its id, role and byte budget.
    fn peer(&self, client: ClientAddr, room: RoomName, grant: Grant) -> Peer {
        Peer {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            addr: client.0,
            room,
            role: grant.access.ws_role(),
            subject: grant.subject,
            lifetime: grant.lifetime,
            budget: AddressBudget {
                limiter: self.address_bytes.clone(),
                ip: client.ip(),
            },
            meter: None,
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
pub(super) fn upgrade_settings(ws: WebSocketUpgrade, config: &Config) -> WebSocketUpgrade {
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

async fn echo_upgrade(
    State(state): State<EchoState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    meter: Option<Extension<Arc<ReadMeter>>>,
    ws: WebSocketUpgrade,
) -> Response {
    let tracker = state.shutdown.clone();
    let meter = meter.map(|Extension(m)| {
        m.activate(peer.ip());
        m
    });
    upgrade_settings(ws, &state.config).on_upgrade(move |socket| {
        tracker.track(async move {
            let (config, shutdown) = (&state.config, &state.shutdown);
            socket::serve(socket, &mut Echo::default(), config, shutdown, meter).await;
        })
    })
}

/// Completes the upgrade only to close at once with 4401 or 4403 and the error's code, holding
/// `slots` until the close handshake is over. The socket's buffers are small: all it reads is
/// the client's close reply (and whatever the client sent before it saw the close).
fn refuse_in_band(ws: WebSocketUpgrade, state: &AppState, e: ApiError, slots: Slots) -> Response {
    let code = if e.status == StatusCode::UNAUTHORIZED {
        CloseCode::Unauthorized
    } else {
        CloseCode::Forbidden
    };
    let tracker = state.ctx.shutdown.clone();
    ws.read_buffer_size(READ_BUFFER)
        .max_message_size(REFUSED_MAX_MESSAGE)
        .max_frame_size(REFUSED_MAX_MESSAGE)
        .on_upgrade(move |mut socket| {
            tracker.track(async move {
                let frame = CloseFrame {
                    code: WsCloseCode::from(code.code()),
                    reason: e.code.into(),
                };
                if socket.send(WsMessage::Close(Some(frame))).await.is_ok() {
                    let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, close_reply(&mut socket)).await;
                }
                drop(slots);
            })
        })
}

/// Reads until the client's close reply, skipping what it sent before it saw our close (a
/// y-websocket client sends sync step 1 as soon as the socket opens).
async fn close_reply(socket: &mut WebSocket) {
    while let Some(Ok(message)) = socket.next().await {
        if matches!(message, WsMessage::Close(_)) {
            return;
        }
    }
}

/// Initial read buffer of a WebSocket. Held by every idle socket, so small: y-websocket frames
/// are mostly tens of bytes, and a larger frame reserves room for itself when its header
/// arrives (2 KiB instead of 8 KiB took 5.5 KiB off each idle connection).
const READ_BUFFER: usize = 2 * 1024;

/// Largest message (and read buffer) of a socket being refused: enough for a client's first
/// messages and its close reply; anything larger ends the socket at once.
const REFUSED_MAX_MESSAGE: usize = 4 * 1024;

/// How long a refused-in-band socket waits for the client's close reply.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(2);
