//! Tests of the room driven in-process (no sockets, no actor task unless a test spawns it),
//! and the helpers the other room tests share: a room with one writer, batches of updates,
//! and the consistency check every guard test ends with.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use weft_protocol::{Message, Role};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact, Update};

use crate::outbox::Outbox;
use crate::room::load::text_of;
use crate::room::{
    load_doc, new_doc, ApiOp, ApiReply, Command, ConnId, Incoming, MAILBOX, MAX_BATCH_BYTES,
};
use crate::testing::fuzzing::{detached_joiner, DirectRoom};

/// A room driven in-process for the consistency tests: one writer joined.
pub(super) fn room_with_writer(name: &str) -> (DirectRoom, Outbox) {
    let mut d = DirectRoom::open(name, |_| {});
    let (joiner, _rx) = detached_joiner(1, Role::Write, 64);
    let outbox = joiner.outbox.clone();
    let (reply, _) = oneshot::channel();
    d.room.handle(Command::Join(joiner, reply));
    d.rt.block_on(d.room.finish_batch());
    (d, outbox)
}

/// Sends `updates` as the writer's update messages and ends the batch.
pub(super) fn send_updates(d: &mut DirectRoom, updates: &[&[u8]]) {
    let msgs = updates
        .iter()
        .map(|u| Message::Update(u.to_vec()))
        .collect();
    d.room.handle(Command::Messages(1, msgs));
    d.rt.block_on(d.room.finish_batch());
}

/// The room's text, after checking that a joiner (a fresh document applying the room's
/// encoded state) and a restart (the store loaded again) both get exactly that text.
pub(super) fn consistent_text(d: &DirectRoom) -> String {
    let text = text_of(d.room.doc());
    let state = d
        .room
        .doc()
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    assert_eq!(
        text_of(&doc_from(&state)),
        text,
        "a joiner would get other text"
    );
    let restarted = load_doc(&d.ctx, &d.room.name).expect("load");
    assert_eq!(
        text_of(&restarted.doc),
        text,
        "a restart would get other text"
    );
    text
}

/// A fresh document holding `update`.
pub(super) fn doc_from(update: &[u8]) -> Doc {
    let doc = new_doc();
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).expect("decode"))
        .expect("apply");
    doc
}

/// Appends `text` through the API and ends the batch.
pub(super) fn api_append(d: &mut DirectRoom, text: &str) {
    let (reply, _) = oneshot::channel();
    d.room
        .handle(Command::Api(ApiOp::Append(text.into()), reply));
    d.rt.block_on(d.room.finish_batch());
}

/// Three keystrokes of one client, each its own update.
pub(super) fn three_keystrokes() -> [Vec<u8>; 3] {
    let client = new_doc();
    let text = client.get_or_insert_text("content");
    ["a", "b", "c"].map(|s| {
        let mut txn = client.transact_mut();
        let end = text.len(&txn);
        text.insert(&mut txn, end, s);
        txn.encode_update_v1()
    })
}

/// Large updates waiting in the mailbox at once are stored in batches of about
/// [`MAX_BATCH_BYTES`], each made durable by its own flush, instead of one flush carrying
/// them all that every other room's edits would have to wait for.
#[test]
fn large_updates_are_flushed_in_bounded_batches() {
    const UPDATES: usize = 32;
    const SIZE: usize = 32 * 1024;
    let DirectRoom { rt, room, ctx, dir } = DirectRoom::open("big", |_| {});
    let (tx, rx) = mpsc::channel(MAILBOX);
    let (writer, _) = detached_joiner(1, Role::Write, 4096);
    let (reader, mut frames) = detached_joiner(2, Role::Read, 4096);
    for joiner in [writer, reader] {
        tx.try_send(Command::Join(joiner, oneshot::channel().0))
            .expect("mailbox");
    }
    // Queued before the room runs, so all of them wait in its mailbox together.
    for i in 0..UPDATES {
        let client = Doc::with_client_id(1_000 + i as u64);
        let text = client.get_or_insert_text("content");
        let mut txn = client.transact_mut();
        text.insert(&mut txn, 0, &"x".repeat(SIZE));
        let update = Message::Update(txn.encode_update_v1());
        tx.try_send(Command::Messages(1, vec![update]))
            .expect("mailbox");
    }
    let before = ctx.metrics.flushes();
    let _running = rt.spawn(room.run(rx));
    let received = rt.block_on(updates_received(&mut frames, UPDATES));
    assert_eq!(received, UPDATES);
    let flushes = ctx.metrics.flushes() - before;
    let bound = (UPDATES * SIZE) as u64 / MAX_BATCH_BYTES;
    assert!(
        flushes >= bound,
        "{UPDATES} updates of {SIZE} bytes took {flushes} flushes; batches of at most \
         {MAX_BATCH_BYTES} bytes need at least {bound}"
    );
    drop(tx);
    drop(rt);
    drop(dir);
}

/// Reads `frames` until `want` update messages came (at most 30 s per frame); how many came.
async fn updates_received(frames: &mut mpsc::Receiver<crate::outbox::Data>, want: usize) -> usize {
    let mut updates = 0;
    while updates < want {
        let next = tokio::time::timeout(Duration::from_secs(30), frames.recv()).await;
        let frame = next
            .expect("the reader got every update within 30 s")
            .expect("the room is running");
        let crate::outbox::Data::Binary(frame) = frame else {
            continue;
        };
        let msgs =
            weft_protocol::decode_frame(&frame, &weft_protocol::Limits::DEFAULT).expect("decodes");
        updates += msgs
            .iter()
            .filter(|m| matches!(m, Message::Update(_)))
            .count();
    }
    updates
}

/// The sync step 2 a member gets for an empty state vector, decoded as a fresh joiner
/// would, with the frame's buffer address (equal addresses: the same cached bytes).
fn step2_for_empty_state(d: &mut DirectRoom, id: ConnId) -> (String, *const u8) {
    let (joiner, mut rx) = detached_joiner(id, Role::Read, 64);
    let (reply, _) = oneshot::channel();
    d.room.handle(Command::Join(joiner, reply));
    let empty = StateVector::default().encode_v1();
    d.room
        .handle(Command::Messages(id, vec![Message::SyncStep1(empty)]));
    d.rt.block_on(d.room.finish_batch());
    while let Ok(crate::outbox::Data::Binary(frame)) = rx.try_recv() {
        let msgs =
            weft_protocol::decode_frame(&frame, &weft_protocol::Limits::DEFAULT).expect("decodes");
        if let Some(Message::SyncStep2(update)) = msgs.into_iter().next() {
            return (text_of(&doc_from(&update)), frame.as_ptr());
        }
    }
    panic!("no sync step 2 for member {id}");
}

/// Joiners with nothing share one encoded step 2 until the document changes; after any
/// change the next one gets the new text.
#[test]
fn joiners_share_the_encoded_document_until_it_changes() {
    let [a, b, _] = three_keystrokes();
    let (mut d, _outbox) = room_with_writer("joins");
    send_updates(&mut d, &[&a]);
    let (first, at) = step2_for_empty_state(&mut d, 10);
    let (second, again) = step2_for_empty_state(&mut d, 11);
    assert_eq!((first.as_str(), second.as_str()), ("a", "a"));
    assert_eq!(at, again, "the second joiner got a new encoding");

    send_updates(&mut d, &[&b]);
    assert_eq!(step2_for_empty_state(&mut d, 12).0, "ab");
    api_append(&mut d, "!");
    assert_eq!(step2_for_empty_state(&mut d, 13).0, "ab!");
}

/// Delivers `incoming` through the inbox, ends the batch, and gives the answer (a refusal comes
/// at once, a write only once the batch is durable).
fn deliver(d: &mut DirectRoom, incoming: Incoming) -> Result<ApiReply, crate::room::ApiOpError> {
    let (reply, mut answer) = oneshot::channel();
    d.room.handle(Command::Inbox(incoming, reply));
    let early = answer.try_recv().ok();
    d.rt.block_on(d.room.finish_batch());
    if let Some(early) = early {
        assert!(early.is_err(), "a write is answered only once durable");
        return early;
    }
    answer.try_recv().expect("answered at the end of the batch")
}

/// An update from no member is validated, applied, stored and broadcast like a member's, and
/// answered once durable; one that does not apply is refused without closing anyone, and a
/// document that does not exist is not written.
#[test]
fn the_inbox_writes_like_a_member_without_one() {
    let [a, _, c] = three_keystrokes();
    let (mut d, outbox) = room_with_writer("inbox");
    let (reader, mut frames) = detached_joiner(2, Role::Read, 64);
    d.room.handle(Command::Join(reader, oneshot::channel().0));
    assert_eq!(
        deliver(&mut d, Incoming::Update(a.clone())),
        Err(crate::room::ApiOpError::NotFound)
    );
    let (reply, _) = oneshot::channel();
    let create = ApiOp::Create {
        text: None,
        title: None,
    };
    d.room.handle(Command::Api(create, reply));
    d.rt.block_on(d.room.finish_batch());
    while frames.try_recv().is_ok() {}

    let written = deliver(&mut d, Incoming::Update(a.clone()));
    assert_eq!(
        written,
        Ok(ApiReply::Written {
            version: 1,
            changed: true
        })
    );
    assert_eq!(consistent_text(&d), "a");
    assert_eq!(updates_in(&mut frames), 1, "the reader got the update");
    let again = deliver(&mut d, Incoming::Update(a));
    assert!(matches!(
        again,
        Ok(ApiReply::Written { changed: false, .. })
    ));
    let gap = deliver(&mut d, Incoming::Update(c));
    assert!(matches!(gap, Err(crate::room::ApiOpError::Invalid(_))));
    assert_eq!(consistent_text(&d), "a");
    assert!(outbox.closed_with().is_none(), "no member is closed");
}

/// How many update messages wait in `frames`.
fn updates_in(frames: &mut mpsc::Receiver<crate::outbox::Data>) -> usize {
    let mut updates = 0;
    while let Ok(crate::outbox::Data::Binary(frame)) = frames.try_recv() {
        let msgs =
            weft_protocol::decode_frame(&frame, &weft_protocol::Limits::DEFAULT).expect("decodes");
        updates += msgs
            .iter()
            .filter(|m| matches!(m, Message::Update(_)))
            .count();
    }
    updates
}
