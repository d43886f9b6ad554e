//! Micro-benchmark of presence in a crowded room: every member moves its caret once (one
//! awareness update each), and the room's fan-out is timed with the changes sent the way the
//! room sends them (coalesced: one awareness frame per member per tick, whatever the number of
//! moves) against one frame per member per move (what relaying each update costs: N² frames
//! per round). Run with `cargo bench -p weft-server --bench awareness`.
//!
//! The room runs in-process through `weft_server::bench` (no sockets), so the times are the
//! room's work: the presence table, encoding, and pushing frames into members' queues, which
//! are drained inside the measurement.

// criterion's macros generate undocumented items; a bench binary has no API to document.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use weft_protocol::{AwarenessEntry, AwarenessUpdate, Message};
use weft_server::bench::{BenchRoom, MemberId};

/// A room with `n` members, each owning one awareness client id (its index).
fn crowd(n: usize) -> (BenchRoom, Vec<MemberId>) {
    let mut room = BenchRoom::open();
    let members: Vec<MemberId> = (0..n).map(|_| room.join()).collect();
    room.finish_batch();
    room.drain_all();
    (room, members)
}

/// Member `i`'s caret at `clock`.
fn caret(i: usize, clock: u64) -> Vec<Message> {
    let state =
        format!(r#"{{"user":{{"name":"c{i}"}},"cursor":{{"anchor":{clock},"head":{clock}}}}}"#);
    vec![Message::Awareness(AwarenessUpdate {
        entries: vec![AwarenessEntry {
            client_id: 10_000 + i as u64,
            clock,
            state,
        }],
    })]
}

fn presence(c: &mut Criterion) {
    let mut g = c.benchmark_group("awareness_round");
    g.measurement_time(Duration::from_secs(5)).sample_size(10);
    for n in [50usize, 200, 500] {
        g.throughput(Throughput::Elements(n as u64));
        for coalesced in [true, false] {
            let (mut room, members) = crowd(n);
            let mut clock = 0u64;
            let name = if coalesced {
                "one_frame_per_tick"
            } else {
                "one_frame_per_move"
            };
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    clock += 1;
                    for (i, &m) in members.iter().enumerate() {
                        room.send(m, caret(i, clock));
                        if !coalesced {
                            room.awareness_tick();
                        }
                    }
                    room.awareness_tick();
                    room.drain_all()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, presence);
criterion_main!(benches);
