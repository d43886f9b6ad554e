//! Typed y-websocket messages and the frame codec: one binary WebSocket message in, a list of
//! [`Message`]s out; one [`Message`] in, one frame's bytes out.

use crate::awareness::AwarenessUpdate;
use crate::control::Control;
use crate::encoding::{var_uint_len, write_var_bytes, write_var_string, write_var_uint, Decoder};
use crate::{Limits, ProtocolError};

/// Top-level tag of sync messages (y-websocket `messageSync`).
pub const MESSAGE_SYNC: u64 = 0;
/// Top-level tag of awareness messages (y-websocket `messageAwareness`).
pub const MESSAGE_AWARENESS: u64 = 1;
/// Top-level tag of auth messages (y-websocket `messageAuth`).
pub const MESSAGE_AUTH: u64 = 2;
/// Top-level tag of query-awareness (y-websocket `messageQueryAwareness`).
pub const MESSAGE_QUERY_AWARENESS: u64 = 3;
/// Top-level tag of Weft control messages; far from the tags y-websocket uses (0–3) so that a
/// future upstream tag does not collide.
pub const MESSAGE_CONTROL: u64 = 100;

/// Sync sub-tag: step 1, carrying a state vector (y-protocols `messageYjsSyncStep1`).
pub const SYNC_STEP1: u64 = 0;
/// Sync sub-tag: step 2, carrying the update the peer is missing (`messageYjsSyncStep2`).
pub const SYNC_STEP2: u64 = 1;
/// Sync sub-tag: an incremental update (`messageYjsUpdate`).
pub const SYNC_UPDATE: u64 = 2;
/// Auth sub-tag: permission denied (y-protocols `auth.js` `messagePermissionDenied`).
pub const AUTH_PERMISSION_DENIED: u64 = 0;

/// One protocol message. Document payloads are Yjs update format v1, kept as opaque bytes: the
/// protocol layer never interprets CRDT content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Sync step 1: the sender's state vector (v1 encoding); answer with step 2.
    SyncStep1(Vec<u8>),
    /// Sync step 2: the update the receiver is missing.
    SyncStep2(Vec<u8>),
    /// An incremental document update.
    Update(Vec<u8>),
    /// Awareness states (cursors, names).
    Awareness(AwarenessUpdate),
    /// The server refuses access, with a reason.
    PermissionDenied(String),
    /// Ask the peer for every awareness state it knows.
    QueryAwareness,
    /// A Weft control message (JSON).
    Control(Control),
}

impl Message {
    /// Whether this message changes the document, so a read-only connection must not send it.
    pub fn is_write(&self) -> bool {
        matches!(self, Message::SyncStep2(_) | Message::Update(_))
    }

    /// Reads one message from `d`.
    ///
    /// # Errors
    /// Any [`ProtocolError`]; nothing is allocated for a length before it is checked.
    pub fn decode_one(d: &mut Decoder<'_>, limits: &Limits) -> Result<Self, ProtocolError> {
        let max = limits.max_message;
        match d.read_var_uint("message type")? {
            MESSAGE_SYNC => {
                let kind = d.read_var_uint("sync message type")?;
                let payload = match kind {
                    SYNC_STEP1 => d.read_var_bytes("state vector", max)?,
                    SYNC_STEP2 | SYNC_UPDATE => d.read_var_bytes("update", max)?,
                    other => return Err(ProtocolError::UnknownSyncType(other)),
                };
                Ok(match kind {
                    SYNC_STEP1 => Message::SyncStep1(payload.to_vec()),
                    SYNC_STEP2 => Message::SyncStep2(payload.to_vec()),
                    _ => Message::Update(payload.to_vec()),
                })
            }
            MESSAGE_AWARENESS => {
                let payload = d.read_var_bytes("awareness update", max)?;
                Ok(Message::Awareness(AwarenessUpdate::decode(
                    payload, limits,
                )?))
            }
            MESSAGE_AUTH => match d.read_var_uint("auth message type")? {
                AUTH_PERMISSION_DENIED => Ok(Message::PermissionDenied(
                    d.read_var_string("auth reason", max)?.to_owned(),
                )),
                other => Err(ProtocolError::UnknownAuthType(other)),
            },
            MESSAGE_QUERY_AWARENESS => Ok(Message::QueryAwareness),
            MESSAGE_CONTROL => {
                let json = d.read_var_string("control message", limits.max_awareness_state)?;
                serde_json::from_str(json)
                    .map(Message::Control)
                    .map_err(|e| ProtocolError::InvalidControl(e.to_string()))
            }
            other => Err(ProtocolError::UnknownMessageType(other)),
        }
    }

    /// Encodes this message as one frame.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::SyncStep1(sv) => encode_sync(SYNC_STEP1, sv),
            Message::SyncStep2(u) => encode_sync(SYNC_STEP2, u),
            Message::Update(u) => encode_sync(SYNC_UPDATE, u),
            Message::Awareness(a) => {
                let payload = a.encode();
                let mut out =
                    Vec::with_capacity(1 + var_uint_len(payload.len() as u64) + payload.len());
                write_var_uint(&mut out, MESSAGE_AWARENESS);
                write_var_bytes(&mut out, &payload);
                out
            }
            Message::PermissionDenied(reason) => {
                let mut out = Vec::with_capacity(2 + 5 + reason.len());
                write_var_uint(&mut out, MESSAGE_AUTH);
                write_var_uint(&mut out, AUTH_PERMISSION_DENIED);
                write_var_string(&mut out, reason);
                out
            }
            Message::QueryAwareness => vec![MESSAGE_QUERY_AWARENESS as u8],
            Message::Control(c) => {
                let json = c.to_json();
                let mut out = Vec::with_capacity(1 + 5 + json.len());
                write_var_uint(&mut out, MESSAGE_CONTROL);
                write_var_string(&mut out, &json);
                out
            }
        }
    }
}

/// Encodes a sync message of sub-type `kind` around `payload` without copying it into a
/// [`Message`] first: the server's hot path for broadcasting updates.
pub fn encode_sync(kind: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + var_uint_len(payload.len() as u64) + payload.len());
    write_var_uint(&mut out, MESSAGE_SYNC);
    write_var_uint(&mut out, kind);
    write_var_bytes(&mut out, payload);
    out
}

/// Decodes one binary WebSocket message into every protocol message it holds, in order.
///
/// y-websocket 3.x clients send one message per frame; v4 may pack several, so all are read.
///
/// # Errors
/// [`ProtocolError::EmptyFrame`] for no bytes, [`ProtocolError::TooLarge`] for a frame over
/// [`Limits::max_message`], or the first error met while decoding.
pub fn decode_frame(frame: &[u8], limits: &Limits) -> Result<Vec<Message>, ProtocolError> {
    check_frame(frame, limits)?;
    let mut d = Decoder::new(frame);
    let mut out = Vec::with_capacity(1);
    while !d.is_empty() {
        if out.len() == limits.max_frame_messages {
            return Err(ProtocolError::TooLarge {
                what: "messages in one frame",
                len: out.len() as u64 + 1,
                max: limits.max_frame_messages,
            });
        }
        out.push(Message::decode_one(&mut d, limits)?);
    }
    Ok(out)
}

/// Refuses a frame before any decoding: empty, or over [`Limits::max_message`] bytes. Every
/// framing (y-websocket, Hocuspocus) checks a whole frame this way first.
pub(crate) fn check_frame(frame: &[u8], limits: &Limits) -> Result<(), ProtocolError> {
    if frame.is_empty() {
        return Err(ProtocolError::EmptyFrame);
    }
    if frame.len() > limits.max_message {
        return Err(ProtocolError::TooLarge {
            what: "frame",
            len: frame.len() as u64,
            max: limits.max_message,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::awareness::AwarenessEntry;

    fn one(frame: &[u8]) -> Message {
        let mut v = decode_frame(frame, &Limits::DEFAULT).unwrap();
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    /// PROTOCOL.md worked examples: empty step 1 is `00 00 01 00`; empty awareness `01 01 00`.
    #[test]
    fn worked_examples() {
        assert_eq!(one(&[0, 0, 1, 0]), Message::SyncStep1(vec![0]));
        assert_eq!(Message::SyncStep1(vec![0]).encode(), [0, 0, 1, 0]);
        assert_eq!(
            one(&[1, 1, 0]),
            Message::Awareness(AwarenessUpdate::default())
        );
        assert_eq!(
            Message::Awareness(AwarenessUpdate::default()).encode(),
            [1, 1, 0]
        );
        assert_eq!(one(&[3]), Message::QueryAwareness);
    }

    /// A frame with several messages decodes to all of them, in order.
    #[test]
    fn multi_message_frame() {
        let mut frame = Message::SyncStep1(vec![0]).encode();
        frame.extend(Message::Update(vec![1, 2, 3]).encode());
        frame.extend(Message::QueryAwareness.encode());
        let msgs = decode_frame(&frame, &Limits::DEFAULT).unwrap();
        assert_eq!(
            msgs,
            vec![
                Message::SyncStep1(vec![0]),
                Message::Update(vec![1, 2, 3]),
                Message::QueryAwareness
            ]
        );
    }

    /// The three hostile frames of the acceptance list each give a typed error.
    #[test]
    fn hostile_frames_are_typed_errors() {
        let l = Limits::DEFAULT;
        assert_eq!(decode_frame(&[], &l), Err(ProtocolError::EmptyFrame));
        // 5 bytes: sync, update, then a varUint declaring 4 GiB.
        assert_eq!(
            decode_frame(&[0x00, 0x02, 0x80, 0x80, 0x80, 0x80, 0x10], &l),
            Err(ProtocolError::TooLarge {
                what: "update",
                len: 1 << 32,
                max: l.max_message
            })
        );
        let roomy = Limits {
            max_message: usize::MAX,
            ..l
        };
        assert_eq!(
            decode_frame(&[0x00, 0x02, 0x80, 0x80, 0x80, 0x80, 0x10], &roomy),
            Err(ProtocolError::LengthExceedsInput {
                what: "update",
                declared: 1 << 32,
                available: 0
            })
        );
        assert_eq!(
            decode_frame(&[0x00, 0x02, 0x80], &l),
            Err(ProtocolError::UnexpectedEnd { what: "update" })
        );
    }

    /// Unknown tags are named in the error.
    #[test]
    fn unknown_tags() {
        let l = Limits::DEFAULT;
        assert_eq!(
            decode_frame(&[9], &l),
            Err(ProtocolError::UnknownMessageType(9))
        );
        assert_eq!(
            decode_frame(&[0, 7, 0], &l),
            Err(ProtocolError::UnknownSyncType(7))
        );
        assert_eq!(
            decode_frame(&[2, 1, 0], &l),
            Err(ProtocolError::UnknownAuthType(1))
        );
    }

    /// Only step 2 and update are writes.
    #[test]
    fn write_classification() {
        assert!(Message::SyncStep2(vec![]).is_write());
        assert!(Message::Update(vec![]).is_write());
        assert!(!Message::SyncStep1(vec![]).is_write());
        assert!(!Message::QueryAwareness.is_write());
        let a = AwarenessUpdate {
            entries: vec![AwarenessEntry {
                client_id: 1,
                clock: 2,
                state: "null".into(),
            }],
        };
        assert!(!Message::Awareness(a).is_write());
    }

    /// Control messages round-trip through tag 100 and a varString of JSON.
    #[test]
    fn control_round_trip() {
        let m = Message::Control(Control::Saved { version: 3 });
        let bytes = m.encode();
        assert_eq!(bytes[0], 100);
        assert_eq!(one(&bytes), m);
        assert!(matches!(
            decode_frame(&[100, 2, b'{', b'x'], &Limits::DEFAULT),
            Err(ProtocolError::InvalidControl(_))
        ));
    }
}
