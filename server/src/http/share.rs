//! `POST /api/tokens`: mints a read or write token for one document, so the editor's "Copy edit
//! link" and "Copy read-only link" buttons can share a document without a shell and `weft token`.
//!
//! Only an admin of the document may mint (an all-documents admin token, or an admin token for
//! that document), and a minted token never outlives the token that minted it: a one-hour admin
//! link cannot hand out links that last for ever. In open mode (no secret) nobody needs a token,
//! so the answer is the plain link with no token.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::http::auth;
use crate::http::extract::{parse_id, Admin, AppJson, SomeDoc};
use crate::room::registry::RoomContext;
use crate::token::{mint, unix_now, Access, Claims, Scope};

/// Characters left as they are in a document id inside `/d/{id}`: what `encodeURIComponent`
/// leaves, so the server's links match the ones the editor builds.
const ID_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// The role a shared link grants: admin is not handed out through links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ShareRole {
    /// Read along; edits are refused.
    Read,
    /// Read and edit.
    Write,
}

impl From<ShareRole> for Access {
    fn from(r: ShareRole) -> Self {
        match r {
            ShareRole::Read => Access::Read,
            ShareRole::Write => Access::Write,
        }
    }
}

/// `POST /api/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MintRequest {
    /// The document the token is for (it need not exist yet: opening the link creates it).
    doc: String,
    /// `read` or `write`.
    role: ShareRole,
    /// Lifetime in seconds (at least 1); absent or null: as long as the minting token lives
    /// (for ever in open mode, where there are no tokens).
    #[serde(default)]
    ttl_secs: Option<u64>,
}

/// A minted token and the editor link that carries it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Minted {
    /// The document.
    doc: String,
    /// The role the token grants.
    role: ShareRole,
    /// The token (`v1.claims.signature`); null in open mode, where links need none.
    token: Option<String>,
    /// The editor link, relative to the server: `/d/{id}?token=…` (`/d/{id}` in open mode).
    link: String,
    /// When the token expires, Unix seconds; null when it never does (open mode).
    expires_at: Option<u64>,
    /// True when the lifetime asked for was cut to the minting token's own expiry.
    capped: bool,
}

/// Mints a `read` or `write` token for one document and answers it with its editor link. Needs
/// the admin role on that document. The token expires after `ttl_secs`, or with the minting
/// token if that comes first (`capped`). In open mode the answer has no token and the plain
/// link, since every link can edit there.
#[utoipa::path(
    post, path = "/api/tokens", tag = "tokens", request_body = MintRequest,
    responses(
        (status = 200, body = Minted),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    )
)]
pub(crate) async fn mint_token(
    _admin: SomeDoc<Admin>,
    State(ctx): State<Arc<RoomContext>>,
    headers: HeaderMap,
    AppJson(body): AppJson<MintRequest>,
) -> Result<Json<Minted>, ApiError> {
    let room = parse_id(&ctx.config, &body.doc)?;
    if body.ttl_secs == Some(0) {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            "ttl_secs must be at least 1 (or absent for no expiry of its own)",
        ));
    }
    let token = auth::token_of(&headers, None);
    let grant = auth::authorize_doc(
        &ctx.config,
        &ctx.revocations,
        token,
        Some(room.as_str()),
        Access::Admin,
    )?;
    let path = format!("/d/{}", utf8_percent_encode(room.as_str(), ID_SAFE));
    let (Some(secret), Some(lifetime)) = (&ctx.config.auth_secret, grant.lifetime) else {
        return Ok(Json(Minted {
            doc: body.doc,
            role: body.role,
            token: None,
            link: path,
            expires_at: None,
            capped: false,
        }));
    };
    let asked = body
        .ttl_secs
        .map_or(u64::MAX, |ttl| unix_now().saturating_add(ttl));
    let exp = asked.min(lifetime.exp);
    let claims = Claims {
        scope: Scope::Doc(room.as_str().to_owned()),
        role: body.role.into(),
        exp,
        sub: None,
    };
    let minted = mint(secret, &claims);
    Ok(Json(Minted {
        link: format!("{path}?token={minted}"),
        doc: body.doc,
        role: body.role,
        token: Some(minted),
        expires_at: Some(exp),
        capped: asked > exp,
    }))
}
