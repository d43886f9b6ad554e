//! The error every HTTP handler returns: a status, a stable machine-readable code and a human
//! message, rendered as JSON. It sits below the router so that the policy, API, dashboard and
//! page modules can all return it without importing the router.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An HTTP error with a stable code and a human message, as JSON.
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    /// A server-side failure (storage, a failed task): 500 `internal`, logged.
    pub(crate) fn internal(message: String) -> Self {
        tracing::error!(error = %message, "request failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "code": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}
