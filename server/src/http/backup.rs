//! `GET /api/backup`: an online backup of every document, streamed in the format described in
//! `store::backup`, for `weft backup` (or any client) to save while the server keeps serving.
//!
//! The documents are listed when the request arrives; each is then read in turn through its
//! room, exactly like `GET /api/docs/{id}/update` (loading it if it is not open), so a document's
//! copy includes every edit acknowledged before it was read, and nothing half-applied. The
//! listing is the only moment all documents share: a document created after it is not in this
//! backup, and one deleted after it is reported as skipped. A document read through the API
//! stays loaded like any other, until it has been idle for `--idle-unload-secs`.
//!
//! The body is produced one record at a time as the client reads it (one document's state in
//! memory at once, besides its room), and stops early with an `X` record when the server is
//! shutting down, so a backup never holds up a graceful stop.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use tracing::{info, warn};
use utoipa::ToSchema;
use weft_protocol::RoomName;

use crate::error::ApiError;
use crate::http::auth::{authorize, token_of};
use crate::http::AppState;
use crate::room::{ApiOp, ApiOpError, ApiReply};
use crate::store::backup::{stream_start, BackupMeta, Header, Record, Skipped, Trailer};
use crate::store::now_ms;
use crate::token::Access;

/// The media type of a backup stream.
const MEDIA_TYPE: &str = "application/vnd.weft.backup";

/// A backup stream, as raw bytes (documentation of the response body).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub(crate) struct BackupStream(Vec<u8>);

/// Streams a backup of every document: its metadata and its whole Yjs state. Needs the admin
/// role for every document. The format (versioned, length-prefixed records ending in a trailer
/// that counts them) is described in `docs/backup.md`; `weft backup` saves it as a data
/// directory that `weft restore` copies back.
#[utoipa::path(
    get, path = "/api/backup", tag = "operations",
    responses(
        (status = 200, body = BackupStream, content_type = "application/vnd.weft.backup"),
        (status = 401, description = "no valid token (`{\"code\", \"message\"}`)"),
        (status = 403, description = "the token is not an admin token for every document"),
        (status = 500, description = "the documents could not be listed"),
    )
)]
pub(crate) async fn get_backup(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = token_of(&headers, None);
    authorize(&state.ctx.config, token, None, Access::Admin)?;
    let started_ms = now_ms();
    let store = state.ctx.store.clone();
    let listed = tokio::task::spawn_blocking(move || store.list())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let ids: Vec<String> = listed.into_iter().map(|m| m.id).collect();
    info!(documents = ids.len(), "backup started");
    let walk = Walk {
        header: Some(Header {
            started_ms,
            documents: ids.len() as u64,
        }),
        ids: ids.into_iter(),
        state,
        trailer: Trailer {
            documents: 0,
            skipped: 0,
        },
        done: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(walk, Walk::step));
    Ok(([(CONTENT_TYPE, MEDIA_TYPE)], body).into_response())
}

/// Where a backup stream is: what is left to send and what was sent.
struct Walk {
    state: AppState,
    /// Sent first, then taken.
    header: Option<Header>,
    ids: std::vec::IntoIter<String>,
    /// Counts so far; sent last.
    trailer: Trailer,
    done: bool,
}

impl Walk {
    /// The next chunk of the body: the start, one record per document, then the trailer.
    async fn step(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        if self.done {
            return None;
        }
        if let Some(header) = self.header.take() {
            let mut first = stream_start().to_vec();
            first.extend_from_slice(&Record::Header(header).encode());
            return Some((Ok(Bytes::from(first)), self));
        }
        if self.state.ctx.shutdown.is_triggered() {
            self.done = true;
            warn!("backup cut short: the server is shutting down");
            let stop = Record::Failed("the server is shutting down".into());
            return Some((Ok(stop.encode()), self));
        }
        let record = match self.ids.next() {
            Some(id) => self.document(id).await,
            None => {
                self.done = true;
                info!(
                    documents = self.trailer.documents,
                    skipped = self.trailer.skipped,
                    "backup finished"
                );
                Record::End(self.trailer.clone())
            }
        };
        match &record {
            Record::Doc(..) => self.trailer.documents += 1,
            Record::Skipped(_) => self.trailer.skipped += 1,
            _ => {}
        }
        Some((Ok(record.encode()), self))
    }

    /// One listed document's record: its state read through its room, then its metadata.
    async fn document(&self, id: String) -> Record {
        let ctx = &self.state.ctx;
        let skipped = |reason: String, failed: bool| {
            if failed {
                warn!(doc = %id, %reason, "backup could not read a document");
            }
            Record::Skipped(Skipped {
                id: id.clone(),
                reason,
                failed,
            })
        };
        let room = match RoomName::parse(&id, &ctx.config.limits()) {
            Ok(room) => room,
            Err(e) => return skipped(format!("not a valid document id here: {e}"), true),
        };
        let state = match ctx.api(&room, ApiOp::GetUpdate(None)).await {
            Ok(ApiReply::Update(state)) => state,
            Ok(other) => {
                return skipped(format!("unexpected reply from the room: {other:?}"), true)
            }
            Err(ApiOpError::NotFound) => return skipped(DELETED.into(), false),
            Err(e) => return skipped(e.to_string(), true),
        };
        let store = ctx.store.clone();
        let meta = tokio::task::spawn_blocking(move || store.meta(&room)).await;
        match meta {
            Ok(Ok(Some(meta))) => Record::Doc(BackupMeta::from(meta), Bytes::from(state)),
            Ok(Ok(None)) => skipped(DELETED.into(), false),
            Ok(Err(e)) => skipped(format!("reading its metadata failed: {e}"), true),
            Err(e) => skipped(format!("reading its metadata failed: {e}"), true),
        }
    }
}

/// Why a listed document that is gone is not in the backup.
const DELETED: &str = "deleted after the backup began";
