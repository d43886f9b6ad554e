//! What the rest of the server holds of a room: the [`RoomHandle`] (the mailbox's sending side
//! plus the vital signs listings read without a round trip), the [`Command`]s it carries, and
//! the request and answer types of joins and of the HTTP API.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use weft_protocol::{Message, NoticeLevel, Role};

use crate::outbox::Outbox;
use crate::room::diff::Rewrite;
use crate::room::registry::Stopped;
use crate::room::Incoming;
use crate::store::history::VersionMeta;

/// Identifies a connection inside the server (cheaper to hash than its UUID).
pub(crate) type ConnId = u64;

/// Why a join was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum JoinError {
    /// The room has its configured maximum of connections.
    #[error("room is full ({0} connections)")]
    Full(usize),
    /// The room is unloading or failed; ask the registry again.
    #[error("room is closing")]
    Gone,
    /// The stored document could not be loaded.
    #[error("document could not be loaded: {0}")]
    LoadFailed(String),
    /// The document is in the trash: it takes no connections until it is restored.
    #[error("the document is in the trash")]
    Trashed,
}

/// A connection joining a room.
#[derive(Clone)]
pub(crate) struct Joiner {
    /// Internal id.
    pub(crate) id: ConnId,
    /// Public id, sent in control messages.
    pub(crate) uuid: String,
    /// Where frames for this connection go.
    pub(crate) outbox: Outbox,
    /// What it may do.
    pub(crate) role: Role,
    /// The user its token names, if any: notices can address one user's connections.
    pub(crate) subject: Option<String>,
    /// It speaks the Hocuspocus framing: it is owed a SyncStatus per write and receives
    /// stateless messages (see `room::hocuspocus`).
    pub(crate) hocuspocus: bool,
}

/// What the HTTP API asks of a document.
#[derive(Debug)]
pub(crate) enum ApiOp {
    /// Create the document, seeded with `text`; refused if it already exists, so seeding never
    /// duplicates content.
    Create {
        /// Initial content.
        text: Option<String>,
        /// Title for listings (else the first line).
        title: Option<String>,
        /// Who the initial content is attributed to in the version history.
        author: String,
    },
    /// The text of `content`.
    GetText,
    /// The state as one Yjs v1 update, relative to a v1 state vector when given.
    GetUpdate(Option<Vec<u8>>),
    /// Replace the text with a diff planned in the room (linear in the text), so live cursors
    /// outside the change stay put.
    SetText(String),
    /// Apply a rewrite planned away from the room, if the text is still its base.
    Rewrite(Rewrite),
    /// Insert text at the end.
    Append(String),
    /// Apply a Yjs v1 update.
    ApplyUpdate(Vec<u8>),
    /// Show a notice to every opted-in member, or only to those whose token names `to`.
    Notice {
        /// How to show it.
        level: NoticeLevel,
        /// The text.
        text: String,
        /// The user to address, or everyone.
        to: Option<String>,
    },
    /// Move the document to the trash: close every member and stop the room, keeping what is
    /// stored until a restore or a purge.
    Delete,
    /// Give the document an explicit title (trimmed and checked by the caller); editors see it
    /// at once.
    SetTitle(String),
    /// Take the document out of the trash with its content and history (`NotFound` if it is
    /// not there).
    Restore,
    /// Delete a document in the trash for good: content, history and its trash record
    /// (`NotFound` if it is not there).
    Purge,
    /// Record a version of the current text now, with this name (even if nothing changed
    /// when named); answered with [`ApiReply::Version`] once it is durable.
    RecordVersion(Option<String>),
}

/// A successful [`ApiOp`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ApiReply {
    /// The document's text.
    Text(String),
    /// A Yjs v1 update.
    Update(Vec<u8>),
    /// The change is durable; the document's update count is now this.
    Written {
        /// Sequence number of the document's last stored update.
        version: u64,
        /// Whether anything changed (a replace with the same text changes nothing).
        changed: bool,
    },
    /// A [`ApiOp::Rewrite`] was planned against text the document no longer has; nothing was
    /// written.
    BaseChanged,
    /// The notice went to this many connections.
    Delivered(u32),
    /// The document is in the trash (or, after a purge, gone); this many connections were
    /// closed.
    Deleted(u32),
    /// The document is out of the trash.
    Restored,
    /// The title was set.
    Titled,
    /// The version recorded (or, unnamed with nothing changed, the latest one).
    Version(VersionMeta),
}

/// Why an [`ApiOp`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ApiOpError {
    /// The document does not exist (or was deleted).
    #[error("no such document")]
    NotFound,
    /// `Create` on a document that exists.
    #[error("the document already exists")]
    Exists,
    /// The write would take the document past `--max-doc-bytes`.
    #[error("the document would exceed its size limit of {0} bytes")]
    TooLarge(u64),
    /// The update or state vector does not decode or apply.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A title given explicitly is longer than this many characters (it is stored with the
    /// metadata, rewritten on every change of it, and listed with every document).
    #[error("the title is longer than {0} characters")]
    TitleTooLong(usize),
    /// Storage failed; nothing was applied.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The store has failed (disk full, a flush that failed or timed out, the data directory
    /// removed): nothing was saved, and no write will be until the server restarts.
    #[error("the document store failed: {0}")]
    StoreFailed(String),
    /// The room could not be reached or loaded.
    #[error("document unavailable: {0}")]
    Unavailable(String),
}

/// Where the answer to an API request or an inbox delivery goes.
pub(crate) type ApiReplyTx = oneshot::Sender<Result<ApiReply, ApiOpError>>;

/// What connections, HTTP handlers and other sources of updates ask of a room.
pub(crate) enum Command {
    /// Add a member; the reply says whether it was admitted.
    Join(Joiner, oneshot::Sender<Result<(), JoinError>>),
    /// Messages decoded from one frame of a member.
    Messages(ConnId, Vec<Message>),
    /// A member's socket is gone.
    Leave(ConnId),
    /// A Hocuspocus member's stateless message, for the room's other Hocuspocus members.
    Stateless(ConnId, String),
    /// A request of the HTTP API, answered once its effect is durable.
    Api(ApiOp, ApiReplyTx),
    /// An update from no member (see [`Incoming`]) written by the named author, answered once
    /// it is durable.
    Inbox(Incoming, String, ApiReplyTx),
}

/// The answer when the room stopped before answering.
fn stopped() -> ApiOpError {
    ApiOpError::Unavailable("the room stopped".into())
}

/// Cheap handle to a running room.
#[derive(Clone)]
pub(crate) struct RoomHandle {
    tx: mpsc::Sender<Command>,
    /// Distinguishes incarnations of the same room name in the registry.
    pub(crate) generation: u64,
    /// What listings and the dashboard read without asking the actor.
    live: Arc<Live>,
    /// Resolves once this incarnation has stopped writing.
    stopped: Stopped,
}

/// A room's vital signs, kept by the room and read by listings and the dashboard without a
/// round trip through the actor's mailbox.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Members right now.
    pub(super) users: AtomicU32,
    /// Bytes the document takes in the store (snapshot plus log).
    pub(super) stored_bytes: AtomicU64,
    /// When a member last sent anything, milliseconds since the Unix epoch (0: never).
    pub(super) active_ms: AtomicU64,
}

impl Live {
    /// Members right now.
    pub(crate) fn users(&self) -> u32 {
        self.users.load(Ordering::Relaxed)
    }

    /// Bytes the document takes in the store.
    pub(crate) fn stored_bytes(&self) -> u64 {
        self.stored_bytes.load(Ordering::Relaxed)
    }

    /// Last message from a member, Unix milliseconds (0 when none came since the load).
    pub(crate) fn active_ms(&self) -> u64 {
        self.active_ms.load(Ordering::Relaxed)
    }
}

impl RoomHandle {
    /// The handle of a room whose mailbox `tx` feeds, incarnation `generation`, which has
    /// stopped once `stopped` resolves.
    pub(super) fn new(
        tx: mpsc::Sender<Command>,
        generation: u64,
        stopped: Stopped,
        live: Arc<Live>,
    ) -> Self {
        Self {
            tx,
            generation,
            live,
            stopped,
        }
    }

    /// What resolves once this incarnation has stopped writing to the store.
    pub(crate) fn stopped(&self) -> Stopped {
        self.stopped.clone()
    }

    /// Asks the room to admit `joiner`.
    pub(crate) async fn join(&self, joiner: Joiner) -> Result<(), JoinError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Join(joiner, tx))
            .await
            .map_err(|_| JoinError::Gone)?;
        rx.await.unwrap_or(Err(JoinError::Gone))
    }

    /// Runs an API request. `Err(op)` hands the request back when the room stopped before
    /// receiving it, so the caller may retry on a fresh incarnation. Writes go through the
    /// room's inbox ([`RoomHandle::deliver`]), like every update that comes from no member.
    /// Writes are attributed to `author`.
    pub(crate) async fn api(
        &self,
        op: ApiOp,
        author: &str,
    ) -> Result<Result<ApiReply, ApiOpError>, ApiOp> {
        let op = match Incoming::from_api(op) {
            Ok(incoming) => {
                let delivered = self.deliver(incoming, author.to_owned()).await;
                return delivered.map_err(Incoming::into_api);
            }
            Err(op) => op,
        };
        let (tx, rx) = oneshot::channel();
        match self.tx.send(Command::Api(op, tx)).await {
            Ok(()) => Ok(rx.await.unwrap_or_else(|_| Err(stopped()))),
            Err(mpsc::error::SendError(Command::Api(op, _))) => Err(op),
            Err(_) => Ok(Err(stopped())),
        }
    }

    /// Hands the room an update that comes from no member: it is validated, applied, made
    /// durable and broadcast like a member's, and answered with [`ApiReply::Written`].
    /// `Err(incoming)` hands it back when the room stopped before receiving it. The write is
    /// attributed to `author`.
    pub(crate) async fn deliver(
        &self,
        incoming: Incoming,
        author: String,
    ) -> Result<Result<ApiReply, ApiOpError>, Incoming> {
        let (tx, rx) = oneshot::channel();
        match self.tx.send(Command::Inbox(incoming, author, tx)).await {
            Ok(()) => Ok(rx.await.unwrap_or_else(|_| Err(stopped()))),
            Err(mpsc::error::SendError(Command::Inbox(incoming, _, _))) => Err(incoming),
            Err(_) => Ok(Err(stopped())),
        }
    }

    /// Hands a member's messages to the room; false if the room is gone.
    pub(crate) async fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).await.is_ok()
    }

    /// Whether the room task has stopped.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Connections in the room right now.
    pub(crate) fn users(&self) -> u32 {
        self.live.users()
    }

    /// The room's vital signs.
    pub(crate) fn live(&self) -> &Live {
        &self.live
    }
}
