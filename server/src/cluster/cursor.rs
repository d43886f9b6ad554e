//! Reading a document's log in stream order from a chosen position, for a room's follower and
//! for loading: an ephemeral pull consumer this node creates and checks itself.
//!
//! Not the client's ordered consumer: that one notices a lost consumer only after two missed
//! heartbeats, and when it had delivered nothing yet it re-creates the consumer from the start
//! of the stream instead of the position asked for (async-nats 0.52). A node whose consumer
//! lived on a NATS server that died then followed nothing for 20 s and more. A cursor reports a
//! lost consumer, a missed heartbeat or a skipped message at once, and its owner opens a new
//! one after the last position it took.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::Message;
use futures_util::StreamExt;

use crate::cluster::connect::Nats;
use crate::cluster::names::log_subject;

/// Longest a pull request waits before the client sends the next.
const EXPIRES: Duration = Duration::from_secs(5);

/// How often the server of an idle consumer says it is alive; the client reports the consumer
/// lost after two of these pass in silence.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long the server keeps a consumer nobody pulls from: a dropped cursor's is cleaned up.
const INACTIVE: Duration = Duration::from_secs(30);

/// An in-order reader of one document's log.
pub(crate) struct LogCursor {
    messages: pull::Stream,
    /// The consumer's count of the last message taken: the next must be one more.
    taken: u64,
}

impl LogCursor {
    /// A cursor on `doc`'s log whose first message is the one at stream sequence `start` (or
    /// the first after it).
    pub(crate) async fn open(nats: &Nats, doc: &str, start: u64) -> Result<Self, String> {
        let consumer = nats
            .log
            .create_consumer(pull::Config {
                filter_subject: log_subject(doc),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start.max(1),
                },
                ack_policy: AckPolicy::None,
                max_expires: EXPIRES,
                inactive_threshold: INACTIVE,
                num_replicas: 1,
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("following the log failed: {e}"))?;
        let messages = consumer
            .stream()
            .expires(EXPIRES)
            .heartbeat(HEARTBEAT)
            .messages()
            .await
            .map_err(|e| format!("following the log failed: {e}"))?;
        Ok(Self { messages, taken: 0 })
    }

    /// The next message in log order with its stream sequence, or why this cursor cannot go on
    /// (its consumer is gone or silent, or a message went missing on the way): open a new one
    /// from the last position.
    pub(crate) async fn next(&mut self) -> Result<(u64, Message), String> {
        let msg = match self.messages.next().await {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => return Err(format!("the log's consumer failed: {e}")),
            None => return Err("the log's consumer ended".into()),
        };
        let (counted, seq) = {
            let info = msg.info().map_err(|e| e.to_string())?;
            (info.consumer_sequence, info.stream_sequence)
        };
        if counted != self.taken + 1 {
            return Err(format!(
                "a message of the log went missing (consumer count {counted} after {})",
                self.taken
            ));
        }
        self.taken = counted;
        Ok((seq, msg))
    }
}
