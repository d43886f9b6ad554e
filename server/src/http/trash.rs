//! The trash in the JSON API: `GET /api/trash` lists deleted documents with when they will be
//! purged, `POST /api/docs/{id}/restore` brings one back with its content and history, and
//! `DELETE /api/trash/{id}` purges one now. Deleting (`DELETE /api/docs/{id}`, in `api.rs`)
//! moves a document here; the rooms do the moving (`room::trash`). Also the checks of titles
//! given to `PATCH /api/docs/{id}`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use weft_protocol::{Limits, RoomName};

use crate::error::{ApiError, ErrorBody};
use crate::http::extract::{blocking, Admin, AllDocs, DocAccess, Read, Write};
use crate::room::calls::DocRoom;
use crate::room::registry::RoomContext;
use crate::store::Store;

/// Longest title, in characters (as the room keeps titles).
const MAX_TITLE_CHARS: usize = 200;

/// One document in the trash.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TrashedDoc {
    /// The document id.
    id: String,
    /// Its title when it was deleted.
    title: Option<String>,
    /// When it was deleted, milliseconds since the Unix epoch.
    deleted_ms: u64,
    /// When it will be purged for good (`--trash-keep-days` later), milliseconds since the
    /// Unix epoch.
    purge_ms: u64,
}

/// The trash.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TrashList {
    /// Deleted documents, most recently deleted first.
    docs: Vec<TrashedDoc>,
}

/// A document left the trash.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TrashDone {
    /// The document id.
    id: String,
    /// True for a restore (the document is back), false for a purge (it is gone for good).
    restored: bool,
}

/// Lists the documents in the trash, most recently deleted first, with when each will be
/// purged. Needs read access to every document.
#[utoipa::path(
    get, path = "/api/trash", tag = "trash",
    responses(
        (status = 200, body = TrashList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    )
)]
pub(super) async fn list_trash(
    _: AllDocs<Read>,
    State(ctx): State<Arc<RoomContext>>,
) -> Result<Json<TrashList>, ApiError> {
    let store = ctx.store.clone();
    let keep_ms = u64::try_from(ctx.config.trash_keep().as_millis()).unwrap_or(u64::MAX);
    let docs = blocking(move || trash_of(store.as_ref(), keep_ms)).await?;
    Ok(Json(TrashList { docs }))
}

/// The trash with titles, most recently deleted first.
fn trash_of(store: &dyn Store, keep_ms: u64) -> Result<Vec<TrashedDoc>, crate::store::StoreError> {
    // Ids were valid room names when deleted; a lower name limit since must not hide them.
    let limits = Limits {
        max_room_name: usize::MAX,
        ..Limits::DEFAULT
    };
    let mut docs = Vec::new();
    for (id, deleted_ms) in store.trash()? {
        let title = match RoomName::parse(&id, &limits) {
            Ok(name) => store.meta(&name)?.and_then(|m| m.title),
            Err(_) => None,
        };
        docs.push(TrashedDoc {
            title: title.filter(|t| !t.is_empty()),
            purge_ms: deleted_ms.saturating_add(keep_ms),
            id,
            deleted_ms,
        });
    }
    docs.sort_by(|a, b| b.deleted_ms.cmp(&a.deleted_ms).then(a.id.cmp(&b.id)));
    Ok(docs)
}

/// Restores a document from the trash with its content and history; editors can open it
/// again. 404 if it is not in the trash. Needs write access.
#[utoipa::path(
    post, path = "/api/docs/{id}/restore", tag = "trash", params(("id" = String, Path)),
    responses(
        (status = 200, body = TrashDone),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub(super) async fn restore_doc(doc: DocAccess<Write>) -> Result<Json<TrashDone>, ApiError> {
    let room = DocRoom::new(doc.context().clone(), doc.name().clone());
    room.restore().await?;
    Ok(Json(TrashDone {
        id: doc.name().as_str().to_owned(),
        restored: true,
    }))
}

/// Deletes a document in the trash for good, with its history, now instead of after
/// `--trash-keep-days`. 404 if it is not in the trash. Needs the admin role.
#[utoipa::path(
    delete, path = "/api/trash/{id}", tag = "trash", params(("id" = String, Path)),
    responses(
        (status = 200, body = TrashDone),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub(super) async fn purge_doc(doc: DocAccess<Admin>) -> Result<Json<TrashDone>, ApiError> {
    let room = DocRoom::new(doc.context().clone(), doc.name().clone());
    room.purge().await?;
    Ok(Json(TrashDone {
        id: doc.name().as_str().to_owned(),
        restored: false,
    }))
}

/// 409 `doc_in_trash` when `id` is in the trash: creating it again would mix with what a
/// restore brings back.
pub(super) async fn refuse_trashed(ctx: &RoomContext, id: &str) -> Result<(), ApiError> {
    let limits = Limits {
        max_room_name: usize::MAX,
        ..Limits::DEFAULT
    };
    let Ok(name) = RoomName::parse(id, &limits) else {
        return Ok(());
    };
    let store = ctx.store.clone();
    if blocking(move || store.trashed(&name)).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "doc_in_trash",
            "a document with this id is in the trash: restore it, or delete it for good first",
        ));
    }
    Ok(())
}

/// A title given to `PATCH /api/docs/{id}`, trimmed, or 400 `invalid_title` saying what is
/// wrong with it.
pub(super) fn valid_title(title: &str) -> Result<String, ApiError> {
    let title = title.trim();
    let why = if title.is_empty() {
        "the title is empty"
    } else if title.chars().any(char::is_control) {
        "a title is one line of text, without control characters"
    } else if title.chars().nth(MAX_TITLE_CHARS).is_some() {
        "the title is longer than 200 characters"
    } else {
        return Ok(title.to_owned());
    };
    Err(ApiError::bad_request("invalid_title", why))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Titles are trimmed; empty, multi-line and over-long ones are refused.
    #[test]
    fn titles_are_checked() {
        assert_eq!(valid_title("  Plans  ").ok(), Some("Plans".to_owned()));
        for bad in ["", "   ", "a\nb", "tab\there"] {
            let e = valid_title(bad).err().map(|e| e.code);
            assert_eq!(e, Some("invalid_title"), "{bad:?}");
        }
        assert!(valid_title(&"é".repeat(200)).is_ok());
        assert!(valid_title(&"é".repeat(201)).is_err());
    }
}
