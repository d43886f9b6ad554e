//! Webhook queues on the cluster's change feed: one durable pull consumer per endpoint URL,
//! shared by every node. It hands out one event at a time (at most one unacknowledged), so the
//! endpoint gets the feed in order and each event from one node; the node acknowledges once
//! the event is delivered or given up on, reports progress while it retries, and an event whose
//! node died (no progress within the ack wait) goes to another node. A new endpoint's consumer
//! starts with the events appended after it was created.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{stream, Message};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tracing::warn;

use crate::feed::event::Record;
use crate::feed::shared::{Job, JobAck, SharedQueue};

/// How often creating a consumer is tried when other nodes create or remove it meanwhile.
const ATTEMPTS: usize = 3;

/// The consumer name of endpoint `url` (names allow no dots or wildcards: a hash of the URL).
fn consumer_name(url: &str) -> String {
    let hash = Sha256::digest(url.as_bytes());
    let hex: String = hash[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("weft_hook_{hex}")
}

fn config(url: &str, ack_wait: Duration, deliver_policy: DeliverPolicy) -> pull::Config {
    pull::Config {
        durable_name: Some(consumer_name(url)),
        description: Some(format!("Weft: webhook deliveries to {url}")),
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        max_ack_pending: 1,
        deliver_policy,
        ..Default::default()
    }
}

/// The queue of `url`: its consumer, created (starting with new events) if no node has yet.
pub(super) async fn queue(
    stream: &stream::Stream,
    url: &str,
    ack_wait: Duration,
) -> Result<Box<dyn SharedQueue>, String> {
    let name = consumer_name(url);
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        if let Ok(consumer) = stream.get_consumer::<pull::Config>(&name).await {
            return Ok(Box::new(Queue { consumer }));
        }
        match stream
            .create_consumer(config(url, ack_wait, DeliverPolicy::New))
            .await
        {
            Ok(consumer) => return Ok(Box::new(Queue { consumer })),
            // Another node may have created it meanwhile: look again.
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("cannot open the webhook queue of {url}: {last}"))
}

/// Starts `url`'s queue over with the events after `since`: its consumer is replaced (every
/// node's next fetch finds the new one).
pub(super) async fn rewind(
    stream: &stream::Stream,
    url: &str,
    since: u64,
    ack_wait: Duration,
) -> Result<(), String> {
    let name = consumer_name(url);
    let start = DeliverPolicy::ByStartSequence {
        start_sequence: since + 1,
    };
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        // Not there (never created, or removed by a concurrent rewind) is fine.
        let _ = stream.delete_consumer(&name).await;
        match stream.create_consumer(config(url, ack_wait, start)).await {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("cannot rewind the webhook queue of {url}: {last}"))
}

/// One node's handle on an endpoint's consumer.
struct Queue {
    consumer: PullConsumer,
}

impl SharedQueue for Queue {
    fn next(&mut self, wait: Duration) -> BoxFuture<'_, Result<Option<Job>, String>> {
        Box::pin(async move {
            let mut batch = self
                .consumer
                .fetch()
                .max_messages(1)
                .expires(wait)
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            let Some(msg) = batch.next().await else {
                return Ok(None);
            };
            let msg = msg.map_err(|e| e.to_string())?;
            let Some(record) = record_of(&msg) else {
                warn!("webhooks: dropping an event the cluster's feed holds garbled");
                msg.ack_with(AckKind::Term)
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(None);
            };
            Ok(Some(Job {
                record,
                ack: Box::new(Acker(msg)),
            }))
        })
    }

    fn position(&mut self) -> BoxFuture<'_, Result<(u64, u64), String>> {
        Box::pin(async move {
            let info = self.consumer.info().await.map_err(|e| e.to_string())?;
            let waiting = info.num_pending + info.num_ack_pending as u64;
            Ok((info.ack_floor.stream_sequence, waiting))
        })
    }
}

/// Reports back on one fetched event.
struct Acker(Message);

impl JobAck for Acker {
    fn progress(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.0
                .ack_with(AckKind::Progress)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn done(&self) -> BoxFuture<'_, Result<(), String>> {
        // Confirmed by the server: an acknowledgement lost on the way would mean a repeat.
        Box::pin(async move { self.0.double_ack().await.map_err(|e| e.to_string()) })
    }

    fn release(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.0
                .ack_with(AckKind::Nak(None))
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// The event `msg` of the feed's stream holds, numbered by its place in the stream.
pub(super) fn record_of(msg: &async_nats::jetstream::Message) -> Option<Record> {
    let seq = msg.info().ok()?.stream_sequence;
    let mut record: Record = serde_json::from_slice(&msg.payload).ok()?;
    record.seq = seq;
    Some(record)
}
