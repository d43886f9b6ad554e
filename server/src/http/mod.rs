//! The axum `Router`, built in one place: the WebSocket endpoint `/ws/{room}` (`upgrade`, with
//! its limits in `admission`), the Hocuspocus endpoint `/hocuspocus` (`hocuspocus`), the `/api`
//! routes, version history routes (`history`), minting share links (`share`), health checks
//! (`readiness`), the operator endpoints (`dashboard`: `/metrics`, `/dashboard`), and the
//! browser editor's pages and assets (`pages`). Every request first passes the host and
//! write-origin checks of `policy`; every refusal is logged through `refusals`, and the client's
//! address comes from `forwarded` behind trusted proxies.
//! Handlers are thin: they validate, then hand over to `connection`. The echo router for the
//! WebSocket conformance run is in `upgrade` too, upgraded with the same settings.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::get;
use axum::Router;
use tokio::sync::Semaphore;

pub(crate) mod admission;
pub(crate) mod api;
pub(crate) mod auth;
pub(crate) mod backup;
pub(crate) mod dashboard;
pub(crate) mod extract;
pub(crate) mod feed;
pub(crate) mod forwarded;
pub(crate) mod history;
pub(crate) mod hocuspocus;
pub(crate) mod pages;
pub(crate) mod policy;
pub(crate) mod readiness;
pub(crate) mod refusals;
pub(crate) mod search;
pub(crate) mod share;
pub(crate) mod trash;
pub(crate) mod upgrade;
pub(crate) mod webhooks;

pub(crate) use upgrade::echo_router;

use crate::config::Config;
use crate::error::ApiError;
use crate::net::socket::AddressLimiter;
use crate::room::registry::RoomContext;
use crate::webhooks::Webhooks;
use admission::{ConnectRate, PerIp};
use dashboard::Dashboard;
use readiness::Readiness;
use refusals::RefusalLog;

/// State shared by every handler. Each takes only the part it uses, through [`FromRef`]:
/// `State<Arc<RoomContext>>`, `State<Arc<Config>>`, `State<Arc<Dashboard>>` or
/// `State<Arc<Readiness>>`; only the WebSocket upgrade and the policy check take the whole.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The rooms and everything they share.
    pub(crate) ctx: Arc<RoomContext>,
    /// Counts open WebSockets: tower's concurrency limit does not see upgraded sockets, so each
    /// socket task holds a permit until it ends.
    pub(crate) connections: Arc<Semaphore>,
    /// Open WebSockets per client address, so one host cannot take every slot.
    pub(crate) per_ip: Arc<PerIp>,
    /// New WebSockets per client address per second.
    pub(crate) connects: Arc<ConnectRate>,
    /// The id the next connection gets.
    pub(crate) next_conn: Arc<AtomicU64>,
    /// Bytes per second per client address, over all its WebSockets.
    pub(crate) address_bytes: Arc<AddressLimiter>,
    /// Snapshots for the operator dashboard.
    pub(crate) dashboard: Arc<Dashboard>,
    /// The cached answer of `/readyz`.
    pub(crate) readiness: Arc<Readiness>,
    /// Refusals logged so far, so a flood of identical ones is logged once per interval.
    pub(crate) refusals: Arc<RefusalLog>,
    /// The webhook endpoints (none configured: an empty list).
    pub(crate) webhooks: Option<Arc<Webhooks>>,
    /// The documents' search index, kept current by its indexer task.
    pub(crate) search: Arc<crate::search::Search>,
}

impl AppState {
    /// The state of a server over `ctx`, with its dashboard and per-address byte budgets, and
    /// every connection limit empty.
    pub(crate) fn new(
        ctx: Arc<RoomContext>,
        dashboard: Arc<Dashboard>,
        address_bytes: Arc<AddressLimiter>,
    ) -> Self {
        let config = &ctx.config;
        let search = crate::search::Search::start(&ctx);
        Self {
            search,
            connections: Arc::new(Semaphore::new(config.max_connections)),
            per_ip: Arc::default(),
            connects: Arc::new(ConnectRate::new(config.max_connects_per_sec)),
            next_conn: Arc::new(AtomicU64::new(1)),
            address_bytes,
            dashboard,
            readiness: Arc::default(),
            refusals: Arc::default(),
            webhooks: None,
            ctx,
        }
    }

    /// The state with the server's webhook endpoints.
    pub(crate) fn with_webhooks(mut self, webhooks: Arc<Webhooks>) -> Self {
        self.webhooks = Some(webhooks);
        self
    }
}

impl FromRef<AppState> for Arc<RoomContext> {
    fn from_ref(state: &AppState) -> Self {
        state.ctx.clone()
    }
}

impl FromRef<AppState> for Arc<Config> {
    fn from_ref(state: &AppState) -> Self {
        state.ctx.config.clone()
    }
}

impl FromRef<AppState> for Arc<Dashboard> {
    fn from_ref(state: &AppState) -> Self {
        state.dashboard.clone()
    }
}

impl FromRef<AppState> for Arc<Readiness> {
    fn from_ref(state: &AppState) -> Self {
        state.readiness.clone()
    }
}

/// Builds the application's router, every route (and the fallback) behind the request policy.
pub(crate) fn router(state: AppState) -> Router {
    let policy = middleware::from_fn_with_state(state.clone(), policy::enforce);
    Router::new()
        .route("/ws/{room}", get(upgrade::ws_upgrade))
        .route("/hocuspocus", get(hocuspocus::hocuspocus_upgrade))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(api::routes(state.ctx.config.max_message))
        .merge(dashboard::routes())
        .merge(pages::routes())
        .fallback(pages::not_found)
        .layer(policy)
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(
    State(ctx): State<Arc<RoomContext>>,
    State(readiness): State<Arc<Readiness>>,
) -> Result<&'static str, ApiError> {
    readiness.check(&ctx).await.map_err(|message| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            message,
        )
    })?;
    Ok("ready")
}
