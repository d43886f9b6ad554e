//! One endpoint's delivery task: walks the feed from the endpoint's cursor, POSTs each event
//! (signed, with its stable `webhook-id`), retries failures with exponential backoff and
//! jitter, gives up on an event after `--webhook-retry-hours`, and waits for new events.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::config::Config;
use crate::feed::event::{rfc3339, Record};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::now_ms;
use crate::token::unix_now;
use crate::webhooks::{lock, sign, Endpoint, FailedDelivery, Webhooks};

/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Events read from the feed at once.
const BATCH: usize = 64;

/// How the delivery of one event ended.
pub(super) enum Outcome {
    /// The receiver answered 2xx, or the event was given up on: move on.
    Done,
    /// A redelivery moved the cursor: start over from it.
    Rewound,
    /// The server is stopping.
    Stopping,
}

/// The task of one endpoint.
pub(super) struct Delivery {
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) webhooks: Arc<Webhooks>,
    pub(super) client: reqwest::Client,
    pub(super) config: Arc<Config>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) shutdown: Shutdown,
}

impl Delivery {
    /// Delivers until shutdown.
    pub(super) async fn run(self) {
        let mut head = self.webhooks.feed.head();
        info!(url = %self.endpoint.url, "webhook delivery started");
        loop {
            let cursor = self.cursor();
            let upto = *head.borrow_and_update();
            let read = self
                .webhooks
                .feed
                .log()
                .read((cursor, upto), BATCH, None, BATCH);
            let events = match read {
                Ok((events, _)) => events,
                Err(e) => {
                    warn!(url = %self.endpoint.url, error = %e, "webhooks: reading the feed failed");
                    if self.pause(Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            if events.is_empty() {
                tokio::select! {
                    _ = head.changed() => {}
                    _ = self.endpoint.rewound.notified() => {}
                    _ = self.shutdown.triggered() => return,
                }
                continue;
            }
            for record in events {
                match self.deliver(&record).await {
                    Outcome::Done => self.advance(record.seq),
                    Outcome::Rewound => break,
                    Outcome::Stopping => return,
                }
            }
        }
    }

    /// The cursor, after applying a redelivery asked for.
    fn cursor(&self) -> u64 {
        let mut s = lock(&self.endpoint.state);
        if let Some(since) = s.rewind.take() {
            s.cursor = since;
            s.retrying_since = None;
            drop(s);
            self.webhooks.save_cursor(&self.endpoint.url, since);
            return since;
        }
        s.cursor
    }

    /// The endpoint has been given everything up to `seq` (unless a redelivery moved it).
    pub(super) fn advance(&self, seq: u64) {
        let mut s = lock(&self.endpoint.state);
        if s.rewind.is_some() {
            return;
        }
        s.cursor = seq;
        drop(s);
        self.webhooks.save_cursor(&self.endpoint.url, seq);
        self.metrics
            .webhook_outbox
            .set(i64::try_from(self.webhooks.outbox_depth()).unwrap_or(i64::MAX));
    }

    /// Whether the endpoint wants events of this type.
    fn wants(&self, record: &Record) -> bool {
        let events = &self.config.webhook_events;
        events.is_empty() || events.iter().any(|e| e == record.event.kind())
    }

    /// Delivers one event, retrying until it is accepted or given up on.
    pub(super) async fn deliver(&self, record: &Record) -> Outcome {
        if !self.wants(record) {
            return Outcome::Done;
        }
        let body = match serde_json::to_vec(record) {
            Ok(body) => body,
            Err(e) => {
                warn!(seq = record.seq, error = %e, "webhooks: could not encode an event");
                return Outcome::Done;
            }
        };
        let base = Duration::from_millis(self.config.webhook_retry_base_ms.max(1));
        let window = self.config.webhook_retry();
        let mut delay = base;
        loop {
            let attempt = tokio::select! {
                result = self.attempt(record.seq, &body) => result,
                _ = self.shutdown.triggered() => return Outcome::Stopping,
            };
            let error = match attempt {
                Ok(()) => {
                    self.succeeded();
                    return Outcome::Done;
                }
                Err(error) => error,
            };
            let since = self.failed(&error);
            let tried_for = Duration::from_millis(now_ms().saturating_sub(since));
            if tried_for >= window {
                self.give_up(record.seq, error);
                return Outcome::Done;
            }
            let wait = jitter(delay).min(window - tried_for);
            delay = (delay * 2).min(MAX_BACKOFF);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.endpoint.rewound.notified() => return Outcome::Rewound,
                _ = self.shutdown.triggered() => return Outcome::Stopping,
            }
        }
    }

    /// One POST of `body`, the event numbered `seq`.
    async fn attempt(&self, seq: u64, body: &[u8]) -> Result<(), String> {
        let key = self
            .config
            .webhook_secret
            .as_ref()
            .map_or(&[][..], |s| &s.0[..]);
        let id = sign::message_id(seq);
        let timestamp = unix_now();
        let signature = sign::signature(key, &id, timestamp, body);
        let sent = self
            .client
            .post(&self.endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("the receiver answered {}", response.status())),
            Err(e) if e.is_timeout() => Err(format!(
                "no answer within {} ms",
                self.config.webhook_timeout_ms
            )),
            Err(e) if e.is_connect() => Err(format!("could not connect: {}", source_of(&e))),
            Err(e) => Err(source_of(&e)),
        }
    }

    fn succeeded(&self) {
        self.endpoint.delivered.fetch_add(1, Ordering::Relaxed);
        self.metrics.webhook_deliveries.inc();
        let mut s = lock(&self.endpoint.state);
        s.retrying_since = None;
        s.gave_up = false;
    }

    /// Notes a failed attempt; returns since when the event has been failing (Unix ms).
    fn failed(&self, error: &str) -> u64 {
        self.endpoint
            .attempts_failed
            .fetch_add(1, Ordering::Relaxed);
        self.metrics.webhook_failures.inc();
        let mut s = lock(&self.endpoint.state);
        if s.retrying_since.is_none() {
            warn!(url = %self.endpoint.url, error, "webhook delivery failed; retrying");
        }
        s.last_error = Some(error.to_owned());
        *s.retrying_since.get_or_insert_with(now_ms)
    }

    fn give_up(&self, seq: u64, error: String) {
        warn!(url = %self.endpoint.url, seq, %error, "webhook delivery given up after the retry window");
        let failed = FailedDelivery {
            seq,
            at: rfc3339(now_ms()),
            error,
        };
        self.webhooks.save_failed(&self.endpoint.url, &failed);
        let mut s = lock(&self.endpoint.state);
        s.retrying_since = None;
        s.gave_up = true;
    }

    /// Sleeps `d`; true when the server is stopping.
    pub(super) async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.shutdown.triggered() => true,
        }
    }
}

/// `delay` with jitter: somewhere between half of it and all of it, so receivers coming back
/// are not hit by every sender at once.
fn jitter(delay: Duration) -> Duration {
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    let half = delay / 2;
    let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_micros(random % spread)
}

/// A reqwest error with its causes (its own message rarely says what happened).
fn source_of(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
