//! A y-websocket client's connection: the [`Handler`] that joins the room named in the URL,
//! decodes each binary frame with `weft-protocol` and hands the messages to the room, and leaves
//! the room when the socket ends. The socket mechanics (queue, pings, limits, close handshake)
//! are in `socket`.
//!
//! Text frames are closed with [`CloseCode::Unsupported`] and undecodable frames with
//! [`CloseCode::InvalidData`]; a connection that has not sent sync step 1 within the handshake
//! timeout is closed with [`CloseCode::Policy`] (stock clients send it at once, so a silent
//! socket is only holding a slot).
//!
//! A connection admitted with a token is closed with [`CloseCode::Unauthorized`] (4401) and
//! reason `token_expired` when the token expires, and `token_revoked` when its document's tokens
//! are revoked (`RoomContext::revoked`); the client needs a fresh token to come back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::net::upgrade::WebSocket;
use tracing::{debug, info, info_span, warn, Instrument as _};
use weft_protocol::{decode_frame, CloseCode, Limits, Message, Role, RoomName};

use crate::metrics::Metrics;
use crate::net::metered::ReadMeter;
use crate::net::quiet;
use crate::net::socket::{self, truncate_reason, AddressBudget, Handler, Progress};
use crate::outbox::{Data, Ending, Outbox};
use crate::room::registry::{RoomContext, TokenHold};
use crate::room::{Command, ConnId, JoinError, Joiner, RoomHandle};
use crate::store::now_ms;
use crate::token::Lifetime;

/// Who is on the other end and what they asked for.
pub(crate) struct Peer {
    /// Internal connection id.
    pub(crate) id: ConnId,
    /// Remote address, for logs.
    pub(crate) addr: SocketAddr,
    /// The room requested in the URL.
    pub(crate) room: RoomName,
    /// What the connection may do (from its token; `Write` in open mode).
    pub(crate) role: Role,
    /// The user its token names, if any.
    pub(crate) subject: Option<String>,
    /// When its token was minted and expires (`None` in open mode).
    pub(crate) lifetime: Option<Lifetime>,
    /// The byte budget it shares with the other connections from its address.
    pub(crate) budget: AddressBudget,
    /// What it has read of messages not yet whole, charged to the server's read budget.
    pub(crate) meter: Option<Arc<ReadMeter>>,
}

/// Serves one upgraded WebSocket as a member of its room until it closes.
pub(crate) async fn serve(socket: WebSocket, ctx: Arc<RoomContext>, peer: Peer) {
    let uuid = uuid::Uuid::new_v4().to_string();
    let span = info_span!("ws", room = %peer.room, peer = %peer.addr, conn = %uuid);
    let mut connection = Connection {
        limits: ctx.config.limits(),
        ctx: ctx.clone(),
        peer,
        uuid,
        room: None,
        token: None,
    };
    let meter = connection.peer.meter.take();
    let ending = socket::serve(socket, &mut connection, &ctx.config, &ctx.shutdown, meter)
        .instrument(span.clone())
        .await;
    let ip = connection.peer.addr.ip();
    span.in_scope(|| log_ending(ending, ip));
}

/// Logs how a connection ended. Endings a client can repeat at will by reconnecting (data of
/// another protocol, text frames, a missed handshake) go through [`quiet`]: once per interval
/// and client address, with how many were not logged.
pub(crate) fn log_ending(ending: Option<Ending>, ip: std::net::IpAddr) {
    let why = match ending {
        Some(Ending::Close(code, reason)) => {
            let repeatable = matches!(
                code,
                CloseCode::InvalidData | CloseCode::Unsupported | CloseCode::Policy
            );
            if repeatable {
                match quiet::should_log(code, ip) {
                    Some(more) => {
                        warn!(%code, reason, more_since_last = more, "disconnected");
                    }
                    None => debug!(%code, reason, "disconnected"),
                }
                return;
            }
            format!("server closed with {code}: {reason}")
        }
        Some(Ending::Terminate(why)) => format!("terminated: {why}"),
        None => "peer closed".to_owned(),
    };
    info!(why, "disconnected");
}

/// One connection's membership of its room (the room keeps its own view of it as a member).
struct Connection {
    ctx: Arc<RoomContext>,
    peer: Peer,
    uuid: String,
    /// Decoding limits, computed once per connection.
    limits: Limits,
    /// The room, once joined.
    room: Option<RoomHandle>,
    /// What closes it when its token expires or is revoked, while it lasts.
    token: Option<TokenWatch>,
}

/// A connection's token watch: its entry among the document's token holders (which a
/// revocation closes) and the timer that closes it at expiry. Both end when it is dropped.
pub(crate) struct TokenWatch {
    _hold: TokenHold,
    expiry: tokio::task::JoinHandle<()>,
}

impl Drop for TokenWatch {
    fn drop(&mut self) {
        self.expiry.abort();
    }
}

/// Starts watching the token of connection `id` to `room`, if it has one (`lifetime`): `outbox`
/// is closed with 4401 `token_expired` when it expires and `token_revoked` when the document's
/// tokens are revoked. Refused at once (4401 `token_revoked`) when a revocation recorded since it
/// was authorized covers it.
pub(crate) fn watch_token(
    ctx: &RoomContext,
    room: &RoomName,
    id: ConnId,
    lifetime: Option<Lifetime>,
    outbox: &Outbox,
) -> Result<Option<TokenWatch>, Ending> {
    let Some(lifetime) = lifetime else {
        return Ok(None);
    };
    let hold = ctx.tokens.hold(room, id, lifetime.iat, outbox.clone());
    // Checked after entering the holders: a revocation either sees this entry or was
    // recorded before this check.
    if ctx.revocations.check(room.as_str(), lifetime.iat).is_err() {
        return Err(Ending::Close(
            CloseCode::Unauthorized,
            "token_revoked".into(),
        ));
    }
    let left = Duration::from_millis(lifetime.exp.saturating_mul(1000).saturating_sub(now_ms()));
    let outbox = outbox.clone();
    let expiry = tokio::spawn(async move {
        tokio::time::sleep(left).await;
        outbox.close(CloseCode::Unauthorized, "token_expired");
    });
    Ok(Some(TokenWatch {
        _hold: hold,
        expiry,
    }))
}

impl Handler for Connection {
    async fn open(&mut self, outbox: Outbox) -> Result<(), Ending> {
        let peer = &self.peer;
        self.token = watch_token(&self.ctx, &peer.room, peer.id, peer.lifetime, &outbox)?;
        let joiner = Joiner {
            id: self.peer.id,
            uuid: self.uuid.clone(),
            outbox,
            role: self.peer.role,
            subject: self.peer.subject.clone(),
            hocuspocus: false,
        };
        match self.ctx.join(&self.peer.room, joiner).await {
            Ok(room) => {
                debug!(role = ?self.peer.role, "connected");
                self.room = Some(room);
                Ok(())
            }
            Err(e) => {
                let (code, reason) = match &e {
                    JoinError::Full(_) => {
                        self.ctx.metrics.refused("room_full");
                        (CloseCode::TryAgainLater, e.to_string())
                    }
                    // As for a deleted document: clients stop reconnecting.
                    JoinError::Trashed => (CloseCode::Deleted, "doc_in_trash".into()),
                    _ => (CloseCode::Internal, e.to_string()),
                };
                warn!(reason, "join refused");
                Err(Ending::Close(code, reason))
            }
        }
    }

    async fn message(&mut self, data: Data) -> Result<Progress, Ending> {
        let frame = match data {
            Data::Binary(frame) => frame,
            Data::Text(_) => {
                return Err(Ending::Close(
                    CloseCode::Unsupported,
                    "text frames are not supported; send binary y-websocket messages".into(),
                ))
            }
        };
        let msgs = decode_frame(&frame, &self.limits).map_err(|e| {
            // Logged with the ending (once per interval for a client that repeats it).
            debug!(error = %e, "undecodable frame");
            Ending::Close(CloseCode::InvalidData, truncate_reason(&e.to_string()))
        })?;
        self.ctx.metrics.messages_in.inc_by(msgs.len() as u64);
        self.ctx.metrics.bytes_in.inc_by(frame.len() as u64);
        let step1 = msgs.iter().any(|m| matches!(m, Message::SyncStep1(_)));
        let joined = match &self.room {
            Some(room) => room.send(Command::Messages(self.peer.id, msgs)).await,
            None => false,
        };
        if !joined {
            return Err(Ending::Close(CloseCode::Internal, "room closed".into()));
        }
        Ok(if step1 {
            Progress::Handshaken
        } else {
            Progress::Continue
        })
    }

    async fn closed(&mut self) {
        self.token = None;
        if let Some(room) = &self.room {
            room.send(Command::Leave(self.peer.id)).await;
        }
    }

    fn address_budget(&self) -> Option<AddressBudget> {
        Some(self.peer.budget.clone())
    }

    fn metrics(&self) -> Option<Arc<Metrics>> {
        Some(self.ctx.metrics.clone())
    }

    fn handshake(&self) -> Option<(Duration, &'static str)> {
        Some((
            self.ctx.config.handshake_timeout(),
            "no sync step 1 within the handshake timeout",
        ))
    }
}
