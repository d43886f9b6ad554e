//! Golden vectors from the real JavaScript encoders (y-protocols 1.0.7, lib0, yjs 13.6.33):
//! every frame in `testdata/golden.json` decodes to exactly the recorded messages, and
//! re-encoding them gives back exactly the same bytes. Regenerate with
//! `cd shared/testdata/js && npm ci && node gen-golden.mjs > ../golden.json`.

use std::collections::BTreeSet;

use serde::Deserialize;
use weft_protocol::encoding::{write_var_uint, Decoder};
use weft_protocol::{
    decode_frame, AwarenessEntry, AwarenessUpdate, Control, Limits, Message, ProtocolError, Role,
    UserInfo,
};

/// The vectors, compiled in so that editing the file rebuilds the test.
const GOLDEN: &str = include_str!("../testdata/golden.json");

/// One vector of `golden.json`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Vector {
    /// A whole WebSocket frame and the messages in it, in order.
    Frame {
        name: String,
        hex: String,
        expect: Vec<Expected>,
    },
    /// A lone lib0 varUint and its value.
    VarUint {
        name: String,
        hex: String,
        expect: u64,
    },
}

/// The expected decoding of one message, as the generator recorded it from its inputs.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Expected {
    SyncStep1 { payload: String },
    SyncStep2 { payload: String },
    Update { payload: String },
    Awareness { entries: Vec<ExpectedEntry> },
    PermissionDenied { reason: String },
    QueryAwareness,
    Control { json: String },
}

#[derive(Debug, Deserialize)]
struct ExpectedEntry {
    client_id: u64,
    clock: u64,
    state: String,
}

fn unhex(s: &str) -> Vec<u8> {
    let pairs = s.as_bytes().chunks_exact(2);
    assert!(pairs.remainder().is_empty(), "odd-length hex {s:?}");
    pairs
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ASCII hex");
            u8::from_str_radix(pair, 16).expect("hex digit")
        })
        .collect()
}

fn vectors() -> Vec<Vector> {
    serde_json::from_str(GOLDEN).expect("golden.json parses")
}

/// Every frame vector as (name, bytes, expected messages).
fn frames() -> Vec<(String, Vec<u8>, Vec<Message>)> {
    vectors()
        .into_iter()
        .filter_map(|v| match v {
            Vector::Frame { name, hex, expect } => {
                let msgs = expect.into_iter().map(to_message).collect();
                Some((name, unhex(&hex), msgs))
            }
            Vector::VarUint { .. } => None,
        })
        .collect()
}

fn to_message(e: Expected) -> Message {
    match e {
        Expected::SyncStep1 { payload } => Message::SyncStep1(unhex(&payload)),
        Expected::SyncStep2 { payload } => Message::SyncStep2(unhex(&payload)),
        Expected::Update { payload } => Message::Update(unhex(&payload)),
        Expected::Awareness { entries } => Message::Awareness(AwarenessUpdate {
            entries: entries
                .into_iter()
                .map(|e| AwarenessEntry {
                    client_id: e.client_id,
                    clock: e.clock,
                    state: e.state,
                })
                .collect(),
        }),
        Expected::PermissionDenied { reason } => Message::PermissionDenied(reason),
        Expected::QueryAwareness => Message::QueryAwareness,
        Expected::Control { json } => Message::Control(
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("control {json}: {e}")),
        ),
    }
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::SyncStep1(_) => "sync_step1",
        Message::SyncStep2(_) => "sync_step2",
        Message::Update(_) => "update",
        Message::Awareness(_) => "awareness",
        Message::PermissionDenied(_) => "permission_denied",
        Message::QueryAwareness => "query_awareness",
        Message::Control(_) => "control",
    }
}

/// Every JS-encoded frame decodes with the default limits to exactly the recorded messages.
#[test]
fn every_frame_decodes_to_expected_messages() {
    let frames = frames();
    assert!(frames.len() >= 30, "only {} frame vectors", frames.len());
    for (name, bytes, expected) in frames {
        let decoded = decode_frame(&bytes, &Limits::DEFAULT)
            .unwrap_or_else(|e| panic!("{name}: decode failed: {e}"));
        assert_eq!(decoded, expected, "{name}");
    }
}

/// Re-encoding the decoded messages (concatenated for multi-message frames) gives the JS bytes.
#[test]
fn every_frame_re_encodes_to_identical_bytes() {
    for (name, bytes, _) in frames() {
        let decoded = decode_frame(&bytes, &Limits::DEFAULT)
            .unwrap_or_else(|e| panic!("{name}: decode failed: {e}"));
        let reencoded: Vec<u8> = decoded.iter().flat_map(Message::encode).collect();
        assert_eq!(hex(&reencoded), hex(&bytes), "{name}");
    }
}

/// Encoding the expected messages directly, without decoding first, also gives the JS bytes.
#[test]
fn expected_messages_encode_to_js_bytes() {
    for (name, bytes, expected) in frames() {
        let encoded: Vec<u8> = expected.iter().flat_map(Message::encode).collect();
        assert_eq!(hex(&encoded), hex(&bytes), "{name}");
    }
}

/// lib0's varUint edge values (0, 127, 128, 300, 2^14, 2^32, 2^53-1, …) read and write identically.
#[test]
fn var_uint_edges_match_lib0() {
    let mut seen = BTreeSet::new();
    for v in vectors() {
        let Vector::VarUint {
            name,
            hex: h,
            expect,
        } = v
        else {
            continue;
        };
        let bytes = unhex(&h);
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.read_var_uint("n"), Ok(expect), "{name}");
        assert!(d.is_empty(), "{name}: bytes left over");
        let mut out = Vec::new();
        write_var_uint(&mut out, expect);
        assert_eq!(hex(&out), h, "{name}");
        assert_eq!(
            weft_protocol::encoding::var_uint_len(expect),
            bytes.len(),
            "{name}"
        );
        seen.insert(expect);
    }
    for required in [0, 127, 128, 300, 1 << 32, (1 << 53) - 1] {
        assert!(seen.contains(&required), "no vector for {required}");
    }
}

/// JSON.stringify'd control messages decode to the typed variants the schema documents.
#[test]
fn control_vectors_decode_to_typed_variants() {
    let expected = [
        (
            "control_hello_user",
            Control::Hello {
                user: Some(UserInfo {
                    name: "Zoë 🦀".into(),
                    color: Some("#30bced".into()),
                }),
            },
        ),
        ("control_hello", Control::Hello { user: None }),
        (
            "control_typing",
            Control::Typing {
                connection: None,
                user: None,
                active: true,
            },
        ),
        (
            "control_welcome",
            Control::Welcome {
                connection: "6f1c2a4e-0b7d-4c1e-9f3a-2d5e8b7c9a01".into(),
                role: Role::Write,
                room: "Käse & Brot".into(),
                users: 2,
            },
        ),
        (
            "control_saved",
            Control::Saved {
                version: (1 << 53) - 1,
            },
        ),
    ];
    let frames = frames();
    for (name, control) in expected {
        let (_, bytes, _) = frames
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no vector {name}"));
        assert_eq!(
            decode_frame(bytes, &Limits::DEFAULT),
            Ok(vec![Message::Control(control)]),
            "{name}"
        );
    }
}

/// The vector set covers every message kind, multi-message frames and awareness removals.
#[test]
fn golden_set_covers_every_message_kind() {
    let frames = frames();
    let kinds: BTreeSet<&str> = frames
        .iter()
        .flat_map(|(_, _, msgs)| msgs.iter().map(kind))
        .collect();
    let all = [
        "sync_step1",
        "sync_step2",
        "update",
        "awareness",
        "permission_denied",
        "query_awareness",
        "control",
    ];
    assert_eq!(kinds, all.into_iter().collect());
    assert!(frames.iter().filter(|(_, _, m)| m.len() > 1).count() >= 3);
    let removals = frames
        .iter()
        .flat_map(|(_, _, msgs)| msgs)
        .filter_map(|m| match m {
            Message::Awareness(a) => Some(a.entries.iter().filter(|e| e.is_removal()).count()),
            _ => None,
        })
        .sum::<usize>();
    assert!(removals >= 2, "only {removals} awareness removals");
}

/// Cutting a one-message golden frame short anywhere gives a typed error, never a panic or a
/// different message.
#[test]
fn every_truncation_of_a_single_message_frame_is_refused() {
    for (name, bytes, expected) in frames() {
        if expected.len() != 1 {
            continue;
        }
        for cut in 0..bytes.len() {
            let err = decode_frame(&bytes[..cut], &Limits::DEFAULT)
                .expect_err(&format!("{name} cut at {cut} decoded"));
            if cut == 0 {
                assert_eq!(err, ProtocolError::EmptyFrame, "{name}");
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
