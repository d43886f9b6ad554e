//! Micro-benchmarks of a room, the actor that owns a document: a member's keystroke update
//! applied, appended to the store, encoded once and fanned out to 1, 2, 10 and 50 members (with
//! one member, only the writer gets its echo: that is the apply cost), and a fresh member
//! joining a ~100k-character document (its sync step 1 answered with the whole document as
//! step 2), both while the room can reuse the last encoding and right after an edit, when it
//! cannot; a keystroke into a document with thousands of past clients (the write guards' clock
//! lookups); and planning `PUT text`'s edits for large rewrites (bounded in time, off the room).
//! Run with `cargo bench -p weft-server`.
//!
//! The room runs in-process through `weft_server::bench` (the actor's code without its task or
//! mailbox), with relaxed durability and a store in a temporary directory, so the times are the
//! room's CPU work: no fsync, no sockets. Default settings otherwise, so the compaction every
//! 500 updates is in the keystroke times, amortized. Each iteration ends with every member's
//! queue holding the frame; draining the queues is part of the time, typing the update is not.

// criterion's macros generate undocumented items; a bench binary has no API to document.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use weft_protocol::Message;
use weft_server::bench::{plan_put_text, BenchRoom, MemberId};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, OffsetKind, Options, ReadTxn, StateVector, Text, TextRef, Transact};

/// A document as a Yjs client holds it (UTF-16 offsets), for client `id`.
fn client(id: u64) -> Doc {
    Doc::with_options(Options {
        client_id: yrs::block::ClientID::new(id),
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

/// A document of about `chars` characters written by two clients taking turns: words typed at
/// scattered places, and now and then a few characters deleted. Returned as one update.
fn history(chars: u32) -> Vec<u8> {
    let peers = [client(1), client(2)];
    let texts: Vec<TextRef> = peers
        .iter()
        .map(|d| d.get_or_insert_text("content"))
        .collect();
    // A fixed LCG: the same document every run, no dependency.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |below: u32| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) % u64::from(below.max(1))) as u32
    };
    let mut edit = 0u32;
    loop {
        let who = (edit % 2) as usize;
        let (doc, text) = (&peers[who], &texts[who]);
        let update = {
            let mut txn = doc.transact_mut();
            let len = text.len(&txn);
            if len >= chars {
                break;
            }
            let at = next(len + 1);
            if edit % 10 == 9 && len > 8 {
                text.remove_range(&mut txn, at.min(len - 4), 4);
            } else {
                text.insert(&mut txn, at, "lorem ipsum ");
            }
            txn.encode_update_v1()
        };
        if let Ok(u) = yrs::Update::decode_v1(&update) {
            let _ = peers[1 - who].transact_mut().apply_update(u);
        }
        edit += 1;
    }
    let txn = peers[0].transact();
    txn.encode_state_as_update_v1(&StateVector::default())
}

/// A client that holds the document and keeps typing into it: every keystroke is a new update
/// the room has not seen. It types a line, then deletes it in one edit, so the document (and
/// what compaction re-encodes) stays the same size however long the bench runs.
struct Typist {
    doc: Doc,
    text: TextRef,
    /// Where the current line starts.
    line: u32,
    /// Characters typed on it.
    typed: u32,
}

/// Keystrokes per line before it is deleted.
const LINE: u32 = 63;

impl Typist {
    fn new(state: &[u8]) -> Self {
        let doc = client(1000);
        let text = doc.get_or_insert_text("content");
        let update = yrs::Update::decode_v1(state).expect("history decodes");
        doc.transact_mut()
            .apply_update(update)
            .expect("history applies");
        let line = text.len(&doc.transact()) / 2;
        Self {
            doc,
            text,
            line,
            typed: 0,
        }
    }

    /// The next keystroke's update: one character typed, or the finished line deleted.
    fn keystroke(&mut self) -> Vec<u8> {
        let mut txn = self.doc.transact_mut();
        if self.typed == LINE {
            self.text.remove_range(&mut txn, self.line, LINE);
            self.typed = 0;
        } else {
            self.text.insert(&mut txn, self.line + self.typed, "x");
            self.typed += 1;
        }
        txn.encode_update_v1()
    }
}

/// A room holding `state`, written by a member that then left, and `members` members.
fn room_with(state: &[u8], members: usize) -> (BenchRoom, Vec<MemberId>) {
    let mut room = BenchRoom::open();
    let seeder = room.join();
    room.send(seeder, vec![Message::Update(state.to_vec())]);
    room.finish_batch();
    room.leave(seeder);
    let ids: Vec<MemberId> = (0..members).map(|_| room.join()).collect();
    room.finish_batch();
    room.drain_all();
    (room, ids)
}

fn keystroke(c: &mut Criterion) {
    let state = history(2_000);
    let mut group = c.benchmark_group("room keystroke (apply + fan-out)");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    // Updates per second, whatever the number of members.
    group.throughput(Throughput::Elements(1));
    for members in [1, 2, 10, 50] {
        let (mut room, ids) = room_with(&state, members);
        let writer = ids[0];
        let mut typist = Typist::new(&state);
        group.bench_function(BenchmarkId::new("members", members), |b| {
            b.iter_batched(
                || typist.keystroke(),
                |update| {
                    room.send(writer, vec![Message::Update(update)]);
                    room.finish_batch();
                    let got = room.drain_all();
                    assert_eq!(got.frames, members, "every member gets the update once");
                    black_box(got)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// A document that `clients` clients each wrote one character into (ids from 10,000), as one
/// update: a long-lived document's state vector has an entry for every client it ever had.
fn many_clients(clients: u64) -> Vec<u8> {
    let updates: Vec<Vec<u8>> = (0..clients)
        .map(|i| {
            let doc = client(10_000 + i);
            let text = doc.get_or_insert_text("content");
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "x");
            txn.encode_update_v1()
        })
        .collect();
    yrs::merge_updates_v1(updates).expect("updates merge")
}

/// A keystroke into a document with many past clients: what the write guards cost when they
/// look clocks up (before, each update built the whole state vector).
fn keystroke_past_clients(c: &mut Criterion) {
    let mut group = c.benchmark_group("room keystroke, past clients");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(1));
    for clients in [10, 1_000, 5_000] {
        let state = many_clients(clients);
        let (mut room, ids) = room_with(&state, 1);
        let mut typist = Typist::new(&state);
        group.bench_function(BenchmarkId::new("clients", clients), |b| {
            b.iter_batched(
                || typist.keystroke(),
                |update| {
                    room.send(ids[0], vec![Message::Update(update)]);
                    room.finish_batch();
                    black_box(room.drain_all())
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// A fresh member joins with nothing (sync step 1 with an empty state vector), gets what the
/// room sends it, and leaves.
fn join_once(room: &mut BenchRoom) -> weft_server::bench::Delivered {
    let member = room.join();
    let step1 = StateVector::default().encode_v1();
    room.send(member, vec![Message::SyncStep1(step1)]);
    room.finish_batch();
    let got = room.drain(member);
    room.leave(member);
    got
}

fn join(c: &mut Criterion) {
    let state = history(100_000);
    let (mut room, _) = room_with(&state, 0);
    assert!(room.text().encode_utf16().count() >= 100_000);
    // What one join sends: the room's step 1, then the whole document as step 2.
    let sent = join_once(&mut room);
    assert_eq!(sent.frames, 2, "a joiner gets sync step 1 and step 2");

    let mut group = c.benchmark_group("room join");
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    group.sample_size(30);
    group.throughput(Throughput::Bytes(sent.bytes as u64));
    // Joiners with nothing share one encoded step 2 until the document changes.
    group.bench_function("100k chars, unchanged (cached step 2)", |b| {
        b.iter(|| {
            let got = join_once(&mut room);
            assert_eq!(got, sent, "the same step 1 and step 2 every time");
            black_box(got)
        })
    });
    // After an edit the next joiner's step 2 is encoded afresh: a keystroke (about 8 µs, see
    // above) plus the encoding of the whole document.
    let (mut room, ids) = room_with(&state, 1);
    let mut typist = Typist::new(&state);
    group.bench_function("100k chars, after an edit (keystroke + encode)", |b| {
        b.iter_batched(
            || typist.keystroke(),
            |update| {
                room.send(ids[0], vec![Message::Update(update)]);
                room.finish_batch();
                room.drain_all();
                let got = join_once(&mut room);
                assert_eq!(got.frames, 2, "a joiner gets sync step 1 and step 2");
                black_box(got)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// `lines` lines of random words, from a fixed seed.
fn random_text(seed: u64, lines: usize) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut text = String::new();
    for _ in 0..lines {
        for _ in 0..rng.usize(3..12) {
            let len = rng.usize(2..9);
            text.extend((0..len).map(|_| rng.alphabetic()));
            text.push(' ');
        }
        text.push('\n');
    }
    text
}

/// `text` with every third line replaced by a new random one.
fn rewrite_third(text: &str, seed: u64) -> String {
    let fresh = random_text(seed, text.lines().count());
    text.lines()
        .zip(fresh.lines())
        .enumerate()
        .map(|(i, (old, new))| if i % 3 == 0 { new } else { old })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Planning `PUT text`'s edits: the work that used to run, unbounded, on the room's task (a
/// character diff of the whole rewrite: seconds for 30,000 characters, hours for 1 MB).
fn put_text_plan(c: &mut Criterion) {
    let mut group = c.benchmark_group("put_text_plan");
    group.sample_size(10);
    let old = random_text(1, 600);
    let new = random_text(2, 600);
    group.bench_function(format!("{} chars, rewritten whole", old.len()), |b| {
        b.iter(|| black_box(plan_put_text(&old, &new)))
    });
    let big = random_text(3, 4_000);
    let edited = rewrite_third(&big, 4);
    group.bench_function(format!("{} chars, a third of the lines", big.len()), |b| {
        b.iter(|| black_box(plan_put_text(&big, &edited)))
    });
    group.finish();
}

criterion_group!(
    benches,
    keystroke,
    keystroke_past_clients,
    join,
    put_text_plan
);
criterion_main!(benches);
