//! Extractors of the JSON API, so a handler starts at its own work: the access it needs (a role
//! as a type parameter), the document its path names, whether that document exists, and request
//! bodies. Every rejection is an [`ApiError`] with the API's stable codes.
//!
//! Requests are refused in a fixed order, which clients and tests rely on: a bad document id
//! (400), then the token (401/403), then the body or query (400/413), then a missing document
//! (404). Handlers with a body therefore take [`DocAccess`] and ask [`DocAccess::existing`]
//! after the body is read; handlers without one take [`Existing`]. Since parts extractors run
//! before the body one, no body byte is read for a request whose token is refused.
//!
//! [`ClientAddr`] is the client's address for limits and logs, through trusted proxies.

use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use weft_protocol::RoomName;

use crate::config::Config;
use crate::error::ApiError;
use crate::http::{auth, forwarded};
use crate::room::authors::ANONYMOUS;
use crate::room::calls::DocRoom;
use crate::room::registry::RoomContext;
use crate::store::{DocMeta, Store, StoreError};
use crate::token::Access;

/// The access a handler needs, named as a type so its extractor can check it.
pub(crate) trait Need {
    /// The role the request's token must grant.
    const ACCESS: Access;
}

/// Needs read access.
pub(crate) enum Read {}

/// Needs write access.
pub(crate) enum Write {}

/// Needs the admin role.
pub(crate) enum Admin {}

impl Need for Read {
    const ACCESS: Access = Access::Read;
}

impl Need for Write {
    const ACCESS: Access = Access::Write;
}

impl Need for Admin {
    const ACCESS: Access = Access::Admin;
}

/// A request authorized with `N` on every document (a listing).
pub(crate) struct AllDocs<N>(PhantomData<fn() -> N>);

impl<S, N> FromRequestParts<S> for AllDocs<N>
where
    S: Send + Sync,
    Arc<Config>: FromRef<S>,
    N: Need,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let token = auth::token_of(&parts.headers, None);
        auth::authorize(&Arc::from_ref(state), token, None, N::ACCESS)?;
        Ok(Self(PhantomData))
    }
}

/// A request whose token is valid and grants `N` on some document, for a request that names
/// its document in a body not read yet (a create): the token is refused before any body byte
/// is read, and the named document is checked with [`authorize`] once it is known.
pub(crate) struct SomeDoc<N>(PhantomData<fn() -> N>);

impl<S, N> FromRequestParts<S> for SomeDoc<N>
where
    S: Send + Sync,
    Arc<Config>: FromRef<S>,
    N: Need,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let token = auth::token_of(&parts.headers, None);
        auth::authorize_some_doc(&Arc::from_ref(state), token, N::ACCESS)?;
        Ok(Self(PhantomData))
    }
}

/// The document the path names: its id is valid and the request is authorized with `N` on it.
/// Whether it exists is not known yet (see [`DocAccess::existing`]).
pub(crate) struct DocAccess<N> {
    ctx: Arc<RoomContext>,
    room: RoomName,
    /// Who the request's writes are attributed to: the token's `sub`, else anonymous.
    author: String,
    need: PhantomData<fn() -> N>,
}

impl<S, N> FromRequestParts<S> for DocAccess<N>
where
    S: Send + Sync,
    Arc<RoomContext>: FromRef<S>,
    N: Need,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ctx = Arc::<RoomContext>::from_ref(state);
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_doc_id", e.body_text()))?;
        let room = parse_id(&ctx.config, &id)?;
        let subject = authorize(&ctx, &parts.headers, Some(room.as_str()), N::ACCESS)?;
        Ok(Self {
            ctx,
            room,
            author: subject.unwrap_or_else(|| ANONYMOUS.into()),
            need: PhantomData,
        })
    }
}

impl<N> DocAccess<N> {
    /// The document's id.
    pub(crate) fn name(&self) -> &RoomName {
        &self.room
    }

    /// What rooms share (the store, the revocations).
    pub(crate) fn context(&self) -> &Arc<RoomContext> {
        &self.ctx
    }

    /// The document's metadata, or 404 `doc_not_found`, read from the store without loading it.
    /// A document in the trash is not found.
    pub(crate) async fn meta(&self) -> Result<DocMeta, ApiError> {
        let store = self.ctx.store.clone();
        let id = self.room.clone();
        blocking(move || live_meta(store.as_ref(), &id))
            .await?
            .ok_or_else(not_found)
    }

    /// The document's room, once the store says the document exists (404 `doc_not_found` if
    /// not).
    pub(crate) async fn existing(self) -> Result<DocRoom, ApiError> {
        self.meta().await?;
        Ok(DocRoom::new(self.ctx, self.room).by(&self.author))
    }
}

/// A document that exists, for handlers with nothing else to refuse first: [`DocAccess`] and
/// the existence check.
pub(crate) struct Existing<N> {
    /// Its metadata, as stored.
    pub(crate) meta: DocMeta,
    /// Its room.
    pub(crate) room: DocRoom,
    need: PhantomData<fn() -> N>,
}

impl<S, N> FromRequestParts<S> for Existing<N>
where
    S: Send + Sync,
    Arc<RoomContext>: FromRef<S>,
    N: Need,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let access = DocAccess::<N>::from_request_parts(parts, state).await?;
        let meta = access.meta().await?;
        Ok(Self {
            meta,
            room: DocRoom::new(access.ctx, access.room).by(&access.author),
            need: PhantomData,
        })
    }
}

/// The address of the client that sent a request: the TCP peer, or the address a trusted
/// proxy (`--trusted-proxy`) says it forwarded the request for. What per-address limits count
/// and logs name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

impl ClientAddr {
    /// The client's IP address.
    pub(crate) fn ip(self) -> IpAddr {
        self.0.ip()
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<S> FromRequestParts<S> for ClientAddr
where
    S: Send + Sync,
    Arc<Config>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // The accept loop puts the peer on every request; its absence is a wiring bug.
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Err(ApiError::internal("request without a peer address".into()));
        };
        let config = Arc::<Config>::from_ref(state);
        Ok(Self(forwarded::client_addr(
            *peer,
            &parts.headers,
            &config.trusted_proxies,
        )))
    }
}

/// A JSON request body. One that is not the JSON expected is 400 `invalid_body` with serde's
/// explanation; one over the body limit is 413 `body_too_large`.
pub(crate) struct AppJson<T>(pub(crate) T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    S: Send + Sync,
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// A request body as raw bytes (a Yjs update); 413 `body_too_large` over the body limit.
pub(crate) struct RawBody(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Ok(Self(Bytes::from_request(req, state).await?))
    }
}

/// A request body of UTF-8 text; anything else is 400 `invalid_body`.
pub(crate) struct TextBody(pub(crate) String);

impl<S: Send + Sync> FromRequest<S> for TextBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        String::from_utf8(bytes.to_vec())
            .map(Self)
            .map_err(|_| ApiError::bad_request("invalid_body", "the body must be UTF-8 text"))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        body_error(e.status(), e.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        body_error(e.status(), e.body_text())
    }
}

/// A rejected request body: 413 `body_too_large` over the limit, else 400 `invalid_body`.
fn body_error(status: StatusCode, message: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(status, "body_too_large", message);
    }
    ApiError::bad_request("invalid_body", message)
}

/// Checks the request's bearer token for `need` on `doc` (revocations included), or on every
/// document when `None` (granted everything in open mode); returns the token's `sub`, if any.
pub(crate) fn authorize(
    ctx: &RoomContext,
    headers: &HeaderMap,
    doc: Option<&str>,
    need: Access,
) -> Result<Option<String>, ApiError> {
    let token = auth::token_of(headers, None);
    let grant = auth::authorize_doc(&ctx.config, &ctx.revocations, token, doc, need)?;
    Ok(grant.subject)
}

/// Validates a document id: 400 `invalid_doc_id` when it is not a valid room name.
pub(crate) fn parse_id(config: &Config, id: &str) -> Result<RoomName, ApiError> {
    RoomName::parse(id, &config.limits())
        .map_err(|e| ApiError::bad_request("invalid_doc_id", e.to_string()))
}

/// The metadata of `doc` if it exists and is not in the trash: what every request naming a
/// document checks first.
pub(crate) fn live_meta(store: &dyn Store, doc: &RoomName) -> Result<Option<DocMeta>, StoreError> {
    match store.trashed(doc)? {
        Some(_) => Ok(None),
        None => store.meta(doc),
    }
}

/// 404 `doc_not_found`.
pub(crate) fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "doc_not_found",
        "no document with this id",
    )
}

/// Runs a blocking store call off the async workers; a failure is 500 `internal`.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))
}
