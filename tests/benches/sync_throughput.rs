//! # `sync_throughput`: update throughput and the latency the strict-mode flush adds
//!
//! Run it with
//!
//! ```text
//! cargo bench -p weft-tests --bench sync_throughput          # every scenario, about 70 s
//! cargo bench -p weft-tests --bench sync_throughput -- 1 3   # only scenarios 1 and 3
//! WEFT_BENCH_SECS=20 cargo bench -p weft-tests --bench sync_throughput
//! ```
//!
//! It starts the real server in-process ([`weft_tests::TestServer`]: its own thread and tokio
//! runtime, `127.0.0.1:0`, a fresh temporary data directory per scenario) and drives it over real
//! WebSockets from raw tokio-tungstenite sockets. Each writer owns a yrs `Doc` and types
//! keystroke-sized inserts (1 to 4 characters) at the end of its own text in the Y.Text
//! `content`, sending each as one `sync update` frame. The server echoes every applied update to
//! every member of the room, the sender included, and in strict durability only once it is on
//! disk; the **latency** of an update is the time from just before its frame is written to the
//! socket until its sender reads the echo back. A writer keeps at most `in flight` updates
//! unechoed (1: send, wait for the echo, send the next).
//!
//! Scenarios, each run with `Durability::Strict` and `Durability::Relaxed` (flush within 50 ms,
//! broadcast at once) so that strict minus relaxed shows what waiting for the flush costs:
//!
//! 1. one room, one writer, sequential: round-trip latency and updates/s;
//! 2. one room, eight writers, each pipelining up to 8 updates: throughput under contention,
//!    where every update is delivered to all eight members;
//! 3. fifty rooms, two sequential writers each: aggregate updates/s across rooms, where one
//!    group-commit flush covers many rooms.
//!
//! Each scenario warms up for 1 s, then measures for 8 s (`WEFT_BENCH_SECS` sets the measured
//! seconds, 0.2–120). Updates and latencies count echoes that arrive inside the measured window.
//! Afterwards every writer's unechoed updates are drained, and a fresh `weft_tests::Client`
//! syncs each room and checks that its text holds every character typed: a lost or reordered
//! echo, or a missing edit, fails the run.
//!
//! `durable batches` counts the `saved` control notices one member per room receives in the
//! window (strict mode sends one per room batch made durable, i.e. per room commit): with one
//! room it equals the number of flushes that room waited for; with several rooms one flush can
//! cover many batches, so it is an upper bound. `disk flushes` is the change in the "flush
//! requests completed" counter of the block device holding the data directory, from
//! `/sys/dev/block/MAJ:MIN/stat`: device-wide, so other processes writing to that disk inflate it
//! (the report prints their rate, sampled for 2 s before the first scenario). One store flush can
//! be several device flushes: it fdatasyncs sled's log and fsyncs every large-value (blob) file
//! written since the previous flush, such as compacted snapshots of large documents.
//!
//! The load generator shares the machine (and its cores) with the server: it runs on a 2-worker
//! tokio runtime in this process, the server on its own 2-worker runtime. Progress goes to
//! stderr; the report (Markdown tables and machine information) goes to stdout.
//!
//! A scenario fails, and the bench exits non-zero after printing the rest, if the server closes a
//! writer's socket (for example with 1013 when that member's 1,024-frame send queue fills), if an
//! echo does not come back within 10 s, or if a room's text is missing characters.
//!
//! Without `--bench` on the command line (as under `cargo test --benches`) it runs every
//! scenario for a fraction of a second, as a smoke test of the bench itself.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use weft_protocol::{decode_frame, encode_sync, Control, Limits, Message, SYNC_STEP1, SYNC_UPDATE};
use weft_server::Durability;
use weft_tests::{Client, TestServer};
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, Text, Transact};

/// A client WebSocket as tokio-tungstenite returns it.
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What writers type, cyclically.
const TYPED: &str = "The quick brown fox jumps over the lazy dog, then naps. ";

/// Lengths of successive keystroke inserts, cyclically: a few characters each.
const KEYSTROKE_LENGTHS: [usize; 4] = [3, 1, 4, 2];

/// Longest a writer waits for any frame before it declares the server stuck.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest the connect-and-sync handshake of one socket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Hard cap on updates per writer, so no loop is unbounded even if the clock misbehaves.
const MAX_UPDATES_PER_WRITER: u64 = 2_000_000;

/// Default measured window of a scenario, in seconds.
const DEFAULT_MEASURE_SECS: f64 = 8.0;

/// Highest latency the histograms record, in microseconds (larger values are clamped).
const MAX_LATENCY_US: u64 = 60_000_000;

/// One load shape and durability.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    /// Number in the task's list (1, 2, 3).
    id: u8,
    /// Short description for the table.
    label: &'static str,
    /// Server durability mode.
    durability: Durability,
    /// Rooms written to concurrently.
    rooms: usize,
    /// Writers (sockets) per room.
    writers_per_room: usize,
    /// Updates a writer may have sent but not yet seen echoed.
    in_flight: usize,
}

/// The scenarios, in the order they run: each load shape strict, then relaxed.
fn scenarios() -> Vec<Scenario> {
    let shapes: [(u8, &'static str, usize, usize, usize); 3] = [
        (1, "1 room, 1 writer, sequential", 1, 1, 1),
        (2, "1 room, 8 writers, pipelined", 1, 8, 8),
        (3, "50 rooms, 2 writers each", 50, 2, 1),
    ];
    let mut out = Vec::new();
    for (id, label, rooms, writers_per_room, in_flight) in shapes {
        for durability in [Durability::Strict, Durability::Relaxed] {
            out.push(Scenario {
                id,
                label,
                durability,
                rooms,
                writers_per_room,
                in_flight,
            });
        }
    }
    out
}

/// How long each scenario warms up and measures.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Load before the measured window (room loading, first compactions, TCP warm-up).
    warmup: Duration,
    /// The measured window.
    measure: Duration,
    /// How long the data disk's background flush rate is sampled before the first scenario.
    baseline: Duration,
}

/// What the command line and environment ask for.
struct Options {
    /// Durations.
    timing: Timing,
    /// Scenario numbers to run; empty runs all.
    only: Vec<u8>,
}

impl Options {
    /// Parses `[--bench] [SCENARIO...]` and `WEFT_BENCH_SECS`. Full timing under `cargo bench`
    /// (`--bench` given), a smoke-test timing otherwise. Other flags (libtest's) are ignored.
    fn from_env_and_args() -> anyhow::Result<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut only = Vec::new();
        for a in args.iter().filter(|a| !a.starts_with('-')) {
            match a.parse::<u8>() {
                Ok(n @ 1..=3) => only.push(n),
                _ => bail!("unknown argument {a:?}: give scenario numbers 1, 2 or 3"),
            }
        }
        let timing = Timing::from_env(args.iter().any(|a| a == "--bench"))?;
        Ok(Self { timing, only })
    }
}

impl Timing {
    /// Full timing when `benching`, a smoke-test timing otherwise.
    fn from_env(benching: bool) -> anyhow::Result<Self> {
        if !benching {
            return Ok(Self {
                warmup: Duration::from_millis(100),
                measure: Duration::from_millis(300),
                baseline: Duration::from_millis(100),
            });
        }
        let secs = match std::env::var("WEFT_BENCH_SECS") {
            Ok(s) => s
                .trim()
                .parse::<f64>()
                .with_context(|| format!("WEFT_BENCH_SECS={s:?} is not a number of seconds"))?,
            Err(_) => DEFAULT_MEASURE_SECS,
        };
        if !(0.2..=120.0).contains(&secs) {
            bail!("WEFT_BENCH_SECS must be between 0.2 and 120, got {secs}");
        }
        Ok(Self {
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs_f64(secs),
            baseline: Duration::from_secs(2),
        })
    }
}

/// When a writer starts, stops counting warm-up, and stops sending.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// First send.
    start: Instant,
    /// Start of the measured window.
    from: Instant,
    /// End of the measured window; no update is sent at or after it.
    until: Instant,
}

impl Window {
    /// Whether `t` lies in the measured window.
    fn contains(&self, t: Instant) -> bool {
        t >= self.from && t < self.until
    }
}

/// Generates keystroke-sized inserts at the end of a writer's own text.
struct Typist {
    /// The writer's replica; remote updates are never applied to it, so its text is exactly
    /// what this writer typed and every insert appends to it.
    doc: Doc,
    /// Position in [`TYPED`].
    pos: usize,
    /// Keystrokes so far.
    count: usize,
    /// Bytes typed so far (ASCII, so also characters and UTF-16 units).
    typed: u64,
}

impl Typist {
    /// A typist whose text starts `offset` characters into [`TYPED`].
    fn new(offset: usize) -> Self {
        Self {
            doc: Doc::new(),
            pos: offset % TYPED.len(),
            count: 0,
            typed: 0,
        }
    }

    /// Types the next few characters and returns the yrs update (v1) it produced.
    fn keystroke(&mut self) -> Vec<u8> {
        let len = KEYSTROKE_LENGTHS[self.count % KEYSTROKE_LENGTHS.len()];
        self.count += 1;
        let chunk: String = TYPED.chars().cycle().skip(self.pos).take(len).collect();
        self.pos = (self.pos + len) % TYPED.len();
        self.typed += len as u64;
        let text = self.doc.get_or_insert_text("content");
        let mut txn = self.doc.transact_mut();
        let at = text.len(&txn);
        text.insert(&mut txn, at, &chunk);
        txn.encode_update_v1()
    }
}

/// What one writer saw.
struct WriterReport {
    /// Room index.
    room: usize,
    /// Latency (µs) of each own update whose echo arrived in the window.
    latency: Histogram<u64>,
    /// Own echoes that arrived in the window.
    echoed_in_window: u64,
    /// Update frames of anyone (own echoes included) that arrived in the window.
    deliveries_in_window: u64,
    /// `saved` notices that arrived in the window (only the room's observer opts in).
    saved_in_window: u64,
    /// Bytes typed over the whole run, warm-up included; all of them were echoed.
    typed: u64,
}

/// Opens a socket to `url` with Nagle disabled, optionally opts in to control messages, and
/// waits for the server's sync step 2, so the connection is a member of the room when it returns.
async fn connect_synced(url: &str, observe: bool) -> anyhow::Result<Ws> {
    let handshake = async {
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        if observe {
            let hello = Message::Control(Control::Hello { user: None }).encode();
            ws.send(WsMessage::binary(hello)).await?;
        }
        let sv = Doc::new().transact().state_vector().encode_v1();
        ws.send(WsMessage::binary(encode_sync(SYNC_STEP1, &sv)))
            .await?;
        while let Some(frame) = ws.next().await {
            if let WsMessage::Binary(b) = frame? {
                let msgs = decode_frame(&b, &Limits::DEFAULT)?;
                if msgs.iter().any(|m| matches!(m, Message::SyncStep2(_))) {
                    return Ok(ws);
                }
            }
        }
        bail!("the server closed {url} before sync step 2")
    };
    tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .with_context(|| format!("no sync step 2 from {url} within {CONNECT_TIMEOUT:?}"))?
}

/// Drives one writer: types until the window ends with at most `in_flight` unechoed updates,
/// drains the rest, and closes the socket.
async fn run_writer(
    mut ws: Ws,
    room: usize,
    seed: usize,
    in_flight: usize,
    window: Window,
) -> anyhow::Result<WriterReport> {
    let mut typist = Typist::new(seed * 7);
    let mut latency = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
    // Own updates sent but not yet echoed, oldest first: the server keeps a connection's
    // updates in order, so its own echoes come back in this order.
    let mut pending: VecDeque<(Vec<u8>, Instant)> = VecDeque::with_capacity(in_flight);
    let (mut echoed_in_window, mut deliveries_in_window, mut saved_in_window) = (0, 0, 0);
    let mut sent = 0u64;
    let mut frames = 0u64;
    // Longest time between two frames read from this socket, reported if the server closes it.
    let mut longest_gap = Duration::ZERO;
    tokio::time::sleep_until(window.start.into()).await;
    let mut last_read = Instant::now();
    loop {
        let sending = Instant::now() < window.until && sent < MAX_UPDATES_PER_WRITER;
        while sending && pending.len() < in_flight {
            let update = typist.keystroke();
            let frame = encode_sync(SYNC_UPDATE, &update);
            pending.push_back((update, Instant::now()));
            ws.send(WsMessage::binary(frame)).await?;
            sent += 1;
        }
        if !sending && pending.is_empty() {
            break;
        }
        let frame = match tokio::time::timeout(READ_TIMEOUT, ws.next()).await {
            Ok(Some(frame)) => frame?,
            Ok(None) => bail!(
                "room {room}: connection ended with {} updates unechoed",
                pending.len()
            ),
            Err(_) => bail!(
                "room {room}: no frame for {READ_TIMEOUT:?} with {} updates unechoed",
                pending.len()
            ),
        };
        let arrived = Instant::now();
        longest_gap = longest_gap.max(arrived.duration_since(last_read));
        last_read = arrived;
        frames += 1;
        let in_window = window.contains(arrived);
        let bytes = match frame {
            WsMessage::Binary(b) => b,
            WsMessage::Close(cf) => {
                let (code, reason) = cf.map_or((0, String::new()), |c| {
                    (u16::from(c.code), c.reason.to_string())
                });
                bail!(
                    "room {room}: the server closed writer {seed} with {code} {reason:?} after \
                     {sent} sends and {frames} frames received; its longest gap between two \
                     reads was {longest_gap:?}"
                )
            }
            _ => continue,
        };
        for msg in decode_frame(&bytes, &Limits::DEFAULT)? {
            match msg {
                Message::Update(u) => {
                    deliveries_in_window += u64::from(in_window);
                    if pending.front().is_some_and(|(p, _)| *p == u) {
                        if let Some((_, sent_at)) = pending.pop_front() {
                            if in_window {
                                let us = arrived.duration_since(sent_at).as_micros();
                                latency.saturating_record(u64::try_from(us).unwrap_or(u64::MAX));
                                echoed_in_window += 1;
                            }
                        }
                    }
                }
                Message::Control(Control::Saved { .. }) => saved_in_window += u64::from(in_window),
                _ => {}
            }
        }
    }
    // Close politely so the server does not log a reset; a slow close is not a failure.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        ws.close(None).await?;
        while ws.next().await.is_some() {}
        anyhow::Ok(())
    })
    .await;
    Ok(WriterReport {
        room,
        latency,
        echoed_in_window,
        deliveries_in_window,
        saved_in_window,
        typed: typist.typed,
    })
}

/// The figures of one scenario.
struct Outcome {
    /// What ran.
    scenario: Scenario,
    /// The measured window's length.
    measured: Duration,
    /// Echo latency (µs) of every writer, merged.
    latency: Histogram<u64>,
    /// Own echoes that arrived in the window, over all writers.
    updates: u64,
    /// Update frames delivered to all members in the window.
    deliveries: u64,
    /// `saved` notices in the window, over all rooms (strict only).
    saved: u64,
    /// Change of the data device's flush counter over the run, if readable.
    disk_flushes: Option<u64>,
    /// Characters in each room's text at the end, averaged over rooms.
    text_per_room: u64,
}

impl Outcome {
    /// Updates echoed per second of the measured window.
    fn updates_per_sec(&self) -> f64 {
        self.updates as f64 / self.measured.as_secs_f64()
    }

    /// Latency at quantile `q`, in milliseconds.
    fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs one scenario on a fresh server and data directory.
async fn run_scenario(sc: Scenario, timing: Timing) -> anyhow::Result<Outcome> {
    let server = TestServer::start_with(|c| {
        c.durability = sc.durability;
        // Writers here send thousands of updates per second, far above the per-connection
        // rate limit meant for people typing.
        c.max_frames_per_sec = u32::MAX / 4;
        c.max_bytes_per_sec = u32::MAX / 4;
        // Every socket comes from one address, opened at once (100 in the widest scenario).
        c.max_connects_per_sec = 0;
    })
    .await?;
    let device = flush_counter_path(&server.data);
    let mut sockets = Vec::new();
    for room in 0..sc.rooms {
        let url = server.room_url(&format!("bench-{room}"));
        for w in 0..sc.writers_per_room {
            sockets.push((room, connect_synced(&url, w == 0).await?));
        }
    }
    let flushes_before = device.as_deref().and_then(read_flush_counter);
    let start = Instant::now() + Duration::from_millis(50);
    let window = Window {
        start,
        from: start + timing.warmup,
        until: start + timing.warmup + timing.measure,
    };
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, (room, ws))| tokio::spawn(run_writer(ws, room, i, sc.in_flight, window)))
        .collect();
    let mut reports = Vec::with_capacity(tasks.len());
    for t in tasks {
        reports.push(t.await.context("writer task panicked")??);
    }
    let flushes_after = device.as_deref().and_then(read_flush_counter);

    // Nothing lost: a fresh peer syncs each room and finds every character typed into it.
    let mut text_total = 0;
    for room in 0..sc.rooms {
        let expected: u64 = reports
            .iter()
            .filter(|r| r.room == room)
            .map(|r| r.typed)
            .sum();
        let checker = Client::connect_synced(&server.room_url(&format!("bench-{room}"))).await?;
        let found = u64::from(checker.len());
        checker.close().await;
        if found != expected {
            bail!("room {room} holds {found} characters, but {expected} were typed and echoed");
        }
        text_total += found;
    }
    server.stop().await?;

    let mut latency = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
    for r in &reports {
        latency.add(&r.latency)?;
    }
    Ok(Outcome {
        scenario: sc,
        measured: timing.measure,
        latency,
        updates: reports.iter().map(|r| r.echoed_in_window).sum(),
        deliveries: reports.iter().map(|r| r.deliveries_in_window).sum(),
        saved: reports.iter().map(|r| r.saved_in_window).sum(),
        disk_flushes: match (flushes_before, flushes_after) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
        text_per_room: text_total / sc.rooms.max(1) as u64,
    })
}

/// `/sys/dev/block/MAJ:MIN/stat` of the block device holding `path`, if it has one.
fn flush_counter_path(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let dev = std::fs::metadata(path).ok()?.dev();
    // glibc's gnu_dev_major / gnu_dev_minor.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let stat = PathBuf::from(format!("/sys/dev/block/{major}:{minor}/stat"));
    read_flush_counter(&stat).map(|_| stat)
}

/// Flush requests per second the data disk sees from everything else, sampled over `span`
/// with no load from this bench.
fn background_flush_rate(span: Duration) -> Option<f64> {
    let dir = tempfile::tempdir().ok()?;
    let stat = flush_counter_path(dir.path())?;
    let before = read_flush_counter(&stat)?;
    std::thread::sleep(span);
    let after = read_flush_counter(&stat)?;
    Some(after.saturating_sub(before) as f64 / span.as_secs_f64())
}

/// The "flush requests completed" field (the 16th) of a block device `stat` file.
fn read_flush_counter(stat: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(stat).ok()?;
    text.split_whitespace().nth(15)?.parse().ok()
}

/// The filesystem type, device and mount point holding `path`, from `/proc/self/mountinfo`.
fn filesystem_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split_whitespace().nth(4) else {
            continue;
        };
        let mut right = right.split_whitespace();
        let fstype = right.next().unwrap_or("?");
        let source = right.next().unwrap_or("?");
        if path.starts_with(mount_point)
            && best.as_ref().is_none_or(|(n, _)| mount_point.len() >= *n)
        {
            best = Some((
                mount_point.len(),
                format!("{fstype} ({source} on {mount_point})"),
            ));
        }
    }
    best.map(|(_, s)| s)
}

/// The first `model name` of `/proc/cpuinfo`.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// Prints the machine, the results table and the strict-minus-relaxed comparison as Markdown.
fn print_report(
    timing: Timing,
    background: Option<f64>,
    outcomes: &[Outcome],
    failures: &[(Scenario, String)],
) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let data_fs = filesystem_of(&std::env::temp_dir()).unwrap_or_else(|| "unknown".into());
    println!();
    println!("## Weft sync throughput");
    println!();
    println!(
        "Machine: {nproc} CPUs ({}), Linux {}; data directory under {} on {data_fs}.",
        cpu_model().unwrap_or_else(|| "unknown CPU".into()),
        kernel.trim(),
        std::env::temp_dir().display(),
    );
    println!(
        "Server and load generator in one process, 2 tokio workers each; warm-up {:?}, measured {:?} per scenario.",
        timing.warmup, timing.measure
    );
    match background {
        Some(rate) => println!(
            "Background flush requests on the data disk before the run (other processes): {rate:.0}/s."
        ),
        None => println!("The data disk's flush counter is not readable here."),
    }
    println!();
    println!(
        "| # | scenario | durability | rooms | writers/room | in flight/writer | updates | updates/s | p50 ms | p99 ms | p99.9 ms | max ms | deliveries/s | durable batches | disk flushes | text/room KiB |"
    );
    println!("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for o in outcomes {
        let s = o.scenario;
        let strict = s.durability == Durability::Strict;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {} | {} | {:.1} |",
            s.id,
            s.label,
            durability_name(s.durability),
            s.rooms,
            s.writers_per_room,
            s.in_flight,
            o.updates,
            o.updates_per_sec(),
            o.ms(0.5),
            o.ms(0.99),
            o.ms(0.999),
            o.latency.max() as f64 / 1000.0,
            o.deliveries as f64 / o.measured.as_secs_f64(),
            if strict { o.saved.to_string() } else { "–".into() },
            o.disk_flushes.map_or_else(|| "n/a".into(), |n| n.to_string()),
            o.text_per_room as f64 / 1024.0,
        );
    }
    for (s, e) in failures {
        println!(
            "| {} | {} | {} | {} | {} | {} | FAILED: {} ||||||||||",
            s.id,
            s.label,
            durability_name(s.durability),
            s.rooms,
            s.writers_per_room,
            s.in_flight,
            e.replace('|', "/")
        );
    }
    println!();
    println!("What waiting for the flush costs (strict minus relaxed):");
    println!();
    println!("| # | scenario | Δ p50 ms | Δ p99 ms | strict / relaxed updates/s |");
    println!("|---|---|--:|--:|--:|");
    for strict in outcomes
        .iter()
        .filter(|o| o.scenario.durability == Durability::Strict)
    {
        let relaxed = outcomes.iter().find(|o| {
            o.scenario.id == strict.scenario.id && o.scenario.durability == Durability::Relaxed
        });
        if let Some(relaxed) = relaxed {
            println!(
                "| {} | {} | {:+.2} | {:+.2} | {:.2} |",
                strict.scenario.id,
                strict.scenario.label,
                strict.ms(0.5) - relaxed.ms(0.5),
                strict.ms(0.99) - relaxed.ms(0.99),
                strict.updates_per_sec() / relaxed.updates_per_sec().max(f64::MIN_POSITIVE),
            );
        }
    }
    println!();
    println!(
        "Latency: from writing an update's frame to reading its echo at the sender. `deliveries/s`: update frames received by all members. \
         `durable batches`: `saved` notices (one per room commit; equals flushes with one room, an upper bound with many). \
         `disk flushes`: device-wide flush requests on the data disk during the run (other processes count too). \
         `text/room KiB`: size of each room's text at the end (every room starts empty; compaction re-encodes the whole document every 500 updates)."
    );
}

/// `strict` or `relaxed`.
fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::Strict => "strict",
        Durability::Relaxed => "relaxed",
    }
}

/// Runs every scenario, prints the report, and fails if any scenario failed.
fn main() -> anyhow::Result<()> {
    let Options { timing, only } = Options::from_env_and_args()?;
    let background = background_flush_rate(timing.baseline);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for sc in scenarios()
        .into_iter()
        .filter(|s| only.is_empty() || only.contains(&s.id))
    {
        eprintln!(
            "sync_throughput: scenario {} ({}, {}) …",
            sc.id,
            sc.label,
            durability_name(sc.durability)
        );
        // Bounded: warm-up, window, drain and verification all have their own timeouts; this
        // catches anything they miss.
        let limit = timing.warmup + timing.measure + Duration::from_secs(120);
        match rt.block_on(async { tokio::time::timeout(limit, run_scenario(sc, timing)).await }) {
            Ok(Ok(o)) => {
                eprintln!(
                    "  {} updates, {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
                    o.updates,
                    o.updates_per_sec(),
                    o.ms(0.5),
                    o.ms(0.99)
                );
                outcomes.push(o);
            }
            Ok(Err(e)) => {
                eprintln!("  FAILED: {e:#}");
                failures.push((sc, format!("{e:#}")));
            }
            Err(_) => {
                eprintln!("  FAILED: did not finish within {limit:?}");
                failures.push((sc, format!("did not finish within {limit:?}")));
            }
        }
    }
    print_report(timing, background, &outcomes, &failures);
    if !failures.is_empty() {
        bail!("{} scenario(s) failed", failures.len());
    }
    Ok(())
}
