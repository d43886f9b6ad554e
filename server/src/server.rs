//! The server as a value: [`Server::open`] opens the data directory and settles what a crash
//! left; [`Server::serve`] wires the store, group commit, room registry, dashboard and router
//! together on a listener and runs until shutdown. [`serve_echo`] serves the conformance echo.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;
use tracing::{error, info};

use weft_protocol::RoomName;

use crate::cluster::feed::ClusterFeed;
use crate::cluster::{self, ClusterError};
use crate::config::Config;
use crate::feed::Feed;
use crate::http::{self, dashboard::Dashboard};
use crate::metrics::Metrics;
use crate::net::metered::ReadBudget;
use crate::net::{accept, socket};
use crate::room::registry::RoomContext;
use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::store::commit::GroupCommit;
use crate::store::inflight::{self, InFlight};
use crate::store::{SledStore, Store, StoreError};
use crate::webhooks::Webhooks;

/// Errors that stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory could not be opened (locked, unreadable or corrupt); the store's
    /// message names the directory and says why.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listening socket failed.
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
    /// The in-flight marks file (`weft-inflight`) in the data directory could not be settled.
    #[error("cannot settle in-flight marks: {0}")]
    InFlight(String),
    /// The store failed while serving (a flush failed or missed its deadline, or the data
    /// directory was removed): edits not acknowledged before the failure may be lost.
    #[error("{0}; edits not acknowledged before the failure may be lost")]
    StoreFailed(StoreError),
    /// Cluster mode could not reach or set up NATS JetStream.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl Server {
    /// What the rooms share: the store, the group commit over it, metrics and the feed.
    fn context(&self, shutdown: &Shutdown) -> Arc<RoomContext> {
        let metrics = Arc::new(Metrics::new());
        let flush_metrics = metrics.clone();
        let commit = GroupCommit::start(
            self.store.clone(),
            Duration::from_millis(self.config.relaxed_flush_ms),
            move |elapsed| flush_metrics.observe_flush(elapsed),
        );
        Arc::new(RoomContext::new(
            self.store.clone(),
            commit,
            self.config.clone(),
            shutdown.clone(),
            self.stats.clone(),
            metrics,
            self.inflight.clone(),
            self.feed.clone(),
        ))
    }

    /// In a cluster: closes this node's connections whose tokens another node revoked.
    fn follow_revocations(&self, ctx: &Arc<RoomContext>, shutdown: &Shutdown) {
        if let Some(revoked) = self.store.revocations_elsewhere() {
            shutdown.spawn(close_revoked(ctx.clone(), revoked, shutdown.clone()));
        }
    }
}

/// In a cluster: applies the token revocations other nodes record, closing the connections
/// here that hold such a token.
async fn close_revoked(
    ctx: Arc<RoomContext>,
    mut revoked: tokio::sync::mpsc::Receiver<(String, u64)>,
    shutdown: Shutdown,
) {
    let limits = ctx.config.limits();
    loop {
        tokio::select! {
            next = revoked.recv() => {
                let Some((doc, before)) = next else { return };
                if let Ok(name) = weft_protocol::RoomName::parse(&doc, &limits) {
                    let closed = ctx.revoked(&name, before);
                    info!(room = %name, before, closed, "tokens revoked on another node");
                }
            }
            _ = shutdown.triggered() => return,
        }
    }
}

/// A server with its store open, ready to serve on a listener.
pub struct Server {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    /// In a cluster, the node's own sled store (change feed, webhook queue), kept open here.
    _local: Option<SledStore>,
    feed: Arc<Feed>,
    /// In a cluster, the cluster's change feed, which this node mirrors.
    shared: Option<Arc<ClusterFeed>>,
    webhooks: Arc<Webhooks>,
    stats: Stats,
    inflight: Arc<InFlight>,
}

impl Server {
    /// Opens the data directory named in `config`.
    ///
    /// # Errors
    /// [`ServerError::Store`] when the directory is locked by another process, unreadable or
    /// corrupt; the server never starts on an empty store in its place.
    /// [`ServerError::InFlight`] when the marks a crash left cannot be read or settled.
    pub fn open(config: Config) -> Result<Self, ServerError> {
        #[cfg(feature = "fault-injection")]
        tracing::warn!(
            "built with fault injection: WEFT_FAULT_ABORT_ON_UPDATE_CONTAINING aborts the process"
        );
        // The node's own state (crash marks, change-feed marks, webhook cursors) stays in sled
        // also in a cluster; the documents and the change feed move to NATS.
        let local = SledStore::open_with(&config.data, config.flush_deadline())?;
        let (marks, hooks) = (local.tree("feed")?, local.tree("webhooks")?);
        let (store, local, feed, shared): (Arc<dyn Store>, _, _, _) = if config.nats.enabled() {
            let node = config.node_name();
            let nats = cluster::open(&config.nats, &node, config.flush_deadline())?;
            if nats.max_update() < config.max_message {
                tracing::warn!(
                    max_update = nats.max_update(),
                    max_message = config.max_message,
                    "NATS takes smaller messages than --max-message: larger updates are refused \
                     as not saved; raise max_payload in the nats-server configuration (8MB \
                     suits most uses) or lower --max-message"
                );
            }
            // One feed for the cluster, mirrored into a tree of its own (the node's own feed
            // of a run without --nats stays as it was).
            let shared = ClusterFeed::open(&nats, config.feed_keep())?;
            nats.flush_also(marks.clone());
            let feed = Feed::open_shared(marks, local.tree("cluster-feed")?, shared.clone())?;
            (Arc::new(nats), Some(local), feed, Some(shared))
        } else {
            (Arc::new(local), None, Feed::open(marks)?, None)
        };
        let webhooks = Webhooks::open(&config, feed.clone(), hooks)?;
        // Before any room loads: a mark left behind names bytes that must not be replayed.
        let (inflight, _left) = InFlight::open(&config.data, &*store).map_err(|e| match e {
            inflight::OpenError::Store(e) => ServerError::Store(e),
            inflight::OpenError::Io(e) => ServerError::InFlight(e.to_string()),
        })?;
        Ok(Self {
            config: Arc::new(config),
            store,
            _local: local,
            feed,
            shared,
            webhooks: Arc::new(webhooks),
            stats: Stats::default(),
            inflight: Arc::new(inflight),
        })
    }

    /// Live counters of this server, usable before and while it serves.
    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    /// Serves on `listener` until `shutdown` is triggered, then closes every socket with 1001,
    /// flushes and compacts every room, and returns. No flush is waited on for longer than the
    /// store's flush deadline, and none at all once the store has failed.
    ///
    /// # Errors
    /// [`ServerError::Io`] when the listener fails; [`ServerError::StoreFailed`] when the store
    /// failed while serving or its final flush failed.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> Result<(), ServerError> {
        let addr = listener.local_addr()?;
        let ctx = self.context(&shutdown);
        self.start_feed(&ctx, &shutdown).await?;
        self.follow_revocations(&ctx, &shutdown);
        let dashboard = self.dashboard(&ctx);
        let address_bytes = Arc::new(socket::address_limiter(&self.config));
        shutdown.spawn(forget_quiet_addresses(
            address_bytes.clone(),
            shutdown.clone(),
        ));
        shutdown.spawn(dashboard.clone().run());
        let state = http::AppState::new(ctx.clone(), dashboard, address_bytes.clone())
            .with_webhooks(self.webhooks.clone());
        let app = http::router(state).layer(request_deadline(&self.config));
        info!(%addr, data = %self.config.data.display(), durability = ?self.config.durability, "serving");
        let budget = read_budget(&self.config, ctx.metrics.unfinished.clone());
        accept::serve(
            listener,
            app,
            self.config.max_http_connections,
            budget,
            &shutdown,
        )
        .await;
        info!("no longer accepting; closing sockets and flushing rooms");
        self.wind_down(&shutdown).await;
        let store = self.store.clone();
        let flushed = tokio::task::spawn_blocking(move || store.flush())
            .await
            .unwrap_or_else(|e| Err(StoreError::Failed(format!("flush task failed: {e}").into())));
        match flushed {
            Ok(()) => {
                info!(
                    rooms = ctx.open_rooms(),
                    "shutdown complete; everything flushed"
                );
                Ok(())
            }
            Err(e) => {
                error!(error = %e, "shutdown: the final flush failed");
                Err(ServerError::StoreFailed(e))
            }
        }
    }
}

impl Server {
    /// The dashboard of the rooms of `ctx` and of the webhook endpoints.
    fn dashboard(&self, ctx: &Arc<RoomContext>) -> Arc<Dashboard> {
        Arc::new(Dashboard::new(ctx.clone()).with_webhooks(self.webhooks.clone()))
    }

    /// Waits for every task to stop, then records what rooms reported to the change feed while
    /// closing (the final flush makes it durable).
    async fn wind_down(&self, shutdown: &Shutdown) {
        shutdown.wait_for_tasks().await;
        if let Err(e) = self.feed.write_pending().await {
            error!(error = %e, "shutdown: recording the last change-feed events failed");
        }
    }

    /// Records what the last run owed the change feed, then starts its writer and pruner and
    /// the webhook deliveries.
    async fn start_feed(
        &self,
        ctx: &Arc<RoomContext>,
        shutdown: &Shutdown,
    ) -> Result<(), ServerError> {
        let feed = &self.feed;
        shutdown.spawn(feed.clone().run(ctx.log.clone(), shutdown.clone()));
        if let Some(shared) = &self.shared {
            shutdown.spawn(shared.clone().mirror(feed.clone(), shutdown.clone()));
        }
        // Deleted documents leave the trash for good after --trash-keep-days.
        shutdown.spawn(crate::room::trash::run_purger(
            ctx.clone(),
            self.config.trash_keep(),
            shutdown.clone(),
        ));
        shutdown.spawn(
            feed.clone()
                .prune(self.config.feed_keep(), shutdown.clone()),
        );
        let limits = weft_protocol::Limits {
            max_room_name: usize::MAX,
            ..self.config.limits()
        };
        let store = self.store.clone();
        feed.recover(|doc| {
            let name = RoomName::parse(doc, &limits).ok()?;
            Some(store.meta(&name).ok()??.size_bytes)
        })?;
        self.webhooks.prepare(&self.config).await;
        self.webhooks
            .start(&self.config, &ctx.metrics, shutdown)
            .map_err(|e| ServerError::Io(std::io::Error::other(e)))
    }
}

/// Serves the echo handler at `/` on `listener` until `shutdown` is triggered, then closes every
/// socket with 1001 and returns. Only for the WebSocket conformance run (`weft-echo`): the same
/// socket loop, limits, queue and upgrade settings as `/ws/{room}` in [`Server::serve`], taken
/// from `config`, with every message echoed instead of handed to a room. No store is opened.
///
/// # Errors
/// [`ServerError::Io`] when the listener fails.
pub async fn serve_echo(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    let max = config.max_http_connections;
    let budget = read_budget(&config, Gauge::default());
    let app = http::echo_router(Arc::new(config), shutdown.clone());
    accept::serve(listener, app, max, budget, &shutdown).await;
    shutdown.wait_for_tasks().await;
    Ok(())
}

/// The budget for unfinished WebSocket messages: `--max-unfinished-bytes` for the server,
/// `--max-message` for one client address (one maximal message must always be able to arrive).
fn read_budget(config: &Config, gauge: Gauge) -> Arc<ReadBudget> {
    ReadBudget::new(
        config.max_unfinished_bytes.max(config.max_message),
        config.max_message,
        gauge,
    )
}

/// The deadline for a whole HTTP request, body included: a client that trickles its body in
/// is answered 408 instead of holding a connection and a task. An upgraded WebSocket's
/// handshake returns at once, so the deadline does not limit sockets.
fn request_deadline(config: &Config) -> TimeoutLayer {
    TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        Duration::from_secs(config.http_timeout_secs.max(1)),
    )
}

/// Drops per-address byte buckets that have refilled (their addresses have been quiet), so the
/// table holds recent clients only.
async fn forget_quiet_addresses(limiter: Arc<socket::AddressLimiter>, shutdown: Shutdown) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
            _ = shutdown.triggered() => return,
        }
    }
}
