//! The Hocuspocus codec against bytes written the way `@hocuspocus/provider` and
//! `@hocuspocus/server` write them (lib0 encoders, `packages/common/src/auth.ts`).

use super::*;
use crate::AwarenessEntry;

fn dec(frame: &[u8]) -> Result<Envelope, ProtocolError> {
    decode(frame, &Limits::DEFAULT)
}

/// A provider's step 1 for an empty document under address `doc`: `03 'doc' 00 00 01 00`.
#[test]
fn sync_step1_from_a_provider() {
    let frame = [3, b'd', b'o', b'c', 0, 0, 1, 0];
    let env = dec(&frame).unwrap();
    assert_eq!(env.address, "doc");
    assert_eq!(
        env.body,
        Body::Sync {
            message: Message::SyncStep1(vec![0]),
            reply: false
        }
    );
    assert_eq!(encode("doc", &env.body), frame);
}

/// The auth token of a 3.x provider has no version; a 4.x provider's has one.
#[test]
fn auth_token_with_and_without_version() {
    let v3 = [1, b'a', 2, 0, 3, b't', b'o', b'k'];
    assert_eq!(
        dec(&v3).unwrap().body,
        Body::Token {
            token: "tok".into(),
            provider_version: None
        }
    );
    let mut v4 = v3.to_vec();
    v4.extend([5, b'4', b'.', b'8', b'.', b'0']);
    let env = dec(&v4).unwrap();
    assert_eq!(
        env.body,
        Body::Token {
            token: "tok".into(),
            provider_version: Some("4.8.0".into())
        }
    );
    assert_eq!(encode("a", &env.body), v4);
}

/// Server → provider messages: exact bytes of Authenticated, PermissionDenied, SyncStatus,
/// Stateless and Close.
#[test]
fn server_messages_exact_bytes() {
    assert_eq!(
        encode("d", &Body::Authenticated(Scope::ReadWrite)),
        [&[1, b'd', 2, 2, 10][..], b"read-write"].concat()
    );
    assert_eq!(
        encode("d", &Body::Authenticated(Scope::ReadOnly)),
        [&[1, b'd', 2, 2, 8][..], b"readonly"].concat()
    );
    assert_eq!(
        encode("d", &Body::PermissionDenied("no".into())),
        [1, b'd', 2, 1, 2, b'n', b'o']
    );
    assert_eq!(encode("d", &Body::SyncStatus(true)), [1, b'd', 8, 1]);
    assert_eq!(encode("d", &Body::SyncStatus(false)), [1, b'd', 8, 0]);
    assert_eq!(
        encode("d", &Body::Stateless("{}".into())),
        [1, b'd', 5, 2, b'{', b'}']
    );
    assert_eq!(encode("d", &Body::Close("x".into())), [1, b'd', 7, 1, b'x']);
    for body in [
        Body::Authenticated(Scope::ReadOnly),
        Body::PermissionDenied("no".into()),
        Body::SyncStatus(false),
        Body::Stateless("{}".into()),
        Body::Close("x".into()),
        Body::TokenRequest,
        Body::QueryAwareness,
        Body::BroadcastStateless("b".into()),
        Body::Ping,
        Body::Pong,
    ] {
        assert_eq!(dec(&encode("d", &body)).unwrap().body, body);
    }
}

/// A y-websocket frame with an address in front is the Hocuspocus message of the same type.
#[test]
fn y_websocket_frames_take_an_address() {
    let awareness = Message::Awareness(AwarenessUpdate {
        entries: vec![AwarenessEntry {
            client_id: 7,
            clock: 1,
            state: r#"{"user":"a"}"#.into(),
        }],
    });
    for m in [
        Message::SyncStep1(vec![0]),
        Message::SyncStep2(vec![0, 0]),
        Message::Update(vec![1, 2]),
        Message::QueryAwareness,
        awareness.clone(),
    ] {
        let body = m.encode();
        assert!(is_provider_body(&body), "{m:?}");
        let env = dec(&address_frame("n", &body)).unwrap();
        let expected = match m {
            Message::Awareness(a) => Body::Awareness(a),
            Message::QueryAwareness => Body::QueryAwareness,
            message => Body::Sync {
                message,
                reply: false,
            },
        };
        assert_eq!(env.body, expected);
    }
    assert!(!is_provider_body(
        &Message::PermissionDenied("r".into()).encode()
    ));
    assert!(!is_provider_body(
        &Message::Control(crate::Control::Saved { version: 1 }).encode()
    ));
    assert!(is_provider_body(&Body::SyncStatus(true).encode()));
    assert!(is_provider_body(&Body::Stateless("s".into()).encode()));
}

/// SyncReply (type 4) decodes as a sync message marked `reply`.
#[test]
fn sync_reply_is_marked() {
    let env = dec(&[1, b'd', 4, 1, 2, 0, 0]).unwrap();
    assert_eq!(
        env.body,
        Body::Sync {
            message: Message::SyncStep2(vec![0, 0]),
            reply: true
        }
    );
}

/// A v4 session-aware address names its document before the separator.
#[test]
fn session_addresses_name_their_document() {
    assert_eq!(document_name("notes\0abc"), "notes");
    assert_eq!(document_name("notes"), "notes");
    let env = dec(&[7, b'n', 0, b's', b'e', b's', b's', b'x', 3]).unwrap();
    assert_eq!(env.document_name(), "n");
    assert_eq!(env.address, "n\0sessx");
}

/// Hostile input gives typed errors: empty, trailing bytes, unknown types, lengths past the
/// input or the limits, a bad scope.
#[test]
fn hostile_messages_are_typed_errors() {
    assert_eq!(dec(&[]), Err(ProtocolError::EmptyFrame));
    assert_eq!(
        dec(&[1, b'd', 3, 0]),
        Err(ProtocolError::TrailingBytes {
            what: "Hocuspocus message",
            count: 1
        })
    );
    assert_eq!(
        dec(&[1, b'd', 11]),
        Err(ProtocolError::UnknownMessageType(11))
    );
    assert_eq!(
        dec(&[1, b'd', 0, 3, 0]),
        Err(ProtocolError::UnknownSyncType(3))
    );
    assert_eq!(
        dec(&[1, b'd', 2, 9]),
        Err(ProtocolError::UnknownAuthType(9))
    );
    assert_eq!(
        dec(&[1, b'd', 8, 2]),
        Err(ProtocolError::UnknownSyncType(2))
    );
    assert_eq!(
        dec(&[1, b'd', 2, 2, 1, b'x']),
        Err(ProtocolError::InvalidAuthScope)
    );
    assert_eq!(
        dec(&[9, b'd']),
        Err(ProtocolError::LengthExceedsInput {
            what: "document address",
            declared: 9,
            available: 1
        })
    );
    let long = [&[0x80, 0x08][..], &[b'a'; 1024][..], &[3][..]].concat();
    assert!(matches!(
        dec(&long),
        Err(ProtocolError::TooLarge {
            what: "document address",
            ..
        })
    ));
    assert_eq!(
        dec(&[1, b'd', 0, 2, 0x80, 0x80, 0x80, 0x80, 0x10]),
        Err(ProtocolError::TooLarge {
            what: "update",
            len: 1 << 32,
            max: Limits::DEFAULT.max_message
        })
    );
    assert_eq!(
        dec(&[1, 0xff, 3]),
        Err(ProtocolError::InvalidUtf8 {
            what: "document address"
        })
    );
}
