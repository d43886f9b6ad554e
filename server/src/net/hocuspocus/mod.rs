//! A Hocuspocus provider's connection (`/hocuspocus`): the [`Handler`] that reads the
//! Hocuspocus framing (`weft_protocol::hocuspocus`: a document address before every message),
//! authenticates each document the socket names with its own token, and makes each one a
//! member of that document's room, next to the y-websocket members. The socket mechanics
//! (queue, pings, rate limits, close handshake) are `socket`'s, as for y-websocket.
//!
//! - **Documents** (`document`): one socket carries several (`HocuspocusProviderWebsocket`
//!   shared by providers). Messages for a document wait until its Auth Token message has been
//!   checked (bounded: [`MAX_PENDING_DOCUMENTS`], [`MAX_PENDING_MESSAGES`], and one maximal
//!   message's bytes); then the document is answered `Authenticated` (`read-write` or
//!   `readonly`) and joins its room, or `PermissionDenied` with the token error's code.
//! - **Closes**: a socket left with no open or waiting document by a refusal is closed with
//!   4401 (the token is missing, invalid, expired or revoked) or 4403 (it does not cover the
//!   document); a socket that serves other documents stays open, and what the refused
//!   document's provider keeps sending is dropped until it sends another token (the addresses
//!   a socket may name are bounded: [`MAX_ADDRESSES`]). What the room closes a member for (an
//!   invalid update, a full queue, a token revoked or expired, a deleted document) closes the
//!   socket: the provider reconnects and resyncs its documents. Undecodable messages close with
//!   1007, text with 1003, BroadcastStateless (server-internal) with 1008.
//! - **Ping**: a 4.x provider (one that sent its version with a token) gets the
//!   connection-level Ping every [`PING_EVERY`]; 3.x providers cannot parse it and rely on the
//!   room's keepalive awareness.

mod document;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crate::net::upgrade::WebSocket;
use bytes::Bytes;
use tracing::{debug, info_span, Instrument as _};
use weft_protocol::hocuspocus::{self, Body, Envelope};
use weft_protocol::{CloseCode, Limits, Role, RoomName};

use crate::metrics::Metrics;
use crate::net::connection::log_ending;
use crate::net::metered::ReadMeter;
use crate::net::socket::{self, truncate_reason, AddressBudget, Handler, Progress};
use crate::outbox::{Data, Ending, Outbox};
use crate::room::registry::RoomContext;
use crate::token::{AuthError, Lifetime};

use document::Document;

/// Documents of one socket that may wait for their token's answer at once. A provider sends
/// its token first, so only a hostile client has many waiting.
const MAX_PENDING_DOCUMENTS: usize = 16;

/// Messages that may wait, over all a socket's documents, until their tokens are checked.
const MAX_PENDING_MESSAGES: usize = 256;

/// Documents one socket may have open: each is a room member, so without a cap one socket
/// would take the place of any number of connections.
const MAX_DOCUMENTS: usize = 64;

/// Addresses one socket may have named (open, waiting or refused documents): a refused one is
/// remembered so that what its provider keeps sending is dropped, and this bounds that memory.
const MAX_ADDRESSES: usize = MAX_DOCUMENTS + 2 * MAX_PENDING_DOCUMENTS;

/// How often a 4.x provider is pinged. Providers reconnect after 30 s without a message; the
/// rooms' keepalive awareness covers quiet documents too, this covers a socket whose documents
/// all closed.
const PING_EVERY: Duration = Duration::from_secs(15);

/// What a document's token was granted.
#[derive(Debug, Clone)]
pub(crate) struct Granted {
    /// What the member may do.
    pub(crate) role: Role,
    /// The user its token names, if any.
    pub(crate) subject: Option<String>,
    /// When its token was minted and expires (`None` in open mode).
    pub(crate) lifetime: Option<Lifetime>,
}

/// Checks a provider's token for a document, with the rules of y-websocket tokens (signature,
/// expiry, document, revocation; read access at least). It comes from the HTTP layer, which
/// owns the access policy, so the network layer never imports it.
pub(crate) type Authorize =
    Arc<dyn Fn(&str, &RoomName) -> Result<Granted, AuthError> + Send + Sync>;

/// Who is on the other end, as admitted by the upgrade.
pub(crate) struct Client {
    /// Remote address, for logs.
    pub(crate) addr: SocketAddr,
    /// The byte budget it shares with the other connections from its address.
    pub(crate) budget: AddressBudget,
    /// What it has read of messages not yet whole, charged to the server's read budget.
    pub(crate) meter: Option<Arc<ReadMeter>>,
    /// How each document's token is checked.
    pub(crate) authorize: Authorize,
    /// Where each document's member id comes from (shared with y-websocket connections).
    pub(crate) next_conn: Arc<AtomicU64>,
}

/// Serves one upgraded WebSocket speaking the Hocuspocus framing until it closes.
pub(crate) async fn serve(socket: WebSocket, ctx: Arc<RoomContext>, mut client: Client) {
    let span = info_span!("hocuspocus", peer = %client.addr);
    let meter = client.meter.take();
    let ip = client.addr.ip();
    let mut connection = Hocuspocus {
        limits: ctx.config.limits(),
        ctx: ctx.clone(),
        client,
        outbox: None,
        docs: HashMap::new(),
        ping: None,
    };
    let ending = socket::serve(socket, &mut connection, &ctx.config, &ctx.shutdown, meter)
        .instrument(span.clone())
        .await;
    span.in_scope(|| log_ending(ending, ip));
}

/// One socket's documents and what it shares between them.
struct Hocuspocus {
    ctx: Arc<RoomContext>,
    client: Client,
    /// Decoding limits, computed once per connection.
    limits: Limits,
    /// The socket's queue, once open.
    outbox: Option<Outbox>,
    /// Its documents by address, waiting for their token or open.
    docs: HashMap<String, Document>,
    /// Pings a 4.x provider; aborted when the socket ends.
    ping: Option<tokio::task::JoinHandle<()>>,
}

impl Handler for Hocuspocus {
    async fn open(&mut self, outbox: Outbox) -> Result<(), Ending> {
        debug!("connected");
        self.outbox = Some(outbox);
        Ok(())
    }

    async fn message(&mut self, data: Data) -> Result<Progress, Ending> {
        let frame = match data {
            Data::Binary(frame) => frame,
            Data::Text(_) => {
                return Err(Ending::Close(
                    CloseCode::Unsupported,
                    "text frames are not supported; send binary Hocuspocus messages".into(),
                ))
            }
        };
        self.ctx.metrics.messages_in.inc();
        self.ctx.metrics.bytes_in.inc_by(frame.len() as u64);
        if frame.as_ref() == hocuspocus::PONG {
            return Ok(Progress::Continue);
        }
        let envelope = hocuspocus::decode(&frame, &self.limits).map_err(|e| {
            debug!(error = %e, "undecodable message");
            Ending::Close(CloseCode::InvalidData, truncate_reason(&e.to_string()))
        })?;
        self.dispatch(envelope, frame.len()).await
    }

    async fn closed(&mut self) {
        if let Some(ping) = self.ping.take() {
            ping.abort();
        }
        for (_, doc) in self.docs.drain() {
            doc.leave().await;
        }
    }

    fn address_budget(&self) -> Option<AddressBudget> {
        Some(self.client.budget.clone())
    }

    fn metrics(&self) -> Option<Arc<Metrics>> {
        Some(self.ctx.metrics.clone())
    }

    fn handshake(&self) -> Option<(Duration, &'static str)> {
        Some((
            self.ctx.config.handshake_timeout(),
            "no document authenticated within the handshake timeout",
        ))
    }
}

impl Hocuspocus {
    /// The socket's queue (set by `open`, before any message is read).
    fn outbox(&self) -> Result<&Outbox, Ending> {
        self.outbox
            .as_ref()
            .ok_or(Ending::Close(CloseCode::Internal, "not open".into()))
    }

    /// Sends `body` under `address` to the provider.
    fn reply(&self, address: &str, body: &Body) -> Result<(), Ending> {
        let frame = Bytes::from(hocuspocus::encode(address, body));
        self.outbox()?.send(frame);
        Ok(())
    }

    /// Routes one message to its document: a token is checked, a closed document leaves its
    /// room, anything else goes to the open document or waits for its token.
    async fn dispatch(&mut self, envelope: Envelope, len: usize) -> Result<Progress, Ending> {
        let Envelope { address, body } = envelope;
        match body {
            Body::Token {
                token,
                provider_version,
            } => {
                if self.docs.get(&address).is_some_and(Document::is_open) {
                    debug!(address, "token for a document already open; ignored");
                    return Ok(Progress::Continue);
                }
                if !self.docs.contains_key(&address) && self.docs.len() >= MAX_ADDRESSES {
                    return Err(too_much_unauthenticated("documents"));
                }
                if provider_version.is_some() {
                    self.start_pinging()?;
                }
                self.authenticate(address, &token).await
            }
            Body::Close(_) => {
                if let Some(doc) = self.docs.remove(&address) {
                    doc.leave().await;
                }
                Ok(Progress::Continue)
            }
            Body::BroadcastStateless(_) => Err(Ending::Close(
                CloseCode::Policy,
                "BroadcastStateless is server-internal; send Stateless".into(),
            )),
            body => {
                self.deliver(address, body, len).await?;
                Ok(Progress::Continue)
            }
        }
    }

    /// Hands `body` to its open document, or queues it until the document's token is checked.
    async fn deliver(&mut self, address: String, body: Body, len: usize) -> Result<(), Ending> {
        let waiting = self.docs.values().filter(|d| d.is_pending()).count();
        let queued: usize = self.docs.values().map(Document::queued).sum();
        let bytes: usize = self.docs.values().map(Document::queued_bytes).sum();
        let max_bytes = self.ctx.config.max_message;
        let named = self.docs.len();
        let doc = match self.docs.get_mut(&address) {
            Some(doc) => doc,
            None if waiting >= MAX_PENDING_DOCUMENTS || named >= MAX_ADDRESSES => {
                return Err(too_much_unauthenticated("documents"))
            }
            None => self.docs.entry(address).or_insert_with(Document::pending),
        };
        if doc.is_pending() && (queued >= MAX_PENDING_MESSAGES || bytes + len > max_bytes) {
            return Err(too_much_unauthenticated("messages"));
        }
        doc.deliver(body, len, &self.limits).await
    }

    /// Starts pinging the provider (once per socket).
    fn start_pinging(&mut self) -> Result<(), Ending> {
        if self.ping.is_some() {
            return Ok(());
        }
        self.ping = Some(ping(self.outbox()?.clone(), PING_EVERY));
        Ok(())
    }

    /// How many documents are open on this socket.
    fn open_documents(&self) -> usize {
        self.docs.values().filter(|d| d.is_open()).count()
    }
}

/// Sends the connection-level Ping to `outbox` every `every`, until its queue refuses one.
fn ping(outbox: Outbox, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            if !outbox.send(Bytes::from_static(hocuspocus::PING)) {
                return;
            }
        }
    })
}

/// The close for a socket that sends more than may wait for authentication.
fn too_much_unauthenticated(what: &str) -> Ending {
    Ending::Close(
        CloseCode::Policy,
        format!("too many {what} waiting for authentication"),
    )
}

#[cfg(test)]
mod tests;
