//! The room's side of Hocuspocus members, driven in-process: SyncStatus per write once durable
//! (strict and relaxed), refused edits acknowledged with 0 and no y-websocket refusal, stateless
//! relays and notices.

use tokio::sync::{mpsc, oneshot};
use weft_protocol::hocuspocus::Body;
use weft_protocol::{Message, NoticeLevel, Role};
use yrs::{Text, Transact};

use crate::config::Durability;
use crate::outbox::Data;
use crate::room::batch::saved;
use crate::room::{ApiOp, Command};
use crate::testing::fuzzing::{detached_joiner, DirectRoom};

/// Joins member `id` (a Hocuspocus one when `hocuspocus`) and drops what the join sent it.
fn join(d: &mut DirectRoom, id: u64, role: Role, hocuspocus: bool) -> mpsc::Receiver<Data> {
    let (mut joiner, mut rx) = detached_joiner(id, role, 64);
    joiner.hocuspocus = hocuspocus;
    let (reply, _) = oneshot::channel();
    d.room.handle(Command::Join(joiner, reply));
    d.rt.block_on(d.room.finish_batch());
    while rx.try_recv().is_ok() {}
    rx
}

/// Every frame queued for a member so far.
fn frames(rx: &mut mpsc::Receiver<Data>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Ok(Data::Binary(frame)) = rx.try_recv() {
        out.push(frame.to_vec());
    }
    out
}

/// A one-insert Yjs update from a fresh client.
fn insert(text: &str) -> Vec<u8> {
    let doc = crate::room::new_doc();
    let t = doc.get_or_insert_text("content");
    let mut txn = doc.transact_mut();
    t.insert(&mut txn, 0, text);
    txn.encode_update_v1()
}

fn sync_status(stored: bool) -> Vec<u8> {
    Body::SyncStatus(stored).encode()
}

/// Strict durability: each write of a Hocuspocus member (an edit, an empty step 2) is
/// acknowledged once, after the update's broadcast; a y-websocket member gets no SyncStatus.
#[test]
fn writes_are_acknowledged_once_durable() {
    let mut d = DirectRoom::open("hocus-acks", |_| {});
    let mut hocus = join(&mut d, 1, Role::Write, true);
    let mut stock = join(&mut d, 2, Role::Write, false);
    let update = insert("hi");
    let msgs = vec![
        Message::Update(update.clone()),
        Message::SyncStep2(vec![0, 0]),
    ];
    d.room.handle(Command::Messages(1, msgs));
    d.rt.block_on(d.room.finish_batch());
    let broadcast = Message::Update(update).encode();
    assert_eq!(
        frames(&mut hocus),
        vec![broadcast.clone(), sync_status(true), sync_status(true)]
    );
    assert_eq!(frames(&mut stock), vec![broadcast]);
}

/// A read-only Hocuspocus member's edit is acknowledged with 0 (and its empty step 2 with 1),
/// without the y-websocket permission-denied a provider would read as a token request.
#[test]
fn read_only_edits_are_refused_with_status_zero() {
    let mut d = DirectRoom::open("hocus-read-only", |_| {});
    let mut reader = join(&mut d, 1, Role::Read, true);
    let msgs = vec![
        Message::SyncStep2(vec![0, 0]),
        Message::Update(insert("no")),
    ];
    d.room.handle(Command::Messages(1, msgs));
    d.rt.block_on(d.room.finish_batch());
    assert_eq!(
        frames(&mut reader),
        vec![sync_status(true), sync_status(false)]
    );
    assert_eq!(crate::room::load::text_of(d.room.doc()), "");
}

/// Relaxed durability: the acknowledgement waits for the flush the room waits on to say
/// `saved`, and goes out once it lands.
#[test]
fn relaxed_acknowledgements_wait_for_the_flush() {
    let mut d = DirectRoom::open("hocus-relaxed", |c| c.durability = Durability::Relaxed);
    let mut hocus = join(&mut d, 1, Role::Write, true);
    d.room
        .handle(Command::Messages(1, vec![Message::Update(insert("x"))]));
    d.rt.block_on(d.room.finish_batch());
    let before = frames(&mut hocus);
    assert!(
        !before.contains(&sync_status(true)),
        "acknowledged before the flush: {before:?}"
    );
    let done = d.rt.block_on(saved(&mut d.room.unsaved));
    d.rt.block_on(d.room.on_saved(done));
    assert_eq!(frames(&mut hocus), vec![sync_status(true)]);
}

/// A stateless message reaches the other Hocuspocus members only; a notice reaches Hocuspocus
/// members as a stateless message carrying its control JSON, and counts as delivered.
#[test]
fn stateless_relays_and_notices() {
    let mut d = DirectRoom::open("hocus-stateless", |_| {});
    let mut a = join(&mut d, 1, Role::Write, true);
    let mut b = join(&mut d, 2, Role::Read, true);
    let mut stock = join(&mut d, 3, Role::Write, false);
    d.room
        .handle(Command::Stateless(1, "{\"typing\":true}".into()));
    d.rt.block_on(d.room.finish_batch());
    let relayed = Body::Stateless("{\"typing\":true}".into()).encode();
    assert_eq!(frames(&mut b), vec![relayed]);
    assert!(frames(&mut a).is_empty(), "not echoed to the sender");
    assert!(
        frames(&mut stock).is_empty(),
        "y-websocket members never see it"
    );

    d.room
        .handle(Command::Messages(1, vec![Message::Update(insert("n"))]));
    let notice = ApiOp::Notice {
        level: NoticeLevel::Info,
        text: "Deploy at 5pm".into(),
        to: None,
    };
    let (reply, mut answer) = oneshot::channel();
    d.room.handle(Command::Api(notice, reply));
    d.rt.block_on(d.room.finish_batch());
    assert_eq!(
        answer.try_recv(),
        Ok(Ok(crate::room::ApiReply::Delivered(2)))
    );
    let json = r#"{"type":"notice","level":"info","text":"Deploy at 5pm"}"#;
    assert!(frames(&mut b).contains(&Body::Stateless(json.into()).encode()));
}
