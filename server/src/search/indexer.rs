//! Keeps the search index in step with the documents: rebuilds it at start from every document
//! not in the trash, then follows the change feed (created, updated, deleted, restored) and
//! the renames the API reports. Changes are gathered for [`debounce`] and indexed in one
//! commit, each changed document's text read through its room like any API read: nothing here
//! runs in a room's loop, and a burst of edits costs one read per document.
//!
//! The rebuild at start loads no room (that would load every document into memory and make
//! rooms record versions): it reads each document's newest version from the history, which a
//! clean shutdown brings up to date. Text written after a document's newest version (only
//! after a crash) is searchable from its next change on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use weft_protocol::{Limits, RoomName};

use super::Search;
use crate::feed::event::Event;
use crate::room::registry::RoomContext;
use crate::room::{ApiOp, ApiOpError, ApiReply};
use crate::shutdown::Shutdown;

/// How long changes are gathered before they are indexed. Each round re-reads and re-indexes
/// every changed document whole: at 500 ms the index took 12 % of the server's core in a
/// room of 50 typists, for results fresher than anyone searching notices.
const DEBOUNCE: Duration = Duration::from_secs(2);

/// How long changes are gathered: [`DEBOUNCE`], or half the idle-unload delay when that is
/// shorter, so a changed document is read while its room is still loaded rather than loaded
/// again just to be indexed.
fn debounce(ctx: &RoomContext) -> Duration {
    DEBOUNCE.min(ctx.config.idle_unload() / 2)
}
/// Feed events read per round.
const BATCH: usize = 1000;

/// Rebuilds `search` from the documents, then keeps it current until shutdown.
pub(crate) async fn run_indexer(search: Arc<Search>, ctx: Arc<RoomContext>, shutdown: Shutdown) {
    // The feed position first: what changes while the documents are read is indexed after.
    let mut head = ctx.feed.head();
    let mut since = *head.borrow_and_update();
    let ids = match rebuild_list(&ctx).await {
        Ok(ids) => ids,
        Err(e) => {
            warn!(error = %e, "search: cannot list the documents; the index starts empty");
            Vec::new()
        }
    };
    let count = ids.len();
    for chunk in ids.chunks(BATCH) {
        let (ctx, chunk) = (ctx.clone(), chunk.to_vec());
        match tokio::task::spawn_blocking(move || from_history(&ctx, chunk)).await {
            Ok(batch) => apply(&search, batch).await,
            Err(e) => warn!(error = %e, "search: reading the documents failed"),
        }
    }
    info!(documents = count, "search index built");
    loop {
        tokio::select! {
            changed = head.changed() => if changed.is_err() { return },
            () = search.wake.notified() => {}
            () = shutdown.triggered() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(debounce(&ctx)) => {}
            () = shutdown.triggered() => return,
        }
        let upto = *head.borrow_and_update();
        let mut changes = match feed_changes(&ctx, since, upto) {
            Ok((changes, last)) => {
                since = last;
                changes
            }
            Err(e) => {
                warn!(error = %e, "search: cannot read the change feed");
                HashMap::new()
            }
        };
        for id in search.take_pending() {
            changes.entry(id).or_insert(true);
        }
        index(&search, &ctx, changes).await;
    }
}

/// Every document not in the trash.
async fn rebuild_list(ctx: &Arc<RoomContext>) -> Result<Vec<String>, String> {
    let store = ctx.store.clone();
    tokio::task::spawn_blocking(move || {
        let trash: HashSet<String> = store.trash()?.into_iter().map(|(id, _)| id).collect();
        let docs = store.list_untitled()?;
        Ok::<_, crate::store::StoreError>(
            docs.into_iter()
                .map(|m| m.id)
                .filter(|id| !trash.contains(id))
                .collect(),
        )
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// Titles and newest versions' texts of `ids`, without loading their rooms. Blocks.
fn from_history(ctx: &RoomContext, ids: Vec<String>) -> Vec<(String, Option<(String, String)>)> {
    let limits = Limits {
        max_room_name: usize::MAX,
        ..Limits::DEFAULT
    };
    let mut batch = Vec::new();
    for id in ids {
        let Ok(name) = RoomName::parse(&id, &limits) else {
            continue;
        };
        let title = match ctx.store.meta(&name) {
            Ok(Some(meta)) => meta.title.unwrap_or_default(),
            Ok(None) => continue,
            Err(e) => {
                warn!(doc = %id, error = %e, "search: cannot read a document's title");
                String::new()
            }
        };
        let text = match &ctx.history {
            Some(history) => history.cursor(&name).map(|c| c.text).unwrap_or_default(),
            None => String::new(),
        };
        batch.push((id, Some((title, text))));
    }
    batch
}

/// The documents the feed reports changed after `since` up to `upto` (true: index again,
/// false: remove), and the last seq read.
fn feed_changes(
    ctx: &RoomContext,
    mut since: u64,
    upto: u64,
) -> Result<(HashMap<String, bool>, u64), crate::store::StoreError> {
    let mut changes = HashMap::new();
    while since < upto {
        let (events, last) = ctx.feed.log().read((since, upto), BATCH, None, BATCH)?;
        if last == since {
            break;
        }
        since = last;
        for record in events {
            let keep = !matches!(record.event, Event::DocumentDeleted { .. });
            if !matches!(record.event, Event::VersionCreated { .. }) {
                changes.insert(record.event.doc().to_owned(), keep);
            }
        }
    }
    Ok((changes, since))
}

/// Reads each changed document's title and text and applies them to the index in one commit;
/// a document that is gone (deleted, in the trash) is removed.
async fn index(search: &Arc<Search>, ctx: &Arc<RoomContext>, changes: HashMap<String, bool>) {
    // Ids were valid when stored; a lower name limit since must not drop them from search.
    let limits = Limits {
        max_room_name: usize::MAX,
        ..Limits::DEFAULT
    };
    let mut batch = Vec::new();
    for (id, keep) in changes {
        let Ok(name) = RoomName::parse(&id, &limits) else {
            continue;
        };
        let doc = if keep { read(ctx, &name).await } else { None };
        batch.push((id, doc));
        if batch.len() >= BATCH {
            apply(search, std::mem::take(&mut batch)).await;
        }
    }
    apply(search, batch).await;
}

/// A document's title and text, or `None` if it no longer exists.
async fn read(ctx: &Arc<RoomContext>, name: &RoomName) -> Option<(String, String)> {
    let text = match ctx.api(name, ApiOp::GetText).await {
        Ok(ApiReply::Text(text)) => text,
        Err(ApiOpError::NotFound) => return None,
        Ok(_) | Err(_) => return None,
    };
    let (store, doc) = (ctx.store.clone(), name.clone());
    let meta = tokio::task::spawn_blocking(move || store.meta(&doc)).await;
    let title = match meta {
        Ok(Ok(Some(meta))) => meta.title.unwrap_or_default(),
        _ => String::new(),
    };
    Some((title, text))
}

/// Applies `batch` off the async workers.
async fn apply(search: &Arc<Search>, batch: Vec<(String, Option<(String, String)>)>) {
    let search = search.clone();
    match tokio::task::spawn_blocking(move || search.apply(batch)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "search: indexing failed"),
        Err(e) => warn!(error = %e, "search: indexing failed"),
    }
}
