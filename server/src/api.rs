//! The JSON HTTP API under `/api`: documents listed from their metadata (never loading their
//! CRDT state) together with who is connected right now.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::http::{ApiError, AppState};

/// Largest page `GET /api/docs` returns, whatever `limit` asks for.
const MAX_PAGE: usize = 1000;

/// Routes under `/api`.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/docs", get(list_docs))
}

/// Paging of `GET /api/docs`: most recently edited first.
#[derive(Debug, Deserialize)]
struct ListQuery {
    /// Documents to skip.
    #[serde(default)]
    offset: usize,
    /// Page size (default 100, at most [`MAX_PAGE`]).
    limit: Option<usize>,
}

/// One document in a listing.
#[derive(Debug, Serialize)]
struct DocSummary {
    id: String,
    title: Option<String>,
    created_ms: u64,
    updated_ms: u64,
    size_bytes: u64,
    update_count: u64,
    /// Connections open on the document now.
    users: u32,
}

/// A page of documents.
#[derive(Debug, Serialize)]
struct DocPage {
    docs: Vec<DocSummary>,
    total: usize,
    /// Offset of the next page, if there is one.
    next_offset: Option<usize>,
}

async fn list_docs(
    State(state): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let store = state.ctx.store.clone();
    let mut metas = tokio::task::spawn_blocking(move || store.list())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    metas.sort_by(|a, b| b.updated_ms.cmp(&a.updated_ms).then(a.id.cmp(&b.id)));
    let live = state.ctx.live_users();
    let total = metas.len();
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let docs: Vec<DocSummary> = metas
        .into_iter()
        .skip(q.offset)
        .take(limit)
        .map(|m| DocSummary {
            users: live.get(&m.id).copied().unwrap_or(0),
            id: m.id,
            title: m.title,
            created_ms: m.created_ms,
            updated_ms: m.updated_ms,
            size_bytes: m.size_bytes,
            update_count: m.update_count,
        })
        .collect();
    let end = q.offset.saturating_add(docs.len());
    let page = DocPage {
        next_offset: (end < total).then_some(end),
        docs,
        total,
    };
    Ok((StatusCode::OK, Json(page)).into_response())
}
