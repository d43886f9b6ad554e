//! `GET /api/search`: full-text search of documents by title and text, for the list page's
//! search box. Only documents the caller's token may read are returned.

use std::sync::Arc;

use axum::extract::{FromRef, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::http::extract::{authorize, Read, SomeDoc};
use crate::http::AppState;
use crate::room::registry::RoomContext;
use crate::search::{Hit, Search};
use crate::token::Access;

/// Longest query, in characters.
const MAX_QUERY_CHARS: usize = 500;
/// Most matches one search returns.
const MAX_LIMIT: usize = 100;

impl FromRef<AppState> for Arc<Search> {
    fn from_ref(state: &AppState) -> Self {
        state.search.clone()
    }
}

/// `GET /api/search` parameters.
#[derive(Debug, Deserialize, IntoParams)]
pub(super) struct SearchQuery {
    /// Words to find in titles and texts (all of them must match); `"a phrase"`, `-word`
    /// (without) and `title:word` work too.
    q: String,
    /// Most matches (default 20, at most 100).
    limit: Option<usize>,
}

/// One match.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SearchHit {
    /// The document id.
    id: String,
    /// Its title.
    title: String,
    /// Relevance; higher is better (title matches weigh twice).
    score: f32,
    /// A piece of the text around the best match (empty when only the title matched).
    snippet: String,
    /// `[start, end)` ranges of `snippet` that matched, in UTF-16 code units (as JavaScript
    /// strings count).
    highlights: Vec<[usize; 2]>,
}

impl From<Hit> for SearchHit {
    fn from(hit: Hit) -> Self {
        let utf16 = |byte: usize| {
            hit.snippet
                .get(..byte)
                .map_or(0, |s| s.encode_utf16().count())
        };
        let highlights = hit
            .highlighted
            .iter()
            .map(|r| [utf16(r.start), utf16(r.end)])
            .collect();
        Self {
            id: hit.id,
            title: hit.title,
            score: hit.score,
            highlights,
            snippet: hit.snippet,
        }
    }
}

/// Search results, best first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SearchResults {
    /// The matches the caller may read, best first.
    hits: Vec<SearchHit>,
}

/// Finds documents by title and text, ranked (BM25, title matches weigh twice), each with a
/// snippet of its text around the match. The index follows edits within about a second. Needs
/// a valid token; only documents it may read are returned (a token for one document finds at
/// most that one).
#[utoipa::path(
    get, path = "/api/search", tag = "documents", params(SearchQuery),
    responses(
        (status = 200, body = SearchResults),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    )
)]
pub(super) async fn search_docs(
    Query(q): Query<SearchQuery>,
    _: SomeDoc<Read>,
    State(ctx): State<Arc<RoomContext>>,
    State(search): State<Arc<Search>>,
    headers: HeaderMap,
) -> Result<Json<SearchResults>, ApiError> {
    let query = q.q.trim().to_owned();
    if query.chars().nth(MAX_QUERY_CHARS).is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "the query is longer than 500 characters",
        ));
    }
    if query.is_empty() {
        return Ok(Json(SearchResults { hits: Vec::new() }));
    }
    let limit = q.limit.unwrap_or(20).clamp(1, MAX_LIMIT);
    let hits = tokio::task::spawn_blocking(move || {
        let may_read = |id: &str| authorize(&ctx, &headers, Some(id), Access::Read).is_ok();
        search.search(&query, limit, may_read)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(SearchResults {
        hits: hits.into_iter().map(SearchHit::from).collect(),
    }))
}
