//! The WebSocket upgrade of `/hocuspocus`, the endpoint `@hocuspocus/provider` connects to:
//! the address's connect rate (429), the origin (403), then a connection slot for the address
//! (429) and the server (503), refused as plain HTTP as for `/ws/{room}` (see `upgrade`).
//! There is no room or token in the URL: the provider names each document and sends its token
//! inside the socket, checked by `net::hocuspocus` with the policy of [`auth`] handed down as
//! an [`Authorize`].

use std::sync::Arc;

use crate::net::upgrade::Upgrade as WebSocketUpgrade;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use weft_protocol::RoomName;

use crate::http::auth;
use crate::http::extract::ClientAddr;
use crate::http::upgrade::{connecting_too_fast, refuse, upgrade_settings, Refusal};
use crate::http::AppState;
use crate::net::hocuspocus::{self, Authorize, Client, Granted};
use crate::net::metered::ReadMeter;
use crate::net::socket::AddressBudget;
use crate::room::registry::RoomContext;
use crate::token::Access;

/// What the refusal log names as the upgrade's target.
const TARGET: &str = "/hocuspocus";

/// `GET /hocuspocus`: admits the socket, or refuses it as the module describes.
pub(super) async fn hocuspocus_upgrade(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    meter: Option<Extension<Arc<ReadMeter>>>,
    ws: WebSocketUpgrade,
) -> Response {
    let config = &state.ctx.config;
    let admitted = state
        .connects
        .check(client.ip())
        .map_err(|wait| Refusal::Http {
            error: connecting_too_fast(config),
            retry_after: Some(wait),
        })
        .and_then(|()| Ok(auth::ws_origin(config, &headers)?))
        .and_then(|()| Ok(state.take_slots(client)?));
    let slots = match admitted {
        Ok(slots) => slots,
        Err(refusal) => return refuse(ws, &state, client, TARGET, refusal),
    };
    let meter = meter.map(|Extension(m)| {
        m.activate(client.ip());
        m
    });
    let ctx = state.ctx.clone();
    let tracker = ctx.shutdown.clone();
    let connections = ctx.metrics.connections.clone();
    let client = Client {
        addr: client.0,
        budget: AddressBudget {
            limiter: state.address_bytes.clone(),
            ip: client.ip(),
        },
        meter,
        authorize: authorizer(ctx.clone()),
        next_conn: state.next_conn.clone(),
    };
    upgrade_settings(ws, config).on_upgrade(move |socket| {
        tracker.track(async move {
            connections.inc();
            hocuspocus::serve(socket, ctx, client).await;
            connections.dec();
            drop(slots);
        })
    })
}

/// The token check of a document: the rules of `/ws/{room}`'s token (read access at least; the
/// role decides whether its edits count). An empty token is no token.
fn authorizer(ctx: Arc<RoomContext>) -> Authorize {
    Arc::new(move |token: &str, room: &RoomName| {
        let token = Some(token).filter(|t| !t.is_empty());
        let doc = Some(room.as_str());
        let grant = auth::authorize_doc(&ctx.config, &ctx.revocations, token, doc, Access::Read)?;
        Ok(Granted {
            role: grant.access.ws_role(),
            subject: grant.subject,
            lifetime: grant.lifetime,
        })
    })
}
