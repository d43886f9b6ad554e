//! # `weft-bench`: a y-websocket load generator that can target Weft and its peers alike
//!
//! Run it against any y-websocket-compatible server on loopback, with a URL template whose
//! `{room}` is replaced by the room name:
//!
//! ```text
//! cargo run --release -p weft-tests --bin weft-bench -- \
//!     --url 'ws://127.0.0.1:8080/ws/{room}' --scenario echo2 --seconds 5 --server-pid PID
//! weft-bench --url 'ws://127.0.0.1:1234/{room}' --scenario hot-room --json   # Node peer
//! ```
//!
//! Every client is a real Yjs peer: it owns a yrs `Doc` (client id `CLIENT_BASE + index`), sends
//! sync step 1, answers the server's step 1 with step 2, counts itself synced on the server's
//! step 2, then types fixed-size (8-character) inserts at the end of its own text in the Y.Text
//! `content`, one `sync update` frame each, at a steady rate. Because every insert is the same
//! length, insert `k` of a client occupies clocks `[8k, 8k+8)`; the load generator keeps each
//! client's send times (µs since start) in a shared log, and a receiver that reads a frame
//! carrying a client's clocks up to `b`, where it had `a`, records one **broadcast latency**
//! sample per completed insert in that range (sender's insert → this member has read it).
//! Echoes of a client's own inserts are not counted. Receivers are cheap (they decode the
//! update's client ranges, they do not integrate it), so the generator's core is not the first
//! to saturate; one member per room, the auditor, integrates everything.
//!
//! After the send window each client reads on until it has every other member's final clock (or
//! `DRAIN_TIMEOUT` passes, which counts as an error), then the auditor's text is checked for the
//! expected length (**convergence**: the server's document holds every insert).
//!
//! Scenarios (`--scenario`, `--seconds` sets each send window):
//!
//! - `echo2`: 1 room × 2 clients × 50 inserts/s;
//! - `hot-room`: 1 room × 50 clients × 2 inserts/s;
//! - `many-rooms`: 100 rooms × 5 clients × 1 insert/s;
//! - `idle`: 2,000 connections over 200 rooms, nobody types: RSS delta per connection and
//!   connects per second;
//! - `big-doc`: one client seeds a ~260k-edit, ~110k-character history in batched transactions
//!   (1,000 edits per update), then 10 sequential and 20 simultaneous fresh joins are timed
//!   (connect → every clock of the history received, read from the updates' struct sections
//!   without integrating them, as `join-storm` does: integrating a 260k-edit document in yrs
//!   took the generator longer than the server took to send it). Building the history takes
//!   about 3 minutes (yrs finds text positions by walking blocks); `--big-doc-cache FILE`
//!   stores it for later runs;
//! - `saturation`: 1 room × 50 clients at 4, 8, 16, 32, 64 and 128 inserts/s each, one report
//!   per step (at 64/s a room asks for about 157k deliveries a second, near what a null relay
//!   forwards on one core: the steps reach past the servers' knees); delivered/expected must be
//!   1.000;
//! - `overload`: 2,000 idle connections, then 20 rooms × 2 typists measured alone and while five
//!   abusive clients flood, spam and stall (see `weft-bench/overload.rs`). Run it against a
//!   server with its default limits: that is what it tests. `--attack-cpu N` runs the abusers in
//!   a child process (`--scenario attack`) pinned to CPU N, apart from the measured typists.
//! - `crowd-presence`, `join-storm`: see `weft-bench/crowd.rs`;
//! - `many-writers`: 1 room × 200 clients × 1 insert/s;
//! - `put-text` (Weft only): two 30,000-character documents rewritten whole through
//!   `PUT /api/docs/{id}/text` again and again, with `/healthz` timed every 20 ms meanwhile
//!   (see `weft-bench/put_text.rs`).
//!
//! With `--server-pid`, the server's CPU (utime + stime from `/proc/PID/stat`, assuming
//! `CLK_TCK` = 100) over the measured phase and its RSS (`VmRSS` of `/proc/PID/status`) before and
//! after are reported. Only loopback IP literals are accepted as hosts (no DNS, no TLS); every
//! phase is bounded in count and time. The report is a Markdown table per scenario, or with
//! `--json` one JSON array of reports on stdout; progress goes to stderr. The exit status is 1 if
//! any report has errors, lost deliveries or diverged rooms.
//!
//! Servers have per-connection rate limits: start Weft with raised `--max-frames-per-sec` and
//! `--max-bytes-per-sec` (see `tests/bench/compare.sh`), or `big-doc` and `saturation` trip them.

#[path = "weft-bench/crowd.rs"]
mod crowd;
#[path = "weft-bench/overload.rs"]
mod overload;
#[path = "weft-bench/put_text.rs"]
mod put_text;
#[path = "weft-bench/ranges.rs"]
mod ranges;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use weft_protocol::{
    decode_frame, encode_sync, Limits, Message, SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE,
};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

/// A client WebSocket as tokio-tungstenite returns it.
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// yrs client id of load-generator client `i` is `CLIENT_BASE + i`.
const CLIENT_BASE: u64 = 1_000_000;

/// Characters per typed insert; fixed so that clocks map to inserts.
const INSERT_LEN: u32 = 8;

/// Longest one connect-and-sync handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a client waits after the send window for the other members' last inserts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Most inserts one client sends in one phase, whatever the rate and duration.
const MAX_INSERTS_PER_CLIENT: u64 = 200_000;

/// Sockets opened at once while connecting a scenario's clients.
const CONNECT_CONCURRENCY: usize = 64;

/// Highest latency the histograms record, in microseconds (larger values are clamped).
const MAX_LATENCY_US: u64 = 120_000_000;

/// Longest `--seconds` accepted.
const MAX_SECONDS: f64 = 600.0;

/// Error messages kept per report (the count is complete).
const MAX_ERROR_SAMPLES: usize = 10;

/// Edits of the `big-doc` seed history.
const BIG_DOC_EDITS: u64 = 260_000;

/// Edits per transaction (and update frame) while seeding `big-doc`.
const BIG_DOC_BATCH: u64 = 1_000;

/// `big-doc` fresh joins timed one after another.
const BIG_DOC_SEQUENTIAL_JOINS: usize = 10;

/// `big-doc` fresh joins timed all at once.
const BIG_DOC_SIMULTANEOUS_JOINS: usize = 20;

/// Connections of the `idle` scenario.
const IDLE_CONNECTIONS: usize = 2_000;

/// Rooms the `idle` connections are spread over.
const IDLE_ROOMS: usize = 200;

/// Per-client rates of the `saturation` steps, inserts per second.
const SATURATION_RATES: [f64; 6] = [4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// The load shapes `--scenario` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScenarioName {
    /// 1 room × 2 clients × 50 inserts/s.
    Echo2,
    /// 1 room × 50 clients × 2 inserts/s.
    HotRoom,
    /// 100 rooms × 5 clients × 1 insert/s.
    ManyRooms,
    /// 2,000 idle connections over 200 rooms.
    Idle,
    /// Fresh joins to a document with a long history.
    BigDoc,
    /// 1 room × 50 clients at 4, 8, 16, 32 inserts/s each.
    Saturation,
    /// 2,000 idle connections; typists measured alone and while abusive clients attack.
    Overload,
    /// The `overload` abusers alone, until stdin closes or `--seconds` pass (what
    /// `--attack-cpu` runs in a child process).
    Attack,
    /// Weft only: two large documents rewritten through `PUT text` over and over, with
    /// `/healthz` timed meanwhile.
    PutText,
    /// 1,500 connections in one room, carets every 2 s each, an insert now and then.
    CrowdPresence,
    /// 150 clients join a 10 MB document at once.
    JoinStorm,
    /// 1 room × 200 writers × 1 insert/s.
    ManyWriters,
}

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "weft-bench",
    about = "y-websocket load generator (loopback targets only)"
)]
struct Args {
    /// URL template with `{room}`, e.g. `ws://127.0.0.1:8080/ws/{room}` (Weft) or
    /// `ws://127.0.0.1:1234/{room}` (y-websocket server). The host must be a loopback IP.
    #[arg(long)]
    url: String,
    /// A second node of the same cluster (URL template as `--url`): clients alternate between
    /// the two, so half of every room's members hear each update through the other node.
    /// Typing scenarios only (echo2, hot-room, many-rooms, saturation).
    #[arg(long)]
    url2: Option<String>,
    /// Which load shape to run.
    #[arg(long, value_enum)]
    scenario: ScenarioName,
    /// Send window of each phase, in seconds (0.5–600).
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// PID of the server process, for its CPU and RSS from `/proc`.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print the reports as one JSON array instead of Markdown tables.
    #[arg(long)]
    json: bool,
    /// File caching the `big-doc` seed history (built on first use, ~3 minutes; reused after).
    #[arg(long)]
    big_doc_cache: Option<std::path::PathBuf>,
    /// Prefix of room names, so repeated runs against one server use fresh rooms (default: a
    /// random one).
    #[arg(long)]
    room_prefix: Option<String>,
    /// `overload` only: which abusers attack (default: all five).
    #[arg(long, value_delimiter = ',', value_enum)]
    attacks: Vec<overload::AttackName>,
    /// `overload` only: run the abusers in a child process pinned to this CPU (`taskset`) at the
    /// lowest priority (`nice -n 19`), so generating the attack does not starve the measured
    /// typists.
    #[arg(long)]
    attack_cpu: Option<usize>,
}

/// Refuses anything but `ws://` to a loopback IP literal.
fn check_loopback(template: &str) -> anyhow::Result<()> {
    if !template.contains("{room}") {
        bail!("the URL template must contain {{room}}: {template}");
    }
    let Some(rest) = template.strip_prefix("ws://") else {
        bail!("only ws:// URLs are supported: {template}");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let ip: IpAddr = host
        .parse()
        .with_context(|| format!("host {host:?} is not an IP literal; use 127.0.0.1"))?;
    if !ip.is_loopback() {
        bail!("refusing non-loopback host {ip}: weft-bench only targets this machine");
    }
    Ok(())
}

/// State every client of a phase shares: send logs, final clocks, error samples.
struct Shared {
    /// Zero of every timestamp.
    epoch: Instant,
    /// Per client, the send time (µs since `epoch`) of each insert, by insert index.
    sent: Vec<Mutex<Vec<u64>>>,
    /// Per client, whether it has stopped typing.
    done: Vec<AtomicBool>,
    /// Per client, its clock after its last insert (valid once `done`).
    final_clock: Vec<AtomicU32>,
    /// Errors of the phase.
    errors: AtomicU64,
    /// The first few error messages.
    error_samples: Mutex<Vec<String>>,
}

impl Shared {
    /// State for `clients` clients.
    fn new(clients: usize) -> Self {
        Self {
            epoch: Instant::now(),
            sent: (0..clients).map(|_| Mutex::new(Vec::new())).collect(),
            done: (0..clients).map(|_| AtomicBool::new(false)).collect(),
            final_clock: (0..clients).map(|_| AtomicU32::new(0)).collect(),
            errors: AtomicU64::new(0),
            error_samples: Mutex::new(Vec::new()),
        }
    }

    /// Microseconds since `epoch`.
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Counts an error and keeps its message if there is room.
    fn error(&self, msg: impl Into<String>) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.error_samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() < MAX_ERROR_SAMPLES {
            samples.push(msg.into());
        }
    }
}

/// A new latency histogram in microseconds.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// A connected, synced peer.
struct Conn {
    /// The socket.
    ws: Ws,
    /// The peer's replica.
    doc: Doc,
    /// Connect → synced.
    handshake: Duration,
}

/// Encodes the answer to a sync step 1 carrying `sv`.
fn step2_for(doc: &Doc, sv: &[u8]) -> anyhow::Result<Vec<u8>> {
    let sv = StateVector::decode_v1(sv).context("bad state vector in sync step 1")?;
    let update = doc.transact().encode_state_as_update_v1(&sv);
    Ok(encode_sync(SYNC_STEP2, &update))
}

/// Applies a v1 update to `doc`.
fn apply(doc: &Doc, update: &[u8]) -> anyhow::Result<()> {
    let update = Update::decode_v1(update).context("undecodable update")?;
    doc.transact_mut()
        .apply_update(update)
        .context("update did not apply")?;
    Ok(())
}

/// Opens `url` and runs the sync handshake for a peer with yrs client id `client_id`.
async fn connect(url: &str, client_id: u64) -> anyhow::Result<Conn> {
    let limits = Limits::DEFAULT;
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + CONNECT_TIMEOUT);
    let doc = Doc::with_client_id(client_id);
    let (mut ws, _) = tokio::time::timeout_at(deadline, tokio_tungstenite::connect_async(url))
        .await
        .context("connect timed out")?
        .with_context(|| format!("connect to {url}"))?;
    if let MaybeTlsStream::Plain(tcp) = ws.get_ref() {
        tcp.set_nodelay(true)?;
    }
    let sv = doc.transact().state_vector().encode_v1();
    ws.send(WsMessage::binary(encode_sync(SYNC_STEP1, &sv)))
        .await?;
    let mut synced = false;
    // Bounded by the deadline: every read is under `timeout_at`.
    loop {
        if synced {
            break;
        }
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("handshake timed out")?
            .context("server closed during the handshake")??;
        let bytes = match frame {
            WsMessage::Binary(b) => b,
            WsMessage::Close(c) => bail!("server closed during the handshake: {c:?}"),
            _ => continue,
        };
        for msg in decode_frame(&bytes, &limits)? {
            match msg {
                Message::SyncStep1(sv) => {
                    ws.send(WsMessage::binary(step2_for(&doc, &sv)?)).await?;
                }
                Message::SyncStep2(u) => {
                    apply(&doc, &u)?;
                    synced = true;
                }
                Message::Update(u) => apply(&doc, &u)?,
                _ => {}
            }
        }
    }
    Ok(Conn {
        ws,
        doc,
        handshake: start.elapsed(),
    })
}

/// Connects clients `0..urls.len()` (client `i` to `urls[i]`) with bounded concurrency.
/// Returns the connections in client order (`None` where connecting failed) and the wall time.
async fn connect_all(urls: &[String], shared: &Arc<Shared>) -> (Vec<Option<Conn>>, Duration) {
    let start = Instant::now();
    let sem = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut set = JoinSet::new();
    for (i, url) in urls.iter().enumerate() {
        let url = url.clone();
        let sem = Arc::clone(&sem);
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (i, connect(&url, CLIENT_BASE + i as u64).await)
        });
    }
    let mut conns: Vec<Option<Conn>> = (0..urls.len()).map(|_| None).collect();
    while let Some(res) = set.join_next().await {
        match res {
            Ok((i, Ok(c))) => conns[i] = Some(c),
            Ok((i, Err(e))) => shared.error(format!("client {i}: {e:#}")),
            Err(e) => shared.error(format!("connect task: {e}")),
        }
    }
    (conns, start.elapsed())
}

/// What one typing client measured.
struct PeerResult {
    /// Broadcast latencies of other members' inserts, µs.
    latency: Histogram<u64>,
    /// Other members' inserts this client integrated.
    delivered: u64,
    /// Inserts this client sent.
    sent: u64,
    /// The client's text at the end (the room's auditor only; empty for the others).
    text: String,
    /// Whether it received every other member's last insert before the drain deadline.
    caught_up: bool,
}

/// Writes frames from `rx` to the socket until the channel closes or a write fails.
async fn writer(mut sink: SplitSink<Ws, WsMessage>, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(frame) = rx.recv().await {
        if sink.send(WsMessage::binary(frame)).await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

/// One typing client: types at `rate`/s from `start` to `stop`, reads everything the server
/// sends, and stops once it holds every other member's final clock.
///
/// Receivers are cheap: they decode each update's client ranges (which clocks of which sender
/// it carries) and count inserts per sender, without integrating it, so that the load
/// generator's core is not what saturates first. One member per room (the first, the
/// *auditor*) also integrates every update into its replica, whose text is checked at the end.
#[allow(clippy::too_many_arguments)]
async fn run_peer(
    conn: Conn,
    idx: usize,
    members: Arc<Vec<usize>>,
    rate: f64,
    start: Instant,
    stop: Instant,
    shared: Arc<Shared>,
) -> PeerResult {
    let Conn { ws, doc, .. } = conn;
    let text = doc.get_or_insert_text("content");
    let (sink, mut stream): (_, SplitStream<Ws>) = ws.split();
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(writer(sink, rx));
    let mut res = PeerResult {
        latency: histogram(),
        delivered: 0,
        sent: 0,
        text: String::new(),
        caught_up: false,
    };
    let auditor = members.first() == Some(&idx);
    // Per sender (client id), the highest clock received so far.
    let mut clocks: HashMap<u64, u32> = HashMap::new();
    let period = Duration::from_secs_f64(1.0 / rate);
    // Spread the clients' ticks over one period.
    let offset = period.mul_f64(rand::thread_rng().gen::<f64>());
    let mut tick = tokio::time::interval_at(tokio::time::Instant::from_std(start + offset), period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(Duration::from_millis(50));
    let drain_deadline = stop + DRAIN_TIMEOUT;
    let limits = Limits::DEFAULT;
    let mut typing = true;
    let mut alive = true;
    let own = CLIENT_BASE + idx as u64;
    // Bounded: typing ends at `stop` or after MAX_INSERTS_PER_CLIENT, reading at `drain_deadline`.
    loop {
        if !typing {
            let caught_up = members.iter().all(|&m| {
                m == idx || {
                    shared.done[m].load(Ordering::Acquire)
                        && clocks.get(&(CLIENT_BASE + m as u64)).copied().unwrap_or(0)
                            >= shared.final_clock[m].load(Ordering::Acquire)
                }
            });
            if caught_up {
                res.caught_up = true;
                break;
            }
            if Instant::now() >= drain_deadline {
                shared.error(format!(
                    "client {idx}: missing updates after the drain timeout"
                ));
                break;
            }
            if !alive {
                break;
            }
        }
        tokio::select! {
            _ = tick.tick(), if typing => {
                if Instant::now() >= stop || res.sent >= MAX_INSERTS_PER_CLIENT {
                    typing = false;
                    let clock = doc.transact().state_vector().get(&ClientID::new(own));
                    shared.final_clock[idx].store(clock, Ordering::Release);
                    shared.done[idx].store(true, Ordering::Release);
                    continue;
                }
                let payload = format!("{:>7}|", res.sent % 10_000_000);
                let update = {
                    let mut txn = doc.transact_mut();
                    let len = text.len(&txn);
                    text.insert(&mut txn, len, &payload);
                    txn.encode_update_v1()
                };
                shared.sent[idx]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(shared.now_us());
                res.sent += 1;
                if tx.send(encode_sync(SYNC_UPDATE, &update)).is_err() {
                    shared.error(format!("client {idx}: writer gone"));
                }
            }
            frame = stream.next(), if alive => {
                let bytes = match frame {
                    Some(Ok(WsMessage::Binary(b))) => b,
                    Some(Ok(WsMessage::Close(c))) => {
                        shared.error(format!("client {idx}: server closed: {c:?}"));
                        alive = false;
                        typing = false;
                        shared.done[idx].store(true, Ordering::Release);
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        shared.error(format!("client {idx}: socket error: {e}"));
                        alive = false;
                        typing = false;
                        shared.done[idx].store(true, Ordering::Release);
                        continue;
                    }
                    None => {
                        shared.error(format!("client {idx}: socket ended"));
                        alive = false;
                        typing = false;
                        shared.done[idx].store(true, Ordering::Release);
                        continue;
                    }
                };
                let msgs = match decode_frame(&bytes, &limits) {
                    Ok(m) => m,
                    Err(e) => {
                        shared.error(format!("client {idx}: undecodable frame: {e}"));
                        continue;
                    }
                };
                for msg in msgs {
                    match msg {
                        Message::SyncStep1(sv) => match step2_for(&doc, &sv) {
                            Ok(f) => { let _ = tx.send(f); }
                            Err(e) => shared.error(format!("client {idx}: {e:#}")),
                        },
                        Message::SyncStep2(u) | Message::Update(u) => {
                            observe(&u, idx, &shared, &mut res, &mut clocks);
                            if auditor {
                                if let Err(e) = apply(&doc, &u) {
                                    shared.error(format!("client {idx}: {e:#}"));
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ = check.tick() => {}
        }
    }
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    if auditor {
        res.text = text.get_string(&doc.transact());
    }
    res
}

/// Reads which clocks of which senders an update received by client `idx` carries (without
/// integrating it) and records one latency sample per other load-generator insert it completes.
/// Senders' inserts arrive in order on one socket, so a range that starts past what was
/// received from that sender means an update was lost.
fn observe(
    update: &[u8],
    idx: usize,
    shared: &Shared,
    res: &mut PeerResult,
    clocks: &mut HashMap<u64, u32>,
) {
    let update = match Update::decode_v1(update) {
        Ok(u) => u,
        Err(e) => {
            shared.error(format!("client {idx}: undecodable update: {e}"));
            return;
        }
    };
    let now = shared.now_us();
    // `Update::state_vector` counts only ranges that start at clock 0: read the inserted ranges.
    for (client, ranges) in update.insertions(true).iter() {
        let (lower, clock) = ranges.iter().fold((u32::MAX, 0), |(lo, hi), r| {
            (lo.min(r.start), hi.max(r.end))
        });
        let id = client.get();
        let Some(sender) = id
            .checked_sub(CLIENT_BASE)
            .and_then(|s| usize::try_from(s).ok())
        else {
            continue;
        };
        if sender == idx || sender >= shared.sent.len() {
            continue;
        }
        let seen = clocks.entry(id).or_default();
        if clock <= *seen {
            continue;
        }
        if lower > *seen {
            shared.error(format!(
                "client {idx}: inserts of client {sender} from clock {} to {lower} never arrived",
                *seen
            ));
        }
        let from = *seen / INSERT_LEN;
        let to = clock / INSERT_LEN;
        *seen = clock;
        if to <= from {
            continue;
        }
        let log = shared.sent[sender]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for k in from..to {
            if let Some(&t) = log.get(k as usize) {
                let _ = res
                    .latency
                    .record(now.saturating_sub(t).clamp(1, MAX_LATENCY_US));
            }
            res.delivered += 1;
        }
    }
}

/// One report: a scenario (or a saturation step) against one server.
#[derive(Default)]
struct Report {
    /// Scenario label, e.g. `hot-room` or `saturation@16`.
    label: String,
    /// Metric name → value, in insertion order.
    metrics: Vec<(&'static str, Value)>,
    /// Errors.
    errors: u64,
    /// First error messages.
    error_samples: Vec<String>,
    /// Whether the run is valid: no errors, nothing lost, every room converged.
    ok: bool,
}

impl Report {
    /// Adds a metric.
    fn put(&mut self, name: &'static str, value: impl Into<Value>) {
        self.metrics.push((name, value.into()));
    }

    /// The report as JSON.
    fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("scenario".into(), self.label.clone().into());
        for (k, v) in &self.metrics {
            m.insert((*k).into(), v.clone());
        }
        m.insert("errors".into(), self.errors.into());
        m.insert("error_samples".into(), self.error_samples.clone().into());
        m.insert("ok".into(), self.ok.into());
        Value::Object(m)
    }

    /// The report as a Markdown table.
    fn to_markdown(&self) -> String {
        let mut out = format!("### {}\n\n| metric | value |\n|---|---|\n", self.label);
        for (k, v) in &self.metrics {
            let v = match v {
                Value::Number(n) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or(0.0)),
                other => other.to_string(),
            };
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        out.push_str(&format!(
            "| errors | {} |\n| ok | {} |\n",
            self.errors, self.ok
        ));
        for e in &self.error_samples {
            out.push_str(&format!("\n- error: {e}"));
        }
        out
    }
}

/// Milliseconds of a µs histogram value.
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// A sample of the server process from `/proc`.
#[derive(Clone, Copy)]
struct ProcSample {
    /// utime + stime, clock ticks.
    cpu_ticks: u64,
    /// Resident set size, KiB.
    rss_kib: u64,
    /// When it was taken.
    at: Instant,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`; `None` without a PID or if unreadable.
fn proc_sample(pid: Option<u32>) -> Option<ProcSample> {
    let pid = pid?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); index 0 here is field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    Some(ProcSample {
        cpu_ticks: utime + stime,
        rss_kib,
        at: Instant::now(),
    })
}

/// Adds server CPU % and RSS to `report` for the phase between two samples.
fn put_server(report: &mut Report, before: Option<ProcSample>, after: Option<ProcSample>) {
    if let (Some(b), Some(a)) = (before, after) {
        report.put("server_cpu_pct", cpu_pct(&b, &a));
        report.put("server_rss_mib_before", b.rss_kib as f64 / 1024.0);
        report.put("server_rss_mib_after", a.rss_kib as f64 / 1024.0);
    }
}

/// CPU used between two samples of one process, in % of one core (`CLK_TCK` = 100).
fn cpu_pct(before: &ProcSample, after: &ProcSample) -> f64 {
    let wall = after.at.duration_since(before.at).as_secs_f64().max(1e-6);
    after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / 100.0 / wall * 100.0
}

/// Adds this load generator's own CPU over the phase (100 = one core busy): near 100 on its
/// pinned core, the latencies measure the generator as much as the server.
fn put_generator(report: &mut Report, before: Option<ProcSample>, after: Option<ProcSample>) {
    if let (Some(b), Some(a)) = (before, after) {
        report.put("generator_cpu_pct", cpu_pct(&b, &a));
    }
}

/// Everything a phase needs to know about its target.
struct Target {
    /// URL template.
    template: String,
    /// A second node's URL template, for odd-numbered clients of typing phases.
    template2: Option<String>,
    /// Room name prefix.
    prefix: String,
    /// Server PID for `/proc`.
    pid: Option<u32>,
}

impl Target {
    /// The URL of room `name`.
    fn url(&self, name: &str) -> String {
        self.template
            .replace("{room}", &format!("{}-{name}", self.prefix))
    }

    /// The URL of room `name` for client `i`: odd clients use the second node, if any.
    fn url_for(&self, i: usize, name: &str) -> String {
        match &self.template2 {
            Some(t) if i % 2 == 1 => t.replace("{room}", &format!("{}-{name}", self.prefix)),
            _ => self.url(name),
        }
    }
}

/// Runs `rooms` × `per_room` clients typing at `rate`/s for `seconds`, and reports.
async fn typing_phase(
    target: &Target,
    label: String,
    rooms: usize,
    per_room: usize,
    rate: f64,
    seconds: f64,
) -> Report {
    let n = rooms * per_room;
    let shared = Arc::new(Shared::new(n));
    let urls: Vec<String> = (0..n)
        .map(|i| target.url_for(i, &format!("{label}-r{}", i / per_room)))
        .collect();
    eprintln!("[{label}] connecting {n} clients in {rooms} room(s)");
    let (conns, connect_wall) = connect_all(&urls, &shared).await;
    let mut handshakes = histogram();
    for c in conns.iter().flatten() {
        let _ = handshakes.record(
            u64::try_from(c.handshake.as_micros())
                .unwrap_or(MAX_LATENCY_US)
                .clamp(1, MAX_LATENCY_US),
        );
    }
    let connected = conns.iter().flatten().count();
    let members: Vec<Arc<Vec<usize>>> = (0..rooms)
        .map(|r| Arc::new((r * per_room..(r + 1) * per_room).collect()))
        .collect();
    // Clients that failed to connect count as done with nothing sent.
    for (i, c) in conns.iter().enumerate() {
        if c.is_none() {
            shared.done[i].store(true, Ordering::Release);
        }
    }
    eprintln!("[{label}] {connected}/{n} connected; typing for {seconds} s at {rate}/s each");
    let before = proc_sample(target.pid);
    let me_before = proc_sample(Some(std::process::id()));
    let start = Instant::now() + Duration::from_millis(200);
    let stop = start + Duration::from_secs_f64(seconds);
    let mut set = JoinSet::new();
    for (i, c) in conns.into_iter().enumerate() {
        if let Some(c) = c {
            let m = Arc::clone(&members[i / per_room]);
            let sh = Arc::clone(&shared);
            set.spawn(async move { (i, run_peer(c, i, m, rate, start, stop, sh).await) });
        }
    }
    let mut results: Vec<Option<PeerResult>> = (0..n).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((i, res)) => results[i] = Some(res),
            Err(e) => shared.error(format!("client task: {e}")),
        }
    }
    let after = proc_sample(target.pid);
    let me_after = proc_sample(Some(std::process::id()));
    let mut latency = histogram();
    let (mut sent, mut delivered, mut expected) = (0u64, 0u64, 0u64);
    let mut converged = 0usize;
    for (r, m) in members.iter().enumerate() {
        let room: Vec<&PeerResult> = m.iter().filter_map(|&i| results[i].as_ref()).collect();
        let room_sent: u64 = room.iter().map(|p| p.sent).sum();
        for p in &room {
            sent += p.sent;
            delivered += p.delivered;
            expected += room_sent - p.sent;
            let _ = latency.add(&p.latency);
        }
        let want_len = room_sent * u64::from(INSERT_LEN);
        // The auditor integrated everything: its text holds every insert; every other member
        // received every other member's last clock.
        let audited = results[m[0]]
            .as_ref()
            .is_some_and(|a| a.text.len() as u64 == want_len);
        if room.len() == per_room && audited && room.iter().all(|p| p.caught_up) {
            converged += 1;
        } else {
            shared.error(format!(
                "room {r}: the auditor's text or a member misses inserts"
            ));
        }
    }
    let mut rep = Report {
        label,
        ..Report::default()
    };
    rep.put("connections", connected as u64);
    rep.put("connect_wall_s", connect_wall.as_secs_f64());
    rep.put("handshake_p50_ms", ms(handshakes.value_at_quantile(0.5)));
    rep.put("handshake_p99_ms", ms(handshakes.value_at_quantile(0.99)));
    rep.put("updates_sent", sent);
    rep.put("updates_sent_per_s", sent as f64 / seconds);
    rep.put("deliveries_expected", expected);
    rep.put("deliveries", delivered);
    rep.put("deliveries_per_s", delivered as f64 / seconds);
    let ratio = if expected == 0 {
        1.0
    } else {
        delivered as f64 / expected as f64
    };
    rep.put("delivered_ratio", ratio);
    rep.put("latency_p50_ms", ms(latency.value_at_quantile(0.5)));
    rep.put("latency_p99_ms", ms(latency.value_at_quantile(0.99)));
    rep.put("latency_p999_ms", ms(latency.value_at_quantile(0.999)));
    rep.put("latency_max_ms", ms(latency.max()));
    rep.put("rooms_converged", converged as u64);
    rep.put("rooms", rooms as u64);
    put_server(&mut rep, before, after);
    put_generator(&mut rep, me_before, me_after);
    finish(
        rep,
        &shared,
        connected == n && converged == rooms && ratio >= 1.0,
    )
}

/// Copies the error count and samples into `rep` and sets `ok`.
fn finish(mut rep: Report, shared: &Shared, valid: bool) -> Report {
    rep.errors = shared.errors.load(Ordering::Relaxed);
    rep.error_samples = shared
        .error_samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    rep.ok = valid && rep.errors == 0;
    rep
}

/// `idle`: opens 2,000 connections over 200 rooms and measures the server's RSS per connection.
async fn idle_phase(target: &Target, seconds: f64) -> Report {
    let label = "idle".to_string();
    let shared = Arc::new(Shared::new(IDLE_CONNECTIONS));
    let urls: Vec<String> = (0..IDLE_CONNECTIONS)
        .map(|i| target.url(&format!("idle-r{}", i % IDLE_ROOMS)))
        .collect();
    let before = proc_sample(target.pid);
    eprintln!("[idle] connecting {IDLE_CONNECTIONS} clients over {IDLE_ROOMS} rooms");
    let (conns, wall) = connect_all(&urls, &shared).await;
    let connected = conns.iter().flatten().count();
    let mut handshakes = histogram();
    for c in conns.iter().flatten() {
        let _ = handshakes.record(
            u64::try_from(c.handshake.as_micros())
                .unwrap_or(MAX_LATENCY_US)
                .clamp(1, MAX_LATENCY_US),
        );
    }
    // Let the server settle, then hold the connections a little (bounded) before measuring.
    let hold = Duration::from_secs_f64(seconds.clamp(1.0, 5.0));
    tokio::time::sleep(hold).await;
    let after = proc_sample(target.pid);
    let mut rep = Report {
        label,
        ..Report::default()
    };
    rep.put("connections", connected as u64);
    rep.put("rooms", IDLE_ROOMS as u64);
    rep.put("connect_wall_s", wall.as_secs_f64());
    rep.put(
        "connects_per_s",
        connected as f64 / wall.as_secs_f64().max(1e-6),
    );
    rep.put("handshake_p50_ms", ms(handshakes.value_at_quantile(0.5)));
    rep.put("handshake_p99_ms", ms(handshakes.value_at_quantile(0.99)));
    if let (Some(b), Some(a)) = (before, after) {
        let delta = a.rss_kib.saturating_sub(b.rss_kib) as f64;
        rep.put("rss_kib_per_connection", delta / connected.max(1) as f64);
    }
    put_server(&mut rep, before, after);
    for c in conns.into_iter().flatten() {
        let mut ws = c.ws;
        let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
    }
    finish(rep, &shared, connected == IDLE_CONNECTIONS)
}

/// Builds the `big-doc` history in `doc`: typing-like edits (insert at the cursor 71 % of the
/// time, backspace otherwise, jump the cursor now and then), one update per batch.
fn big_doc_batches(doc: &Doc) -> Vec<Vec<u8>> {
    let text = doc.get_or_insert_text("content");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut cursor: u32 = 0;
    let mut len: u32 = 0;
    let mut out = Vec::new();
    let alphabet = b"etaoin shrdlu cmfwyp vbgkjqxz, ETAOIN.\n";
    for _ in 0..BIG_DOC_EDITS / BIG_DOC_BATCH {
        let mut txn = doc.transact_mut();
        for _ in 0..BIG_DOC_BATCH {
            if len > 0 && rng.gen_bool(0.001) {
                cursor = rng.gen_range(0..=len);
            }
            if cursor > 0 && rng.gen_bool(0.2885) {
                text.remove_range(&mut txn, cursor - 1, 1);
                cursor -= 1;
                len -= 1;
            } else {
                let c = alphabet[rng.gen_range(0..alphabet.len())] as char;
                text.insert(&mut txn, cursor, c.encode_utf8(&mut [0; 4]));
                cursor += 1;
                len += 1;
            }
        }
        out.push(txn.encode_update_v1());
    }
    out
}

/// The client id whose edits make the `big-doc` history.
const BIG_DOC_WRITER: u64 = CLIENT_BASE - 1;

/// Every clock the `big-doc` history writes is below this; an error if its updates leave a gap.
fn seed_clock(batches: &[Vec<u8>]) -> anyhow::Result<u32> {
    let mut all = ranges::Ranges::default();
    for b in batches {
        all.add(b)?;
    }
    match all.of(BIG_DOC_WRITER) {
        [r] if r.start == 0 => Ok(r.end),
        other => bail!("the seed history's clocks are not one run from 0: {other:?}"),
    }
}

/// First bytes of a `--big-doc-cache` file.
const CACHE_MAGIC: &[u8; 8] = b"WEFTBD1\n";

/// The `big-doc` seed updates and final text length: read from `cache` if it holds them, else
/// built (and written to `cache` if given).
fn big_doc_seed(cache: Option<&std::path::Path>) -> anyhow::Result<(Vec<Vec<u8>>, u32)> {
    if let Some(bytes) = cache.and_then(|p| std::fs::read(p).ok()) {
        if let Some(seed) = parse_seed_cache(&bytes) {
            eprintln!("[big-doc] seed history read from the cache");
            return Ok(seed);
        }
    }
    eprintln!("[big-doc] building {BIG_DOC_EDITS} edits locally (minutes; see --big-doc-cache)");
    let doc = Doc::with_client_id(BIG_DOC_WRITER);
    let batches = big_doc_batches(&doc);
    let len = doc.get_or_insert_text("content").len(&doc.transact());
    if let Some(p) = cache {
        let mut out = CACHE_MAGIC.to_vec();
        out.extend_from_slice(&len.to_le_bytes());
        for b in &batches {
            out.extend_from_slice(&u32::try_from(b.len())?.to_le_bytes());
            out.extend_from_slice(b);
        }
        std::fs::write(p, out).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok((batches, len))
}

/// Parses a `--big-doc-cache` file: magic, text length, then length-prefixed updates.
fn parse_seed_cache(bytes: &[u8]) -> Option<(Vec<Vec<u8>>, u32)> {
    let rest = bytes.strip_prefix(CACHE_MAGIC.as_slice())?;
    let (len, mut rest) = rest.split_first_chunk::<4>()?;
    let mut batches = Vec::new();
    // Bounded by the file's length: every iteration consumes at least 4 bytes.
    while !rest.is_empty() {
        let (n, tail) = rest.split_first_chunk::<4>()?;
        let n = u32::from_le_bytes(*n) as usize;
        if tail.len() < n {
            return None;
        }
        batches.push(tail[..n].to_vec());
        rest = &tail[n..];
    }
    Some((batches, u32::from_le_bytes(*len)))
}

/// Drains and discards what the server sends on `ws` until it closes or `stop` is set.
async fn drain(mut stream: SplitStream<Ws>, stop: Arc<AtomicBool>) {
    let deadline = Instant::now() + Duration::from_secs(3600);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), stream.next()).await {
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(_) => return,
        }
    }
}

/// `big-doc`: seeds a long history, then times fresh joins.
async fn big_doc_phase(target: &Target, cache: Option<&std::path::Path>) -> Report {
    let shared = Arc::new(Shared::new(1));
    let url = target.url("big-doc");
    let mut rep = Report {
        label: "big-doc".into(),
        ..Report::default()
    };
    let built = Instant::now();
    let (batches, want_len) = match big_doc_seed(cache) {
        Ok(seed) => seed,
        Err(e) => {
            shared.error(format!("seed history: {e:#}"));
            return finish(rep, &shared, false);
        }
    };
    let bytes: usize = batches.iter().map(Vec::len).sum();
    eprintln!(
        "[big-doc] {} updates, {bytes} bytes, {want_len} chars, ready in {:.1} s; seeding",
        batches.len(),
        built.elapsed().as_secs_f64()
    );
    let clock = match seed_clock(&batches) {
        Ok(c) => c,
        Err(e) => {
            shared.error(format!("seed history: {e:#}"));
            return finish(rep, &shared, false);
        }
    };
    rep.put("seed_edits", BIG_DOC_EDITS);
    rep.put("seed_chars", u64::from(want_len));
    rep.put("seed_update_bytes", bytes as u64);
    let seeder = match connect(&url, CLIENT_BASE - 2).await {
        Ok(c) => c,
        Err(e) => {
            shared.error(format!("seeder: {e:#}"));
            return finish(rep, &shared, false);
        }
    };
    let (mut sink, stream) = seeder.ws.split();
    let stop = Arc::new(AtomicBool::new(false));
    let drainer = tokio::spawn(drain(stream, Arc::clone(&stop)));
    let seed_start = Instant::now();
    for b in &batches {
        if let Err(e) = sink
            .send(WsMessage::binary(encode_sync(SYNC_UPDATE, b)))
            .await
        {
            shared.error(format!("seeding: {e}"));
            break;
        }
    }
    // The seed is in once a fresh client gets all of it (bounded retries).
    let mut seeded = false;
    for i in 0..30 {
        match crowd::join_cheap(&url, CLIENT_BASE - 3 - i, BIG_DOC_WRITER, clock).await {
            Ok(_) => {
                seeded = true;
                break;
            }
            Err(e) => shared.error(format!("seed check: {e:#}")),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    rep.put("seed_s", seed_start.elapsed().as_secs_f64());
    if !seeded {
        shared.error("the server never held the whole seed text");
    }
    let before = proc_sample(target.pid);
    let mut seq = histogram();
    for i in 0..BIG_DOC_SEQUENTIAL_JOINS {
        match crowd::join_cheap(&url, CLIENT_BASE + 10 + i as u64, BIG_DOC_WRITER, clock).await {
            Ok((_, took)) => {
                let _ = seq.record(u64::try_from(took.as_micros()).unwrap_or(1).max(1));
            }
            Err(e) => shared.error(format!("sequential join {i}: {e:#}")),
        }
    }
    let mut sim = histogram();
    let mut set = JoinSet::new();
    let sim_start = Instant::now();
    for i in 0..BIG_DOC_SIMULTANEOUS_JOINS {
        let url = url.clone();
        set.spawn(async move {
            crowd::join_cheap(&url, CLIENT_BASE + 100 + i as u64, BIG_DOC_WRITER, clock).await
        });
    }
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok((_, took))) => {
                let _ = sim.record(u64::try_from(took.as_micros()).unwrap_or(1).max(1));
            }
            Ok(Err(e)) => shared.error(format!("simultaneous join: {e:#}")),
            Err(e) => shared.error(format!("join task: {e}")),
        }
    }
    let sim_wall = sim_start.elapsed();
    let after = proc_sample(target.pid);
    stop.store(true, Ordering::Relaxed);
    let _ = drainer.await;
    let _ = sink.close().await;
    rep.put("join_seq_count", seq.len());
    rep.put("join_seq_p50_ms", ms(seq.value_at_quantile(0.5)));
    rep.put("join_seq_max_ms", ms(seq.max()));
    rep.put("join_sim_count", sim.len());
    rep.put("join_sim_p50_ms", ms(sim.value_at_quantile(0.5)));
    rep.put("join_sim_max_ms", ms(sim.max()));
    rep.put("join_sim_wall_ms", sim_wall.as_secs_f64() * 1000.0);
    put_server(&mut rep, before, after);
    let all = seq.len() == BIG_DOC_SEQUENTIAL_JOINS as u64
        && sim.len() == BIG_DOC_SIMULTANEOUS_JOINS as u64;
    finish(rep, &shared, seeded && all)
}

/// Runs the chosen scenario; one report per phase.
async fn run(args: &Args) -> anyhow::Result<Vec<Report>> {
    check_loopback(&args.url)?;
    if !(0.5..=MAX_SECONDS).contains(&args.seconds) {
        bail!("--seconds must be between 0.5 and {MAX_SECONDS}");
    }
    let prefix = args
        .room_prefix
        .clone()
        .unwrap_or_else(|| format!("bench{:08x}", rand::thread_rng().gen::<u32>()));
    if let Some(url2) = &args.url2 {
        check_loopback(url2)?;
    }
    let target = Target {
        template: args.url.clone(),
        template2: args.url2.clone(),
        prefix,
        pid: args.server_pid,
    };
    let s = args.seconds;
    Ok(match args.scenario {
        ScenarioName::Echo2 => vec![typing_phase(&target, "echo2".into(), 1, 2, 50.0, s).await],
        ScenarioName::HotRoom => {
            vec![typing_phase(&target, "hot-room".into(), 1, 50, 2.0, s).await]
        }
        ScenarioName::ManyRooms => {
            vec![typing_phase(&target, "many-rooms".into(), 100, 5, 1.0, s).await]
        }
        ScenarioName::Idle => vec![idle_phase(&target, s).await],
        ScenarioName::BigDoc => vec![big_doc_phase(&target, args.big_doc_cache.as_deref()).await],
        ScenarioName::Saturation => {
            let mut out = Vec::new();
            for rate in SATURATION_RATES {
                let label = format!("saturation@{rate}");
                out.push(typing_phase(&target, label, 1, 50, rate, s).await);
            }
            out
        }
        ScenarioName::Overload => {
            overload::overload(&target, s, &args.attacks, args.attack_cpu).await
        }
        ScenarioName::Attack => overload::attack(&target, s, &args.attacks).await,
        ScenarioName::PutText => vec![put_text::put_text(&target, s).await],
        ScenarioName::CrowdPresence => vec![crowd::crowd_presence(&target, s).await],
        ScenarioName::JoinStorm => vec![crowd::join_storm(&target).await],
        ScenarioName::ManyWriters => {
            vec![typing_phase(&target, "many-writers".into(), 1, 200, 1.0, s).await]
        }
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let reports = rt.block_on(run(&args))?;
    if args.json {
        let arr: Vec<Value> = reports.iter().map(Report::to_json).collect();
        println!("{}", Value::Array(arr));
    } else {
        for r in &reports {
            println!("{}\n", r.to_markdown());
        }
    }
    if reports.iter().all(|r| r.ok) {
        Ok(())
    } else {
        std::process::exit(1)
    }
}
