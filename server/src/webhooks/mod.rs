//! Webhooks: every change-feed event POSTed to each `--webhook-url`, signed as Standard Webhooks
//! define (`sign.rs`), at least once, in feed order (so in order per document), from a durable
//! outbox.
//!
//! The outbox of an endpoint is the feed itself plus a cursor: the seq of the last event it
//! was given (or given up on), kept in the `webhooks` tree of the store's database. Each
//! endpoint has one delivery task (`deliver.rs`) that walks the feed from its cursor: a
//! non-2xx answer, a timeout or a refused connection is retried with the same `webhook-id`,
//! backing off from one second (`--webhook-retry-base-ms`) doubling to an hour with jitter,
//! for up to `--webhook-retry-hours`; an event still undelivered then is recorded as failed
//! (`GET /api/webhooks` lists them, `POST /api/webhooks/redeliver` replays) and the endpoint
//! moves on. A cursor is written after each delivery and made durable by the store's next
//! flush: after a crash the last deliveries may be repeated, never skipped. The tasks only read
//! the feed, so a slow or dead receiver never slows editing.
//!
//! In a cluster the outbox of an endpoint is a queue on the cluster's feed shared by every
//! node (`queue.rs`): each event is delivered once by the cluster, by whichever node takes it.

mod deliver;
mod queue;
pub(crate) mod sign;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::Notify;

use crate::config::Config;
use crate::feed::Feed;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::StoreError;

/// Why webhook delivery could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// `--webhook-ca-file` cannot be read or holds no certificate.
    #[error("--webhook-ca-file {}: {reason}", .path.display())]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built (its TLS setup).
    #[error("the webhook HTTP client: {0}")]
    Client(reqwest::Error),
}

/// Failed deliveries listed per endpoint, newest first.
const FAILED_LISTED: usize = 100;

/// Every configured endpoint, and what they share.
pub(crate) struct Webhooks {
    endpoints: Vec<Arc<Endpoint>>,
    feed: Arc<Feed>,
    tree: sled::Tree,
}

/// One receiver and how delivering to it goes.
pub(crate) struct Endpoint {
    /// Where events are POSTed.
    pub(crate) url: String,
    state: Mutex<State>,
    /// Rings when the cursor is moved back (a redelivery), so the task starts over.
    rewound: Notify,
    /// Successful deliveries since start.
    delivered: AtomicU64,
    /// Failed attempts since start.
    attempts_failed: AtomicU64,
}

/// What the dashboard and `GET /api/webhooks` show of an endpoint.
#[derive(Debug, Clone, Default)]
struct State {
    /// The seq of the last event given to the endpoint (or given up on).
    cursor: u64,
    /// When the event being retried first failed (Unix ms), while it is retried.
    retrying_since: Option<u64>,
    /// Whether the last event finished with it was given up on.
    gave_up: bool,
    /// The last error, if any attempt ever failed.
    last_error: Option<String>,
    /// A redelivery asked for: the cursor the task takes up next.
    rewind: Option<u64>,
}

/// An endpoint as listed by `GET /api/webhooks` and the dashboard.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct EndpointStatus {
    /// The receiver's URL.
    pub(crate) url: String,
    /// `ok`, `retrying` (the event at the head of its outbox keeps failing) or `failing` (the
    /// last event was given up on after `--webhook-retry-hours`).
    pub(crate) state: &'static str,
    /// Since when the current event is retried (RFC 3339), while retrying.
    pub(crate) retrying_since: Option<String>,
    /// Events recorded after the last one delivered: the outbox depth.
    pub(crate) pending: u64,
    /// The seq of the last event delivered or given up on.
    pub(crate) cursor: u64,
    /// The last error of a delivery attempt.
    pub(crate) last_error: Option<String>,
    /// Events delivered since the server started.
    pub(crate) delivered: u64,
    /// Failed attempts since the server started.
    pub(crate) failed_attempts: u64,
    /// Events given up on, newest first (at most 100).
    pub(crate) failed: Vec<FailedDelivery>,
}

/// An event an endpoint was given up on.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub(crate) struct FailedDelivery {
    /// The event's seq.
    pub(crate) seq: u64,
    /// When it was given up on (RFC 3339).
    pub(crate) at: String,
    /// The last attempt's error.
    pub(crate) error: String,
}

fn cursor_key(url: &str) -> Vec<u8> {
    [b"c".as_slice(), url.as_bytes()].concat()
}

fn failed_prefix(url: &str) -> Vec<u8> {
    [b"f".as_slice(), url.as_bytes(), b"\0"].concat()
}

impl Webhooks {
    /// The endpoints `config` names, their cursors read from `tree` (a new endpoint starts
    /// after the newest event: it gets what happens from now on).
    ///
    /// # Errors
    /// When the tree cannot be read.
    pub(crate) fn open(
        config: &Config,
        feed: Arc<Feed>,
        tree: sled::Tree,
    ) -> Result<Self, StoreError> {
        let head = *feed.head().borrow();
        let mut endpoints = Vec::new();
        for url in &config.webhook_urls {
            if endpoints.iter().any(|e: &Arc<Endpoint>| &e.url == url) {
                continue;
            }
            let cursor = match tree.get(cursor_key(url))? {
                Some(v) => v
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(head, u64::from_be_bytes),
                None => {
                    tree.insert(cursor_key(url), &head.to_be_bytes())?;
                    head
                }
            };
            endpoints.push(Arc::new(Endpoint {
                url: url.clone(),
                state: Mutex::new(State {
                    cursor,
                    ..State::default()
                }),
                rewound: Notify::new(),
                delivered: AtomicU64::new(0),
                attempts_failed: AtomicU64::new(0),
            }));
        }
        Ok(Self {
            endpoints,
            feed,
            tree,
        })
    }

    /// Starts one delivery task per endpoint.
    pub(crate) fn start(
        self: &Arc<Self>,
        config: &Arc<Config>,
        metrics: &Arc<Metrics>,
        shutdown: &Shutdown,
    ) -> Result<(), StartError> {
        let mut builder = reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(config.webhook_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("weft/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.webhook_ca_file {
            let ca_error = |reason: String| StartError::CaFile {
                path: path.clone(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_error("no PEM certificate in it".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(StartError::Client)?;
        let shared = self.feed.shared();
        for endpoint in &self.endpoints {
            let task = deliver::Delivery {
                endpoint: endpoint.clone(),
                webhooks: self.clone(),
                client: client.clone(),
                config: config.clone(),
                metrics: metrics.clone(),
                shutdown: shutdown.clone(),
            };
            match &shared {
                Some(shared) => shutdown.spawn(task.run_shared(shared.clone())),
                None => shutdown.spawn(task.run()),
            };
        }
        Ok(())
    }

    /// In a cluster, makes sure every endpoint's shared queue exists before this node serves,
    /// so the events of the edits it takes are queued for every endpoint.
    pub(crate) async fn prepare(&self, config: &Config) {
        let Some(shared) = self.feed.shared() else {
            return;
        };
        for e in &self.endpoints {
            let opened = shared.queue(e.url.clone(), queue::ack_wait(config)).await;
            if let Err(error) = opened {
                tracing::warn!(url = %e.url, %error, "webhooks: cannot open the cluster's queue yet");
            }
        }
    }

    /// Every endpoint's status.
    pub(crate) fn status(&self) -> Vec<EndpointStatus> {
        let head = *self.feed.head().borrow();
        self.endpoints
            .iter()
            .map(|e| self.status_of(e, head))
            .collect()
    }

    /// Events not yet given to the endpoints, summed.
    pub(crate) fn outbox_depth(&self) -> u64 {
        let head = *self.feed.head().borrow();
        self.endpoints
            .iter()
            .map(|e| head.saturating_sub(lock(&e.state).cursor))
            .sum()
    }

    fn status_of(&self, e: &Endpoint, head: u64) -> EndpointStatus {
        use std::sync::atomic::Ordering::Relaxed;
        let s = lock(&e.state).clone();
        let state = match (s.retrying_since, s.gave_up) {
            (Some(_), _) => "retrying",
            (None, true) => "failing",
            (None, false) => "ok",
        };
        EndpointStatus {
            url: e.url.clone(),
            state,
            retrying_since: s.retrying_since.map(crate::feed::event::rfc3339),
            pending: head.saturating_sub(s.cursor),
            cursor: s.cursor,
            last_error: s.last_error,
            delivered: e.delivered.load(Relaxed),
            failed_attempts: e.attempts_failed.load(Relaxed),
            failed: self.failed_of(&e.url),
        }
    }

    /// The events `url` was given up on, newest first.
    fn failed_of(&self, url: &str) -> Vec<FailedDelivery> {
        self.tree
            .scan_prefix(failed_prefix(url))
            .values()
            .rev()
            .take(FAILED_LISTED)
            .filter_map(|v| serde_json::from_slice(&v.ok()?).ok())
            .collect()
    }

    /// Replays every event after `since` to every endpoint (delivered ones again, with their
    /// original `webhook-id`); returns how many endpoints were rewound.
    pub(crate) fn redeliver(&self, since: u64) -> usize {
        for e in &self.endpoints {
            lock(&e.state).rewind = Some(since);
            e.rewound.notify_one();
        }
        self.endpoints.len()
    }

    /// Notes that `url` has been given everything up to `seq`.
    fn save_cursor(&self, url: &str, seq: u64) {
        if let Err(e) = self.tree.insert(cursor_key(url), &seq.to_be_bytes()) {
            tracing::warn!(url, error = %e, "webhooks: could not save the outbox cursor");
        }
    }

    /// Records that `url` was given up on for event `seq`.
    fn save_failed(&self, url: &str, failed: &FailedDelivery) {
        let mut key = failed_prefix(url);
        key.extend_from_slice(&failed.seq.to_be_bytes());
        let value = serde_json::to_vec(failed).unwrap_or_default();
        if let Err(e) = self.tree.insert(key, value) {
            tracing::warn!(url, error = %e, "webhooks: could not record a failed delivery");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Fields are replaced whole under the lock: a panic cannot leave the state half-written.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
