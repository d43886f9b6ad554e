//! The Hocuspocus framing (`@hocuspocus/provider` 3.x and 4.x), sans I/O: one WebSocket message
//! is `varString(address)` • `varUint(type)` • payload, where the address is the document name
//! (or, for a v4 provider with `sessionAwareness`, `documentName\0sessionId`), so one socket
//! carries several documents.
//!
//! The payloads of types 0 (Sync), 1 (Awareness) and 3 (QueryAwareness) are the y-websocket
//! messages of the same tags, byte for byte: a y-websocket frame becomes a Hocuspocus message by
//! putting the address in front ([`address_frame`]). The other types are Hocuspocus' own
//! ([`Body`]). Auth subtypes differ from y-protocols: 0 Token, 1 PermissionDenied,
//! 2 Authenticated (`packages/common/src/auth.ts`).
//!
//! Two messages carry no address: the server's Ping ([`PING`], a lone `09`, which a 4.x
//! provider answers with a lone `0A`, [`PONG`]); a 3.x provider cannot parse them, so they go
//! only to providers that sent their version with their token.

use crate::encoding::{var_uint_len, write_var_string, write_var_uint, Decoder};
use crate::message::{check_frame, Message, MESSAGE_SYNC, SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE};
use crate::{AwarenessUpdate, Limits, ProtocolError};

/// Type 0: a y-protocols sync message (step 1, step 2 or update).
pub const TYPE_SYNC: u64 = 0;
/// Type 1: an awareness update, as y-protocols encodes it.
pub const TYPE_AWARENESS: u64 = 1;
/// Type 2: authentication (subtypes [`AUTH_TOKEN`], [`AUTH_PERMISSION_DENIED`],
/// [`AUTH_AUTHENTICATED`]).
pub const TYPE_AUTH: u64 = 2;
/// Type 3: ask for every awareness state.
pub const TYPE_QUERY_AWARENESS: u64 = 3;
/// Type 4: a sync message that must not trigger another step 1; used between Hocuspocus
/// servers. Providers 3.4.4 and 4.x have no handler for it, so it is never sent to them.
pub const TYPE_SYNC_REPLY: u64 = 4;
/// Type 5: an application message outside the document (`varString`, JSON by convention).
pub const TYPE_STATELESS: u64 = 5;
/// Type 6: a stateless message to broadcast; server-internal in Hocuspocus (its Redis
/// extension), refused from clients.
pub const TYPE_BROADCAST_STATELESS: u64 = 6;
/// Type 7: the document's connection is closed (`varString` reason).
pub const TYPE_CLOSE: u64 = 7;
/// Type 8: acknowledges one update or step 2 (`varUint` 1 = stored, 0 = refused).
pub const TYPE_SYNC_STATUS: u64 = 8;
/// Type 9: application-level ping (sent without an address).
pub const TYPE_PING: u64 = 9;
/// Type 10: application-level pong (sent without an address).
pub const TYPE_PONG: u64 = 10;

/// Auth subtype 0: client → server, the token (and, from 4.x, the provider's version).
pub const AUTH_TOKEN: u64 = 0;
/// Auth subtype 1: server → client, access refused (`varString` reason).
pub const AUTH_PERMISSION_DENIED: u64 = 1;
/// Auth subtype 2: server → client, access granted (`varString` scope).
pub const AUTH_AUTHENTICATED: u64 = 2;

/// The server's connection-level Ping: a lone type byte, no address.
pub const PING: &[u8] = &[TYPE_PING as u8];
/// A 4.x provider's answer to [`PING`].
pub const PONG: &[u8] = &[TYPE_PONG as u8];

/// The byte that separates a document name from a v4 session id in an address.
pub const SESSION_SEPARATOR: char = '\0';

/// Longest token or provider version read, in bytes: a Weft token is a few hundred bytes.
pub const MAX_TOKEN: usize = 8 * 1024;

/// What an authenticated document may do, as the `Authenticated` message names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `read-write`.
    ReadWrite,
    /// `readonly`: edits are refused.
    ReadOnly,
}

impl Scope {
    /// The scope's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ReadWrite => "read-write",
            Scope::ReadOnly => "readonly",
        }
    }
}

/// One Hocuspocus message, without its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Type 0, or type 4 when `reply` (decoded alike: a sync message of step 1, step 2 or update,
    /// as a y-websocket [`Message::SyncStep1`], [`Message::SyncStep2`] or [`Message::Update`]).
    Sync {
        /// The sync message.
        message: Message,
        /// Whether it came as type 4 (SyncReply).
        reply: bool,
    },
    /// Type 1.
    Awareness(AwarenessUpdate),
    /// Type 2, subtype 0 from a client: its token, and its version when it is 4.x or later.
    Token {
        /// The provider's `token` option (empty when it has none).
        token: String,
        /// The provider's version; 3.x providers send none.
        provider_version: Option<String>,
    },
    /// Type 2, subtype 0 from a server with nothing after it: asks the provider for its token.
    TokenRequest,
    /// Type 2, subtype 1.
    PermissionDenied(String),
    /// Type 2, subtype 2.
    Authenticated(Scope),
    /// Type 3.
    QueryAwareness,
    /// Type 5.
    Stateless(String),
    /// Type 6 (server-internal; refused from clients).
    BroadcastStateless(String),
    /// Type 7.
    Close(String),
    /// Type 8: whether the acknowledged update was stored.
    SyncStatus(bool),
    /// Type 9 behind an address (providers never send it; decoded to be ignored).
    Ping,
    /// Type 10 behind an address (as [`Body::Ping`]).
    Pong,
}

/// One decoded message: the address it came under and what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The address: a document name, or `documentName\0sessionId`.
    pub address: String,
    /// The message.
    pub body: Body,
}

impl Envelope {
    /// The document this message is about: the address up to a session separator.
    pub fn document_name(&self) -> &str {
        document_name(&self.address)
    }
}

/// The document an address names (v4 session-aware addresses carry `\0sessionId` after it).
pub fn document_name(address: &str) -> &str {
    address
        .split_once(SESSION_SEPARATOR)
        .map_or(address, |(name, _)| name)
}

/// Decodes one Hocuspocus WebSocket message. A message must be exactly one Hocuspocus message:
/// bytes left after it are an error. The connection-level [`PING`] and [`PONG`] carry no
/// address and are not decoded here.
///
/// # Errors
/// [`ProtocolError::EmptyFrame`], [`ProtocolError::TooLarge`] for a frame over
/// [`Limits::max_message`] or an address over [`Limits::max_room_name`] bytes plus a session id
/// of as many, or the first error met while decoding; nothing is allocated for a length before
/// it is checked.
pub fn decode(frame: &[u8], limits: &Limits) -> Result<Envelope, ProtocolError> {
    check_frame(frame, limits)?;
    let mut d = Decoder::new(frame);
    let max_address = limits.max_room_name.saturating_mul(2).saturating_add(1);
    let address = d
        .read_var_string("document address", max_address)?
        .to_owned();
    let body = decode_body(&mut d, limits)?;
    if !d.is_empty() {
        return Err(ProtocolError::TrailingBytes {
            what: "Hocuspocus message",
            count: d.remaining(),
        });
    }
    Ok(Envelope { address, body })
}

/// Reads the type and payload of one message.
fn decode_body(d: &mut Decoder<'_>, limits: &Limits) -> Result<Body, ProtocolError> {
    let max = limits.max_message;
    let kind = d.read_var_uint("message type")?;
    Ok(match kind {
        TYPE_SYNC | TYPE_SYNC_REPLY => Body::Sync {
            message: decode_sync(d, max)?,
            reply: kind == TYPE_SYNC_REPLY,
        },
        TYPE_AWARENESS => {
            let payload = d.read_var_bytes("awareness update", max)?;
            Body::Awareness(AwarenessUpdate::decode(payload, limits)?)
        }
        TYPE_AUTH => decode_auth(d, max)?,
        TYPE_QUERY_AWARENESS => Body::QueryAwareness,
        TYPE_STATELESS => Body::Stateless(d.read_var_string("stateless payload", max)?.to_owned()),
        TYPE_BROADCAST_STATELESS => {
            Body::BroadcastStateless(d.read_var_string("stateless payload", max)?.to_owned())
        }
        TYPE_CLOSE => Body::Close(d.read_var_string("close reason", max)?.to_owned()),
        TYPE_SYNC_STATUS => match d.read_var_uint("sync status")? {
            0 => Body::SyncStatus(false),
            1 => Body::SyncStatus(true),
            other => return Err(ProtocolError::UnknownSyncType(other)),
        },
        TYPE_PING => Body::Ping,
        TYPE_PONG => Body::Pong,
        other => return Err(ProtocolError::UnknownMessageType(other)),
    })
}

/// Reads a y-protocols sync message.
fn decode_sync(d: &mut Decoder<'_>, max: usize) -> Result<Message, ProtocolError> {
    let kind = d.read_var_uint("sync message type")?;
    Ok(match kind {
        SYNC_STEP1 => Message::SyncStep1(d.read_var_bytes("state vector", max)?.to_vec()),
        SYNC_STEP2 => Message::SyncStep2(d.read_var_bytes("update", max)?.to_vec()),
        SYNC_UPDATE => Message::Update(d.read_var_bytes("update", max)?.to_vec()),
        other => return Err(ProtocolError::UnknownSyncType(other)),
    })
}

/// Reads an auth message of any subtype.
fn decode_auth(d: &mut Decoder<'_>, max: usize) -> Result<Body, ProtocolError> {
    Ok(match d.read_var_uint("auth message type")? {
        AUTH_TOKEN if d.is_empty() => Body::TokenRequest,
        AUTH_TOKEN => {
            let token = d.read_var_string("token", MAX_TOKEN)?.to_owned();
            let provider_version = if d.is_empty() {
                None
            } else {
                Some(d.read_var_string("provider version", MAX_TOKEN)?.to_owned())
            };
            Body::Token {
                token,
                provider_version,
            }
        }
        AUTH_PERMISSION_DENIED => {
            Body::PermissionDenied(d.read_var_string("auth reason", max)?.to_owned())
        }
        AUTH_AUTHENTICATED => match d.read_var_string("auth scope", max)? {
            "read-write" => Body::Authenticated(Scope::ReadWrite),
            "readonly" => Body::Authenticated(Scope::ReadOnly),
            _ => return Err(ProtocolError::InvalidAuthScope),
        },
        other => return Err(ProtocolError::UnknownAuthType(other)),
    })
}

impl Body {
    /// This message without an address: the type, then the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends this message's type and payload to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Body::Sync { message, reply } => {
                let kind = if *reply { TYPE_SYNC_REPLY } else { TYPE_SYNC };
                write_var_uint(out, kind);
                // A y-websocket sync frame is tag 0, the sub-type, the payload: skip its tag.
                let frame = message.encode();
                out.extend_from_slice(frame.get(1..).unwrap_or_default());
            }
            Body::Awareness(update) => {
                out.extend_from_slice(&Message::Awareness(update.clone()).encode());
            }
            Body::Token {
                token,
                provider_version,
            } => {
                write_var_uint(out, TYPE_AUTH);
                write_var_uint(out, AUTH_TOKEN);
                write_var_string(out, token);
                if let Some(version) = provider_version {
                    write_var_string(out, version);
                }
            }
            Body::TokenRequest => {
                write_var_uint(out, TYPE_AUTH);
                write_var_uint(out, AUTH_TOKEN);
            }
            Body::PermissionDenied(reason) => {
                write_var_uint(out, TYPE_AUTH);
                write_var_uint(out, AUTH_PERMISSION_DENIED);
                write_var_string(out, reason);
            }
            Body::Authenticated(scope) => {
                write_var_uint(out, TYPE_AUTH);
                write_var_uint(out, AUTH_AUTHENTICATED);
                write_var_string(out, scope.as_str());
            }
            Body::QueryAwareness => write_var_uint(out, TYPE_QUERY_AWARENESS),
            Body::Stateless(payload) => {
                write_var_uint(out, TYPE_STATELESS);
                write_var_string(out, payload);
            }
            Body::BroadcastStateless(payload) => {
                write_var_uint(out, TYPE_BROADCAST_STATELESS);
                write_var_string(out, payload);
            }
            Body::Close(reason) => {
                write_var_uint(out, TYPE_CLOSE);
                write_var_string(out, reason);
            }
            Body::SyncStatus(stored) => {
                write_var_uint(out, TYPE_SYNC_STATUS);
                write_var_uint(out, u64::from(*stored));
            }
            Body::Ping => write_var_uint(out, TYPE_PING),
            Body::Pong => write_var_uint(out, TYPE_PONG),
        }
    }
}

/// Encodes `body` under `address`: one WebSocket message.
pub fn encode(address: &str, body: &Body) -> Vec<u8> {
    let mut out = Vec::with_capacity(address.len() + 16);
    write_var_string(&mut out, address);
    body.encode_into(&mut out);
    out
}

/// Puts `address` in front of a message body that is already encoded: a y-websocket sync,
/// awareness or query-awareness frame (the same bytes as the Hocuspocus payloads of those
/// types), or a [`Body::encode`].
pub fn address_frame(address: &str, body: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(var_uint_len(address.len() as u64) + address.len() + body.len());
    write_var_string(&mut out, address);
    out.extend_from_slice(body);
    out
}

/// Whether an encoded body (a y-websocket frame the room sends a member) is one a provider
/// understands as the same Hocuspocus type: sync, awareness, query awareness, and the
/// Hocuspocus-only stateless and sync-status bodies. y-websocket auth (`02 00`, which a
/// provider would read as a token request) and Weft control messages are not.
pub fn is_provider_body(body: &[u8]) -> bool {
    matches!(
        body.first().map(|&b| u64::from(b)),
        Some(
            MESSAGE_SYNC
                | TYPE_AWARENESS
                | TYPE_QUERY_AWARENESS
                | TYPE_STATELESS
                | TYPE_SYNC_STATUS
        )
    )
}

#[cfg(test)]
mod tests;
