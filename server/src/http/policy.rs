//! Checks every request passes before any route sees it, so no web page can use a visitor's
//! browser against the server:
//!
//! - **Host, in open mode.** With no secret, anything that reaches the server may do anything,
//!   and a browser will reach `127.0.0.1` for a page of any site that points its own DNS name
//!   at it (DNS rebinding): the page is then "same origin" with the server. Such requests carry
//!   the page's name in `Host`, so in open mode only the names the server is known by are
//!   served: `localhost`, `127.0.0.1`, `[::1]`, the `--bind` address, and `--allowed-host`
//!   (any port). Others get 421 `host_not_allowed`. Health checks are exempt: they carry
//!   nothing, and load balancers probe by IP.
//! - **Origin of writes, in every mode.** A page of another site can send a POST without a
//!   CORS preflight (`text/plain`), and browsers always say where such a request comes from.
//!   A request that changes anything (any method but GET, HEAD, OPTIONS, TRACE) with an
//!   `Origin` that is neither the server's own nor listed in `--allowed-origin` gets 403
//!   `origin_not_allowed`. Requests without `Origin` (not from a browser page) pass; reads
//!   stay open, since the browser does not let another site read the answer.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::header::{HOST, ORIGIN, UPGRADE};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Level;

use crate::config::Config;
use crate::error::ApiError;
use crate::http::auth;
use crate::http::extract::ClientAddr;
use crate::http::AppState;

/// Names an open server always answers to, whatever `--allowed-host` says.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Paths every host may ask for: they reveal nothing and load balancers probe them by IP.
const HEALTH_CHECKS: [&str; 2] = ["/healthz", "/readyz"];

/// The middleware: refuses a request that breaks the host or write-origin policy, passes the
/// rest on.
pub(crate) async fn enforce(
    State(state): State<AppState>,
    client: ClientAddr,
    req: Request,
    next: Next,
) -> Response {
    let config = &state.ctx.config;
    let checked = check_host(config, req.uri(), req.headers())
        .and_then(|()| check_write_origin(config, req.method(), req.headers()));
    let Err(e) = checked else {
        return next.run(req).await;
    };
    if req.headers().contains_key(UPGRADE) {
        state.ctx.metrics.refused(e.code);
    }
    let path = req.uri().path();
    state
        .refusals
        .refused(Level::WARN, "request", client, path, &e);
    e.into_response()
}

/// In open mode, 421 `host_not_allowed` unless the request names a host the server answers to.
fn check_host(config: &Config, uri: &Uri, headers: &HeaderMap) -> Result<(), ApiError> {
    if !config.is_open() || HEALTH_CHECKS.contains(&uri.path()) {
        return Ok(());
    }
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    if host_allowed(config, host) {
        return Ok(());
    }
    let name = host_name(host);
    Err(ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "host_not_allowed",
        format!(
            "this server has no auth secret and answers only to localhost, 127.0.0.1, [::1], \
             its --bind address and the names given with --allowed-host (WEFT_ALLOWED_HOSTS); \
             to serve it as \"{name}\", start it with --allowed-host {name}"
        ),
    ))
}

/// Whether `host` (a `Host` header: a name or address, with or without a port) is one this
/// open server answers to.
fn host_allowed(config: &Config, host: &str) -> bool {
    let name = host_name(host);
    if name.is_empty() {
        return false;
    }
    if LOOPBACK_NAMES.contains(&name.as_str()) {
        return true;
    }
    let bind = config.bind.ip();
    if !bind.is_unspecified() && name.parse::<IpAddr>().is_ok_and(|ip| ip == bind) {
        return true;
    }
    config
        .allowed_hosts
        .iter()
        .any(|allowed| allowed.trim() == "*" || host_name(allowed) == name)
}

/// The name in a `Host` value, without its port or IPv6 brackets, lowercase, without a
/// trailing dot: `[::1]:8080` is `::1`, `Weft.Example.com.:443` is `weft.example.com`.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// 403 `origin_not_allowed` for a request that changes something and comes from a page of an
/// origin that is neither the server's nor listed in `--allowed-origin`.
fn check_write_origin(
    config: &Config,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let reads = [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE];
    if reads.contains(method) || auth::origin_allowed(config, headers) {
        return Ok(());
    }
    let origin = headers
        .get(ORIGIN)
        .and_then(|o| o.to_str().ok())
        .unwrap_or("?");
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        format!("pages from {origin} may not change anything here; see --allowed-origin"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use clap::Parser as _;

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["weft"];
        all.extend_from_slice(args);
        crate::config::Cli::parse_from(all).into_config()
    }

    /// Loopback names on any port, the bind address and listed names pass; others do not.
    #[test]
    fn open_mode_answers_to_known_names_only() {
        let c = config(&["--allowed-host", "Weft.example.com"]);
        for ok in [
            "localhost:8080",
            "127.0.0.1",
            "[::1]:9",
            "LOCALHOST.",
            "weft.example.com:443",
        ] {
            assert!(host_allowed(&c, ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.2:8080",
            "",
            "[::2]",
        ] {
            assert!(!host_allowed(&c, bad), "{bad}");
        }
        let bound = config(&["--bind", "192.0.2.5:80", "--allow-open"]);
        assert!(host_allowed(&bound, "192.0.2.5:80"));
        let any = config(&["--bind", "0.0.0.0:80", "--allow-open"]);
        assert!(!host_allowed(&any, "0.0.0.0:80"));
        assert!(host_allowed(&config(&["--allowed-host", "*"]), "anything"));
    }

    /// With a secret the host is not checked: tokens, not names, protect the server.
    #[test]
    fn hosts_are_not_checked_with_a_secret() {
        let c = config(&["--auth-secret", "0123456789abcdef0123"]);
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("evil.example"));
        assert!(check_host(&c, &Uri::from_static("/api/docs"), &h).is_ok());
        let open = config(&[]);
        let refused = check_host(&open, &Uri::from_static("/api/docs"), &h);
        assert_eq!(refused.map_err(|e| e.code), Err("host_not_allowed"));
        assert!(check_host(&open, &Uri::from_static("/healthz"), &h).is_ok());
    }

    /// Writes from another site's page are refused, reads and non-browser writes are not.
    #[test]
    fn writes_need_an_allowed_origin() {
        let c = config(&["--allowed-origin", "https://app.example.com"]);
        let with = |origin: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
            h.insert(ORIGIN, HeaderValue::from_static(origin));
            h
        };
        let evil = with("https://evil.example");
        assert!(check_write_origin(&c, &Method::POST, &evil).is_err());
        assert!(check_write_origin(&c, &Method::DELETE, &evil).is_err());
        assert!(check_write_origin(&c, &Method::GET, &evil).is_ok());
        assert!(check_write_origin(&c, &Method::POST, &with("http://127.0.0.1:8080")).is_ok());
        assert!(check_write_origin(&c, &Method::PUT, &with("https://app.example.com")).is_ok());
        assert!(check_write_origin(&c, &Method::POST, &with("null")).is_err());
        assert!(check_write_origin(&c, &Method::POST, &HeaderMap::new()).is_ok());
    }
}
