//! `GET /api/changes`: the change feed over HTTP. As JSON, a page of events after `since`
//! with the seq to ask from next; with `Accept: text/event-stream`, the same events as
//! Server-Sent Events (`id:` the seq, `event:` the type, `data:` the event's JSON), then every
//! new one as it becomes durable, resumable with `Last-Event-ID` or `since`, with a comment
//! every 15 s so proxies keep the stream open. Admin only.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::header::ACCEPT;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::feed::event::Record;
use crate::feed::Feed;
use crate::http::extract::{Admin, AllDocs};
use crate::room::registry::RoomContext;
use crate::shutdown::Shutdown;

/// Largest page, whatever `limit` asks for.
const MAX_LIMIT: usize = 1000;
/// Events looked at for one page when filtering by document: a page may come back short (or
/// empty) with `next` further on, so one request never scans the whole feed.
const MAX_SCAN: usize = 10_000;
/// How often an idle event stream sends a comment.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Where to start and what to include.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct ChangesQuery {
    /// Events after this seq (the `next` of the previous page, or the last `id:` seen); from
    /// the oldest kept when absent. Older than what is kept: 410.
    since: Option<u64>,
    /// Most events in a JSON page (default 100, at most 1000).
    limit: Option<usize>,
    /// Only this document's events.
    doc: Option<String>,
}

/// A page of the feed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChangesPage {
    /// The events, oldest first: `{seq, type, at, doc, …}` (see docs/feed.md).
    #[schema(value_type = Vec<Object>)]
    events: Vec<Record>,
    /// The `since` of the next page.
    next: u64,
}

/// The feed's events after `since`, as JSON or as a live Server-Sent Events stream. Needs an
/// admin token for every document when auth is on.
#[utoipa::path(
    get, path = "/api/changes", tag = "feed", params(ChangesQuery),
    responses(
        (status = 200, body = ChangesPage, description = "JSON page, or with \
            `Accept: text/event-stream` a live event stream"),
        (status = 401, description = "no valid token"),
        (status = 403, description = "not an admin token for every document"),
        (status = 410, description = "`since` is older than the events kept: \
            `{\"code\": \"feed_expired\", \"message\", \"oldest\"}`"),
    )
)]
pub(crate) async fn changes(
    Query(q): Query<ChangesQuery>,
    _: AllDocs<Admin>,
    headers: HeaderMap,
    State(ctx): State<Arc<RoomContext>>,
) -> Result<Response, ApiError> {
    let feed = ctx.feed.clone();
    let since = match q.since {
        Some(since) => Some(since),
        None => last_event_id(&headers)?,
    };
    if let Some(gone) = expired(&feed, since)? {
        return Ok(gone);
    }
    let since = since.unwrap_or(0);
    if wants_stream(&headers) {
        let stream = live(feed, since, q.doc, ctx.shutdown.clone());
        let keep_alive = KeepAlive::new().interval(HEARTBEAT).text("heartbeat");
        return Ok(Sse::new(stream).keep_alive(keep_alive).into_response());
    }
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let head = *feed.head().borrow();
    let (events, last) = feed
        .log()
        .read((since, head), limit, q.doc.as_deref(), MAX_SCAN)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let next = events.last().map_or(last, |e| e.seq);
    Ok(Json(ChangesPage { events, next }).into_response())
}

/// The `Last-Event-ID` an EventSource sends when it reconnects.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let parsed = value.to_str().ok().and_then(|v| v.trim().parse().ok());
    match parsed {
        Some(seq) => Ok(Some(seq)),
        None => Err(ApiError::bad_request(
            "invalid_last_event_id",
            "Last-Event-ID must be an event's seq",
        )),
    }
}

/// 410 when `since` asks for events already pruned.
fn expired(feed: &Feed, since: Option<u64>) -> Result<Option<Response>, ApiError> {
    let Some(since) = since else { return Ok(None) };
    let log = feed.log();
    let pruned = log
        .pruned()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if since >= pruned {
        return Ok(None);
    }
    let oldest = log
        .oldest()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .unwrap_or(pruned + 1);
    let body = json!({
        "code": "feed_expired",
        "message": format!(
            "events after {since} are no longer kept (--feed-keep-days); the oldest kept is {oldest}"
        ),
        "oldest": oldest,
    });
    Ok(Some((StatusCode::GONE, Json(body)).into_response()))
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// What the event stream carries between polls.
struct Cursor {
    feed: Arc<Feed>,
    since: u64,
    doc: Option<String>,
    head: tokio::sync::watch::Receiver<u64>,
    ready: VecDeque<Record>,
    shutdown: Shutdown,
}

/// Every event after `since`, then each new durable one, until the client goes or the server
/// stops.
fn live(
    feed: Arc<Feed>,
    since: u64,
    doc: Option<String>,
    shutdown: Shutdown,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let cursor = Cursor {
        head: feed.head(),
        feed,
        since,
        doc,
        ready: VecDeque::new(),
        shutdown,
    };
    stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(record) = c.ready.pop_front() {
                let event = sse_event(&record);
                return Some((Ok(event), c));
            }
            let head = *c.head.borrow_and_update();
            let read = c
                .feed
                .log()
                .read((c.since, head), 100, c.doc.as_deref(), MAX_SCAN);
            match read {
                Ok((events, last)) if !events.is_empty() || last > c.since => {
                    c.since = last;
                    c.ready.extend(events);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "change feed stream: reading failed");
                    return None;
                }
            }
            tokio::select! {
                changed = c.head.changed() => if changed.is_err() { return None },
                _ = c.shutdown.triggered() => return None,
            }
        }
    })
}

fn sse_event(record: &Record) -> SseEvent {
    let data = serde_json::to_string(record).unwrap_or_default();
    SseEvent::default()
        .id(record.seq.to_string())
        .event(record.event.kind())
        .data(data)
}
