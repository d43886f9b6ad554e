//! Following a document's log for a room: every update other nodes append is delivered to the
//! room in log order, with no gaps (a cursor that misses a message, or whose consumer is lost
//! or silent, is replaced by one from the last position delivered) and no duplicates (a
//! position already delivered is never delivered again). The updates this room appended itself
//! are already in its document: only their positions are delivered, so the room knows how far
//! its document covers the log, which is what compaction may purge. "Itself" means this node
//! after the room started following: an update this node appended earlier (a room that failed
//! and reloaded, or unloaded while its publish was still being retried) may be missing from
//! the document, so it is delivered like another node's (applying it twice changes nothing).

use std::sync::Arc;
use std::time::Duration;

use async_nats::header::NATS_MESSAGE_ID;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use weft_protocol::RoomName;

use crate::cluster::connect::Nats;
use crate::cluster::cursor::LogCursor;
use crate::cluster::names::NODE_HEADER;
use crate::store::log::Followed;

/// Entries buffered for a room before the follower waits for it.
const BUFFER: usize = 1024;

/// Pause before following again after the consumer failed, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How often a follower looks whether the client reconnected. A NATS server that restarted
/// has lost the consumer, and the client would only notice when its idle heartbeats stop
/// coming; following again at once resumes within this.
const RECONNECT_CHECK: Duration = Duration::from_millis(250);

/// How many times the client has connected so far (the first connect included).
fn connects(nats: &Nats) -> u64 {
    nats.client
        .statistics()
        .connects
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// Starts following `doc` after position `after` on `handle`; it stops when the receiver is
/// dropped.
/// `first_own` is the number the publisher gives this node's next append: this node's updates
/// numbered from there on are the room's own.
pub(crate) fn follow(
    nats: Arc<Nats>,
    handle: &tokio::runtime::Handle,
    doc: RoomName,
    after: u64,
    first_own: u64,
) -> mpsc::Receiver<Followed> {
    let (tx, rx) = mpsc::channel(BUFFER);
    handle.spawn(run(nats, doc, after, first_own, tx));
    rx
}

/// Whether `msg` is an update this room appended since it started following.
fn own(nats: &Nats, msg: &async_nats::jetstream::Message, first_own: u64) -> bool {
    let Some(headers) = msg.headers.as_ref() else {
        return false;
    };
    let from_here = headers
        .get(NODE_HEADER)
        .is_some_and(|n| n.as_str() == nats.node);
    from_here
        && headers
            .get(NATS_MESSAGE_ID)
            .and_then(|id| id.as_str().rsplit_once('-')?.1.parse::<u64>().ok())
            .is_some_and(|n| n >= first_own)
}

async fn run(
    nats: Arc<Nats>,
    doc: RoomName,
    mut after: u64,
    first_own: u64,
    tx: mpsc::Sender<Followed>,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut check = tokio::time::interval(RECONNECT_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !tx.is_closed() {
        let connected = connects(&nats);
        match LogCursor::open(&nats, doc.as_str(), after + 1).await {
            Ok(mut cursor) => loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    _ = check.tick() => {
                        if connects(&nats) == connected {
                            continue;
                        }
                        debug!(room = %doc, "reconnected to NATS; following the log again");
                        break;
                    }
                    next = cursor.next() => next,
                };
                let (seq, msg) = match next {
                    Ok(next) => next,
                    Err(e) => {
                        info!(room = %doc, error = %e, after, "following the log again");
                        break;
                    }
                };
                if seq <= after {
                    continue;
                }
                after = seq;
                backoff = FIRST_BACKOFF;
                let update = (!own(&nats, &msg, first_own)).then(|| msg.payload.clone());
                if tx.send(Followed { seq, update }).await.is_err() {
                    return;
                }
            },
            Err(e) => warn!(room = %doc, error = %e, "cannot follow the document's log; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
