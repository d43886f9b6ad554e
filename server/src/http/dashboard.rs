//! The operator's view of a running server: `/metrics` for Prometheus (OpenMetrics when the
//! scraper asks for it, the classic text format otherwise), and `/dashboard`, a live page fed
//! by a snapshot of the server taken once a second.
//!
//! A sampler task reads `metrics` every second, turns counters into rates, keeps the last five
//! minutes, and pushes each new snapshot to every open dashboard over `/dashboard/ws`. Where
//! WebSockets are blocked the page polls `/dashboard/snapshots?since=<t>` instead; both
//! transports carry the same JSON (see [`Dashboard::message`]), so the page has one code path.
//! With an auth secret, every endpoint here needs an admin token for all documents.
//!
//! The message, for both transports:
//! ```json
//! { "server":  { "version", "started_ms", "uptime_secs", "data_dir", "auth": "tokens"|"open",
//!                "durability": "strict"|"relaxed" },
//!   "nodes":   null | [ { "name", "connections", "rooms", "seen_secs_ago", "this" } ],  // a cluster's
//!   "totals":  { "messages_in", "messages_out", "bytes_in", "bytes_out", "updates_applied",
//!                "fanout", "flushes", "queue_full_disconnects", "refused": { "<reason>": n },
//!                "disconnects": { "<close code>|dropped|peer": n } },
//!   "rooms":   [ { "id", "title", "users", "size_bytes", "active_ms" } ],   // busiest 100
//!   "rooms_open": n,
//!   "webhooks": [ { "url", "state": "ok"|"retrying"|"failing", "retrying_since", "pending",
//!                   "cursor", "last_error", "delivered", "failed_attempts", "failed": [..] } ],
//!   "snapshots": [ { "t", "connections", "rooms", "documents", "memory_bytes",
//!                    "messages_in_per_sec", "messages_out_per_sec", "bytes_in_per_sec",
//!                    "bytes_out_per_sec", "updates_per_sec", "fanout_per_sec",
//!                    "flushes_per_sec", "flush_p50_ms", "flush_p99_ms" } ] }
//! ```
//! `t` and `*_ms` are Unix milliseconds; a push carries the newest snapshot, the first push and
//! a poll without `since` the whole history.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::store::NodeStatus;
use tokio::sync::{broadcast, Semaphore};
use tracing::{debug, info, warn};
use weft_protocol::CloseCode;
use weft_protocol::RoomName;

use crate::config::{Config, Durability};
use crate::error::ApiError;
use crate::http::auth;
use crate::http::pages;
use crate::http::AppState;
use crate::room::registry::RoomContext;
use crate::store::now_ms;
use crate::token::Access;
use crate::webhooks::Webhooks;

/// How often a snapshot is taken and pushed.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Snapshots kept for a newly opened page's charts: five minutes.
const HISTORY: usize = 300;
/// Rows of the open-rooms table (the busiest first).
const ROOM_ROWS: usize = 100;
/// Dashboard WebSockets open at once; more get 503 and the page falls back to polling.
const MAX_SOCKETS: usize = 64;
/// A dashboard that cannot take a push within this long is disconnected.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Routes of the operator endpoints.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/dashboard", get(page))
        .route("/dashboard/ws", get(socket))
        .route("/dashboard/snapshots", get(snapshots))
}

/// One second of the server, as charted.
#[derive(Debug, Clone, Serialize)]
struct Snapshot {
    t: u64,
    connections: i64,
    rooms: u64,
    documents: u64,
    memory_bytes: u64,
    messages_in_per_sec: f64,
    messages_out_per_sec: f64,
    bytes_in_per_sec: f64,
    bytes_out_per_sec: f64,
    updates_per_sec: f64,
    fanout_per_sec: f64,
    flushes_per_sec: f64,
    flush_p50_ms: f64,
    flush_p99_ms: f64,
}

/// Counters since start.
#[derive(Debug, Clone, Default, Serialize)]
struct Totals {
    messages_in: u64,
    messages_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    updates_applied: u64,
    fanout: u64,
    flushes: u64,
    queue_full_disconnects: u64,
    refused: BTreeMap<String, u64>,
    disconnects: BTreeMap<String, u64>,
}

/// One open document in the rooms table.
#[derive(Debug, Serialize)]
struct RoomRow {
    id: String,
    title: Option<String>,
    users: u32,
    size_bytes: u64,
    /// Last message from a member, Unix ms; 0 when none since it loaded.
    active_ms: u64,
}

/// The server information panel.
#[derive(Debug, Serialize)]
struct ServerInfo {
    version: &'static str,
    started_ms: u64,
    uptime_secs: u64,
    data_dir: String,
    auth: &'static str,
    durability: &'static str,
}

/// What the sampler last saw, and the charts' history (each snapshot serialized once).
#[derive(Default)]
struct History {
    snapshots: VecDeque<(u64, Arc<str>)>,
    rooms: Arc<str>,
    rooms_open: usize,
    /// Each webhook endpoint's status, as JSON.
    webhooks: Arc<str>,
}

/// The sampler's state and the dashboards' shared feed.
pub(crate) struct Dashboard {
    ctx: Arc<RoomContext>,
    started: Instant,
    started_ms: u64,
    history: Mutex<History>,
    push: broadcast::Sender<Arc<str>>,
    sockets: Arc<Semaphore>,
    webhooks: Option<Arc<Webhooks>>,
}

impl Dashboard {
    /// A dashboard with no history yet; [`Dashboard::run`] fills it.
    pub(crate) fn new(ctx: Arc<RoomContext>) -> Self {
        let (push, _) = broadcast::channel(8);
        Self {
            ctx,
            started: Instant::now(),
            started_ms: now_ms(),
            history: Mutex::new(History {
                rooms: Arc::from("[]"),
                webhooks: Arc::from("[]"),
                ..History::default()
            }),
            push,
            sockets: Arc::new(Semaphore::new(MAX_SOCKETS)),
            webhooks: None,
        }
    }

    /// The dashboard, also showing `webhooks`' endpoints.
    pub(crate) fn with_webhooks(mut self, webhooks: Arc<Webhooks>) -> Self {
        self.webhooks = Some(webhooks);
        self
    }

    /// Samples once a second until shutdown, pushing each snapshot to open dashboards.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.ctx.shutdown.clone();
        let mut before = (Instant::now(), self.totals());
        // Starts the first flush window now rather than at process start.
        self.ctx.metrics.take_flush_window();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.triggered() => break,
            }
            let this = self.clone();
            let now = Instant::now();
            let (then, seen) = before;
            // The store calls (titles, document count) may touch the disk.
            let sampled = tokio::task::spawn_blocking(move || this.sample(&seen, now - then)).await;
            before = match sampled {
                Ok(totals) => (now, totals),
                Err(e) => {
                    warn!(error = %e, "dashboard sample failed");
                    (now, self.totals())
                }
            };
        }
        debug!("dashboard sampler stopped");
    }

    /// Takes one snapshot (`elapsed` after the one that saw `before`), stores and pushes it.
    fn sample(&self, before: &Totals, elapsed: Duration) -> Totals {
        let m = &self.ctx.metrics;
        let totals = self.totals();
        let secs = elapsed.as_secs_f64().max(0.001);
        let rate = |now: u64, then: u64| round2(now.saturating_sub(then) as f64 / secs);
        let gauges = sample_gauges(&self.ctx);
        let flush = m.take_flush_window();
        let snapshot = Snapshot {
            t: now_ms(),
            connections: m.connections.get(),
            rooms: gauges.rooms,
            documents: gauges.documents,
            memory_bytes: gauges.memory_bytes,
            messages_in_per_sec: rate(totals.messages_in, before.messages_in),
            messages_out_per_sec: rate(totals.messages_out, before.messages_out),
            bytes_in_per_sec: rate(totals.bytes_in, before.bytes_in),
            bytes_out_per_sec: rate(totals.bytes_out, before.bytes_out),
            updates_per_sec: rate(totals.updates_applied, before.updates_applied),
            fanout_per_sec: rate(totals.fanout, before.fanout),
            flushes_per_sec: round2(flush.count as f64 / secs),
            flush_p50_ms: round2(flush.p50_ms),
            flush_p99_ms: round2(flush.p99_ms),
        };
        let (rows, open) = self.room_rows();
        let webhooks = self.webhooks.as_ref().map(|w| {
            m.webhook_outbox
                .set(i64::try_from(w.outbox_depth()).unwrap_or(i64::MAX));
            w.status()
        });
        let snapshot_json: Arc<str> = Arc::from(to_json(&snapshot));
        let message = {
            let mut h = lock(&self.history);
            if h.snapshots.len() == HISTORY {
                h.snapshots.pop_front();
            }
            h.snapshots.push_back((snapshot.t, snapshot_json.clone()));
            h.rooms = Arc::from(to_json(&rows));
            h.rooms_open = open;
            h.webhooks = Arc::from(to_json(&webhooks.unwrap_or_default()));
            self.compose(&h, &totals, std::iter::once(&snapshot_json))
        };
        // No receiver (no dashboard open) is the common case, not an error.
        let _ = self.push.send(Arc::from(message));
        totals
    }

    fn totals(&self) -> Totals {
        let m = &self.ctx.metrics;
        Totals {
            messages_in: m.messages_in.get(),
            messages_out: m.messages_out.get(),
            bytes_in: m.bytes_in.get(),
            bytes_out: m.bytes_out.get(),
            updates_applied: m.updates_applied.get(),
            fanout: m.fanout.get(),
            flushes: m.flushes(),
            queue_full_disconnects: m.queue_full.get(),
            refused: m.refused_totals().into_iter().collect(),
            disconnects: m.disconnect_totals().into_iter().collect(),
        }
    }

    /// The busiest open rooms (most users, then most recently active), and how many are open.
    fn room_rows(&self) -> (Vec<RoomRow>, usize) {
        let mut rooms: Vec<RoomRow> = self
            .ctx
            .live_rooms()
            .into_iter()
            .map(|(id, handle)| RoomRow {
                users: handle.live().users(),
                size_bytes: handle.live().stored_bytes(),
                active_ms: handle.live().active_ms(),
                title: None,
                id,
            })
            .collect();
        let open = self.ctx.open_rooms();
        rooms.sort_unstable_by(|a, b| {
            (b.users, b.active_ms, &a.id).cmp(&(a.users, a.active_ms, &b.id))
        });
        rooms.truncate(ROOM_ROWS);
        for row in &mut rooms {
            // Metadata of an open document is cached by the store: no disk read.
            let meta = RoomName::parse(&row.id, &self.ctx.config.limits())
                .map_err(|e| e.to_string())
                .and_then(|name| self.ctx.store.meta(&name).map_err(|e| e.to_string()));
            row.title = match meta {
                Ok(meta) => meta.and_then(|m| m.title).filter(|t| !t.is_empty()),
                Err(e) => {
                    debug!(doc = %row.id, error = %e, "no title for the dashboard");
                    None
                }
            };
        }
        (rooms, open)
    }

    /// The JSON message both transports carry, with `snapshots` as given.
    fn compose<'a>(
        &self,
        h: &History,
        totals: &Totals,
        snapshots: impl Iterator<Item = &'a Arc<str>>,
    ) -> String {
        let config = &self.ctx.config;
        let info = ServerInfo {
            version: env!("CARGO_PKG_VERSION"),
            started_ms: self.started_ms,
            uptime_secs: self.started.elapsed().as_secs(),
            data_dir: config.data.display().to_string(),
            auth: if config.auth_secret.is_some() {
                "tokens"
            } else {
                "open"
            },
            durability: match config.durability {
                Durability::Strict => "strict",
                Durability::Relaxed => "relaxed",
            },
        };
        let snapshots: Vec<&str> = snapshots.map(|s| &**s).collect();
        let mine = NodeStatus {
            name: config.node_name(),
            connections: self.ctx.metrics.connections.get(),
            rooms: h.rooms_open as u64,
            seen_secs_ago: 0,
            this: true,
        };
        let nodes = self.ctx.store.cluster_nodes(mine);
        format!(
            r#"{{"server":{},"nodes":{},"totals":{},"rooms":{},"rooms_open":{},"webhooks":{},"snapshots":[{}]}}"#,
            to_json(&info),
            to_json(&nodes),
            to_json(totals),
            h.rooms,
            h.rooms_open,
            h.webhooks,
            snapshots.join(",")
        )
    }

    /// The message with every snapshot newer than `since` (all of them without it).
    fn since(&self, since: Option<u64>) -> String {
        let totals = self.totals();
        let h = lock(&self.history);
        let newer = h
            .snapshots
            .iter()
            .filter(|(t, _)| since.is_none_or(|s| *t > s))
            .map(|(_, json)| json);
        self.compose(&h, &totals, newer)
    }
}

/// The gauges read from the server rather than counted as things happen.
struct Gauges {
    rooms: u64,
    documents: u64,
    memory_bytes: u64,
}

/// Reads open rooms, stored documents and resident memory into their metrics gauges.
fn sample_gauges(ctx: &RoomContext) -> Gauges {
    let m = &ctx.metrics;
    let gauges = Gauges {
        rooms: ctx.stats.open_rooms(),
        documents: ctx.store.doc_count(),
        memory_bytes: m.sample_memory(),
    };
    m.rooms.set(i64::try_from(gauges.rooms).unwrap_or(i64::MAX));
    m.documents
        .set(i64::try_from(gauges.documents).unwrap_or(i64::MAX));
    gauges
}

/// Refuses a request without an admin token for all documents (when tokens are on).
fn admin(config: &Config, headers: &HeaderMap, query: &TokenQuery) -> Result<(), ApiError> {
    let token = auth::token_of(headers, query.token.as_deref());
    auth::authorize(config, token, None, Access::Admin)
        .map(|_| ())
        .map_err(ApiError::from)
}

/// `?token=` on dashboard URLs: a page link cannot carry an `Authorization` header.
#[derive(Debug, Default, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// `?since=` of the polling endpoint.
#[derive(Debug, Default, Deserialize)]
struct SinceQuery {
    token: Option<String>,
    since: Option<u64>,
}

async fn metrics(
    State(ctx): State<Arc<RoomContext>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Result<Response, ApiError> {
    admin(&ctx.config, &headers, &query)?;
    let m = &ctx.metrics;
    // Gauges a scrape should see fresh even between dashboard samples.
    sample_gauges(&ctx);
    // Prometheus asks for OpenMetrics first; everything else gets the classic text format.
    let openmetrics = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let (ctype, body) = if openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            m.render(),
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            m.render_classic(),
        )
    };
    Ok(([(CONTENT_TYPE, ctype), (CACHE_CONTROL, "no-store")], body).into_response())
}

async fn page(
    State(config): State<Arc<Config>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    match admin(&config, &headers, &query) {
        Ok(()) => pages::page("dashboard.html", &headers),
        Err(e) => pages::error_page(
            e.status,
            "The dashboard needs an admin token",
            &format!(
                "{} Open /dashboard?token=<token>, with a token from `weft token --all-docs --role admin`.",
                e.message
            ),
        ),
    }
}

async fn snapshots(
    State(config): State<Arc<Config>>,
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(query): Query<SinceQuery>,
) -> Result<Response, ApiError> {
    let token = TokenQuery { token: query.token };
    admin(&config, &headers, &token)?;
    Ok((
        [
            (CONTENT_TYPE, "application/json"),
            (CACHE_CONTROL, "no-store"),
        ],
        dashboard.since(query.since),
    )
        .into_response())
}

async fn socket(
    State(config): State<Arc<Config>>,
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Response> {
    // Authorization first: a request without a token learns that, not that it lacked the
    // upgrade headers.
    admin(&config, &headers, &query).map_err(IntoResponse::into_response)?;
    let ws = ws.map_err(IntoResponse::into_response)?;
    open_socket(&config, dashboard, &headers, ws).map_err(IntoResponse::into_response)
}

/// Upgrades a dashboard's socket and pushes to it, unless its origin is refused or too many
/// dashboards are open.
fn open_socket(
    config: &Config,
    dashboard: Arc<Dashboard>,
    headers: &HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if !auth::origin_allowed(config, headers) {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "origin_not_allowed",
            message: "pages from this origin may not open the dashboard socket".into(),
        });
    }
    let permit = dashboard
        .sockets
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "too_many_dashboards",
            message: format!("at most {MAX_SOCKETS} dashboards can be pushed to; poll instead"),
        })?;
    let tracker = dashboard.ctx.shutdown.clone();
    Ok(ws.on_upgrade(move |socket| {
        tracker.track(async move {
            push(socket, &dashboard).await;
            drop(permit);
        })
    }))
}

/// Sends the history, then every new snapshot, until the page goes or the server stops.
async fn push(mut socket: WebSocket, dashboard: &Dashboard) {
    let mut feed = dashboard.push.subscribe();
    let shutdown = dashboard.ctx.shutdown.clone();
    info!("dashboard connected");
    let first = dashboard.since(None);
    let mut next = Some(Arc::<str>::from(first));
    let why = loop {
        if let Some(message) = next.take() {
            let sent = tokio::time::timeout(
                SEND_TIMEOUT,
                socket.send(WsMessage::Text((*message).into())),
            );
            if !matches!(sent.await, Ok(Ok(()))) {
                break "send failed";
            }
        }
        tokio::select! {
            pushed = feed.recv() => match pushed {
                Ok(message) => next = Some(message),
                // Missed snapshots are gone; the next one still carries current totals.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break "server stopped",
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break "page closed",
                // Pings are answered by the WebSocket layer; the page sends nothing else.
                Some(Ok(_)) => {}
            },
            _ = shutdown.triggered() => {
                let frame = CloseFrame {
                    code: CloseCode::GoingAway.code(),
                    reason: "server shutting down".into(),
                };
                let _ = socket.send(WsMessage::Close(Some(frame))).await;
                break "server stopped";
            }
        }
    };
    info!(why, "dashboard disconnected");
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Our own plain structs (strings, numbers, maps with string keys) always serialize.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // History is replaced whole under the lock, so a poisoned guard still holds a valid one.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
