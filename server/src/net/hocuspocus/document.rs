//! One document of a Hocuspocus socket: waiting for its token (its messages queued), then a
//! member of its room. The room sends a member y-websocket frames (and, to Hocuspocus members,
//! the SyncStatus and Stateless bodies of `room::hocuspocus`) through an outbox of the
//! member's own; a forwarding task puts the document's address in front of each and queues it
//! on the socket. The member's outbox shares the socket's closer, so whatever the room closes
//! a member for closes the socket.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use weft_protocol::hocuspocus::{self, Body, Scope};
use weft_protocol::{CloseCode, Limits, Message, Role, RoomName};

use crate::net::connection::{watch_token, TokenWatch};
use crate::net::hocuspocus::{Granted, Hocuspocus, MAX_DOCUMENTS};
use crate::outbox::{Data, Ending, Outbox, QueuedBytes};
use crate::room::{Command, ConnId, JoinError, Joiner, RoomHandle};
use crate::token::AuthError;

/// A document of the socket.
pub(super) enum Document {
    /// Its token has not been checked yet: its messages wait (with their sizes).
    Pending(Vec<(Body, usize)>),
    /// A member of its room.
    Open(Membership),
    /// Its token was refused: its messages are dropped until the provider sends another
    /// token (a provider keeps sending awareness and edits after `authenticationFailed`).
    Denied,
}

/// An open document's membership of its room.
pub(super) struct Membership {
    room: RoomHandle,
    id: ConnId,
    /// Forwards the room's frames to the socket; ends when the room drops the member.
    forwarder: tokio::task::JoinHandle<()>,
    /// Closes the socket when the document's token expires or is revoked.
    _token: Option<TokenWatch>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

impl Document {
    /// A document whose token has not come yet.
    pub(super) fn pending() -> Self {
        Self::Pending(Vec::new())
    }

    /// Whether it is a member of its room.
    pub(super) fn is_open(&self) -> bool {
        matches!(self, Self::Open(_))
    }

    /// Whether it waits for its token's answer.
    pub(super) fn is_pending(&self) -> bool {
        matches!(self, Self::Pending(_))
    }

    /// Messages waiting for its token.
    pub(super) fn queued(&self) -> usize {
        match self {
            Self::Pending(q) => q.len(),
            Self::Open(_) | Self::Denied => 0,
        }
    }

    /// Bytes of the messages waiting for its token.
    pub(super) fn queued_bytes(&self) -> usize {
        match self {
            Self::Pending(q) => q.iter().map(|(_, len)| len).sum(),
            Self::Open(_) | Self::Denied => 0,
        }
    }

    /// Hands `body` to the room, or queues it while the token is pending.
    pub(super) async fn deliver(
        &mut self,
        body: Body,
        len: usize,
        limits: &Limits,
    ) -> Result<(), Ending> {
        let m = match self {
            Self::Pending(queue) => {
                queue.push((body, len));
                return Ok(());
            }
            Self::Denied => return Ok(()),
            Self::Open(m) => m,
        };
        let command = match body {
            Body::Sync { message, .. } => Command::Messages(m.id, vec![message]),
            Body::Awareness(update) => Command::Messages(m.id, vec![Message::Awareness(update)]),
            Body::QueryAwareness => Command::Messages(m.id, vec![Message::QueryAwareness]),
            Body::Stateless(payload) if payload.len() <= limits.max_awareness_state => {
                Command::Stateless(m.id, payload)
            }
            Body::Stateless(payload) => {
                debug!(
                    len = payload.len(),
                    "stateless message over the size limit; dropped"
                );
                return Ok(());
            }
            // Server → client messages, or ones the socket handles: nothing for the room.
            other => {
                debug!(message = ?other, "ignored a message a provider does not send");
                return Ok(());
            }
        };
        if m.room.send(command).await {
            Ok(())
        } else {
            Err(Ending::Close(CloseCode::Internal, "room closed".into()))
        }
    }

    /// Leaves the room, if it is a member.
    pub(super) async fn leave(self) {
        if let Self::Open(m) = &self {
            m.room.send(Command::Leave(m.id)).await;
        }
    }
}

impl Hocuspocus {
    /// Checks `token` for the document at `address`; then either joins it and hands it the
    /// messages that waited (answering `Authenticated`), or answers `PermissionDenied` and
    /// forgets the document, closing a socket that serves no other (4401/4403).
    pub(super) async fn authenticate(
        &mut self,
        address: String,
        token: &str,
    ) -> Result<super::Progress, Ending> {
        let name = hocuspocus::document_name(&address);
        let granted = match RoomName::parse(name, &self.limits) {
            Err(e) => Err(Denial::Name(e.to_string())),
            Ok(_) if self.open_documents() >= MAX_DOCUMENTS => Err(Denial::TooMany),
            Ok(room) => (self.client.authorize)(token, &room)
                .map(|g| (room, g))
                .map_err(Denial::Token),
        };
        let (room, granted) = match granted {
            Ok(ok) => ok,
            Err(denial) => return self.deny(address, &denial),
        };
        let queued = match self.docs.remove(&address) {
            Some(Document::Pending(queued)) => queued,
            _ => Vec::new(),
        };
        let mut doc = Document::Open(self.join(&address, room, granted).await?);
        for (body, len) in queued {
            doc.deliver(body, len, &self.limits).await?;
        }
        self.docs.insert(address, doc);
        Ok(super::Progress::Handshaken)
    }

    /// Answers `Authenticated`, then joins the room as a member whose frames are forwarded
    /// under `address`.
    async fn join(
        &mut self,
        address: &str,
        room: RoomName,
        granted: Granted,
    ) -> Result<Membership, Ending> {
        let socket = self.outbox()?.clone();
        let id = self.client.next_conn.fetch_add(1, Ordering::Relaxed);
        let token = watch_token(&self.ctx, &room, id, granted.lifetime, &socket)?;
        let scope = match granted.role {
            Role::Write => Scope::ReadWrite,
            Role::Read => Scope::ReadOnly,
        };
        // Before the room's sync step 1, as `@hocuspocus/server` answers.
        self.reply(address, &Body::Authenticated(scope))?;
        let (member, forwarder) = member_outbox(&self.ctx.config, address, socket);
        let joiner = Joiner {
            id,
            uuid: uuid::Uuid::new_v4().to_string(),
            outbox: member,
            role: granted.role,
            subject: granted.subject,
            hocuspocus: true,
        };
        match self.ctx.join(&room, joiner).await {
            Ok(handle) => {
                debug!(document = %room, role = ?granted.role, "document joined");
                Ok(Membership {
                    room: handle,
                    id,
                    forwarder,
                    _token: token,
                })
            }
            Err(e) => {
                forwarder.abort();
                let code = match &e {
                    JoinError::Full(_) => {
                        self.ctx.metrics.refused("room_full");
                        CloseCode::TryAgainLater
                    }
                    JoinError::Trashed => CloseCode::Deleted,
                    _ => CloseCode::Internal,
                };
                warn!(document = %room, reason = %e, "join refused");
                Err(Ending::Close(code, e.to_string()))
            }
        }
    }

    /// Refuses the document at `address`: `PermissionDenied` with the reason's code, and the
    /// socket closed (4401/4403) when it serves or awaits no other document.
    fn deny(&mut self, address: String, denial: &Denial) -> Result<super::Progress, Ending> {
        let (code, reason) = denial.close();
        self.ctx.metrics.refused(reason);
        info!(address, reason, detail = %denial.detail(), "document refused");
        self.reply(&address, &Body::PermissionDenied(reason.into()))?;
        self.docs.insert(address, Document::Denied);
        if !self.docs.values().any(|d| d.is_open() || d.is_pending()) {
            return Err(Ending::Close(code, reason.into()));
        }
        Ok(super::Progress::Continue)
    }
}

/// Why a document was refused.
enum Denial {
    /// Its token was refused.
    Token(AuthError),
    /// Its name is not a valid document id.
    Name(String),
    /// The socket has [`MAX_DOCUMENTS`] open.
    TooMany,
}

impl Denial {
    /// The close code for a socket left with nothing, and the stable reason code.
    fn close(&self) -> (CloseCode, &'static str) {
        match self {
            Denial::Token(e) if e.status() == axum::http::StatusCode::UNAUTHORIZED => {
                (CloseCode::Unauthorized, e.code())
            }
            Denial::Token(e) => (CloseCode::Forbidden, e.code()),
            Denial::Name(_) => (CloseCode::Forbidden, "invalid_document_name"),
            Denial::TooMany => (CloseCode::Forbidden, "too_many_documents"),
        }
    }

    /// What to log.
    fn detail(&self) -> String {
        match self {
            Denial::Token(e) => e.to_string(),
            Denial::Name(e) => e.clone(),
            Denial::TooMany => format!("a socket may have {MAX_DOCUMENTS} documents open"),
        }
    }
}

/// A member outbox for the document at `address` and the task forwarding what the room queues
/// in it to `socket`, address in front. It shares the socket's closer (the room closing the
/// member closes the socket) and has a byte budget of its own, as large as the socket's.
pub(super) fn member_outbox(
    config: &crate::config::Config,
    address: &str,
    socket: Outbox,
) -> (Outbox, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(config.send_queue.max(1));
    let queued = Arc::new(QueuedBytes {
        now: AtomicUsize::new(0),
        max: socket.queued.max,
    });
    let member = Outbox {
        tx,
        closer: socket.closer.clone(),
        queued: queued.clone(),
    };
    let forwarder = tokio::spawn(forward(address.to_owned(), rx, queued, socket));
    (member, forwarder)
}

/// Moves the room's frames for one document to the socket, address in front. Frames a provider
/// would misread are dropped: y-websocket's permission-denied (a provider reads `02 00` as a
/// token request) and Weft control messages (never sent to these members).
async fn forward(
    address: String,
    mut rx: mpsc::Receiver<Data>,
    queued: Arc<QueuedBytes>,
    socket: Outbox,
) {
    while let Some(data) = rx.recv().await {
        queued.now.fetch_sub(data.len(), Ordering::AcqRel);
        let Data::Binary(body) = data else { continue };
        if !hocuspocus::is_provider_body(&body) {
            continue;
        }
        let frame = Bytes::from(hocuspocus::address_frame(&address, &body));
        if !socket.send(frame) {
            return;
        }
    }
}
