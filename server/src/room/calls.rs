//! Typed calls into one document's room, for the HTTP API: each asks the room one [`ApiOp`] and
//! returns the one [`ApiReply`] that answers it, so callers never match a reply enum.
//!
//! Calls go through the registry ([`RoomContext::api`]) rather than one
//! [`RoomHandle`](crate::room::RoomHandle): the registry loads the room if it is not open, and
//! retries when it unloads between lookup and delivery.
//!
//! Replacing the text plans its edits here, on a blocking thread, against the text the room
//! gave: a diff of a large rewrite takes long, and on the room's task every member would wait
//! for it. The room applies the plan only if its text did not change meanwhile.

use std::sync::Arc;

use weft_protocol::{NoticeLevel, RoomName};

use crate::room::authors::ANONYMOUS;
use crate::room::diff::{self, Budget, Rewrite};
use crate::room::registry::RoomContext;
use crate::room::{ApiOp, ApiOpError, ApiReply};
use crate::store::history::VersionMeta;

/// Rewrites planned away from the room before it is left to replace the text itself (with a
/// plan linear in the text), when other edits keep changing the text under the plan.
const REWRITE_ATTEMPTS: usize = 3;

/// Why a typed call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RoomCallError {
    /// The room refused or failed the request.
    #[error(transparent)]
    Op(#[from] ApiOpError),
    /// The room answered with a reply of another request (a bug, never expected).
    #[error("unexpected reply from the room: {0:?}")]
    Unexpected(ApiReply),
}

/// A write the room made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Committed {
    /// The document's update count now.
    pub(crate) version: u64,
    /// Whether the document changed (replacing text with the same text does not).
    pub(crate) changed: bool,
}

/// One document's room, addressed by name through the registry.
#[derive(Clone)]
pub(crate) struct DocRoom {
    ctx: Arc<RoomContext>,
    name: RoomName,
    /// Who the writes are attributed to in the version history.
    author: String,
}

impl DocRoom {
    /// The room of the document `name`; nothing is loaded until the first call.
    pub(crate) fn new(ctx: Arc<RoomContext>, name: RoomName) -> Self {
        Self {
            ctx,
            name,
            author: ANONYMOUS.into(),
        }
    }

    /// The same room, its writes attributed to `author` (a token's `sub`).
    pub(crate) fn by(mut self, author: &str) -> Self {
        author.clone_into(&mut self.author);
        self
    }

    /// Records a version of the current text now, named `name` (recorded even if nothing
    /// changed); answered once it is durable.
    pub(crate) async fn record_version(
        &self,
        name: Option<String>,
    ) -> Result<VersionMeta, RoomCallError> {
        self.call(ApiOp::RecordVersion(name), |reply| match reply {
            ApiReply::Version(meta) => Ok(meta),
            other => Err(other),
        })
        .await
    }

    /// Connections open on the document now (0 when its room is not loaded).
    pub(crate) fn users(&self) -> u32 {
        let live = self.ctx.live_users();
        live.get(self.name.as_str()).copied().unwrap_or(0)
    }

    /// Creates the document with optional text and title; returns its update count (0 or 1).
    pub(crate) async fn create(
        &self,
        text: Option<String>,
        title: Option<String>,
    ) -> Result<u64, RoomCallError> {
        let author = self.author.clone();
        let committed = self
            .write(ApiOp::Create {
                text,
                title,
                author,
            })
            .await?;
        Ok(committed.version)
    }

    /// The document's text, as live editors see it.
    pub(crate) async fn text(&self) -> Result<String, RoomCallError> {
        self.call(ApiOp::GetText, |reply| match reply {
            ApiReply::Text(text) => Ok(text),
            other => Err(other),
        })
        .await
    }

    /// The document as one Yjs v1 update, or only what the v1 state vector `sv` lacks.
    pub(crate) async fn update(&self, sv: Option<Vec<u8>>) -> Result<Vec<u8>, RoomCallError> {
        self.call(ApiOp::GetUpdate(sv), |reply| match reply {
            ApiReply::Update(bytes) => Ok(bytes),
            other => Err(other),
        })
        .await
    }

    /// Replaces the text by a diff planned on a blocking thread (minimal for small changes,
    /// bounded in time for any): only the changed spans are edited.
    pub(crate) async fn set_text(&self, text: String) -> Result<Committed, RoomCallError> {
        let text: Arc<str> = Arc::from(text);
        for _ in 0..REWRITE_ATTEMPTS {
            let base = self.text().await?;
            let new = text.clone();
            let planned = tokio::task::spawn_blocking(move || {
                let splices = diff::plan(&base, &new, Budget::Blocking);
                Rewrite { base, splices }
            })
            .await
            .map_err(|e| ApiOpError::Unavailable(format!("planning the edit failed: {e}")))?;
            let written = self
                .call(ApiOp::Rewrite(planned), |reply| match reply {
                    ApiReply::Written { version, changed } => {
                        Ok(Some(Committed { version, changed }))
                    }
                    ApiReply::BaseChanged => Ok(None),
                    other => Err(other),
                })
                .await?;
            if let Some(committed) = written {
                return Ok(committed);
            }
        }
        self.write(ApiOp::SetText(text.to_string())).await
    }

    /// Appends `text` to the end of the text.
    pub(crate) async fn append(&self, text: String) -> Result<Committed, RoomCallError> {
        self.write(ApiOp::Append(text)).await
    }

    /// Applies a Yjs v1 update.
    pub(crate) async fn apply_update(&self, update: Vec<u8>) -> Result<Committed, RoomCallError> {
        self.write(ApiOp::ApplyUpdate(update)).await
    }

    /// Shows a notice to every editor listening, or only to the user `to`; returns how many
    /// connections it went to.
    pub(crate) async fn notice(
        &self,
        level: NoticeLevel,
        text: String,
        to: Option<String>,
    ) -> Result<u32, RoomCallError> {
        let op = ApiOp::Notice { level, text, to };
        self.call(op, |reply| match reply {
            ApiReply::Delivered(delivered) => Ok(delivered),
            other => Err(other),
        })
        .await
    }

    /// Moves the document to the trash, closing its connections; returns how many were closed.
    pub(crate) async fn delete(&self) -> Result<u32, RoomCallError> {
        self.call(ApiOp::Delete, |reply| match reply {
            ApiReply::Deleted(closed) => Ok(closed),
            other => Err(other),
        })
        .await
    }

    /// Gives the document an explicit title; editors open on it are told.
    pub(crate) async fn rename(&self, title: String) -> Result<(), RoomCallError> {
        self.call(ApiOp::SetTitle(title), |reply| match reply {
            ApiReply::Titled => Ok(()),
            other => Err(other),
        })
        .await
    }

    /// Takes the document out of the trash (`NotFound` if it is not there).
    pub(crate) async fn restore(&self) -> Result<(), RoomCallError> {
        self.call(ApiOp::Restore, |reply| match reply {
            ApiReply::Restored => Ok(()),
            other => Err(other),
        })
        .await
    }

    /// Deletes a document in the trash for good (`NotFound` if it is not there).
    pub(crate) async fn purge(&self) -> Result<(), RoomCallError> {
        self.call(ApiOp::Purge, |reply| match reply {
            ApiReply::Deleted(_) => Ok(()),
            other => Err(other),
        })
        .await
    }

    /// A call answered by [`ApiReply::Written`].
    async fn write(&self, op: ApiOp) -> Result<Committed, RoomCallError> {
        self.call(op, |reply| match reply {
            ApiReply::Written { version, changed } => Ok(Committed { version, changed }),
            other => Err(other),
        })
        .await
    }

    /// Runs `op` in the room and takes its answer with `pick`, which hands back any other reply.
    async fn call<T>(
        &self,
        op: ApiOp,
        pick: fn(ApiReply) -> Result<T, ApiReply>,
    ) -> Result<T, RoomCallError> {
        let reply = self.ctx.api_by(&self.name, op, &self.author).await?;
        pick(reply).map_err(RoomCallError::Unexpected)
    }
}
