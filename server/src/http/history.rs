//! The version history routes under `/api/docs/{id}/versions`: list and name versions, read a
//! version's text, diff two versions with who wrote each chunk, and restore one.
//!
//! Same rules as the rest of `/api`: the read role reads history, the write role names and
//! restores. Version ids are integers, increasing per document; an id that is not a version of
//! the document is 404 `version_not_found`, a bad `against` 400 `invalid_against`.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use weft_protocol::RoomName;

use crate::error::ApiError;
use crate::error::ErrorBody;
use crate::http::extract::{authorize, live_meta, not_found, parse_id, AppJson};
use crate::room::authors::ANONYMOUS;
use crate::room::calls::DocRoom;
use crate::room::history::delta::Kind;
use crate::room::history::{Chunk, History, HistoryError};
use crate::room::registry::RoomContext;
use crate::room::versions::MAX_NAME_CHARS;
use crate::store::history::VersionMeta;
use crate::token::Access;

/// Largest page of versions, whatever `limit` asks for.
const MAX_PAGE: usize = 1000;

/// One version.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Version {
    /// Its id (an integer, increasing within the document).
    id: u64,
    /// When it was recorded (RFC 3339, UTC).
    created_at: String,
    /// Its name, if it was given one (named versions are never thinned by retention).
    name: Option<String>,
    /// Who changed the text since the previous version: token `sub`s, awareness `user.name`s,
    /// else "anonymous"; sorted. Empty when unknown (changes found after a crash).
    authors: Vec<String>,
    /// Characters inserted since the previous version.
    inserted: u64,
    /// Characters deleted since the previous version.
    deleted: u64,
    /// Length of its text, in characters.
    size: u64,
}

impl From<VersionMeta> for Version {
    fn from(m: VersionMeta) -> Self {
        Self {
            id: m.id,
            created_at: rfc3339(m.created_ms),
            name: m.name,
            authors: m.authors,
            inserted: m.inserted,
            deleted: m.deleted,
            size: m.size,
        }
    }
}

/// `ms` since the Unix epoch in RFC 3339 (UTC, milliseconds).
fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A page of versions, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VersionPage {
    /// This page.
    versions: Vec<Version>,
    /// Versions in all.
    total: usize,
    /// Offset of the next page, if there is one.
    next_offset: Option<usize>,
}

/// Paging of `GET /api/docs/{id}/versions`: newest first.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct PageQuery {
    /// Versions to skip.
    #[serde(default)]
    offset: usize,
    /// Page size (default 100, at most 1000).
    limit: Option<usize>,
}

/// `POST /api/docs/{id}/versions`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NameBody {
    /// The version's name (1 to 200 characters).
    name: String,
}

/// `GET .../diff`.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct DiffQuery {
    /// The version to compare against (default: the version before, or the empty text for the
    /// first version).
    against: Option<String>,
}

/// The changes from one version to another.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Diff {
    /// In order: applying the inserts and skipping the deletes over the older text gives the
    /// newer one, character for character.
    chunks: Vec<DiffChunk>,
}

/// One chunk of a diff.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DiffChunk {
    /// `equal`, `insert` or `delete`.
    op: &'static str,
    /// The characters.
    text: String,
    /// Who wrote an inserted chunk (inserted text is split per writer); for a deleted chunk,
    /// or inserted text of unknown writer, the author when every version the diff spans has
    /// one and the same; else null.
    author: Option<String>,
}

impl From<Chunk> for DiffChunk {
    fn from(c: Chunk) -> Self {
        let op = match c.kind {
            Kind::Equal => "equal",
            Kind::Insert => "insert",
            Kind::Delete => "delete",
        };
        Self {
            op,
            text: c.text,
            author: c.author,
        }
    }
}

/// A document's history, its room, and the caller's name, once the request is authorized
/// and the document exists.
struct DocHistory {
    history: History,
    name: RoomName,
    room: DocRoom,
}

/// Authorizes `need` on document `id`, checks it exists and that the server keeps history.
async fn access(
    ctx: Arc<RoomContext>,
    headers: &HeaderMap,
    id: &str,
    need: Access,
) -> Result<DocHistory, ApiError> {
    let name = parse_id(&ctx.config, id)?;
    let subject = authorize(&ctx, headers, Some(name.as_str()), need)?;
    let author = subject.unwrap_or_else(|| ANONYMOUS.into());
    let history = ctx.history.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "history_unavailable",
            "this server keeps no version history",
        )
    })?;
    let (store, doc) = (ctx.store.clone(), name.clone());
    let exists = tokio::task::spawn_blocking(move || live_meta(store.as_ref(), &doc))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    exists.ok_or_else(not_found)?;
    let room = DocRoom::new(ctx, name.clone()).by(&author);
    Ok(DocHistory {
        history,
        name,
        room,
    })
}

/// 404 `version_not_found`.
fn no_version() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "version_not_found",
        "no version with this id in this document",
    )
}

/// A version id from the path: anything but an integer is no version.
fn version_id(v: &str) -> Result<u64, ApiError> {
    v.parse().map_err(|_| no_version())
}

/// Runs a history read on a blocking thread.
async fn read<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HistoryError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(HistoryError::NoVersion)) => Err(no_version()),
        Ok(Err(e)) => Err(ApiError::internal(e.to_string())),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// The document's versions, newest first, paged like the document list.
#[utoipa::path(
    get, path = "/api/docs/{id}/versions", tag = "history",
    params(("id" = String, Path), PageQuery),
    responses(
        (status = 200, body = VersionPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub(crate) async fn list_versions(
    State(ctx): State<Arc<RoomContext>>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Result<Json<VersionPage>, ApiError> {
    let a = access(ctx, &headers, &id, Access::Read).await?;
    let (history, name) = (a.history, a.name);
    let metas = read(move || Ok(history.list(&name)?)).await?;
    let total = metas.len();
    let (offset, limit) = (q.offset, q.limit.unwrap_or(100).clamp(1, MAX_PAGE));
    let versions: Vec<Version> = metas
        .into_iter()
        .rev()
        .skip(offset)
        .take(limit)
        .map(Version::from)
        .collect();
    let end = offset.saturating_add(versions.len());
    Ok(Json(VersionPage {
        next_offset: (end < total).then_some(end),
        versions,
        total,
    }))
}

/// Records a named version of the current text now, even if nothing changed since the last
/// version. Needs the write role.
#[utoipa::path(
    post, path = "/api/docs/{id}/versions", tag = "history",
    params(("id" = String, Path)), request_body = NameBody,
    responses(
        (status = 201, body = Version),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub(crate) async fn create_version(
    State(ctx): State<Arc<RoomContext>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    AppJson(body): AppJson<NameBody>,
) -> Result<(StatusCode, Json<Version>), ApiError> {
    let a = access(ctx, &headers, &id, Access::Write).await?;
    let name = body.name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("a version name has 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    let meta = a.room.record_version(Some(name.to_owned())).await?;
    Ok((StatusCode::CREATED, Json(meta.into())))
}

/// The text of a version (UTF-8).
#[utoipa::path(
    get, path = "/api/docs/{id}/versions/{v}/text", tag = "history",
    params(("id" = String, Path), ("v" = u64, Path)),
    responses(
        (status = 200, body = String, content_type = "text/plain"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub(crate) async fn version_text(
    State(ctx): State<Arc<RoomContext>>,
    Path((id, v)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let a = access(ctx, &headers, &id, Access::Read).await?;
    let v = version_id(&v)?;
    let (history, name) = (a.history, a.name);
    let text = read(move || history.text(&name, v)).await?;
    Ok(([(CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// The changes from version `against` (default: the one before) to version `v`, chunk by
/// chunk, with who wrote them when known.
#[utoipa::path(
    get, path = "/api/docs/{id}/versions/{v}/diff", tag = "history",
    params(("id" = String, Path), ("v" = u64, Path), DiffQuery),
    responses(
        (status = 200, body = Diff),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub(crate) async fn version_diff(
    State(ctx): State<Arc<RoomContext>>,
    Path((id, v)): Path<(String, String)>,
    Query(q): Query<DiffQuery>,
    headers: HeaderMap,
) -> Result<Json<Diff>, ApiError> {
    let a = access(ctx, &headers, &id, Access::Read).await?;
    let v = version_id(&v)?;
    let (history, name) = (a.history, a.name);
    let bad_against = || {
        ApiError::bad_request(
            "invalid_against",
            "against is not a version of this document",
        )
    };
    let against = match q.against.as_deref() {
        None => None,
        Some(u) => Some(u.parse::<u64>().map_err(|_| bad_against())?),
    };
    let chunks = read(move || {
        history.meta(&name, v)?;
        if let Some(u) = against {
            if history.meta(&name, u).is_err() {
                return Ok(None);
            }
        }
        history.diff(&name, v, against).map(Some)
    })
    .await?
    .ok_or_else(bad_against)?;
    Ok(Json(Diff {
        chunks: chunks.into_iter().map(DiffChunk::from).collect(),
    }))
}

/// Makes the document's text that of version `v` again, as a new edit (a minimal diff, so the
/// carets of people editing stay put), live for everyone connected, and records it as a new
/// version named "Restored from …" (the version's name, else its time). Restoring the
/// version before undoes it. Needs the write role.
#[utoipa::path(
    post, path = "/api/docs/{id}/versions/{v}/restore", tag = "history",
    params(("id" = String, Path), ("v" = u64, Path)),
    responses(
        (status = 200, body = Version),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub(crate) async fn restore_version(
    State(ctx): State<Arc<RoomContext>>,
    Path((id, v)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Version>, ApiError> {
    let a = access(ctx, &headers, &id, Access::Write).await?;
    let v = version_id(&v)?;
    let (history, name) = (a.history, a.name);
    let (meta, text) = read(move || Ok((history.meta(&name, v)?, history.text(&name, v)?))).await?;
    // The text about to be replaced becomes a version first (when it is not one already), so
    // restoring the version before the restore undoes it.
    a.room.record_version(None).await?;
    a.room.set_text(text).await?;
    let from = meta.name.unwrap_or_else(|| rfc3339(meta.created_ms));
    let label: String = format!("Restored from {from}")
        .chars()
        .take(MAX_NAME_CHARS)
        .collect();
    let recorded = a.room.record_version(Some(label)).await?;
    Ok(Json(recorded.into()))
}
