//! Version history on the big document: ~260k typing-like edits (the generator of
//! `weft-bench big-doc`: insert at the cursor 71 % of the time, backspace otherwise, jump the
//! cursor one edit in a thousand), a version recorded every 1,000 edits. Reports the storage
//! ratio (all history bytes / the document's encoded state), the p50 and p99 of rebuilding
//! every version's text and of each adjacent diff, and what recording costs the room's task
//! (reading the text) and the recorder's blocking thread (delta, compression, write).
//! Run with `cargo bench -p weft-server --bench history` (release build).

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use weft_server::bench_history::HistoryBench;
use yrs::{Doc, OffsetKind, Options, ReadTxn, StateVector, Text, Transact};

/// Edits in all, and between two versions.
const EDITS: u64 = 260_000;
const EVERY: u64 = 1_000;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let doc = Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    let text = doc.get_or_insert_text("content");
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let alphabet = b"etaoin shrdlu cmfwyp vbgkjqxz, ETAOIN.\n";
    let (mut cursor, mut len) = (0u32, 0u32);
    let mut bench = HistoryBench::open();
    let (mut captures, mut records) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for _ in 0..EDITS / EVERY {
        {
            let mut txn = doc.transact_mut();
            for _ in 0..EVERY {
                if len > 0 && rng.f64() < 0.001 {
                    cursor = rng.u32(0..=len);
                }
                if cursor > 0 && rng.f64() < 0.2885 {
                    text.remove_range(&mut txn, cursor - 1, 1);
                    cursor -= 1;
                    len -= 1;
                } else {
                    let c = alphabet[rng.usize(0..alphabet.len())] as char;
                    text.insert(&mut txn, cursor, c.encode_utf8(&mut [0; 4]));
                    cursor += 1;
                    len += 1;
                }
            }
        }
        let (captured, took) = HistoryBench::capture(&doc);
        captures.push(took);
        records.push(bench.record(captured));
    }
    let state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default())
        .len() as u64;
    let history = bench.stored_bytes();
    let ids = bench.ids().to_vec();
    let (mut texts, mut diffs) = (Vec::new(), Vec::new());
    for &id in &ids {
        let t = Instant::now();
        std::hint::black_box(bench.text(id));
        texts.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(bench.diff(id));
        diffs.push(t.elapsed());
    }
    println!("history/big-doc: {EDITS} edits, a version every {EVERY}: {} versions, text {len} UTF-16 units, built in {:.1} s", ids.len(), started.elapsed().as_secs_f64());
    println!("  encoded state        {state} bytes");
    println!(
        "  all history          {history} bytes = {:.2}x the encoded state",
        history as f64 / state as f64
    );
    println!(
        "  version text         p50 {}  p99 {}",
        ms(percentile(&mut texts, 0.5)),
        ms(percentile(&mut texts, 0.99))
    );
    println!(
        "  adjacent diff        p50 {}  p99 {}",
        ms(percentile(&mut diffs, 0.5)),
        ms(percentile(&mut diffs, 0.99))
    );
    println!(
        "  capture (room task)  p50 {}  p99 {}",
        ms(percentile(&mut captures, 0.5)),
        ms(percentile(&mut captures, 0.99))
    );
    println!(
        "  record (recorder)    p50 {}  p99 {}",
        ms(percentile(&mut records, 0.5)),
        ms(percentile(&mut records, 0.99))
    );
}
