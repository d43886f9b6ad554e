//! The `room_messages` harness: one long-lived room driven through its own command handling by
//! simulated connections (each with a replica of the document that answers sync as a
//! y-websocket client would) and by the HTTP API, with the document checked after every input.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use tokio::sync::{mpsc, oneshot};
use weft_protocol::{
    decode_frame as decode, AwarenessEntry, AwarenessUpdate, Control, Limits, Message, Role,
    RoomName, UserInfo,
};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use crate::outbox::{Data, Outbox};
use crate::room::diff::{self, Budget, Rewrite};
use crate::room::registry::RoomContext;
use crate::room::{self, ApiOp, Command, Incoming, Room};
use crate::testing::fuzzing::updates::{seed_updates, seed_updates_len, UpdateSource};
use crate::testing::fuzzing::{detached_joiner, fuzz_config, DirectRoom, MAX_OPS};

/// Connections a room input can address (more only dilutes the interesting interleavings).
const CONNS: u8 = 4;

/// Real updates kept for mutation: the seeds plus the latest ones the room broadcast.
const POOL: usize = 96;

/// Per-connection frame queue; large enough that the room never closes a member as slow.
const QUEUE: usize = 4096;

/// One step of a room input.
#[derive(Debug, Arbitrary)]
pub(super) enum RoomOp {
    /// A connection joins (read-only or read-write); a joined one is left first.
    Join { conn: u8, read_only: bool },
    /// A connection's socket ends.
    Leave { conn: u8 },
    /// Sync step 1 with the connection replica's state vector, or with raw bytes.
    Step1 { conn: u8, raw: Option<Vec<u8>> },
    /// An update, sent as sync step 2 or as an update message.
    Write {
        conn: u8,
        update: UpdateSource,
        step2: bool,
    },
    /// A real edit on the connection's replica (insert at, delete a span), sent as an update.
    Edit {
        conn: u8,
        at: u16,
        delete: u8,
        text: String,
    },
    /// An awareness entry (small client ids, so connections collide).
    Awareness {
        conn: u8,
        client: u8,
        clock: u8,
        state: Option<String>,
    },
    /// Query awareness.
    Query { conn: u8 },
    /// Opt in to control messages.
    Hello { conn: u8, name: Option<String> },
    /// A typing hint.
    Typing { conn: u8, active: bool },
    /// A raw frame, decoded as the connection reader does (an undecodable one ends the socket).
    Frame { conn: u8, bytes: Vec<u8> },
    /// The HTTP API replaces the text (minimal UTF-16 diff) or appends to it.
    ApiText { replace: bool, text: String },
    /// The HTTP API applies an update.
    ApiUpdate(UpdateSource),
    /// End the batch: flush, then deliver (the actor batches whatever its mailbox holds).
    Flush,
}

/// A simulated connection: its queue, its outbox, and its copy of the document.
struct Conn {
    id: u64,
    rx: mpsc::Receiver<Data>,
    outbox: Outbox,
    replica: Doc,
}

/// The long-lived room, its store in a temporary directory, and the simulated connections.
pub(super) struct RoomHarness {
    rt: tokio::runtime::Runtime,
    room: Room,
    ctx: Arc<RoomContext>,
    conns: BTreeMap<u8, Conn>,
    pool: Vec<Vec<u8>>,
    next_id: u64,
    _dir: tempfile::TempDir,
}

impl RoomHarness {
    /// A room on a fresh store whose document holds the seed edits, written by a member.
    pub(super) fn new() -> Self {
        let DirectRoom { rt, room, ctx, dir } = DirectRoom::open("fuzz", fuzz_config);
        let mut h = Self {
            rt,
            room,
            ctx,
            conns: BTreeMap::new(),
            pool: seed_updates(),
            next_id: 1,
            _dir: dir,
        };
        // The long-lived document starts with the real edits, written by a member.
        h.join(0, false);
        for update in h.pool.clone() {
            h.send(0, vec![Message::Update(update)]);
        }
        h.leave(0);
        h.finish();
        h
    }

    /// Bytes the document takes in the store.
    pub(super) fn stored_bytes(&self) -> u64 {
        self.ctx
            .store
            .meta(&fuzz_room())
            .ok()
            .flatten()
            .map_or(0, |m| m.size_bytes)
    }

    /// Runs one input's operations, ends the batch and checks the document.
    pub(super) fn run(&mut self, data: &[u8]) {
        let mut u = Unstructured::new(data);
        let mut n = 0;
        while n < MAX_OPS {
            let Ok(op) = RoomOp::arbitrary(&mut u) else {
                break;
            };
            self.op(op);
            n += 1;
        }
        self.finish();
        self.check_document();
    }

    fn op(&mut self, op: RoomOp) {
        match op {
            RoomOp::Join { conn, read_only } => self.join(conn % CONNS, read_only),
            RoomOp::Leave { conn } => self.leave(conn % CONNS),
            RoomOp::Step1 { conn, raw } => self.step1(conn % CONNS, raw),
            RoomOp::Write {
                conn,
                update,
                step2,
            } => {
                let bytes = update.bytes(&self.pool);
                let msg = if step2 {
                    Message::SyncStep2(bytes)
                } else {
                    Message::Update(bytes)
                };
                self.send(conn % CONNS, vec![msg]);
            }
            RoomOp::Edit {
                conn,
                at,
                delete,
                text,
            } => self.edit(conn % CONNS, at, delete, &text),
            RoomOp::Awareness {
                conn,
                client,
                clock,
                state,
            } => self.awareness(conn % CONNS, client, clock, state),
            RoomOp::Query { conn } => self.send(conn % CONNS, vec![Message::QueryAwareness]),
            RoomOp::Hello { conn, name } => {
                let user = name.map(|name| UserInfo { name, color: None });
                let hello = Message::Control(Control::Hello { user });
                self.send(conn % CONNS, vec![hello]);
            }
            RoomOp::Typing { conn, active } => {
                let typing = Control::Typing {
                    connection: None,
                    user: None,
                    active,
                };
                self.send(conn % CONNS, vec![Message::Control(typing)]);
            }
            RoomOp::Frame { conn, bytes } => self.frame(conn % CONNS, &bytes),
            RoomOp::ApiText { replace, text } => self.api_text(replace, text),
            RoomOp::ApiUpdate(update) => {
                let bytes = update.bytes(&self.pool);
                self.api(ApiOp::ApplyUpdate(bytes));
            }
            RoomOp::Flush => self.finish(),
        }
    }

    /// Sync step 1 of `conn`: `raw`, or its replica's state vector.
    fn step1(&mut self, conn: u8, raw: Option<Vec<u8>>) {
        let sv = match (raw, self.conns.get(&conn)) {
            (Some(raw), _) => raw,
            (None, Some(c)) => c.replica.transact().state_vector().encode_v1(),
            (None, None) => StateVector::default().encode_v1(),
        };
        self.send(conn, vec![Message::SyncStep1(sv)]);
    }

    /// A real edit on `conn`'s replica (delete `delete` characters at `at`, insert `text`
    /// there), sent as an update.
    fn edit(&mut self, conn: u8, at: u16, delete: u8, text: &str) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let edit = catch_unwind(AssertUnwindSafe(|| {
            let t = c.replica.get_or_insert_text("content");
            let mut txn = c.replica.transact_mut();
            let len = t.len(&txn);
            let at = u32::from(at).min(len);
            let delete = u32::from(delete).min(len - at);
            if delete > 0 {
                t.remove_range(&mut txn, at, delete);
            }
            let text: String = text.chars().take(64).collect();
            if !text.is_empty() {
                t.insert(&mut txn, at, &text);
            }
            txn.encode_update_v1()
        }));
        match edit {
            Ok(update) => self.send(conn, vec![Message::Update(update)]),
            // The replica took a mutated update the room accepted and broke; start it over.
            Err(_) => c.replica = room::new_doc(),
        }
    }

    /// An awareness entry from `conn` (client ids below 8, so connections collide).
    fn awareness(&mut self, conn: u8, client: u8, clock: u8, state: Option<String>) {
        let state = match state {
            None => "null".to_owned(),
            Some(s) => serde_json::json!({ "user": { "name": s } }).to_string(),
        };
        let entry = AwarenessEntry {
            client_id: u64::from(client % 8),
            clock: u64::from(clock),
            state,
        };
        let msg = Message::Awareness(AwarenessUpdate {
            entries: vec![entry],
        });
        self.send(conn, vec![msg]);
    }

    /// A raw frame from `conn`, decoded as the connection reader does (an undecodable one ends
    /// the socket).
    fn frame(&mut self, conn: u8, bytes: &[u8]) {
        match decode(bytes, &Limits::DEFAULT) {
            Ok(msgs) => self.send(conn, msgs),
            Err(_) => self.leave(conn),
        }
    }

    fn join(&mut self, conn: u8, read_only: bool) {
        self.leave(conn);
        let id = self.next_id;
        self.next_id += 1;
        let role = if read_only { Role::Read } else { Role::Write };
        let (joiner, rx) = detached_joiner(id, role, QUEUE);
        let outbox = joiner.outbox.clone();
        let (reply, _) = oneshot::channel();
        self.room.handle(Command::Join(joiner, reply));
        self.conns.insert(
            conn,
            Conn {
                id,
                rx,
                outbox,
                replica: room::new_doc(),
            },
        );
    }

    fn leave(&mut self, conn: u8) {
        if let Some(c) = self.conns.remove(&conn) {
            self.room.handle(Command::Leave(c.id));
        }
    }

    fn send(&mut self, conn: u8, msgs: Vec<Message>) {
        // Messages of a connection that is not in the room still reach it (a reader racing its
        // own leave); the room ignores them.
        let id = self.conns.get(&conn).map_or(u64::MAX, |c| c.id);
        self.room.handle(Command::Messages(id, msgs));
    }

    /// The API appends `text`, or replaces the text with it: planned away from the room against
    /// its current text as `PUT text` does (even lengths), or planned by the room itself, as
    /// when that keeps meeting other edits (odd lengths).
    fn api_text(&mut self, replace: bool, text: String) {
        let op = match replace {
            false => ApiOp::Append(text),
            true if text.len() % 2 == 1 => ApiOp::SetText(text),
            true => {
                let base =
                    catch_unwind(AssertUnwindSafe(|| content(self.room.doc()))).unwrap_or_default();
                let splices = diff::plan(&base, &text, Budget::Blocking);
                ApiOp::Rewrite(Rewrite { base, splices })
            }
        };
        self.api(op);
    }

    /// An API request, sent as `RoomHandle::api` sends it: writes through the room's inbox.
    fn api(&mut self, op: ApiOp) {
        let (reply, _) = oneshot::channel();
        let cmd = match Incoming::from_api(op) {
            Ok(incoming) => Command::Inbox(incoming, "fuzz".into(), reply),
            Err(op) => Command::Api(op, reply),
        };
        self.room.handle(cmd);
    }

    /// Ends the batch as the actor does, then delivers what each connection was sent, answering
    /// the room's sync step 1 as a y-websocket client would.
    fn finish(&mut self) {
        for _ in 0..4 {
            self.rt.block_on(self.room.finish_batch());
            let mut answers = Vec::new();
            for (&slot, c) in &mut self.conns {
                while let Ok(data) = c.rx.try_recv() {
                    let Data::Binary(frame) = data else {
                        panic!("connection {slot} was sent a text frame");
                    };
                    let msgs = decode(&frame, &Limits::DEFAULT).unwrap_or_else(|e| {
                        panic!("connection {slot} was sent an undecodable frame ({e}): {frame:?}")
                    });
                    for m in msgs {
                        match m {
                            Message::SyncStep1(sv) => {
                                let reply = catch_unwind(AssertUnwindSafe(|| {
                                    let sv = StateVector::decode_v1(&sv).ok()?;
                                    Some(c.replica.transact().encode_state_as_update_v1(&sv))
                                }));
                                if let Ok(Some(update)) = reply {
                                    answers.push((slot, Message::SyncStep2(update)));
                                }
                            }
                            Message::SyncStep2(u) | Message::Update(u) => {
                                if self.pool.len() >= POOL {
                                    self.pool.remove(seed_updates_len());
                                }
                                self.pool.push(u.clone());
                                let applied = catch_unwind(AssertUnwindSafe(|| {
                                    let u = Update::decode_v1(&u).ok()?;
                                    c.replica.transact_mut().apply_update(u).ok()
                                }));
                                if applied.is_err() {
                                    c.replica = room::new_doc();
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            // Closed members are gone from the room; forget them too.
            self.conns.retain(|_, c| c.outbox.closed_with().is_none());
            if answers.is_empty() {
                return;
            }
            for (slot, msg) in answers {
                self.send(slot, vec![msg]);
            }
        }
        self.rt.block_on(self.room.finish_batch());
    }

    /// The document still encodes and re-decodes, a fresh document applying its state has the
    /// same text, and the store (loaded through the room's own load path) holds the same text.
    fn check_document(&mut self) {
        let doc = self.room.doc();
        let (state, text) = catch_unwind(AssertUnwindSafe(|| {
            let txn = doc.transact();
            let text = txn.get_text("content").map(|t| t.get_string(&txn));
            (txn.encode_state_as_update_v1(&StateVector::default()), text)
        }))
        .expect("the room's document no longer encodes");
        let text = text.unwrap_or_default();
        let fresh = text_of_state(&state);
        if fresh.as_deref() != Some(text.as_str()) {
            // Everything needed to reproduce it without the history: the room's state and the
            // stored form it was built from.
            let stored = self.ctx.store.load(&fuzz_room()).unwrap_or_default();
            let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
            let log: Vec<String> = stored.updates.iter().map(|(_, u)| b64(u)).collect();
            panic!(
                "a fresh document applying the room's state has other text: {fresh:?} != \
                 {text:?}\nstate: {}\nsnapshot: {}\nlog: {log:?}",
                b64(&state),
                stored.snapshot.as_deref().map(b64).unwrap_or_default(),
            );
        }
        let name = fuzz_room();
        let loaded = room::load_doc(&self.ctx, &name).expect("the stored document loads");
        let stored = {
            let txn = loaded.doc.transact();
            txn.get_text("content")
                .map(|t| t.get_string(&txn))
                .unwrap_or_default()
        };
        assert_eq!(stored, text, "the store and the room disagree");
    }
}

/// The text of `content` in `doc` (empty when it has none).
fn content(doc: &Doc) -> String {
    let txn = doc.transact();
    txn.get_text("content")
        .map(|t| t.get_string(&txn))
        .unwrap_or_default()
}

/// The text of `content` in a fresh document that applies `state`; `None` if it does not
/// decode or apply.
fn text_of_state(state: &[u8]) -> Option<String> {
    let update = Update::decode_v1(state).ok()?;
    let doc = room::new_doc();
    doc.transact_mut().apply_update(update).ok()?;
    let txn = doc.transact();
    Some(
        txn.get_text("content")
            .map(|t| t.get_string(&txn))
            .unwrap_or_default(),
    )
}

/// The name of the fuzzed room.
fn fuzz_room() -> RoomName {
    RoomName::parse("fuzz", &Limits::DEFAULT).expect("room name")
}
