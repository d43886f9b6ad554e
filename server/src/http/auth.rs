//! Access policy for HTTP and WebSocket requests: which token a request carries, whether it
//! covers the document and role asked for, and the origin policy (for WebSocket upgrades here,
//! for writes in `policy`). The tokens themselves (claims, minting, verification) live in
//! [`crate::token`].
//!
//! With no secret configured the server is open: every request is granted [`Access::Admin`] on
//! every document (the binary warns loudly and refuses non-loopback addresses without
//! `--allow-open`).

use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use crate::config::Config;
use crate::error::ApiError;
use crate::token::{
    unix_now, verify, verify_issued, Access, AuthError, Lifetime, Revocations, Scope, Verified,
};

/// What a request was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    /// Its access on the requested document(s).
    pub(crate) access: Access,
    /// The token's user, if any.
    pub(crate) subject: Option<String>,
    /// When the token was minted and when it expires (`None` in open mode: no token).
    pub(crate) lifetime: Option<Lifetime>,
}

/// Decides a request about every document or none in particular (a listing, a backup): `doc`
/// is the document it touches, if any, `need` the access it requires. Revocations are not
/// consulted: a request about one document goes through [`authorize_doc`].
///
/// # Errors
/// [`AuthError`] saying exactly why the request is refused.
pub(crate) fn authorize(
    config: &Config,
    token: Option<&str>,
    doc: Option<&str>,
    need: Access,
) -> Result<Grant, AuthError> {
    decide(config, None, token, doc, need)
}

/// [`authorize`] for a request that may touch document `doc`, also refusing a token issued
/// before the document's revocation (an all-docs token too: it is checked against the document
/// it touches).
///
/// # Errors
/// [`AuthError`] saying exactly why the request is refused.
pub(crate) fn authorize_doc(
    config: &Config,
    revocations: &Revocations,
    token: Option<&str>,
    doc: Option<&str>,
    need: Access,
) -> Result<Grant, AuthError> {
    decide(config, Some(revocations), token, doc, need)
}

/// The token's signature and expiry, the document, the revocation (when `revocations` is
/// given), then the role.
fn decide(
    config: &Config,
    revocations: Option<&Revocations>,
    token: Option<&str>,
    doc: Option<&str>,
    need: Access,
) -> Result<Grant, AuthError> {
    let Some(secret) = &config.auth_secret else {
        return Ok(Grant {
            access: Access::Admin,
            subject: None,
            lifetime: None,
        });
    };
    let token = token.ok_or(AuthError::Missing)?;
    let Verified { claims, iat } = verify_issued(secret, token, unix_now())?;
    match (&claims.scope, doc) {
        (Scope::AllDocs, _) => {}
        (Scope::Doc(id), Some(doc)) if id == doc => {}
        _ => return Err(AuthError::WrongDocument),
    }
    if let (Some(revocations), Some(doc)) = (revocations, doc) {
        revocations.check(doc, iat)?;
    }
    if claims.role < need {
        return Err(AuthError::InsufficientRole {
            have: claims.role.as_str(),
            need: need.as_str(),
        });
    }
    Ok(Grant {
        access: claims.role,
        subject: claims.sub,
        lifetime: Some(Lifetime {
            iat,
            exp: claims.exp,
        }),
    })
}

/// Checks a token's signature, expiry and role, whatever documents it covers: enough to let a
/// request go on to name its document (a create names it in its body, which is read only
/// after this). The document is checked with [`authorize`] once it is known.
///
/// # Errors
/// [`AuthError`] saying exactly why the request is refused.
pub(crate) fn authorize_some_doc(
    config: &Config,
    token: Option<&str>,
    need: Access,
) -> Result<(), AuthError> {
    let Some(secret) = &config.auth_secret else {
        return Ok(());
    };
    let claims = verify(secret, token.ok_or(AuthError::Missing)?, unix_now())?;
    if claims.role < need {
        return Err(AuthError::InsufficientRole {
            have: claims.role.as_str(),
            need: need.as_str(),
        });
    }
    Ok(())
}

/// The token of a request: the `Authorization: Bearer` header, else the `token` query
/// parameter (browsers cannot set headers on a WebSocket).
pub(crate) fn token_of<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .or(query)
        .filter(|t| !t.is_empty())
}

/// Whether a request's `Origin` is allowed (a WebSocket upgrade, or a write): no `Origin` (not a
/// browser), the same origin as the `Host` it was sent to, or one listed in `--allowed-origin`
/// (`*` allows all). Browsers send `Origin` on every WebSocket handshake and cross-site POST
/// and do not let pages forge it, so this stops other sites from using a visitor's access
/// (cross-site WebSocket hijacking, cross-site writes).
pub(crate) fn origin_allowed(config: &Config, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    if config
        .allowed_origins
        .iter()
        .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    // Same origin: the Origin's host[:port] equals the Host header (scheme aside: a TLS proxy
    // in front makes it https while we see plain HTTP).
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Query parameters of `/ws/{room}`: y-websocket's `params` option puts them on the URL.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WsParams {
    /// The access token (browsers cannot set an `Authorization` header on a WebSocket).
    token: Option<String>,
}

/// The origin policy of a WebSocket upgrade (see [`origin_allowed`]).
///
/// # Errors
/// 403 `origin_not_allowed`.
pub(crate) fn ws_origin(config: &Config, headers: &HeaderMap) -> Result<(), ApiError> {
    if origin_allowed(config, headers) {
        return Ok(());
    }
    let origin = headers
        .get(ORIGIN)
        .and_then(|o| o.to_str().ok())
        .unwrap_or("?");
    Err(ApiError {
        status: StatusCode::FORBIDDEN,
        code: "origin_not_allowed",
        message: format!("pages from {origin} may not open WebSockets here; see --allowed-origin"),
    })
}

/// The token of a WebSocket upgrade to `room`: read access at least (the role decides whether
/// its writes count).
///
/// # Errors
/// The token's [`AuthError`], as an [`ApiError`].
pub(crate) fn ws_token(
    config: &Config,
    revocations: &Revocations,
    headers: &HeaderMap,
    params: &WsParams,
    room: &weft_protocol::RoomName,
) -> Result<Grant, ApiError> {
    let token = token_of(headers, params.token.as_deref());
    let doc = Some(room.as_str());
    Ok(authorize_doc(
        config,
        revocations,
        token,
        doc,
        Access::Read,
    )?)
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError {
            status: e.status(),
            code: e.code(),
            message: e.to_string(),
        }
    }
}
