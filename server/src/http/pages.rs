//! The browser editor's pages and assets, embedded in the binary from `frontend/dist` (see
//! `build.rs`): `/` (document list), `/d/{id}` (the editor), `/assets/*`, `/sw.js` (the editor's
//! service worker, for opening documents offline) and readable HTML error pages, including the
//! 404 for any path no other route takes.
//!
//! Asset names carry a hash of their content, so they are cached for a year (`immutable`); pages
//! are revalidated on every load (`no-cache` with an ETag), so a new binary's pages take effect
//! at once.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use weft_protocol::RoomName;

use crate::config::Config;
use crate::error::ApiError;
use crate::http::AppState;

/// One embedded file of `frontend/dist`.
pub(crate) struct Asset {
    /// Path relative to `frontend/dist`, with `/`.
    path: &'static str,
    /// Strong ETag (quoted) from the content.
    etag: &'static str,
    bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/frontend_assets.rs"));

/// Scripts only from this origin (no inline script, no eval). Styles may be inline: CodeMirror
/// and y-codemirror.next set `style` attributes for carets and selections. WebSockets go to
/// this host; `ws:`/`wss:` are listed because older Safari does not match them with `'self'`.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self' ws: wss:; object-src 'none'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'self'";

/// Hashed file names never change content, so browsers may keep them for a year.
const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Pages name the current hashed assets: revalidate them every time (cheap with the ETag).
const CACHE_REVALIDATE: &str = "no-cache";

/// Routes for pages and assets, gzip-compressed for clients that accept it.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(list_page))
        .route("/d/{id}", get(editor_page))
        .route("/assets/{file}", get(asset))
        .route("/favicon.ico", get(favicon))
        .route("/sw.js", get(service_worker))
        .layer(tower_http::compression::CompressionLayer::new())
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Serves an embedded file, answering a matching `If-None-Match` with 304.
fn serve(asset: &'static Asset, headers: &HeaderMap, cache: &'static str) -> Response {
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.bytes.into_response()
    };
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(content_type(asset.path)),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(ETAG, HeaderValue::from_static(asset.etag));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if asset.path.ends_with(".html") {
        page_headers(h);
    }
    res
}

fn page_headers(h: &mut HeaderMap) {
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    // Document ids are in page URLs: do not hand them to other sites.
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
}

/// A page that must be embedded; its absence is a build error caught by `build.rs`.
pub(crate) fn page(name: &str, headers: &HeaderMap) -> Response {
    match find(name) {
        Some(a) => serve(a, headers, CACHE_REVALIDATE),
        None => ApiError::internal(format!("{name} is not embedded")).into_response(),
    }
}

async fn list_page(headers: HeaderMap) -> Response {
    page("index.html", &headers)
}

async fn editor_page(
    State(config): State<Arc<Config>>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path(id)) = id else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This document cannot be opened",
            "The document name in the address is not valid text (UTF-8).",
        );
    };
    let limit = config.limits().max_room_name;
    match RoomName::parse(&id, &config.limits()) {
        Ok(_) => page("editor.html", &headers),
        Err(e) => error_page(
            StatusCode::BAD_REQUEST,
            "This document cannot be opened",
            &format!(
                "“{}” is not a valid document name: {}{}. Go back to the list of documents and \
                 pick another name.",
                shorten(&id),
                reason(&e),
                if id.len() > limit {
                    format!(" ({} bytes; names have at most {limit})", id.len())
                } else {
                    String::new()
                }
            ),
        ),
    }
}

/// The rule a room name broke, without the error type's prefix.
fn reason(e: &weft_protocol::ProtocolError) -> String {
    match e {
        weft_protocol::ProtocolError::InvalidRoomName(why) => (*why).to_owned(),
        other => other.to_string(),
    }
}

/// A name as shown in an error: control characters made visible, at most 80 characters.
fn shorten(name: &str) -> String {
    let visible: String = name
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .take(81)
        .collect();
    if visible.chars().count() > 80 {
        format!("{}…", visible.chars().take(79).collect::<String>())
    } else {
        visible
    }
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match find(&format!("assets/{file}")) {
        Some(a) => serve(a, &headers, CACHE_IMMUTABLE),
        None => not_found_page(),
    }
}

async fn favicon(headers: HeaderMap) -> Response {
    match ASSETS
        .iter()
        .find(|a| a.path.starts_with("assets/favicon-") && a.path.ends_with(".svg"))
    {
        Some(a) => serve(a, &headers, CACHE_REVALIDATE),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The editor's service worker (`frontend/src/sw.js`). Served from the root so that its scope
/// covers `/d/`; revalidated on every check (`no-cache`, ETag) so a new binary's worker, whose
/// cache is named after the new bundle, replaces the old one on the next visit.
async fn service_worker(headers: HeaderMap) -> Response {
    match find("sw.js") {
        Some(a) => serve(a, &headers, CACHE_REVALIDATE),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Everything no route takes: a JSON error under `/api`, a readable page elsewhere.
pub(crate) async fn not_found(uri: Uri) -> Response {
    if uri.path().starts_with("/api/") || uri.path() == "/api" {
        return ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("no API endpoint at {}", uri.path()),
        }
        .into_response();
    }
    not_found_page()
}

fn not_found_page() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is nothing at this address. Documents live at /d/<name>; the list of all documents is on the home page.",
    )
}

/// The embedded error page with `status`, `title` and `message` filled in (HTML-escaped).
pub(crate) fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let template = find("error.html").map_or("{{title}}: {{message}}", |a| {
        std::str::from_utf8(a.bytes).unwrap_or("{{title}}: {{message}}")
    });
    let html = template
        .replace("{{status}}", status.as_str())
        .replace("{{title}}", &escape(title))
        .replace("{{message}}", &escape(message));
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    page_headers(h);
    res
}

/// Escapes text for HTML element content and quoted attributes.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pages the router serves are embedded, and each references only embedded assets.
    #[test]
    fn pages_are_embedded_with_their_assets() {
        for page in ["index.html", "editor.html", "error.html", "dashboard.html"] {
            let html = std::str::from_utf8(find(page).expect(page).bytes).expect("utf-8");
            for part in html.split("\"/assets/").skip(1) {
                let name = part.split('"').next().unwrap_or_default();
                assert!(
                    find(&format!("assets/{name}")).is_some(),
                    "{page} references assets/{name}, which is not embedded"
                );
            }
        }
    }

    /// The service worker caches only embedded files: the editor page's hashed copy and the
    /// assets that page loads, so its offline page works.
    #[test]
    fn service_worker_caches_the_embedded_editor() {
        let sw = std::str::from_utf8(find("sw.js").expect("sw.js").bytes).expect("utf-8");
        let cached: Vec<&str> = sw
            .split("/assets/")
            .skip(1)
            .map(|part| {
                part.split(|c: char| !(c.is_ascii_alphanumeric() || "-._".contains(c)))
                    .next()
                    .unwrap_or_default()
            })
            .filter(|name| !name.is_empty())
            .collect();
        assert!(
            cached
                .iter()
                .any(|n| n.starts_with("editor-") && n.ends_with(".html")),
            "sw.js names no editor page: {cached:?}"
        );
        let editor =
            std::str::from_utf8(find("editor.html").expect("editor").bytes).expect("utf-8");
        for name in &cached {
            assert!(
                find(&format!("assets/{name}")).is_some(),
                "sw.js caches assets/{name}, which is not embedded"
            );
            if !name.ends_with(".html") {
                assert!(
                    editor.contains(&format!("/assets/{name}")),
                    "sw.js caches assets/{name}, which the editor does not load"
                );
            }
        }
    }

    /// Text from the URL cannot become markup in an error page.
    #[test]
    fn error_text_is_escaped() {
        assert_eq!(
            escape("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(shorten("a\u{7}b"), "a\u{fffd}b");
        assert_eq!(shorten(&"x".repeat(300)).chars().count(), 80);
    }
}
