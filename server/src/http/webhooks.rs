//! `GET /api/webhooks` (each endpoint's state, outbox depth and failed deliveries) and
//! `POST /api/webhooks/redeliver?since={seq}` (replay every event after `since` to every
//! endpoint). Admin only.

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::http::extract::{Admin, AllDocs};
use crate::http::AppState;
use crate::webhooks::EndpointStatus;

/// The webhook endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WebhookList {
    /// One per `--webhook-url`, in the order given.
    endpoints: Vec<EndpointStatus>,
}

/// Lists the webhook endpoints with their state (`ok`, `retrying` since when, `failing`),
/// pending events, last error and the deliveries given up on. Needs an admin token for every
/// document when auth is on.
#[utoipa::path(
    get, path = "/api/webhooks", tag = "feed",
    responses(
        (status = 200, body = WebhookList),
        (status = 401, description = "no valid token"),
        (status = 403, description = "not an admin token for every document"),
    )
)]
pub(crate) async fn list_webhooks(
    _: AllDocs<Admin>,
    State(state): State<AppState>,
) -> Json<WebhookList> {
    let endpoints = match &state.webhooks {
        Some(w) => {
            let w = w.clone();
            tokio::task::spawn_blocking(move || w.status())
                .await
                .unwrap_or_default()
        }
        None => Vec::new(),
    };
    Json(WebhookList { endpoints })
}

/// Which events to replay.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct RedeliverQuery {
    /// Every event after this seq is sent again (0: everything kept).
    since: u64,
}

/// What a redelivery did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Redelivery {
    /// Endpoints that will replay.
    endpoints: usize,
    /// They replay the events after this seq.
    since: u64,
}

/// Replays every event after `since` to every endpoint, in order, with each event's original
/// `webhook-id` (receivers drop what they already have). Needs an admin token for every
/// document when auth is on.
#[utoipa::path(
    post, path = "/api/webhooks/redeliver", tag = "feed", params(RedeliverQuery),
    responses(
        (status = 200, body = Redelivery),
        (status = 400, description = "`since` missing or not a number"),
        (status = 401, description = "no valid token"),
        (status = 403, description = "not an admin token for every document"),
    )
)]
pub(crate) async fn redeliver(
    _: AllDocs<Admin>,
    State(state): State<AppState>,
    query: Result<Query<RedeliverQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Redelivery>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_since", e.body_text()))?;
    let endpoints = state.webhooks.as_ref().map_or(0, |w| w.redeliver(q.since));
    Ok(Json(Redelivery {
        endpoints,
        since: q.since,
    }))
}
