//! The JSON HTTP API under `/api`: create, list, inspect and delete documents, read and write
//! their text or Yjs state, and send notices to the people editing them.
//!
//! Listings and metadata come from the store without loading documents. Everything that reads
//! or changes content goes through the document's room actor ([`DocRoom`]'s typed calls), so
//! live editors see API writes at once and API reads see what they see. Every call is
//! authorized with a token in `Authorization: Bearer` (see `auth`); the extractors in `extract`
//! check the id, the token, the body and whether the document exists, in that order.
//! Errors are `{"code", "message"}` with a stable `code`.
//! The OpenAPI description at `/api/openapi.json` is generated from the handlers below.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Query, State};
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
use weft_protocol::{Limits, NoticeLevel, RoomName};

use crate::error::{ApiError, ErrorBody};
use crate::http::extract::{
    authorize, blocking, not_found, parse_id, Admin, AllDocs, AppJson, DocAccess, Existing,
    RawBody, Read, SomeDoc, TextBody, Write,
};
use crate::http::AppState;
use crate::room::authors::ANONYMOUS;
use crate::room::calls::{Committed, DocRoom, RoomCallError};
use crate::room::registry::RoomContext;
use crate::room::ApiOpError;
use crate::store::{DocMeta, Store, StoreError};
use crate::token::{unix_now, Access};

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
pub(crate) fn routes(max_body: usize) -> Router<AppState> {
    let (router, spec) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_docs, create_doc))
        .routes(routes!(get_doc, delete_doc, rename_doc))
        .routes(routes!(super::trash::list_trash))
        .routes(routes!(super::search::search_docs))
        .routes(routes!(super::trash::restore_doc))
        .routes(routes!(super::trash::purge_doc))
        .routes(routes!(get_text, put_text))
        .routes(routes!(append_text))
        .routes(routes!(get_update, post_update))
        .routes(routes!(send_notice))
        .routes(routes!(revoke_tokens))
        .routes(routes!(super::share::mint_token))
        .routes(routes!(super::backup::get_backup))
        .routes(routes!(super::feed::changes))
        .routes(routes!(super::webhooks::list_webhooks))
        .routes(routes!(super::webhooks::redeliver))
        .routes(routes!(
            super::history::list_versions,
            super::history::create_version
        ))
        .routes(routes!(super::history::version_text))
        .routes(routes!(super::history::version_diff))
        .routes(routes!(super::history::restore_version))
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
    /// Title: the one given at creation or with `PATCH`, or the first line of the text.
    title: Option<String>,
    /// Whether the title was given explicitly (at creation or with `PATCH`); if not, it
    /// follows the first line of the text.
    title_pinned: bool,
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
    /// Stored updates set aside because they did not apply when the document loaded.
    quarantined: u64,
}

impl DocSummary {
    fn new(m: DocMeta, users: u32) -> Self {
        Self {
            users,
            id: m.id,
            title: m.title.filter(|t| !t.is_empty()),
            title_pinned: m.title_pinned,
            created_ms: m.created_ms,
            updated_ms: m.updated_ms,
            size_bytes: m.size_bytes,
            update_count: m.update_count,
            quarantined: m.quarantined,
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

impl DocPage {
    /// The page `metas` starting at `offset` of `total` documents, with the connections open
    /// on each document by `live`.
    fn new(metas: Vec<DocMeta>, total: usize, offset: usize, live: &HashMap<String, u32>) -> Self {
        let docs: Vec<DocSummary> = metas
            .into_iter()
            .map(|m| {
                let users = live.get(&m.id).copied().unwrap_or(0);
                DocSummary::new(m, users)
            })
            .collect();
        let end = offset.saturating_add(docs.len());
        Self {
            next_offset: (end < total).then_some(end),
            docs,
            total,
        }
    }
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

impl From<Committed> for Written {
    fn from(c: Committed) -> Self {
        Self {
            version: c.version,
            changed: c.changed,
        }
    }
}

/// A document was moved to the trash.
#[derive(Debug, Serialize, ToSchema)]
struct Deleted {
    /// Always true: the document is in the trash (see `GET /api/trash`).
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

impl From<Level> for NoticeLevel {
    fn from(level: Level) -> Self {
        match level {
            Level::Info => NoticeLevel::Info,
            Level::Warning => NoticeLevel::Warning,
            Level::Error => NoticeLevel::Error,
        }
    }
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
    Query(q): Query<ListQuery>,
    _: AllDocs<Read>,
    State(ctx): State<Arc<RoomContext>>,
) -> Result<Json<DocPage>, ApiError> {
    let store = ctx.store.clone();
    let (offset, limit) = (q.offset, q.limit.unwrap_or(100).clamp(1, MAX_PAGE));
    let (metas, total) = blocking(move || page_of(store.as_ref(), offset, limit)).await?;
    Ok(Json(DocPage::new(metas, total, offset, &ctx.live_users())))
}

/// The documents from `offset` (most recently edited first), at most `limit`, with their
/// titles, and how many there are in all. Only the page's titles are read: a listing of many
/// documents with long titles costs no more than its page.
fn page_of(
    store: &dyn Store,
    offset: usize,
    limit: usize,
) -> Result<(Vec<DocMeta>, usize), StoreError> {
    let trash: std::collections::HashSet<String> =
        store.trash()?.into_iter().map(|(doc, _)| doc).collect();
    let mut metas = store.list_untitled()?;
    metas.retain(|m| !trash.contains(&m.id));
    metas.sort_by(|a, b| b.updated_ms.cmp(&a.updated_ms).then(a.id.cmp(&b.id)));
    let total = metas.len();
    let mut page: Vec<DocMeta> = metas.into_iter().skip(offset).take(limit).collect();
    for meta in &mut page {
        let limits = Limits {
            max_room_name: meta.id.len().max(Limits::DEFAULT.max_room_name),
            ..Limits::DEFAULT
        };
        if let Ok(name) = RoomName::parse(&meta.id, &limits) {
            meta.title = store.meta(&name)?.and_then(|m| m.title);
        }
    }
    Ok((page, total))
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
    _: SomeDoc<Write>,
    State(ctx): State<Arc<RoomContext>>,
    headers: HeaderMap,
    AppJson(body): AppJson<CreateDoc>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let (id, room) = new_doc(ctx.clone(), &headers, body.id)?;
    super::trash::refuse_trashed(&ctx, &id).await?;
    let version = room.create(body.text, body.title).await?;
    Ok((StatusCode::CREATED, Json(Created { id, version })))
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
async fn get_doc(doc: Existing<Read>) -> Json<DocSummary> {
    let users = doc.room.users();
    Json(DocSummary::new(doc.meta, users))
}

/// Deletes a document: moves it to the trash, where it is kept `--trash-keep-days` (30 by
/// default) before it is purged; `POST /api/docs/{id}/restore` brings it back with its content
/// and history. Its connections are closed with code 4410 (y-websocket clients do not
/// reconnect); until restored it answers 404 and sockets to it are closed with 4410 at once.
/// Needs write access.
#[utoipa::path(
    delete, path = "/api/docs/{id}", tag = "documents", params(("id" = String, Path)),
    responses(
        (status = 200, body = Deleted),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
async fn delete_doc(doc: Existing<Write>) -> Result<Json<Deleted>, ApiError> {
    let disconnected = doc.room.delete().await?;
    Ok(Json(Deleted {
        deleted: true,
        disconnected,
    }))
}

/// `PATCH /api/docs/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DocPatch {
    /// The new title: one line, surrounding whitespace trimmed, not empty, at most 200
    /// characters. Edits of the text no longer change it.
    title: String,
}

/// Renames a document: its title becomes `title` (listings, the editor's header, the browser
/// tab) and editors open on it are told at once. Needs write access.
#[utoipa::path(
    patch, path = "/api/docs/{id}", tag = "documents", params(("id" = String, Path)),
    request_body = DocPatch,
    responses(
        (status = 200, body = DocSummary),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
async fn rename_doc(
    doc: DocAccess<Write>,
    State(search): State<Arc<crate::search::Search>>,
    AppJson(body): AppJson<DocPatch>,
) -> Result<Json<DocSummary>, ApiError> {
    let title = super::trash::valid_title(&body.title)?;
    let meta = doc.meta().await?;
    let room = DocRoom::new(doc.context().clone(), doc.name().clone());
    room.rename(title.clone()).await?;
    search.touch(doc.name().as_str());
    let users = doc
        .context()
        .live_users()
        .get(&meta.id)
        .copied()
        .unwrap_or(0);
    let meta = DocMeta {
        title: Some(title),
        title_pinned: true,
        ..meta
    };
    Ok(Json(DocSummary::new(meta, users)))
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
async fn get_text(doc: Existing<Read>) -> Result<Response, ApiError> {
    let text = doc.room.text().await?;
    Ok(([(CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// Replaces the text with the request body (UTF-8) by a diff planned in bounded time off the
/// room (minimal for small changes, line by line or the changed span whole for large rewrites):
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
    doc: DocAccess<Write>,
    TextBody(text): TextBody,
) -> Result<Json<Written>, ApiError> {
    let committed = doc.existing().await?.set_text(text).await?;
    Ok(Json(committed.into()))
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
    doc: DocAccess<Write>,
    TextBody(text): TextBody,
) -> Result<Json<Written>, ApiError> {
    let committed = doc.existing().await?.append(text).await?;
    Ok(Json(committed.into()))
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
    Query(q): Query<UpdateQuery>,
    doc: DocAccess<Read>,
) -> Result<Response, ApiError> {
    let sv = q.state_vector.as_deref().map(state_vector).transpose()?;
    let update = doc.existing().await?.update(sv).await?;
    Ok(([(CONTENT_TYPE, "application/octet-stream")], update).into_response())
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
    doc: DocAccess<Write>,
    RawBody(update): RawBody,
) -> Result<Json<Written>, ApiError> {
    let committed = doc.existing().await?.apply_update(update.to_vec()).await?;
    Ok(Json(committed.into()))
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
    doc: DocAccess<Admin>,
    AppJson(body): AppJson<NoticeBody>,
) -> Result<Json<Delivered>, ApiError> {
    let room = doc.existing().await?;
    let delivered = room.notice(body.level.into(), body.text, body.user).await?;
    Ok(Json(Delivered { delivered }))
}

/// Revokes every token for the document issued before now (Unix seconds, `revoked_before`):
/// they are refused from now on (401 `token_revoked`, on a socket 4401) and the connections
/// admitted with one are closed with 4401 `token_revoked`. All-docs tokens are revoked for this
/// document too, the caller's own included. Tokens minted in the same second as the
/// revocation stay valid. Recorded durably, so it survives a restart. Needs the admin role;
/// the document need not exist.
#[utoipa::path(
    post, path = "/api/docs/{id}/revoke", tag = "documents", params(("id" = String, Path)),
    responses(
        (status = 200, body = Revoked),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    )
)]
async fn revoke_tokens(doc: DocAccess<Admin>) -> Result<Json<Revoked>, ApiError> {
    let before = unix_now();
    let (store, name) = (doc.context().store.clone(), doc.name().clone());
    blocking(move || store.revoke_tokens(&name, before)).await?;
    let closed = doc.context().revoked(doc.name(), before);
    Ok(Json(Revoked {
        revoked_before: before,
        closed,
    }))
}

/// A document's tokens were revoked.
#[derive(Debug, Serialize, ToSchema)]
struct Revoked {
    /// Tokens issued before this time (Unix seconds) are refused.
    revoked_before: u64,
    /// Connections that were open with such a token and were closed (code 4401).
    closed: u32,
}

/// The id a create names (a fresh UUID when none) and its room, once the id is valid and the
/// token may write it. The id is in the body, not the path, so no path extractor checks it
/// ([`SomeDoc`] has checked the token before the body was read); a token for one document may
/// create only that one, by name.
fn new_doc(
    ctx: Arc<RoomContext>,
    headers: &HeaderMap,
    id: Option<String>,
) -> Result<(String, DocRoom), ApiError> {
    let named = id.is_some();
    let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let room = parse_id(&ctx.config, &id)?;
    let scope = named.then_some(room.as_str());
    let subject = authorize(&ctx, headers, scope, Access::Write)?;
    let author = subject.as_deref().unwrap_or(ANONYMOUS);
    Ok((id, DocRoom::new(ctx, room).by(author)))
}

/// Decodes a `state_vector` parameter (base64url, padding tolerated).
fn state_vector(sv: &str) -> Result<Vec<u8>, ApiError> {
    URL_SAFE_NO_PAD
        .decode(sv.trim_end_matches('='))
        .map_err(|_| ApiError::bad_request("invalid_state_vector", "state_vector is not base64url"))
}

/// Maps a room's answer to the API's status and code.
impl From<RoomCallError> for ApiError {
    fn from(e: RoomCallError) -> Self {
        let message = e.to_string();
        let (status, code) = match e {
            RoomCallError::Op(ApiOpError::NotFound) => return not_found(),
            RoomCallError::Op(ApiOpError::Exists) => (StatusCode::CONFLICT, "doc_exists"),
            RoomCallError::Op(ApiOpError::TooLarge(_)) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "doc_too_large")
            }
            RoomCallError::Op(ApiOpError::Invalid(_)) => {
                (StatusCode::BAD_REQUEST, "invalid_update")
            }
            RoomCallError::Op(ApiOpError::TitleTooLong(_)) => {
                (StatusCode::BAD_REQUEST, "title_too_long")
            }
            RoomCallError::Op(ApiOpError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "doc_unavailable")
            }
            RoomCallError::Op(ApiOpError::StoreFailed(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_failed")
            }
            RoomCallError::Op(ApiOpError::Storage(_)) | RoomCallError::Unexpected(_) => {
                return ApiError::internal(message)
            }
        };
        ApiError::new(status, code, message)
    }
}
