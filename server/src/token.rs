//! Access tokens: signed (HMAC-SHA256) claims naming a document (or every document), a role
//! and an expiry; minted by `weft token` and the API, verified by the HTTP layer's policy
//! (`http::auth`).
//!
//! A token is `v1.<claims>.<signature>`: `claims` is base64url (no padding) of a JSON object
//! `{"doc":"ID"}` or `{"all_docs":true}` plus `"role"` (`read`, `write` or `admin`), `"exp"`
//! (Unix seconds), `"iat"` (when it was minted, Unix seconds; tokens minted before it existed
//! count as minted at 0) and optionally `"sub"` (the user, for notices to one person); `signature` is
//! base64url of HMAC-SHA256(secret, `v1.<claims>`), checked in constant time before the claims
//! are parsed. Tokens are never logged: errors name what was wrong, not the token.
//!
//! With no secret configured the server is open: every request is granted [`Access::Admin`] on
//! every document (the binary warns loudly and refuses non-loopback addresses without
//! `--allow-open`).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use weft_protocol::Role;

type HmacSha256 = Hmac<Sha256>;

/// Version prefix of the token format, so a later format can be told apart.
const VERSION: &str = "v1";

/// Shortest secret accepted: 16 bytes keeps HMAC-SHA256 out of brute-force reach; 32+ random
/// bytes (`openssl rand -hex 32`) is what the README recommends.
pub const MIN_SECRET_LEN: usize = 16;

/// Longest token accepted, so a huge header or query value is refused before any work.
const MAX_TOKEN_LEN: usize = 4096;

/// What a token allows, ordered: each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Read the document and its awareness; writes are dropped.
    Read,
    /// Read and edit.
    Write,
    /// Everything, including deleting documents and sending notices through the API.
    Admin,
}

impl Access {
    /// The WebSocket role this access gives: admin edits like a writer.
    pub fn ws_role(self) -> Role {
        match self {
            Access::Read => Role::Read,
            Access::Write | Access::Admin => Role::Write,
        }
    }

    /// The name used in tokens and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }
}

impl FromStr for Access {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Access::Read),
            "write" => Ok(Access::Write),
            "admin" => Ok(Access::Admin),
            other => Err(format!(
                "unknown role {other:?}: expected read, write or admin"
            )),
        }
    }
}

/// Which documents a token is good for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One document, by id.
    Doc(String),
    /// Every document (needed to list or create documents).
    AllDocs,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The documents it covers.
    pub scope: Scope,
    /// What it allows on them.
    pub role: Access,
    /// Expiry, Unix seconds; the token is refused from this second on.
    pub exp: u64,
    /// The user it was issued to, if any: notices can target one user's connections.
    pub sub: Option<String>,
}

/// The JSON inside a token; `doc` and `all_docs` are exclusive.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    doc: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    all_docs: bool,
    role: Access,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default)]
    iat: u64,
}

/// A verified token's claims and when it was minted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// What it says.
    pub claims: Claims,
    /// When it was minted, Unix seconds (0 for tokens minted before `iat` existed, so that any
    /// revocation covers them).
    pub iat: u64,
}

/// The lifetime of the token a connection was admitted with: it is closed when `exp` passes,
/// or when its document's tokens issued before some time after `iat` are revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// When it was minted, Unix seconds.
    pub iat: u64,
    /// When it expires, Unix seconds.
    pub exp: u64,
}

/// The server's token secret. Its `Debug` never shows the bytes, so a logged config is safe.
#[derive(Clone)]
pub struct AuthSecret(Arc<[u8]>);

impl AuthSecret {
    /// A secret from raw bytes.
    ///
    /// # Errors
    /// When it is shorter than [`MIN_SECRET_LEN`] bytes.
    pub fn new(bytes: &[u8]) -> Result<Self, AuthError> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(AuthError::WeakSecret);
        }
        Ok(Self(Arc::from(bytes)))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; this cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }
}

impl fmt::Debug for AuthSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthSecret([redacted])")
    }
}

impl FromStr for AuthSecret {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s.as_bytes())
    }
}

/// Why a request was refused. Each variant has its own HTTP status and stable `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in the `Authorization: Bearer` header or the `token` query parameter.
    #[error("a token is required: send `Authorization: Bearer <token>` or `?token=<token>`")]
    Missing,
    /// Not a token of this server's format.
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    /// The signature does not match: forged, altered, or signed with another secret.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// The token's lifetime is over.
    #[error("the token expired at {exp} (Unix seconds)")]
    Expired {
        /// When it expired.
        exp: u64,
    },
    /// The document's tokens issued before `before` were revoked, this one among them.
    #[error("tokens for this document issued before {before} (Unix seconds) were revoked")]
    Revoked {
        /// The revocation's time.
        before: u64,
    },
    /// The token is for another document.
    #[error("the token is not valid for this document")]
    WrongDocument,
    /// The token's role is below what the request needs.
    #[error("this needs the {need} role; the token grants {have}")]
    InsufficientRole {
        /// What the token grants.
        have: &'static str,
        /// What the request needs.
        need: &'static str,
    },
    /// A configured secret is too short to be safe.
    #[error("the auth secret must be at least {MIN_SECRET_LEN} bytes")]
    WeakSecret,
}

impl AuthError {
    /// The HTTP status: 401 when the caller must present a (valid) token, 403 when a valid
    /// token does not cover the request.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Missing
            | AuthError::Malformed(_)
            | AuthError::BadSignature
            | AuthError::Expired { .. }
            | AuthError::Revoked { .. } => StatusCode::UNAUTHORIZED,
            AuthError::WrongDocument | AuthError::InsufficientRole { .. } => StatusCode::FORBIDDEN,
            AuthError::WeakSecret => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Malformed(_) => "token_malformed",
            AuthError::BadSignature => "token_bad_signature",
            AuthError::Expired { .. } => "token_expired",
            AuthError::Revoked { .. } => "token_revoked",
            AuthError::WrongDocument => "token_wrong_document",
            AuthError::InsufficientRole { .. } => "token_insufficient_role",
            AuthError::WeakSecret => "weak_secret",
        }
    }
}

/// Signs `claims` into a token issued now (its `iat`).
pub fn mint(secret: &AuthSecret, claims: &Claims) -> String {
    mint_at(secret, claims, unix_now())
}

/// Signs `claims` into a token issued at `iat` (Unix seconds).
pub fn mint_at(secret: &AuthSecret, claims: &Claims, iat: u64) -> String {
    let (doc, all_docs) = match &claims.scope {
        Scope::Doc(id) => (Some(id.clone()), false),
        Scope::AllDocs => (None, true),
    };
    let wire = WireClaims {
        doc,
        all_docs,
        role: claims.role,
        exp: claims.exp,
        sub: claims.sub.clone(),
        iat,
    };
    // A struct of strings, integers and a bool always serializes.
    let json = serde_json::to_vec(&wire).unwrap_or_default();
    let signed = format!("{VERSION}.{}", URL_SAFE_NO_PAD.encode(json));
    let mut mac = secret.mac();
    mac.update(signed.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signed}.{sig}")
}

/// Checks a token's signature and expiry (at `now`, Unix seconds) and returns its claims.
///
/// # Errors
/// [`AuthError::Malformed`], [`AuthError::BadSignature`] or [`AuthError::Expired`].
pub fn verify(secret: &AuthSecret, token: &str, now: u64) -> Result<Claims, AuthError> {
    verify_issued(secret, token, now).map(|v| v.claims)
}

/// [`verify`], also saying when the token was minted.
///
/// # Errors
/// [`AuthError::Malformed`], [`AuthError::BadSignature`] or [`AuthError::Expired`].
pub fn verify_issued(secret: &AuthSecret, token: &str, now: u64) -> Result<Verified, AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed("too long"));
    }
    let (signed, sig) = token
        .rsplit_once('.')
        .ok_or(AuthError::Malformed("expected version.claims.signature"))?;
    let (version, payload) = signed
        .split_once('.')
        .ok_or(AuthError::Malformed("expected version.claims.signature"))?;
    if version != VERSION {
        return Err(AuthError::Malformed("unknown version"));
    }
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| AuthError::Malformed("signature is not base64url"))?;
    let mut mac = secret.mac();
    mac.update(signed.as_bytes());
    // `verify_slice` compares in constant time.
    mac.verify_slice(&sig)
        .map_err(|_| AuthError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| AuthError::Malformed("claims are not base64url"))?;
    let wire: WireClaims = serde_json::from_slice(&json)
        .map_err(|_| AuthError::Malformed("claims are not the expected JSON"))?;
    let scope = match (wire.doc, wire.all_docs) {
        (Some(doc), false) => Scope::Doc(doc),
        (None, true) => Scope::AllDocs,
        _ => {
            return Err(AuthError::Malformed(
                "claims need exactly one of doc, all_docs",
            ))
        }
    };
    if now >= wire.exp {
        return Err(AuthError::Expired { exp: wire.exp });
    }
    let claims = Claims {
        scope,
        role: wire.role,
        exp: wire.exp,
        sub: wire.sub,
    };
    Ok(Verified {
        claims,
        iat: wire.iat,
    })
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Revoked tokens, by document: those issued before a document's time are refused. Kept in
/// memory (loaded from the store at start, written through by the revoke request) so that
/// authorizing never touches the disk.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    /// Each document's revocation time, Unix seconds.
    by_doc: RwLock<HashMap<String, u64>>,
    /// A time before which every document's tokens are refused: set when the stored
    /// revocations could not be read, so a failed read refuses old tokens instead of admitting
    /// revoked ones.
    floor: u64,
}

impl Revocations {
    /// The revocations `stored` lists, as `(document, time)`.
    pub(crate) fn new(stored: impl IntoIterator<Item = (String, u64)>) -> Self {
        let mut by_doc = HashMap::new();
        for (doc, before) in stored {
            let at = by_doc.entry(doc).or_insert(0);
            *at = before.max(*at);
        }
        Self {
            by_doc: RwLock::new(by_doc),
            floor: 0,
        }
    }

    /// Revocations that refuse every token issued before `floor`, on every document.
    pub(crate) fn everything_before(floor: u64) -> Self {
        Self {
            floor,
            ..Self::default()
        }
    }

    /// The time before which tokens for `doc` are refused (0: none are).
    pub(crate) fn before(&self, doc: &str) -> u64 {
        let map = self.by_doc.read().unwrap_or_else(|p| p.into_inner());
        map.get(doc).copied().unwrap_or(0).max(self.floor)
    }

    /// Refuses tokens for `doc` issued before `before`, unless a later revocation already does.
    pub(crate) fn record(&self, doc: &str, before: u64) {
        let mut map = self.by_doc.write().unwrap_or_else(|p| p.into_inner());
        let at = map.entry(doc.to_owned()).or_insert(0);
        *at = before.max(*at);
    }

    /// Whether a token for `doc` issued at `iat` is still good: a token issued in the second
    /// of a revocation is (the granularity is one second).
    ///
    /// # Errors
    /// [`AuthError::Revoked`].
    pub(crate) fn check(&self, doc: &str, iat: u64) -> Result<(), AuthError> {
        let before = self.before(doc);
        if iat < before {
            return Err(AuthError::Revoked { before });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> AuthSecret {
        AuthSecret::new(b"0123456789abcdef0123456789abcdef").expect("secret")
    }

    fn claims(scope: Scope, role: Access, exp: u64) -> Claims {
        Claims {
            scope,
            role,
            exp,
            sub: Some("alice".into()),
        }
    }

    /// A minted token verifies to the same claims until it expires.
    #[test]
    fn round_trip_and_expiry() {
        let c = claims(Scope::Doc("notes".into()), Access::Write, 1000);
        let t = mint(&secret(), &c);
        assert!(t.starts_with("v1."));
        assert_eq!(verify(&secret(), &t, 999), Ok(c));
        assert_eq!(
            verify(&secret(), &t, 1000),
            Err(AuthError::Expired { exp: 1000 })
        );
        let all = claims(Scope::AllDocs, Access::Admin, 1000);
        assert_eq!(verify(&secret(), &mint(&secret(), &all), 1), Ok(all));
    }

    /// Another secret, an altered payload or a truncated signature is a bad signature; garbage
    /// is malformed.
    #[test]
    fn forgeries_are_refused() {
        let c = claims(Scope::Doc("notes".into()), Access::Read, u64::MAX);
        let t = mint(&secret(), &c);
        let other = AuthSecret::new(b"another secret of enough length").expect("secret");
        assert_eq!(verify(&other, &t, 0), Err(AuthError::BadSignature));
        // Upgrade the role in the payload and keep the old signature.
        let (_, payload, sig) = {
            let mut parts = t.split('.');
            (
                parts.next(),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            )
        };
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("utf8");
        let forged = URL_SAFE_NO_PAD.encode(json.replace("\"read\"", "\"admin\""));
        assert_eq!(
            verify(&secret(), &format!("v1.{forged}.{sig}"), 0),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(&secret(), &t[..t.len() - 3], 0),
            Err(AuthError::BadSignature)
        );
        assert!(matches!(
            verify(&secret(), "nonsense", 0),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            verify(&secret(), "v2.a.b", 0),
            Err(AuthError::Malformed(_))
        ));
    }

    /// The secret never shows in Debug output, and short secrets are refused.
    #[test]
    fn secret_is_redacted_and_long_enough() {
        assert_eq!(format!("{:?}", secret()), "AuthSecret([redacted])");
        assert_eq!(
            AuthSecret::from_str("short").map(|_| ()),
            Err(AuthError::WeakSecret)
        );
    }

    /// A minted token carries its `iat`; one without it (minted before `iat` existed) verifies
    /// as issued at 0.
    #[test]
    fn issued_at() {
        let c = claims(Scope::Doc("notes".into()), Access::Write, 1000);
        let v = verify_issued(&secret(), &mint_at(&secret(), &c, 77), 1).expect("valid");
        assert_eq!((v.claims, v.iat), (c.clone(), 77));
        let old = r#"{"doc":"notes","role":"write","exp":1000,"sub":"alice"}"#;
        let signed = format!("v1.{}", URL_SAFE_NO_PAD.encode(old));
        let mut mac = secret().mac();
        mac.update(signed.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let v = verify_issued(&secret(), &format!("{signed}.{sig}"), 1).expect("valid");
        assert_eq!((v.claims, v.iat), (c, 0));
        assert_eq!(AuthError::Revoked { before: 5 }.code(), "token_revoked");
    }

    /// A revocation refuses tokens issued before it, not those of its second or later; a
    /// later one only moves forward; the floor covers every document.
    #[test]
    fn revocations() {
        let r = Revocations::new([("a".to_owned(), 10), ("a".to_owned(), 5)]);
        assert_eq!(r.check("a", 9), Err(AuthError::Revoked { before: 10 }));
        assert_eq!(r.check("a", 10), Ok(()));
        assert_eq!(r.check("b", 0), Ok(()));
        r.record("a", 3);
        assert_eq!(r.before("a"), 10);
        r.record("b", 4);
        assert!(r.check("b", 3).is_err());
        let all = Revocations::everything_before(20);
        assert!(all.check("x", 19).is_err() && all.check("x", 20).is_ok());
    }

    /// Roles are ordered read < write < admin; admin writes on a socket.
    #[test]
    fn roles_are_ordered() {
        assert!(Access::Read < Access::Write && Access::Write < Access::Admin);
        assert_eq!(Access::Admin.ws_role(), Role::Write);
        assert_eq!(Access::Read.ws_role(), Role::Read);
        assert_eq!("write".parse::<Access>(), Ok(Access::Write));
    }
}
