//! The JSON HTTP API under `/api`: create, list, inspect and delete documents, read and write
//! their text or Yjs state, and send notices to the people editing them.
//!
//! Listings and metadata come from the store without loading documents. Everything that reads
//! or changes content goes through the document's room actor ([`ApiOp`]), so live editors see
//! API writes at once and API reads see what they see. Every call is authorized with a token in
//! `Authorization: Bearer` (see `auth`); errors are `{"code", "message"}` with a stable `code`.
//! The OpenAPI description at `/api/openapi.json` is generated from the handlers below.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection};
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weft_protocol::{NoticeLevel, RoomName};

use crate::error::ApiError;
use crate::http::auth::{self, Grant};
use crate::http::AppState;
use crate::room::{ApiOp, ApiOpError, ApiReply};
use crate::store::DocMeta;
use crate::token::Access;

/// Largest page `GET /api/docs` returns, whatever `limit` asks for.
const MAX_PAGE: usize = 1000;

/// The OpenAPI document's fixed parts; paths and schemas are added from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Weft API",
        description = "Documents, their text and Yjs state, and notices. Send a token from \
                       `weft token` as `Authorization: Bearer <token>` when the server has an \
                       auth secret. Errors are `{\"code\", \"message\"}` with a stable `code`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

/// Declares the bearer-token scheme the operations refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("weft token (v1.claims.signature)")
                    .build(),
            ),
        );
    }
}

/// Routes under `/api`, with the OpenAPI description generated from them. Request bodies may
/// be as large as `max_body` (the WebSocket message limit: a document's whole state fits).
pub(crate) fn routes(max_body: usize) -> Router<Arc<AppState>> {
    let (router, spec) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_docs, create_doc))
        .routes(routes!(get_doc, delete_doc))
        .routes(routes!(get_text, put_text))
        .routes(routes!(append_text))
        .routes(routes!(get_update, post_update))
        .routes(routes!(send_notice))
        .routes(routes!(super::backup::get_backup))
        .split_for_parts();
    // Serialized once: the description is fixed for the life of the binary.
    let json = spec
        .to_json()
        .unwrap_or_else(|e| format!(r#"{{"error":"OpenAPI serialization failed: {e}"}}"#));
    router.layer(DefaultBodyLimit::max(max_body)).route(
        "/api/openapi.json",
        get(move || {
            let json = json.clone();
            async move { ([(CONTENT_TYPE, "application/json")], json) }
        }),
    )
}

/// An error as the API returns it (documentation of [`ApiError`]'s body).
#[derive(Debug, Serialize, ToSchema)]
struct ErrorBody {
    /// Stable machine-readable code, for example `doc_not_found` or `token_expired`.
    code: String,
    /// Human explanation.
    message: String,
}

/// Paging of `GET /api/docs`: most recently edited first.
#[derive(Debug, Deserialize, IntoParams)]
struct ListQuery {
    /// Documents to skip.
    #[serde(default)]
    offset: usize,
    /// Page size (default 100, at most 1000).
    limit: Option<usize>,
}

/// One document's metadata.
#[derive(Debug, Serialize, ToSchema)]
struct DocSummary {
    /// The document id (also its room name in `/ws/{id}` and `/d/{id}`).
    id: String,
    /// Title: the one given at creation, or the first line of the text.
    title: Option<String>,
    /// Creation time, milliseconds since the Unix epoch.
    created_ms: u64,
    /// Last change, milliseconds since the Unix epoch.
    updated_ms: u64,
    /// Bytes stored (snapshot plus update log).
    size_bytes: u64,
    /// Updates ever stored.
    update_count: u64,
    /// Connections open on the document now.
    users: u32,
}

impl DocSummary {
    fn new(m: DocMeta, users: u32) -> Self {
        Self {
            users,
            id: m.id,
            title: m.title.filter(|t| !t.is_empty()),
            created_ms: m.created_ms,
            updated_ms: m.updated_ms,
            size_bytes: m.size_bytes,
            update_count: m.update_count,
        }
    }
}

/// A page of documents.
#[derive(Debug, Serialize, ToSchema)]
struct DocPage {
    /// This page.
    docs: Vec<DocSummary>,
    /// Documents in all.
    total: usize,
    /// Offset of the next page, if there is one.
    next_offset: Option<usize>,
}

/// `POST /api/docs`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateDoc {
    /// The id to use; a random UUID when absent. An id that exists is refused (409), so
    /// seeding twice never duplicates content.
    id: Option<String>,
    /// Initial text.
    text: Option<String>,
    /// Title for listings; the first line of `text` when absent.
    title: Option<String>,
}

/// A document was created.
#[derive(Debug, Serialize, ToSchema)]
struct Created {
    /// Its id.
    id: String,
    /// Its update count (0 or 1).
    version: u64,
}

/// A write is durable.
#[derive(Debug, Serialize, ToSchema)]
struct Written {
    /// The document's update count now.
    version: u64,
    /// Whether the document changed (replacing text with the same text does not).
    changed: bool,
}

/// A document was deleted.
#[derive(Debug, Serialize, ToSchema)]
struct Deleted {
    /// Always true.
    deleted: bool,
    /// Connections that were open on it and were closed (code 4410).
    disconnected: u32,
}

/// `GET /api/docs/{id}/update` parameters.
#[derive(Debug, Deserialize, IntoParams)]
struct UpdateQuery {
    /// A Yjs v1 state vector, base64url without padding: only what it lacks is returned.
    state_vector: Option<String>,
}

/// A Yjs v1 update, as raw bytes.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
struct YjsUpdate(Vec<u8>);

/// How a notice is shown.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum Level {
    /// Plain information.
    Info,
    /// Something to notice.
    Warning,
    /// Something went wrong.
    Error,
}

/// `POST /api/docs/{id}/notices`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NoticeBody {
    /// How to show it.
    level: Level,
    /// The text of the toast.
    text: String,
    /// Only the connections whose token names this user (`weft token --sub`); all when absent.
    user: Option<String>,
}

/// A notice was sent.
#[derive(Debug, Serialize, ToSchema)]
struct Delivered {
    /// Connections it went to (those whose editor listens for notices).
    delivered: u32,
}

/// Lists documents with their metadata (never loading them) and live user counts.
#[utoipa::path(
    get, path = "/api/docs", tag = "documents", params(ListQuery),
    responses(
        (status = 200, body = DocPage),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    )
)]
async fn list_docs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<DocPage>, ApiError> {
    authorize(&state, &headers, None, Access::Read)?;
    let store = state.ctx.store.clone();
    let mut metas = blocking(move || store.list()).await?;
    metas.sort_by(|a, b| b.updated_ms.cmp(&a.updated_ms).then(a.id.cmp(&b.id)));
    let live = state.ctx.live_users();
    let total = metas.len();
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let docs: Vec<DocSummary> = metas
        .into_iter()
        .skip(q.offset)
        .take(limit)
        .map(|m| {
            let users = live.get(&m.id).copied().unwrap_or(0);
            DocSummary::new(m, users)
        })
        .collect();
    let end = q.offset.saturating_add(docs.len());
    Ok(Json(DocPage {
        next_offset: (end < total).then_some(end),
        docs,
        total,
    }))
}

/// Creates a document, optionally with initial text and a title. Needs write access to every
/// document, or to the given `id`.
#[utoipa::path(
    post, path = "/api/docs", tag = "documents", request_body = CreateDoc,
    responses(
        (status = 201, body = Created),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody),
    )
)]
async fn create_doc(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<CreateDoc>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| body_error(e.status(), e.body_text()))?;
    let id = match &body.id {
        Some(id) => id.clone(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let room = parse_id(&state, &id)?;
    let scope = body.id.as_ref().map(|_| room.as_str());
    authorize(&state, &headers, scope, Access::Write)?;
    let op = ApiOp::Create {
        text: body.text,
        title: body.title,
    };
    match state.ctx.api(&room, op).await.map_err(op_error)? {
        ApiReply::Written { version, .. } => {
            let created = Created { id, version };
            Ok((StatusCode::CREATED, Json(created)).into_response())
        }
        other => Err(unexpected(&other)),
    }
}

/// A document's metadata and who is connected.
#[utoipa::path(
    get, path = "/api/docs/{id}", tag = "documents", params(("id" = String, Path)),
    responses(
        (status = 200, body = DocSummary),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn get_doc(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<DocSummary>, ApiError> {
    let room = doc_id(&state, id)?;
    authorize(&state, &headers, Some(room.as_str()), Access::Read)?;
    let meta = existing(&state, &room).await?;
    let users = state
        .ctx
        .live_users()
        .get(room.as_str())
        .copied()
        .unwrap_or(0);
    Ok(Json(DocSummary::new(meta, users)))
}

/// Deletes a document: its connections are closed with code 4410 (y-websocket clients do not
/// reconnect) and everything stored is removed. Needs the admin role.
#[utoipa::path(
    delete, path = "/api/docs/{id}", tag = "documents", params(("id" = String, Path)),
    responses(
        (status = 200, body = Deleted),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn delete_doc(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Deleted>, ApiError> {
    let room = doc_id(&state, id)?;
    authorize(&state, &headers, Some(room.as_str()), Access::Admin)?;
    existing(&state, &room).await?;
    match state
        .ctx
        .api(&room, ApiOp::Delete)
        .await
        .map_err(op_error)?
    {
        ApiReply::Deleted(disconnected) => Ok(Json(Deleted {
            deleted: true,
            disconnected,
        })),
        other => Err(unexpected(&other)),
    }
}

/// The document's text (`content`), as live editors see it.
#[utoipa::path(
    get, path = "/api/docs/{id}/text", tag = "content", params(("id" = String, Path)),
    responses(
        (status = 200, body = String, content_type = "text/plain; charset=utf-8"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn get_text(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let room = doc_id(&state, id)?;
    authorize(&state, &headers, Some(room.as_str()), Access::Read)?;
    existing(&state, &room).await?;
    match state
        .ctx
        .api(&room, ApiOp::GetText)
        .await
        .map_err(op_error)?
    {
        ApiReply::Text(text) => {
            Ok(([(CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
        }
        other => Err(unexpected(&other)),
    }
}

/// Replaces the text with the request body (UTF-8) by a minimal diff, applied in the room:
/// live editors see only the changed spans, and their cursors elsewhere stay put.
#[utoipa::path(
    put, path = "/api/docs/{id}/text", tag = "content", params(("id" = String, Path)),
    request_body(content = String, content_type = "text/plain"),
    responses(
        (status = 200, body = Written),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody),
    )
)]
async fn put_text(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Written>, ApiError> {
    let room = doc_id(&state, id)?;
    authorize(&state, &headers, Some(room.as_str()), Access::Write)?;
    let text = utf8(raw_body(body)?)?;
    existing(&state, &room).await?;
    written(state.ctx.api(&room, ApiOp::SetText(text)).await)
}

/// Appends the request body (UTF-8) to the end of the text.
#[utoipa::path(
    post, path = "/api/docs/{id}/append", tag = "content", params(("id" = String, Path)),
    request_body(content = String, content_type = "text/plain"),
    responses(
        (status = 200, body = Written),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody),
    )
)]
async fn append_text(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Written>, ApiError> {
    let room = doc_id(&state, id)?;
    authorize(&state, &headers, Some(room.as_str()), Access::Write)?;
    let text = utf8(raw_body(body)?)?;
    existing(&state, &room).await?;
    written(state.ctx.api(&room, ApiOp::Append(text)).await)
}

/// The whole document as one Yjs v1 update, or only what a state vector lacks.
#[utoipa::path(
    get, path = "/api/docs/{id}/update", tag = "yjs",
    params(("id" = String, Path), UpdateQuery),
    responses(
        (status = 200, body = YjsUpdate, content_type = "application/octet-stream"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
async fn get_update(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    Query(q): Query<UpdateQuery>,
) -> Result<Response, ApiError> {
    let room = doc_id(&state, id)?;
    authorize(&state, &headers, Some(room.as_str()), Access::Read)?;
    let sv = match &q.state_vector {
        Some(sv) => Some(
            URL_SAFE_NO_PAD
                .decode(sv.trim_end_matches('='))
                .map_err(|_| {
                    bad_request("invalid_state_vector", "state_vector is not base64url")
                })?,
        ),
        None => None,
    };
    existing(&state, &room).await?;
    match state
        .ctx
        .api(&room, ApiOp::GetUpdate(sv))
        .await
        .map_err(op_error)?
    {
        ApiReply::Update(bytes) => {
            Ok(([(CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
        }
        other => Err(unexpected(&other)),
    }
}

/// Applies a binary Yjs v1 update (the request body); live editors receive it.
#[utoipa::path(
    post, path = "/api/docs/{id}/update", tag = "yjs", params(("id" = String, Path)),
    request_body(content = YjsUpdate, content_type = "application/octet-stream"),
    responses(
        (status = 200, body = Written),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody),
    )
)]
async fn post_update(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Written>, ApiError> {
    let room = doc_id(&state, id)?;
    authorize(&state, &headers, Some(room.as_str()), Access::Write)?;
    let body = raw_body(body)?;
    existing(&state, &room).await?;
    written(
        state
            .ctx
            .api(&room, ApiOp::ApplyUpdate(body.to_vec()))
            .await,
    )
}

/// Shows a notice (a toast) in the editors open on the document: to everyone, or only to the
/// connections of one user (the `sub` of their token). Needs the admin role.
#[utoipa::path(
    post, path = "/api/docs/{id}/notices", tag = "documents", params(("id" = String, Path)),
    request_body = NoticeBody,
    responses(
        (status = 200, body = Delivered),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
async fn send_notice(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<NoticeBody>, JsonRejection>,
) -> Result<Json<Delivered>, ApiError> {
    let room = doc_id(&state, id)?;
    authorize(&state, &headers, Some(room.as_str()), Access::Admin)?;
    let Json(body) = body.map_err(|e| body_error(e.status(), e.body_text()))?;
    existing(&state, &room).await?;
    let level = match body.level {
        Level::Info => NoticeLevel::Info,
        Level::Warning => NoticeLevel::Warning,
        Level::Error => NoticeLevel::Error,
    };
    let op = ApiOp::Notice {
        level,
        text: body.text,
        to: body.user,
    };
    match state.ctx.api(&room, op).await.map_err(op_error)? {
        ApiReply::Delivered(delivered) => Ok(Json(Delivered { delivered })),
        other => Err(unexpected(&other)),
    }
}

/// Checks the request's bearer token (granted everything in open mode).
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    doc: Option<&str>,
    need: Access,
) -> Result<Grant, ApiError> {
    let token = auth::token_of(headers, None);
    auth::authorize(&state.ctx.config, token, doc, need).map_err(ApiError::from)
}

/// Validates a document id from the path.
fn doc_id(state: &AppState, id: Result<Path<String>, PathRejection>) -> Result<RoomName, ApiError> {
    let Path(id) = id.map_err(|e| bad_request("invalid_doc_id", &e.body_text()))?;
    parse_id(state, &id)
}

fn parse_id(state: &AppState, id: &str) -> Result<RoomName, ApiError> {
    RoomName::parse(id, &state.ctx.config.limits())
        .map_err(|e| bad_request("invalid_doc_id", &e.to_string()))
}

/// The document's metadata, or 404 without loading anything.
async fn existing(state: &AppState, room: &RoomName) -> Result<DocMeta, ApiError> {
    let store = state.ctx.store.clone();
    let id = room.as_str().to_owned();
    blocking(move || store.meta(&id))
        .await?
        .ok_or_else(not_found)
}

/// Runs a blocking store call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn utf8(body: Bytes) -> Result<String, ApiError> {
    String::from_utf8(body.to_vec())
        .map_err(|_| bad_request("invalid_body", "the body must be UTF-8 text"))
}

fn written(result: Result<ApiReply, ApiOpError>) -> Result<Json<Written>, ApiError> {
    match result.map_err(op_error)? {
        ApiReply::Written { version, changed } => Ok(Json(Written { version, changed })),
        other => Err(unexpected(&other)),
    }
}

fn bad_request(code: &'static str, message: &str) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code,
        message: message.to_owned(),
    }
}

fn bad_body(message: String) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_body",
        message,
    }
}

/// A rejected request body as JSON: 413 `body_too_large` over the limit, else 400.
fn body_error(status: StatusCode, message: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError {
            status,
            code: "body_too_large",
            message,
        };
    }
    bad_body(message)
}

/// The raw body, or its rejection as a JSON error.
fn raw_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| body_error(e.status(), e.body_text()))
}

fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "doc_not_found",
        message: "no document with this id".into(),
    }
}

fn unexpected(reply: &ApiReply) -> ApiError {
    ApiError::internal(format!("unexpected reply from the room: {reply:?}"))
}

/// Maps a room's answer to the API's status and code.
fn op_error(e: ApiOpError) -> ApiError {
    let message = e.to_string();
    let (status, code) = match e {
        ApiOpError::NotFound => return not_found(),
        ApiOpError::Exists => (StatusCode::CONFLICT, "doc_exists"),
        ApiOpError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "doc_too_large"),
        ApiOpError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_update"),
        ApiOpError::Storage(_) => return ApiError::internal(message),
        ApiOpError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "doc_unavailable"),
    };
    ApiError {
        status,
        code,
        message,
    }
}
