//! Property tests: decoding arbitrary or mutated bytes never panics, every `Message` survives
//! encode → decode unchanged (alone and packed several to a frame), and every `u64` survives the
//! lib0 varUint codec.

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Map, Number, Value};
use weft_protocol::encoding::{var_uint_len, write_var_uint, Decoder};
use weft_protocol::{
    decode_frame, AwarenessEntry, AwarenessUpdate, Control, Limits, Message, NoticeLevel, Role,
    RoomName, UserInfo,
};

/// Limits small enough that almost every field of a random frame trips one.
const TINY: Limits = Limits {
    max_message: 8,
    max_awareness_state: 4,
    max_room_name: 1,
    max_frame_messages: 1,
};

/// Any JSON value, a few levels deep, with arbitrary unicode strings and finite numbers.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((any::<String>(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An awareness state as a JS peer would send it: compact or pretty JSON text, or `null`.
fn awareness_state() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("null".to_owned()),
        4 => json_value().prop_map(|v| v.to_string()),
        1 => json_value().prop_map(|v| serde_json::to_string_pretty(&v).unwrap()),
    ]
}

fn awareness_update() -> impl Strategy<Value = AwarenessUpdate> {
    vec(
        (any::<u64>(), any::<u64>(), awareness_state()).prop_map(|(client_id, clock, state)| {
            AwarenessEntry {
                client_id,
                clock,
                state,
            }
        }),
        0..8,
    )
    .prop_map(|entries| AwarenessUpdate { entries })
}

fn user() -> impl Strategy<Value = Option<UserInfo>> {
    proptest::option::of(
        (any::<String>(), proptest::option::of(any::<String>()))
            .prop_map(|(name, color)| UserInfo { name, color }),
    )
}

/// Every `Control` variant with arbitrary field values.
fn control() -> impl Strategy<Value = Control> {
    let role = prop_oneof![Just(Role::Read), Just(Role::Write)];
    let level = prop_oneof![
        Just(NoticeLevel::Info),
        Just(NoticeLevel::Warning),
        Just(NoticeLevel::Error)
    ];
    prop_oneof![
        user().prop_map(|user| Control::Hello { user }),
        (any::<String>(), role, any::<String>(), any::<u32>()).prop_map(
            |(connection, role, room, users)| Control::Welcome {
                connection,
                role,
                room,
                users
            }
        ),
        (any::<String>(), user(), any::<u32>()).prop_map(|(connection, user, users)| {
            Control::Joined {
                connection,
                user,
                users,
            }
        }),
        (any::<String>(), any::<u32>())
            .prop_map(|(connection, users)| Control::Left { connection, users }),
        (proptest::option::of(any::<String>()), user(), any::<bool>()).prop_map(
            |(connection, user, active)| Control::Typing {
                connection,
                user,
                active
            }
        ),
        (level, any::<String>()).prop_map(|(level, text)| Control::Notice { level, text }),
        (any::<String>(), any::<String>())
            .prop_map(|(code, message)| Control::Error { code, message }),
        any::<u64>().prop_map(|version| Control::Saved { version }),
        Just(Control::Unknown),
    ]
}

/// Every `Message` variant with arbitrary content.
fn message() -> impl Strategy<Value = Message> {
    let payload = || vec(any::<u8>(), 0..300);
    prop_oneof![
        payload().prop_map(Message::SyncStep1),
        payload().prop_map(Message::SyncStep2),
        payload().prop_map(Message::Update),
        awareness_update().prop_map(Message::Awareness),
        any::<String>().prop_map(Message::PermissionDenied),
        Just(Message::QueryAwareness),
        control().prop_map(Message::Control),
    ]
}

/// Arbitrary limits, from absurdly small to unlimited.
fn limits() -> impl Strategy<Value = Limits> {
    let size = prop_oneof![0..64usize, Just(usize::MAX), any::<usize>()];
    (size.clone(), size.clone(), size.clone(), size).prop_map(
        |(max_message, max_awareness_state, max_room_name, max_frame_messages)| Limits {
            max_message,
            max_awareness_state,
            max_room_name,
            max_frame_messages,
        },
    )
}

/// Decoding then re-encoding: if bytes decode, the re-encoded messages decode to the same list.
fn assert_reencode_identity(bytes: &[u8], limits: &Limits) -> Result<(), TestCaseError> {
    if let Ok(msgs) = decode_frame(bytes, limits) {
        let again: Vec<u8> = msgs.iter().flat_map(Message::encode).collect();
        prop_assert_eq!(decode_frame(&again, &Limits::DEFAULT), Ok(msgs));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Arbitrary bytes never panic the decoder, with default or tiny limits.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        let _ = decode_frame(&bytes, &Limits::DEFAULT);
        let _ = decode_frame(&bytes, &TINY);
        assert_reencode_identity(&bytes, &Limits::DEFAULT)?;
    }

    /// Arbitrary bytes behind a valid tag prefix (so decoding goes deep) never panic, under
    /// arbitrary limits.
    #[test]
    fn tagged_arbitrary_bytes_never_panic(
        prefix in prop::sample::select(vec![
            &[0u8, 0][..], &[0, 1], &[0, 2], &[1], &[2, 0], &[3], &[100],
        ]),
        tail in vec(any::<u8>(), 0..256),
        limits in limits(),
    ) {
        let mut bytes = prefix.to_vec();
        bytes.extend(tail);
        let _ = decode_frame(&bytes, &limits);
        assert_reencode_identity(&bytes, &limits)?;
    }

    /// Valid frames with one byte changed, cut short or grown never panic, and what still
    /// decodes re-encodes to the same messages.
    #[test]
    fn mutated_valid_frames_never_panic(
        msgs in vec(message(), 1..4),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        how in 0..3u8,
    ) {
        let mut bytes: Vec<u8> = msgs.iter().flat_map(Message::encode).collect();
        let i = at.index(bytes.len());
        match how {
            0 => bytes[i] = byte,
            1 => bytes.truncate(i),
            _ => bytes.insert(i, byte),
        }
        let _ = decode_frame(&bytes, &TINY);
        assert_reencode_identity(&bytes, &Limits::DEFAULT)?;
    }

    /// Every message round-trips encode → decode unchanged.
    #[test]
    fn message_round_trips(m in message()) {
        let bytes = m.encode();
        prop_assert_eq!(decode_frame(&bytes, &Limits::DEFAULT), Ok(vec![m.clone()]));
        // Re-encoding is byte-identical too: the encoding is canonical.
        prop_assert_eq!(Message::decode_one(&mut Decoder::new(&bytes), &Limits::DEFAULT)?.encode(), bytes);
    }

    /// Several messages concatenated into one frame decode to the same list, in order.
    #[test]
    fn packed_frames_round_trip(msgs in vec(message(), 1..6)) {
        let frame: Vec<u8> = msgs.iter().flat_map(Message::encode).collect();
        prop_assert_eq!(decode_frame(&frame, &Limits::DEFAULT), Ok(msgs));
    }

    /// Every u64 round-trips the varUint codec in exactly `var_uint_len` bytes.
    #[test]
    fn var_uint_round_trips(v in any::<u64>()) {
        let mut out = Vec::new();
        write_var_uint(&mut out, v);
        prop_assert_eq!(out.len(), var_uint_len(v));
        prop_assert!(out.len() <= 10);
        let mut d = Decoder::new(&out);
        prop_assert_eq!(d.read_var_uint("v"), Ok(v));
        prop_assert!(d.is_empty());
    }

    /// Arbitrary bytes never panic the varUint reader, and a value it reads re-encodes to at most
    /// as many bytes as it consumed.
    #[test]
    fn var_uint_reader_never_panics(bytes in vec(any::<u8>(), 0..16)) {
        let mut d = Decoder::new(&bytes);
        if let Ok(v) = d.read_var_uint("v") {
            prop_assert!(var_uint_len(v) <= d.position());
        }
    }

    /// Arbitrary room names, raw or percent-encoded, never panic validation.
    #[test]
    fn room_names_never_panic(raw in any::<String>(), limits in limits()) {
        let _ = RoomName::parse(&raw, &limits);
        let _ = RoomName::from_percent_encoded(&raw, &limits);
    }
}
