//! Where an HTTP request becomes a WebSocket: the upgrade extractor [`Upgrade`] and the stream
//! type [`WebSocket`] the socket loop reads and writes.
//!
//! axum's own `WebSocketUpgrade` hands out a socket that only takes whole messages, and
//! tungstenite formats each whole message into the socket's write buffer, a `Vec` that keeps its
//! largest size for the life of the connection: 150 clients joining a 10 MB document held
//! 150 copies of it (1.6 GB) long after the join. Upgrading here yields tokio-tungstenite's
//! stream itself, whose raw frames let the socket loop send a large message in fragments
//! straight from the shared buffer (`socket::write_queued`), so a socket's write buffer stays
//! the size of one fragment.
//!
//! The checks are RFC 6455's (section 4.2.1) for HTTP/1.1, as axum's: `GET`, `Connection:
//! upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13` and a key. The server speaks
//! HTTP/1.1 only (`net::accept`), so there is no HTTP/2 extended CONNECT here.

use std::future::Future;

use axum::extract::FromRequestParts;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

/// An upgraded connection, as the socket loop reads and writes it.
pub(crate) type WebSocket = WebSocketStream<TokioIo<Upgraded>>;

/// Bytes tungstenite collects in a socket's write buffer before writing them out: larger
/// messages go out in fragments of half this (`socket::FRAGMENT`), so this bounds the buffer
/// every socket keeps.
pub(crate) const WRITE_BUFFER: usize = 64 * 1024;

/// Why a request could not be upgraded; answered as plain HTTP.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeRejection {
    /// A WebSocket handshake is a `GET`.
    #[error("a WebSocket upgrade must be a GET request")]
    NotGet,
    /// `Connection` does not name `upgrade`.
    #[error("the Connection header must include 'upgrade'")]
    NoConnectionUpgrade,
    /// `Upgrade` is not `websocket`.
    #[error("the Upgrade header must be 'websocket'")]
    NotWebSocket,
    /// Only version 13 exists.
    #[error("Sec-WebSocket-Version must be 13")]
    Version,
    /// The key the accept header answers.
    #[error("the Sec-WebSocket-Key header is missing")]
    NoKey,
    /// The connection cannot be taken over (not HTTP/1.1, or already upgraded).
    #[error("this connection cannot be upgraded to a WebSocket")]
    NotUpgradable,
}

impl IntoResponse for UpgradeRejection {
    fn into_response(self) -> Response {
        let status = match self {
            Self::NotGet => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

/// A request asking to become a WebSocket: answer it with [`Upgrade::on_upgrade`].
pub(crate) struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
    config: WebSocketConfig,
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = UpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET {
            return Err(UpgradeRejection::NotGet);
        }
        if !header_has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(UpgradeRejection::NoConnectionUpgrade);
        }
        if !header_is(&parts.headers, header::UPGRADE, "websocket") {
            return Err(UpgradeRejection::NotWebSocket);
        }
        if !header_is(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(UpgradeRejection::Version);
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(UpgradeRejection::NoKey)?
            .clone();
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(UpgradeRejection::NotUpgradable)?;
        let config = WebSocketConfig::default().write_buffer_size(WRITE_BUFFER);
        Ok(Self {
            key,
            on_upgrade,
            config,
        })
    }
}

impl Upgrade {
    /// Bytes reserved for reading when the socket opens (it grows for a larger frame).
    pub(crate) fn read_buffer_size(mut self, size: usize) -> Self {
        self.config = self.config.read_buffer_size(size);
        self
    }

    /// Largest message the peer may send (tungstenite answers a larger one with an error).
    pub(crate) fn max_message_size(mut self, size: usize) -> Self {
        self.config = self.config.max_message_size(Some(size));
        self
    }

    /// Largest single frame the peer may send.
    pub(crate) fn max_frame_size(mut self, size: usize) -> Self {
        self.config = self.config.max_frame_size(Some(size));
        self
    }

    /// Answers `101 Switching Protocols` and, once the connection is handed over, runs
    /// `callback` with the socket on a task of its own.
    pub(crate) fn on_upgrade<F, Fut>(self, callback: F) -> Response
    where
        F: FnOnce(WebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Self {
            key,
            on_upgrade,
            config,
        } = self;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    debug!(error = %e, "the connection was not handed over for the WebSocket");
                    return;
                }
            };
            let socket = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            callback(socket).await;
        });
        let accept = derive_accept_key(key.as_bytes());
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

/// Whether `name` equals `value`, ignoring ASCII case.
fn header_is(headers: &HeaderMap, name: HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

/// Whether the comma-separated `name` lists `token`, ignoring ASCII case.
fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Firefox sends `Connection: keep-alive, Upgrade`; the token must be found in a list.
    #[test]
    fn connection_header_is_a_token_list() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(header_has_token(&headers, header::CONNECTION, "upgrade"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrades"));
        assert!(!header_has_token(&headers, header::CONNECTION, "upgrade"));
    }

    /// The accept key is RFC 6455's worked example.
    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
