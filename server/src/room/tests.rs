//! Tests of the room driven in-process (no sockets, no actor task unless a test spawns it),
//! and the helpers the other room tests share: a room with one writer, batches of updates,
//! and the consistency check every guard test ends with.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use weft_protocol::{Limits, Message, Role, RoomName};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact, Update};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::room::load::text_of;
use crate::room::registry::RoomContext;
use crate::room::{
    load_doc, new_doc, ApiOp, ApiReply, Command, ConnId, Incoming, MAILBOX, MAX_BATCH_BYTES,
};
use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::store::commit::GroupCommit;
use crate::store::inflight::InFlight;
use crate::store::{DocMeta, Store, StoreError, StoredDoc};
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
        updates += updates_in_frame(&frame);
    }
    updates
}

/// How many update messages one queued frame carries.
fn updates_in_frame(frame: &crate::outbox::Data) -> usize {
    let crate::outbox::Data::Binary(frame) = frame else {
        return 0;
    };
    weft_protocol::decode_frame(frame, &weft_protocol::Limits::DEFAULT)
        .expect("decodes")
        .iter()
        .filter(|m| matches!(m, Message::Update(_)))
        .count()
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
    // A member's empty step 2 (every joiner's answer to the room's step 1) changes nothing.
    let empty = Doc::new()
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    d.room
        .handle(Command::Messages(1, vec![Message::SyncStep2(empty)]));
    d.rt.block_on(d.room.finish_batch());
    let (third, still) = step2_for_empty_state(&mut d, 14);
    assert_eq!(
        (third.as_str(), still),
        ("a", at),
        "an empty step 2 dropped the cache"
    );

    send_updates(&mut d, &[&b]);
    assert_eq!(step2_for_empty_state(&mut d, 12).0, "ab");
    api_append(&mut d, "!");
    assert_eq!(step2_for_empty_state(&mut d, 13).0, "ab!");
}

/// Delivers `incoming` through the inbox, ends the batch, and gives the answer (a refusal or a
/// rewrite of a stale base comes at once, a write only once the batch is durable).
fn deliver(d: &mut DirectRoom, incoming: Incoming) -> Result<ApiReply, crate::room::ApiOpError> {
    let (reply, mut answer) = oneshot::channel();
    d.room
        .handle(Command::Inbox(incoming, "test".into(), reply));
    let early = answer.try_recv().ok();
    d.rt.block_on(d.room.finish_batch());
    if let Some(early) = early {
        let refused = early.is_err() || early == Ok(ApiReply::BaseChanged);
        assert!(refused, "a write is answered only once durable");
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
        author: "test".into(),
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
    while let Ok(frame) = frames.try_recv() {
        updates += updates_in_frame(&frame);
    }
    updates
}

/// A store that holds the first compaction until the test opens its gate, so a test can act
/// while a room is in the middle of compacting.
struct GatedStore {
    inner: crate::store::SledStore,
    gate: Arc<Gate>,
}

/// Where a compaction waits: `entered` once one reached the store, released by [`Gate::open`].
#[derive(Default)]
struct Gate {
    entered: std::sync::atomic::AtomicBool,
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

impl Gate {
    /// Lets the waiting compaction (and every later one) through.
    fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.opened.notify_all();
    }

    /// Called by the store: marks the compaction as entered and blocks until the gate opens.
    fn pass(&self) {
        self.entered
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            open = self.opened.wait(open).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl crate::store::Store for GatedStore {
    fn load(&self, doc: &RoomName) -> Result<StoredDoc, StoreError> {
        self.inner.load(doc)
    }
    fn append(&self, doc: &RoomName, update: &[u8]) -> Result<u64, StoreError> {
        self.inner.append(doc, update)
    }
    fn compact(
        &self,
        doc: &RoomName,
        snapshot: &[u8],
        upto_seq: u64,
        title: Option<&str>,
    ) -> Result<(), StoreError> {
        self.gate.pass();
        self.inner.compact(doc, snapshot, upto_seq, title)
    }
    fn quarantine(&self, doc: &RoomName, seq: u64, reason: &str) -> Result<(), StoreError> {
        self.inner.quarantine(doc, seq, reason)
    }
    fn set_title(&self, doc: &RoomName, title: &str) -> Result<(), StoreError> {
        self.inner.set_title(doc, title)
    }
    fn pin_title(&self, doc: &RoomName, title: &str) -> Result<(), StoreError> {
        self.inner.pin_title(doc, title)
    }
    fn meta(&self, doc: &RoomName) -> Result<Option<DocMeta>, StoreError> {
        self.inner.meta(doc)
    }
    fn list(&self) -> Result<Vec<DocMeta>, StoreError> {
        self.inner.list()
    }
    fn doc_count(&self) -> u64 {
        self.inner.doc_count()
    }
    fn delete(&self, doc: &RoomName) -> Result<bool, StoreError> {
        self.inner.delete(doc)
    }
    fn move_to_trash(&self, doc: &RoomName, at_ms: u64) -> Result<(), StoreError> {
        self.inner.move_to_trash(doc, at_ms)
    }
    fn take_from_trash(&self, doc: &RoomName) -> Result<bool, StoreError> {
        self.inner.take_from_trash(doc)
    }
    fn trashed(&self, doc: &RoomName) -> Result<Option<u64>, StoreError> {
        self.inner.trashed(doc)
    }
    fn trash(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.trash()
    }
    fn refuse(&self, hash: &[u8; 32], reason: &str) -> Result<(), StoreError> {
        self.inner.refuse(hash, reason)
    }
    fn refused(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        self.inner.refused()
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
    fn check_writable(&self) -> Result<(), StoreError> {
        self.inner.check_writable()
    }
    fn health(&self) -> Result<(), StoreError> {
        self.inner.health()
    }
}

/// A registry of rooms over `store`, as the server builds it, with rooms that unload as soon as
/// they are idle.
fn registry_over(store: Arc<dyn crate::store::Store>, dir: &std::path::Path) -> Arc<RoomContext> {
    let mut config = Config::for_tests(dir.to_path_buf());
    config.idle_unload_secs = 0;
    let commit = GroupCommit::start(store.clone(), Duration::from_secs(3600), |_| {});
    Arc::new(RoomContext::new(
        store,
        commit,
        Arc::new(config),
        Shutdown::new(),
        Stats::default(),
        Arc::new(Metrics::new()),
        Arc::new(InFlight::disabled()),
        crate::feed::Feed::in_memory(),
    ))
}

/// A delete that arrives while the document's room is compacting on its way out (idle unload)
/// stays deleted: the document goes to the trash with its content, no room takes it back
/// out, and a purge that follows leaves nothing the compacting room could write back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_an_idle_unload_stays_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sled = crate::store::SledStore::open(&dir.path().join("db")).expect("store");
    let gate = Arc::new(Gate::default());
    let store = Arc::new(GatedStore {
        inner: sled,
        gate: gate.clone(),
    });
    let ctx = registry_over(store.clone(), dir.path());
    let name = RoomName::parse("race", &Limits::DEFAULT).expect("room name");
    let create = ApiOp::Create {
        text: Some("hello".into()),
        title: None,
        author: "test".into(),
    };
    let created = ctx.api(&name, create).await;
    assert!(
        matches!(created, Ok(ApiReply::Written { .. })),
        "{created:?}"
    );

    // Idle, the room unloads at its next tick: it leaves the registry, then compacts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !gate.entered.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no compaction began"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut delete = tokio::spawn({
        let (ctx, name) = (ctx.clone(), name.clone());
        async move { ctx.api(&name, ApiOp::Delete).await }
    });
    // The delete may finish while the compaction is held (the old behaviour) or wait for it.
    let early = tokio::time::timeout(Duration::from_secs(2), &mut delete).await;
    gate.open();
    let deleted = match early {
        Ok(done) => done,
        Err(_) => delete.await,
    }
    .expect("the delete task");
    assert!(matches!(deleted, Ok(ApiReply::Deleted(_))), "{deleted:?}");
    purge_and_check(&ctx, store.as_ref(), &name, deadline).await;
}

/// Checks that `name` is in the trash with its content and not served, purges it, and checks
/// that nothing of it is left once its rooms stopped.
async fn purge_and_check(
    ctx: &Arc<RoomContext>,
    store: &dyn Store,
    name: &RoomName,
    deadline: tokio::time::Instant,
) {
    let name = name.clone();
    assert!(
        store.trashed(&name).expect("trash").is_some(),
        "not in the trash"
    );
    assert!(
        !store.load(&name).expect("load").updates.is_empty()
            || store.load(&name).expect("load").snapshot.is_some(),
        "the trash keeps the content"
    );
    let text = ctx.api(&name, ApiOp::GetText).await;
    assert_eq!(
        text,
        Err(crate::room::ApiOpError::NotFound),
        "a trashed document is not served"
    );
    let purged = ctx.api(&name, ApiOp::Purge).await;
    assert!(matches!(purged, Ok(ApiReply::Deleted(_))), "{purged:?}");
    while ctx.open_rooms() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "rooms did not stop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        store.trashed(&name).expect("trash"),
        None,
        "still in the trash"
    );
    let stored = store.load(&name).expect("load");
    assert_eq!(
        stored,
        StoredDoc::default(),
        "the deleted document was written back"
    );
    assert_eq!(
        store.meta(&name).expect("meta"),
        None,
        "its metadata came back"
    );
}

/// Strict durability: an API read that follows a write in the same batch is answered only
/// after the flush that makes the write durable, like the broadcast of the write itself; what
/// an API caller has seen survives a crash.
#[test]
fn strict_reads_wait_for_the_flush_of_what_they_show() {
    let [a, _, _] = three_keystrokes();
    let (mut d, _outbox) = room_with_writer("reads");
    api_create(&mut d, "");
    d.room
        .handle(Command::Messages(1, vec![Message::Update(a)]));
    let (text_tx, mut text) = oneshot::channel();
    d.room.handle(Command::Api(ApiOp::GetText, text_tx));
    let (update_tx, mut update) = oneshot::channel();
    d.room
        .handle(Command::Api(ApiOp::GetUpdate(None), update_tx));
    assert!(
        text.try_recv().is_err(),
        "the text was read before the flush"
    );
    assert!(
        update.try_recv().is_err(),
        "the state was read before the flush"
    );

    let flushes = d.ctx.metrics.flushes();
    d.rt.block_on(d.room.finish_batch());
    assert!(d.ctx.metrics.flushes() > flushes, "no flush");
    assert_eq!(text.try_recv(), Ok(Ok(ApiReply::Text("a".into()))));
    let Ok(Ok(ApiReply::Update(state))) = update.try_recv() else {
        panic!("no state after the flush");
    };
    assert_eq!(text_of(&doc_from(&state)), "a");
}

/// A rewrite planned away from the room is applied only to the text it was planned against;
/// planned against text that changed since, it writes nothing and says so.
#[test]
fn a_rewrite_applies_only_to_its_base() {
    use crate::room::diff::{plan, Budget, Rewrite};
    let (mut d, _outbox) = room_with_writer("rewrite");
    api_create(&mut d, "one two three");
    let rewrite = |base: &str, new: &str| {
        let splices = plan(base, new, Budget::Blocking);
        Incoming::Rewrite(Rewrite {
            base: base.into(),
            splices,
        })
    };
    let stale = deliver(&mut d, rewrite("one two", "one 2"));
    assert_eq!(stale, Ok(ApiReply::BaseChanged));
    assert_eq!(consistent_text(&d), "one two three");
    let written = deliver(&mut d, rewrite("one two three", "one 2 three"));
    assert!(matches!(
        written,
        Ok(ApiReply::Written { changed: true, .. })
    ));
    assert_eq!(consistent_text(&d), "one 2 three");
}

/// Frames asking for the document, one after another in one batch, stop getting it once the
/// copies built for the member would overflow its outbox: it is closed as too slow then, before
/// more copies are encoded, rather than at fan-out with all of them in memory.
#[test]
fn sync_answers_stop_at_the_outbox_budget() {
    let (mut d, _outbox) = room_with_writer("budget");
    api_create(&mut d, &"z".repeat(100_000));
    let (tx, _frames) = mpsc::channel(64);
    let mut joiner = detached_joiner(5, Role::Read, 64).0;
    joiner.outbox = Outbox {
        tx,
        closer: Default::default(),
        queued: Arc::new(crate::outbox::QueuedBytes {
            now: Default::default(),
            max: 250_000,
        }),
    };
    let outbox = joiner.outbox.clone();
    d.room.handle(Command::Join(joiner, oneshot::channel().0));
    for _ in 0..10 {
        let step1 = Message::SyncStep1(StateVector::default().encode_v1());
        d.room.handle(Command::Messages(5, vec![step1]));
    }
    let copies = d
        .room
        .queued
        .iter()
        .filter(|(target, _)| matches!(target, crate::room::fanout::Target::One(5)))
        .count();
    // Its own sync step 1 from the join, and the two step 2 answers that fit.
    assert_eq!(copies, 3, "frames built for the member");
    let closed = outbox.closed_with().map(|(code, _)| code);
    assert_eq!(closed, Some(weft_protocol::CloseCode::TryAgainLater));
    d.rt.block_on(d.room.finish_batch());
}

/// Creates the document with `text` through the API and ends the batch.
fn api_create(d: &mut DirectRoom, text: &str) {
    let create = ApiOp::Create {
        text: Some(text.into()),
        title: None,
        author: "test".into(),
    };
    d.room.handle(Command::Api(create, oneshot::channel().0));
    d.rt.block_on(d.room.finish_batch());
}
