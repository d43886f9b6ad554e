//! The error every HTTP handler returns: a status, a stable machine-readable code and a human
//! message, rendered as JSON. It sits below the router so that the policy, API, dashboard and
//! page modules can all return it without importing the router.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An HTTP error with a stable code and a human message, as JSON.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// A request the server cannot take as sent: 400 with `code`.
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A server-side failure (storage, a failed task): 500 `internal`, logged when answered.
    pub(crate) fn internal(message: String) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Logged where it is answered, not where it is made: an error built and then handled
        // another way (an HTML page, a close frame) is not a failed request. Only 500s: the
        // other 5xx are refusals (503 at a connection limit, or while a document is
        // unavailable), not failures.
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self.message, "request failed");
        }
        let body = json!({ "code": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

/// An error as the API returns it: the OpenAPI description of [`ApiError`]'s JSON body.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// Stable machine-readable code, for example `doc_not_found` or `token_expired`.
    code: String,
    /// Human explanation.
    message: String,
}
