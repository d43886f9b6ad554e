//! Wire compatibility with yrs 0.28 (`yrs::sync::Message`): for every message kind yrs has,
//! bytes encoded by yrs decode in weft-protocol to the same content, weft-protocol's encoding of
//! that content is byte-for-byte what yrs writes, and yrs reads weft-protocol's bytes back.
//! Document payloads come from real yrs `Doc`s.

use std::collections::HashMap;

use weft_protocol::{
    decode_frame, AwarenessEntry, AwarenessUpdate, Control, Limits, Message, ProtocolError,
    MESSAGE_CONTROL,
};
use yrs::sync::awareness::AwarenessUpdateEntry;
use yrs::sync::{Awareness, DefaultProtocol, Protocol, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::{Encode, Encoder, EncoderV1};
use yrs::{
    ClientID, Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Text, Transact, Update,
};

type YMessage = yrs::sync::Message;

/// Asserts the three directions of compatibility for one message.
fn assert_compatible(y: &YMessage, w: &Message) {
    let y_bytes = y.encode_v1();
    assert_eq!(
        decode_frame(&y_bytes, &Limits::DEFAULT).as_deref(),
        Ok(std::slice::from_ref(w)),
        "weft decoding of yrs bytes for {y:?}"
    );
    assert_eq!(w.encode(), y_bytes, "weft encoding of {w:?}");
    assert_eq!(
        &YMessage::decode_v1(&w.encode()).expect("yrs decodes weft bytes"),
        y,
        "yrs decoding of weft bytes"
    );
}

/// A document that counts offsets in UTF-16 code units like Yjs, with a fixed client id.
fn doc(client_id: u64) -> Doc {
    Doc::with_options(Options {
        client_id: ClientID::new(client_id),
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

/// Runs `edit` on `doc` and returns the v1 update it produced (what a peer broadcasts).
fn edit(doc: &Doc, edit: impl FnOnce(&mut yrs::TransactionMut<'_>)) -> Vec<u8> {
    let before = doc.transact().state_vector();
    edit(&mut doc.transact_mut());
    doc.transact().encode_state_as_update_v1(&before)
}

/// Alice's document: typing with an emoji and non-Latin text, a delete and a format, as separate
/// transactions; returns the document and the update of each transaction.
fn alice() -> (Doc, Vec<Vec<u8>>) {
    let d = doc(1_234_567);
    let text = d.get_or_insert_text("content");
    let updates = vec![
        edit(&d, |t| text.insert(t, 0, "Hello, world!")),
        edit(&d, |t| text.insert(t, 7, "🦀 ")),
        edit(&d, |t| {
            let end = text.len(t);
            text.insert(t, end, " Zoë — 日本語");
        }),
        edit(&d, |t| text.remove_range(t, 0, 7)),
        edit(&d, |t| {
            text.format(t, 0, 2, HashMap::from([("bold".into(), true.into())]));
        }),
    ];
    (d, updates)
}

fn text_of(d: &Doc) -> String {
    let text = d.get_or_insert_text("content");
    text.get_string(&d.transact())
}

/// Sync step 1 with real state vectors (empty, one client, two clients with large ids) matches.
#[test]
fn sync_step1_matches_yrs() {
    let (alice, updates) = alice();
    let bob = doc((1 << 53) - 1);
    bob.transact_mut()
        .apply_update(Update::decode_v1(&updates[0]).unwrap())
        .unwrap();
    let bob_text = bob.get_or_insert_text("content");
    bob_text.insert(&mut bob.transact_mut(), 0, ">> ");
    for d in [&doc(1), &alice, &bob] {
        let sv = d.transact().state_vector();
        assert_compatible(
            &YMessage::Sync(SyncMessage::SyncStep1(sv.clone())),
            &Message::SyncStep1(sv.encode_v1()),
        );
    }
}

/// Sync step 2 with a full state and with a diff against a peer's state vector matches, and the
/// payload weft decodes rebuilds the same text in a fresh yrs document.
#[test]
fn sync_step2_matches_yrs() {
    let (alice, updates) = alice();
    let bob = doc(42);
    bob.transact_mut()
        .apply_update(Update::decode_v1(&updates[0]).unwrap())
        .unwrap();
    let full = alice
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let diff = alice
        .transact()
        .encode_state_as_update_v1(&bob.transact().state_vector());
    assert!(diff.len() < full.len());
    for payload in [full.clone(), diff] {
        assert_compatible(
            &YMessage::Sync(SyncMessage::SyncStep2(payload.clone())),
            &Message::SyncStep2(payload),
        );
    }

    let frame = YMessage::Sync(SyncMessage::SyncStep2(full)).encode_v1();
    let [Message::SyncStep2(payload)] = &decode_frame(&frame, &Limits::DEFAULT).unwrap()[..] else {
        panic!("not one step 2");
    };
    let fresh = doc(7);
    fresh
        .transact_mut()
        .apply_update(Update::decode_v1(payload).unwrap())
        .unwrap();
    assert_eq!(text_of(&fresh), "🦀 world! Zoë — 日本語");
    assert_eq!(text_of(&fresh), text_of(&alice));
}

/// Incremental updates (insert, emoji, delete, format) match, and replaying the payloads weft
/// decoded reproduces the document.
#[test]
fn update_matches_yrs() {
    let (alice, updates) = alice();
    let replica = doc(99);
    for u in &updates {
        assert_compatible(
            &YMessage::Sync(SyncMessage::Update(u.clone())),
            &Message::Update(u.clone()),
        );
        let frame = YMessage::Sync(SyncMessage::Update(u.clone())).encode_v1();
        let [Message::Update(payload)] = &decode_frame(&frame, &Limits::DEFAULT).unwrap()[..]
        else {
            panic!("not one update");
        };
        replica
            .transact_mut()
            .apply_update(Update::decode_v1(payload).unwrap())
            .unwrap();
    }
    assert_eq!(text_of(&replica), text_of(&alice));
}

/// A yrs awareness update with several clients, unicode names and a removed (`null`) client
/// decodes to the same entries, and weft's encoding of them in the same order is yrs' bytes.
#[test]
fn awareness_matches_yrs() {
    let mut hub = Awareness::new(doc(1_234_567));
    hub.set_local_state(serde_json::json!({
        "user": { "name": "Alice 🦀", "color": "#30bced", "colorLight": "#30bced33" }
    }))
    .unwrap();
    let peers: [(u64, serde_json::Value); 3] = [
        (
            (1 << 53) - 1,
            serde_json::json!({"user": {"name": "Bob \"the builder\"\n", "color": "#f00"}}),
        ),
        (128, serde_json::json!({"user": {"name": "日本語 👩🏽‍💻"}})),
        (300, serde_json::json!({})),
    ];
    for (id, state) in peers {
        let mut peer = Awareness::new(doc(id));
        peer.set_local_state(state).unwrap();
        peer.set_local_state_raw(peer.local_state_raw().unwrap()); // bump the clock
        hub.apply_update(peer.update().unwrap()).unwrap();
        if id == 300 {
            peer.clean_local_state();
            hub.apply_update(peer.update_with_clients([ClientID::new(300)]).unwrap())
                .unwrap();
        }
    }
    let ids = [1_234_567, (1 << 53) - 1, 128, 300].map(ClientID::new);
    let update = hub.update_with_clients(ids).unwrap();
    assert_eq!(update.clients.len(), 4);
    assert_eq!(&*update.clients[&ClientID::new(300)].json, "null");

    // The same content in weft's types, in the order yrs iterates (and so encodes) its map.
    let entries: Vec<AwarenessEntry> = update
        .clients
        .iter()
        .map(|(id, e)| AwarenessEntry {
            client_id: id.get(),
            clock: u64::from(e.clock),
            state: e.json.to_string(),
        })
        .collect();
    assert_eq!(entries.iter().filter(|e| e.is_removal()).count(), 1);
    let w = Message::Awareness(AwarenessUpdate { entries });
    assert_compatible(&YMessage::Awareness(update), &w);
    assert_compatible(
        &YMessage::Awareness(yrs::sync::AwarenessUpdate {
            clients: HashMap::new(),
        }),
        &Message::Awareness(AwarenessUpdate::default()),
    );
}

/// Awareness entries at yrs' limits (53-bit client id, `u32::MAX` clock) round-trip exactly.
#[test]
fn awareness_extreme_values_match_yrs() {
    let id = (1 << 53) - 1;
    let y = YMessage::Awareness(yrs::sync::AwarenessUpdate {
        clients: HashMap::from([(
            ClientID::new(id),
            AwarenessUpdateEntry {
                clock: u32::MAX,
                json: "{\"x\":[1,2,3]}".into(),
            },
        )]),
    });
    let w = Message::Awareness(AwarenessUpdate {
        entries: vec![AwarenessEntry {
            client_id: id,
            clock: u64::from(u32::MAX),
            state: "{\"x\":[1,2,3]}".into(),
        }],
    });
    assert_compatible(&y, &w);
}

/// yrs' permission-denied auth message matches, including a unicode and an empty reason.
#[test]
fn auth_permission_denied_matches_yrs() {
    for reason in ["read-only connection", "Zugriff verweigert — 🔒", ""] {
        assert_compatible(
            &YMessage::Auth(Some(reason.into())),
            &Message::PermissionDenied(reason.into()),
        );
    }
}

/// yrs' "permission granted" (auth sub-type 1) is not part of y-protocols' auth.js; weft refuses
/// it with a typed error naming the sub-type.
#[test]
fn auth_permission_granted_is_refused_by_name() {
    let bytes = YMessage::Auth(None).encode_v1();
    assert_eq!(bytes, [2, 1]);
    assert_eq!(
        decode_frame(&bytes, &Limits::DEFAULT),
        Err(ProtocolError::UnknownAuthType(1))
    );
}

/// Query-awareness matches yrs' `AwarenessQuery`.
#[test]
fn awareness_query_matches_yrs() {
    assert_compatible(&YMessage::AwarenessQuery, &Message::QueryAwareness);
}

/// Weft's control message (tag 100) is, on the wire, yrs' `Custom(100, json)`: yrs peers can
/// carry it without understanding it.
#[test]
fn control_is_a_yrs_custom_message() {
    let controls = [
        Control::Saved { version: 7 },
        Control::Typing {
            connection: Some("c1".into()),
            user: None,
            active: true,
        },
    ];
    for c in controls {
        let tag = u8::try_from(MESSAGE_CONTROL).unwrap();
        assert_compatible(
            &YMessage::Custom(tag, c.to_json().into_bytes()),
            &Message::Control(c),
        );
    }
}

/// yrs' `Protocol::start` packs step 1 and awareness into one buffer; weft reads both, in order.
#[test]
fn yrs_protocol_start_frame_holds_two_messages() {
    let (alice, _) = alice();
    let mut awareness = Awareness::new(alice);
    awareness
        .set_local_state(serde_json::json!({"user": {"name": "Alice"}}))
        .unwrap();
    let mut enc = EncoderV1::new();
    DefaultProtocol.start(&awareness, &mut enc).unwrap();
    let frame = enc.to_vec();

    let sv = awareness.doc().transact().state_vector().encode_v1();
    let decoded = decode_frame(&frame, &Limits::DEFAULT).unwrap();
    assert_eq!(
        decoded,
        vec![
            Message::SyncStep1(sv),
            Message::Awareness(AwarenessUpdate {
                entries: vec![AwarenessEntry {
                    client_id: 1_234_567,
                    clock: 1,
                    state: r#"{"user":{"name":"Alice"}}"#.into(),
                }],
            }),
        ]
    );
    let reencoded: Vec<u8> = decoded.iter().flat_map(Message::encode).collect();
    assert_eq!(reencoded, frame);
}
