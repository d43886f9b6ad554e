//! The cluster's change feed: one JetStream stream, [`FEED_STREAM`], that every node appends the
//! events of its own rooms to and every node mirrors ([`ClusterFeed::mirror`]) into the tree its
//! `GET /api/changes` reads. An event's `seq` is its sequence in the stream, so every node shows
//! the same events in the same order under the same cursors. Events are kept for
//! `--feed-keep-days` (the stream's max age). Webhook queues on the stream are in `hooks.rs`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::stream;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tracing::{info, warn};

use crate::cluster::connect::Nats;
use crate::cluster::hooks::record_of;
use crate::cluster::{hooks, ClusterError, NatsStore};
use crate::feed::event::Record;
use crate::feed::shared::{Outgoing, SharedLog, SharedQueue};
use crate::feed::Feed;
use crate::shutdown::Shutdown;

/// The stream of the cluster's change feed.
pub(crate) const FEED_STREAM: &str = "WEFT_FEED";
/// Its one subject.
pub(crate) const FEED_SUBJECT: &str = "weft.feed";

/// How long repeated appends of the same event are recognised (at most the events' max age).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long setting the stream up may take at start.
const SETUP_DEADLINE: Duration = Duration::from_secs(30);

/// Events the mirror records in one batch.
const MIRROR_BATCH: usize = 256;

/// Pause before mirroring again after the consumer failed, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The cluster's change feed, as one node uses it.
pub(crate) struct ClusterFeed {
    nats: Arc<Nats>,
    pub(super) stream: stream::Stream,
}

impl ClusterFeed {
    /// Creates or checks the feed's stream through `store`'s connection: replicas as the
    /// update log has, events kept for `keep` (an existing stream takes a changed `keep`).
    ///
    /// # Errors
    /// When JetStream does not answer or refuses the stream.
    pub(crate) fn open(store: &NatsStore, keep: Duration) -> Result<Arc<Self>, ClusterError> {
        let (rt, nats) = store.parts();
        let nats = nats.clone();
        let stream = rt
            .call(SETUP_DEADLINE, feed_stream(nats.clone(), keep))
            .map_err(|e| ClusterError::setup(FEED_STREAM, e))??;
        Ok(Arc::new(Self { nats, stream }))
    }

    /// Mirrors the stream into `feed` from where the mirror stopped, until shutdown; follows
    /// again after a failure (NATS away, the stream's leader changing).
    pub(crate) async fn mirror(self: Arc<Self>, feed: Arc<Feed>, shutdown: Shutdown) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let failed = tokio::select! {
                failed = self.mirror_once(&feed, &mut backoff) => failed,
                _ = shutdown.triggered() => return,
            };
            warn!(error = %failed, "change feed: mirroring the cluster's feed failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.triggered() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Mirrors until the consumer fails; returns why.
    async fn mirror_once(&self, feed: &Feed, backoff: &mut Duration) -> String {
        let next = match feed.mirror_next() {
            Ok(next) => next,
            Err(e) => return e.to_string(),
        };
        let mut stream = self.stream.clone();
        let first = match stream.info().await {
            Ok(info) => info.state.first_sequence,
            Err(e) => return e.to_string(),
        };
        if next < first {
            info!(
                missed_before = first,
                "change feed: events older than the mirror are gone"
            );
            if let Err(e) = feed.mirror_missed(first) {
                return e.to_string();
            }
        }
        let config = pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: next.max(first).max(1),
            },
            ..Default::default()
        };
        let messages = match stream.create_consumer(config).await {
            Ok(consumer) => consumer.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut batches = match messages {
            Ok(messages) => messages.ready_chunks(MIRROR_BATCH),
            Err(e) => return e,
        };
        let mut expected = next;
        while let Some(batch) = batches.next().await {
            let mut records = Vec::with_capacity(batch.len());
            for msg in batch {
                let msg = match msg {
                    Ok(msg) => msg,
                    Err(e) => return e.to_string(),
                };
                match record_of(&msg) {
                    Some(record) if record.seq >= expected => records.push(record),
                    Some(_) => {}
                    None => {
                        warn!("change feed: skipping an event the cluster's feed holds garbled")
                    }
                }
            }
            if let Some(last) = records.last() {
                expected = last.seq + 1;
            }
            if let Err(e) = feed.mirrored(&records) {
                return e.to_string();
            }
            *backoff = FIRST_BACKOFF;
        }
        "the consumer ended".into()
    }
}

/// The feed's stream, created with the update log's replicas or checked, its max age `keep`.
async fn feed_stream(nats: Arc<Nats>, keep: Duration) -> Result<stream::Stream, ClusterError> {
    let replicas = nats.log.cached_info().config.num_replicas.max(1);
    let config = stream::Config {
        name: FEED_STREAM.into(),
        description: Some("Weft: the change feed of every document".into()),
        subjects: vec![FEED_SUBJECT.into()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_age: keep,
        duplicate_window: DUPLICATE_WINDOW.min(keep),
        allow_direct: true,
        ..Default::default()
    };
    let setup = |e: &dyn std::fmt::Display| ClusterError::setup(FEED_STREAM, e);
    let mut stream = nats
        .js
        .get_or_create_stream(config.clone())
        .await
        .map_err(|e| setup(&e))?;
    let has = stream.info().await.map_err(|e| setup(&e))?.config.clone();
    if has.max_age != keep {
        let config = stream::Config {
            num_replicas: has.num_replicas,
            ..config
        };
        nats.js.update_stream(config).await.map_err(|e| setup(&e))?;
        info!(keep = ?keep, "change feed: the cluster's feed keeps events for the new --feed-keep-days");
    }
    Ok(stream)
}

impl SharedLog for ClusterFeed {
    fn append(&self, out: Outgoing) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(async move {
            let record = Record {
                seq: 0,
                at: out.at,
                event: out.event,
            };
            let payload = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
            let mut headers = HeaderMap::new();
            headers.insert(NATS_MESSAGE_ID, out.id.as_str());
            let ack = self
                .nats
                .js
                .publish_with_headers(FEED_SUBJECT, headers, payload.into())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            Ok(ack.sequence)
        })
    }

    fn queue(
        &self,
        url: String,
        ack_wait: Duration,
    ) -> BoxFuture<'_, Result<Box<dyn SharedQueue>, String>> {
        Box::pin(async move { hooks::queue(&self.stream, &url, ack_wait).await })
    }

    fn rewind(
        &self,
        url: String,
        since: u64,
        ack_wait: Duration,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { hooks::rewind(&self.stream, &url, since, ack_wait).await })
    }
}
