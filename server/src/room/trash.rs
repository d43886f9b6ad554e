//! Documents in the trash, as rooms see them. A delete moves a document to the trash inside
//! its room (`Room::delete` in `ops.rs`): the trash record is written, every member is closed
//! with [`CloseCode::Deleted`](weft_protocol::CloseCode::Deleted) and the room stops, keeping
//! content and history. A room started for a document in the trash never loads it: it answers
//! joins with [`JoinError::Trashed`] and requests with `NotFound`, except the two that act on
//! the trash itself, [`ApiOp::Restore`] and [`ApiOp::Purge`].
//!
//! Running those in the trashed incarnation serializes them with everything else on the
//! document: the registry starts an incarnation only once the previous one has stopped
//! writing (its last flush, its history recorder), so a purge can never race a room that
//! still writes the document or its history, and a join that arrives during a restore loads
//! the document only after the restore.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, info, warn};
use weft_protocol::{Limits, RoomName};

use crate::feed::event::Event;
use crate::room::failure::store_reason;
use crate::room::registry::{Registration, RoomContext};
use crate::room::{ApiOp, ApiOpError, ApiReply, Command, JoinError};
use crate::shutdown::Shutdown;
use crate::store::{now_ms, StoreError};

/// How often the purger looks for documents kept long enough.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Whether `name` is in the trash. A store that cannot say is taken as "not in the trash":
/// the load that follows reports the store's failure itself.
pub(super) async fn in_trash(ctx: &Arc<RoomContext>, name: &RoomName) -> bool {
    let (store, name) = (ctx.store.clone(), name.clone());
    match tokio::task::spawn_blocking(move || store.trashed(&name)).await {
        Ok(Ok(at)) => at.is_some(),
        Ok(Err(e)) => {
            warn!(error = %e, "cannot read the trash");
            false
        }
        Err(e) => {
            warn!(error = %e, "cannot read the trash");
            false
        }
    }
}

/// The incarnation of a room whose document is in the trash: leaves the registry at once (so
/// the next command starts a fresh incarnation, which waits for this one), then answers what
/// its mailbox already holds.
pub(super) async fn serve_trashed(
    ctx: Arc<RoomContext>,
    mut rx: mpsc::Receiver<Command>,
    registration: Registration,
) {
    registration.release();
    rx.close();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Join(_, reply) => {
                let _ = reply.send(Err(JoinError::Trashed));
            }
            Command::Api(op, reply) => {
                let _ = reply.send(trash_op(&ctx, registration.name(), op).await);
            }
            Command::Inbox(_, _, reply) => {
                let _ = reply.send(Err(ApiOpError::NotFound));
            }
            Command::Messages(..) | Command::Leave(_) | Command::Stateless(..) => {}
        }
    }
}

/// Runs a request on a document in the trash: restore and purge; anything else finds no
/// document.
async fn trash_op(
    ctx: &Arc<RoomContext>,
    name: &RoomName,
    op: ApiOp,
) -> Result<ApiReply, ApiOpError> {
    let purge = match op {
        ApiOp::Restore => false,
        ApiOp::Purge => true,
        _ => return Err(ApiOpError::NotFound),
    };
    let (store, history, doc) = (ctx.store.clone(), ctx.history.clone(), name.clone());
    let done = tokio::task::spawn_blocking(move || {
        if purge {
            store.delete(&doc)?;
            if let Some(history) = &history {
                history.delete(&doc)?;
            }
        }
        // Last: a purge interrupted before this is found in the trash again and finished.
        store.take_from_trash(&doc)?;
        store.flush()
    })
    .await
    .map_err(|e| ApiOpError::Unavailable(e.to_string()))?;
    done.map_err(|e| op_error(&e))?;
    if purge {
        info!(room = %name, "document purged from the trash");
        Ok(ApiReply::Deleted(0))
    } else {
        info!(room = %name, "document restored from the trash");
        let event = Event::DocumentRestored {
            doc: name.as_str().to_owned(),
        };
        ctx.feed.report(vec![event], Vec::new());
        Ok(ApiReply::Restored)
    }
}

/// A store error as a request's failure.
fn op_error(e: &StoreError) -> ApiOpError {
    match e {
        StoreError::Failed(_) => ApiOpError::StoreFailed(store_reason(e)),
        _ => ApiOpError::Storage(e.to_string()),
    }
}

/// The documents in the trash for at least `keep`, as of `now_ms`.
pub(crate) fn expired(trash: &[(String, u64)], keep: Duration, now_ms: u64) -> Vec<String> {
    let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
    trash
        .iter()
        .filter(|(_, at)| at.saturating_add(keep_ms) <= now_ms)
        .map(|(doc, _)| doc.clone())
        .collect()
}

/// Purges, once a minute (more often for a shorter keep period) until shutdown, every document in the trash for at least `keep`.
pub(crate) async fn run_purger(ctx: Arc<RoomContext>, keep: Duration, shutdown: Shutdown) {
    // A keep period shorter than the round (tests, "purge at once") is checked as often.
    let every = PURGE_EVERY.min(keep).max(Duration::from_millis(200));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => purge_expired(&ctx, keep).await,
            _ = shutdown.triggered() => return,
        }
    }
}

/// One round of the purger.
async fn purge_expired(ctx: &Arc<RoomContext>, keep: Duration) {
    let store = ctx.store.clone();
    let trash = match tokio::task::spawn_blocking(move || store.trash()).await {
        Ok(Ok(trash)) => trash,
        Ok(Err(e)) => return error!(error = %e, "cannot read the trash"),
        Err(e) => return error!(error = %e, "cannot read the trash"),
    };
    // Ids were valid room names when trashed; a later, lower name limit must not strand them.
    let limits = Limits {
        max_room_name: usize::MAX,
        ..Limits::DEFAULT
    };
    for doc in expired(&trash, keep, now_ms()) {
        let Ok(name) = RoomName::parse(&doc, &limits) else {
            continue;
        };
        match ctx.api(&name, ApiOp::Purge).await {
            Ok(_) | Err(ApiOpError::NotFound) => {}
            Err(e) => error!(room = %doc, error = %e, "purging from the trash failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document is purged once it has been in the trash for the whole keep period.
    #[test]
    fn expiry_counts_from_the_time_of_the_delete() {
        let trash = vec![("old".to_owned(), 1_000), ("new".to_owned(), 5_000)];
        let keep = Duration::from_secs(3);
        assert_eq!(expired(&trash, keep, 3_999), Vec::<String>::new());
        assert_eq!(expired(&trash, keep, 4_000), vec!["old".to_owned()]);
        assert_eq!(expired(&trash, keep, 8_000), vec!["old", "new"]);
        assert_eq!(expired(&trash, Duration::ZERO, 0), Vec::<String>::new());
    }
}
