//! The unit tests that pin each yrs guard (see the list in the parent module): each feeds the
//! input yrs 0.28 mishandles and checks the room refuses it and stays consistent, or that real
//! input still passes.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::oneshot;
use weft_protocol::{CloseCode, Message, Role};
use yrs::updates::encoder::Encode;
use yrs::{Doc, OffsetKind, Options, ReadTxn, StateVector, Text, Transact, Update};

use super::{clocks_listed_once, decode_state_vector, decode_update};
use crate::room::new_doc;
use crate::room::tests::{
    api_append, consistent_text, doc_from, room_with_writer, send_updates, three_keystrokes,
};
use crate::room::Command;
use crate::testing::fuzzing::detached_joiner;

/// yrs 0.28 applies text that skips clocks of its client out of order, and then leaves it
/// out of every encoding: the room would show it while joiners and restarts lose it. The
/// room refuses such an update ([`CloseCode::InvalidData`]) and stays consistent; sent in
/// order, it applies.
#[test]
fn an_update_that_skips_clocks_is_refused() {
    let [a, b, c] = three_keystrokes();
    let (mut d, outbox) = room_with_writer("gap");
    send_updates(&mut d, &[&a, &c]);
    assert_eq!(
        outbox.closed_with().map(|(code, _)| code),
        Some(CloseCode::InvalidData)
    );
    assert_eq!(consistent_text(&d), "a");

    let (joiner, _rx) = detached_joiner(2, Role::Write, 64);
    let (reply, _) = oneshot::channel();
    d.room.handle(Command::Join(joiner, reply));
    d.room.handle(Command::Messages(
        2,
        vec![Message::Update(b), Message::Update(c)],
    ));
    d.rt.block_on(d.room.finish_batch());
    assert_eq!(consistent_text(&d), "abc");
}

/// A deletion of clocks of the room's own client id that the room has not written yet
/// would be held back by yrs and later applied to every replay of the room's next API
/// edit, but not to the edit itself. It is refused, and the API edit is kept everywhere.
#[test]
fn deleting_the_servers_future_text_is_refused() {
    let [a, _, _] = three_keystrokes();
    let (mut d, outbox) = room_with_writer("own");
    send_updates(&mut d, &[&a]);
    let own = d.room.doc().client_id().get();
    // An update with no structs and the delete set {own: [0, 1000)}, in lib0 encoding.
    let mut forged = vec![0, 1];
    for v in [own, 1, 0, 1000] {
        weft_protocol::encoding::write_var_uint(&mut forged, v);
    }
    send_updates(&mut d, &[&forged]);
    assert_eq!(
        outbox.closed_with().map(|(code, _)| code),
        Some(CloseCode::InvalidData)
    );

    api_append(&mut d, "kept");
    assert_eq!(consistent_text(&d), "akept");
}

/// An update waiting for the room's own next clock (its left neighbour is text the room
/// writes later) integrates as soon as the room writes it, exactly as it does when the
/// store is replayed; yrs alone would retry it only after a remote update.
#[test]
fn a_server_edit_releases_updates_waiting_for_it() {
    let (mut d, _outbox) = room_with_writer("waiting");
    let own = d.room.doc().client_id();
    // A peer that knows what the room will write next (its own client id, clock 0)...
    let forger = Doc::with_options(Options {
        client_id: own,
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    let text = forger.get_or_insert_text("content");
    text.insert(&mut forger.transact_mut(), 0, "A");
    // ...types after it, and sends only its own edit: the room holds it back.
    let peer = doc_from(
        &forger
            .transact()
            .encode_state_as_update_v1(&StateVector::default()),
    );
    let peer_text = peer.get_or_insert_text("content");
    let waiting = {
        let mut txn = peer.transact_mut();
        peer_text.insert(&mut txn, 1, "y");
        txn.encode_update_v1()
    };
    send_updates(&mut d, &[&waiting]);
    assert_eq!(consistent_text(&d), "");

    api_append(&mut d, "z");
    assert_eq!(consistent_text(&d), "zy");
}

/// An item whose parent is an item nobody has: yrs 0.28 holds it back, but trims it against
/// the clocks of its client the room already has and encodes the rest with that clock as its
/// origin and no parent, so a joiner and a restart got "xontent" where the room showed "x"
/// (found by the fuzzer with random client ids; `regressions/room_messages/sequence-item-inside-a-missing-item`
/// is the artifact of that run).
#[test]
fn an_item_inside_a_missing_item_is_refused() {
    let (mut d, outbox) = room_with_writer("dangling-parent");
    let writer = Doc::with_options(Options {
        client_id: yrs::block::ClientID::new(5),
        ..Options::default()
    });
    let text = writer.get_or_insert_text("content");
    let x = {
        let mut txn = writer.transact_mut();
        text.insert(&mut txn, 0, "x");
        txn.encode_update_v1()
    };
    send_updates(&mut d, &[&x]);
    assert_eq!(consistent_text(&d), "x");
    // [1 client] [1 struct of client 5 from clock 0: a string, parent = the item 4#1,
    // "content"] [no deletions]
    let mut inside_missing = vec![1, 1, 5, 0, 4, 0, 4, 1, 7];
    inside_missing.extend_from_slice(b"content");
    inside_missing.push(0);
    send_updates(&mut d, &[&inside_missing]);
    assert_eq!(consistent_text(&d), "x");
    assert!(outbox.closed_with().is_some(), "the sender is closed");
}

/// The one client section of each of `updates` (insertions only), joined into one update.
fn sections(updates: &[&[u8]]) -> Vec<u8> {
    let mut joined = vec![u8::try_from(updates.len()).expect("a few")];
    for u in updates {
        // [1 client] [its section] [an empty delete set]
        assert_eq!((u[0], u[u.len() - 1]), (1, 0), "one client, no deletions");
        joined.extend_from_slice(&u[1..u.len() - 1]);
    }
    joined.push(0);
    joined
}

/// An update listing clocks of one client twice (its section repeated, or a second section
/// starting inside the first) makes yrs 0.28 free a block the document still links: the room
/// and a restart disagreed about the text, then yrs peers the room broadcast it to crashed.
/// Such an update is refused before yrs sees it (applying it here would be undefined
/// behaviour: `regressions/room_messages/update-lists-a-clients-clocks-twice` checks the room
/// in a child process); sections that do not overlap still decode.
#[test]
fn an_update_listing_clocks_twice_is_refused() {
    let [a, b, _] = three_keystrokes();
    let twice = sections(&[&a, &a]);
    let err = decode_update(&twice).map(|_| ()).expect_err("refused");
    assert!(err.contains("lists clocks 0..1 of client"), "{err}");
    // The keystrokes' client has typed "ab" (clocks 0..2); the second keystroke alone is 1..2.
    let client = new_doc();
    for u in [&a, &b] {
        client
            .transact_mut()
            .apply_update(decode_update(u).expect("a real update"))
            .expect("apply");
    }
    let ab = client
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let err = decode_update(&sections(&[&ab, &b]))
        .map(|_| ())
        .expect_err("refused");
    assert!(err.contains("lists clocks 1..2 of client"), "{err}");
    assert!(decode_update(&sections(&[&a, &b])).is_ok());

    let (mut d, outbox) = room_with_writer("twice");
    send_updates(&mut d, &[&twice]);
    assert_eq!(
        outbox.closed_with().map(|(code, _)| code),
        Some(CloseCode::InvalidData)
    );
    assert_eq!(consistent_text(&d), "");

    let (joiner, _rx) = detached_joiner(2, Role::Write, 64);
    let (reply, _) = oneshot::channel();
    d.room.handle(Command::Join(joiner, reply));
    d.room
        .handle(Command::Messages(2, vec![Message::Update(a)]));
    d.rt.block_on(d.room.finish_batch());
    assert_eq!(consistent_text(&d), "a");
}

/// Updates using every shared type, formatting, an embed, a subdocument and deletions, each
/// as its own transaction.
fn every_kind_of_update(doc: &Doc) -> Vec<Vec<u8>> {
    use yrs::types::xml::{Xml, XmlElementPrelim, XmlFragment, XmlTextPrelim};
    use yrs::{Any, Array, Map};
    let mut updates = Vec::new();
    let mut edit = |f: &dyn Fn(&mut yrs::TransactionMut<'_>)| {
        let mut txn = doc.transact_mut();
        f(&mut txn);
        updates.push(txn.encode_update_v1());
    };
    let text = doc.get_or_insert_text("content");
    let map = doc.get_or_insert_map("map");
    let array = doc.get_or_insert_array("array");
    let xml = doc.get_or_insert_xml_fragment("xml");
    edit(&|txn| {
        text.insert(txn, 0, "héllo 👋 wörld");
        let bold = HashMap::from([(Arc::<str>::from("bold"), Any::Bool(true))]);
        text.insert_with_attributes(txn, 0, "bold ", bold.clone());
        text.format(txn, 6, 3, bold);
        text.insert_embed(txn, 2, Any::from("an image"));
    });
    edit(&|txn| {
        map.insert(txn, "number", 1.5);
        map.insert(txn, "nested", yrs::MapPrelim::from([("k", Any::from("v"))]));
        map.insert(txn, "bytes", Any::from(vec![1u8, 2, 3]));
        map.insert(txn, "sub", Doc::new());
        array.insert_range(txn, 0, [Any::from(1), Any::from("two"), Any::Null]);
        array.push_back(txn, yrs::ArrayPrelim::default());
        let p = xml.insert(txn, 0, XmlElementPrelim::empty("p"));
        p.insert(txn, 0, XmlTextPrelim::new("para"));
        p.insert_attribute(txn, "class", "x");
    });
    edit(&|txn| {
        text.insert(txn, 0, "again ");
        text.remove_range(txn, 1, 4);
        array.remove(txn, 1);
        map.remove(txn, "number");
    });
    updates
}

/// The clock walk reads every kind of struct exactly as yrs does: a document using every
/// shared type, formatting, an embed, a subdocument, deletions, and a merge with a gap (a
/// skip) passes, and so do its incremental updates.
#[test]
fn every_kind_of_struct_passes_the_clock_walk() {
    let doc = new_doc();
    let updates = every_kind_of_update(&doc);
    let state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    for u in updates.iter().chain([&state]) {
        assert!(clocks_listed_once(u).is_ok(), "{u:?}");
        assert!(decode_update(u).is_ok());
    }
    // The first and the last update: a gap, which the merge fills with a skip.
    let gap = yrs::merge_updates_v1([updates[0].as_slice(), updates[2].as_slice()]).expect("merge");
    assert!(clocks_listed_once(&gap).is_ok());
}

/// A few bytes declaring millions of clients are refused before yrs reserves a table for
/// them (which would cost half a GiB and most of a second); real updates and state vectors
/// pass.
#[test]
fn oversized_counts_are_refused_before_decoding() {
    let mut bomb = Vec::new();
    weft_protocol::encoding::write_var_uint(&mut bomb, 0x0fff_ffff);
    let err = decode_update(&bomb).map(|_| ()).expect_err("refused");
    assert!(err.contains("declares 268435455 clients"), "{err}");
    let err = decode_state_vector(&bomb).map(|_| ()).expect_err("refused");
    assert!(err.contains("state vector declares"), "{err}");

    let [a, b, _] = three_keystrokes();
    let doc = new_doc();
    for u in [&a, &b] {
        doc.transact_mut()
            .apply_update(decode_update(u).expect("a real update"))
            .expect("apply");
    }
    let sv = doc.transact().state_vector().encode_v1();
    assert_eq!(
        decode_state_vector(&sv).expect("a real state vector").len(),
        1
    );
    assert!(decode_update(&Update::new().encode_v1()).is_ok());
    assert!(decode_state_vector(&StateVector::default().encode_v1()).is_ok());
}
