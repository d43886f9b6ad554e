//! Micro-benchmarks of the wire protocol: decoding and encoding the frames a server handles most
//! (keystroke updates, awareness with cursors, sync step 1) and a large sync step 2.
//! Run with `cargo bench -p weft-protocol`.

// criterion's macros generate undocumented items; a bench binary has no API to document.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use weft_protocol::{
    decode_frame, encode_sync, AwarenessEntry, AwarenessUpdate, Limits, Message, SYNC_STEP1,
    SYNC_STEP2, SYNC_UPDATE,
};
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

/// A real keystroke update (one character typed into a document with some history).
fn keystroke_update() -> Vec<u8> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("content");
    for i in 0..100 {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, i, "x");
    }
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 50, "y");
    txn.encode_update_v1()
}

/// A whole document of `chars` characters typed one at a time, as one update.
fn document_state(chars: u32) -> Vec<u8> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("content");
    for i in 0..chars {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, i, "a");
    }
    let txn = doc.transact();
    txn.encode_state_as_update_v1(&StateVector::default())
}

fn cursor_awareness() -> AwarenessUpdate {
    AwarenessUpdate {
        entries: vec![AwarenessEntry {
            client_id: 3_726_025_813,
            clock: 42,
            state: r##"{"user":{"name":"Ana","color":"#30bced","colorLight":"#30bced33"},"cursor":{"anchor":{"type":null,"tname":"content","item":{"client":3726025813,"clock":17},"assoc":0},"head":{"type":null,"tname":"content","item":{"client":3726025813,"clock":17},"assoc":0}}}"##.into(),
        }],
    }
}

fn decode(c: &mut Criterion) {
    let limits = Limits::DEFAULT;
    let frames = [
        (
            "update (keystroke)",
            encode_sync(SYNC_UPDATE, &keystroke_update()),
        ),
        (
            "awareness (cursor)",
            Message::Awareness(cursor_awareness()).encode(),
        ),
        (
            "sync step 1",
            encode_sync(
                SYNC_STEP1,
                &Doc::new().transact().state_vector().encode_v1(),
            ),
        ),
        (
            "sync step 2 (20k chars)",
            encode_sync(SYNC_STEP2, &document_state(20_000)),
        ),
    ];
    let mut group = c.benchmark_group("decode_frame");
    for (name, frame) in &frames {
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| decode_frame(black_box(frame), &limits))
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let update = keystroke_update();
    let awareness = Message::Awareness(cursor_awareness());
    let big = document_state(20_000);
    let mut group = c.benchmark_group("encode");
    group.bench_function("update (keystroke)", |b| {
        b.iter(|| encode_sync(SYNC_UPDATE, black_box(&update)))
    });
    group.bench_function("awareness (cursor)", |b| {
        b.iter(|| black_box(&awareness).encode())
    });
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("sync step 2 (20k chars)", |b| {
        b.iter_batched(
            || big.clone(),
            |u| encode_sync(SYNC_STEP2, &u),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
