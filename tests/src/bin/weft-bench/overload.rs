//! The `overload` scenario: can a few abusive clients hurt everyone else?
//!
//! 2,000 idle connections over 200 rooms are opened from ten loopback addresses
//! (127.0.0.2–127.0.0.11, 200 each, under the default per-address limit), then a typing load of
//! 20 rooms × 2 clients × 10 inserts/s is measured twice: alone, and while five abusive clients,
//! each from an address of its own, attack in rooms of their own and reconnect whenever they are
//! thrown out:
//!
//! - `flood`: valid 32 KiB document updates as fast as the socket takes them;
//! - `awareness`: 60 KiB awareness states as fast as possible;
//! - `frames`: tiny frames (query-awareness) as fast as possible;
//! - `garbage`: undecodable frames, reconnecting at once (connection churn);
//! - `stalled`: a member of the `flood` room that never reads.
//!
//! The reports are labelled `overload-idle`, `overload-calm` and `overload-attacked`.
//! Reported: the typists' broadcast latency and deliveries in both phases, the server's RSS
//! (before, peak while attacked, after) and CPU, and what happened to the abusers (sessions,
//! bytes sent, close codes).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::TcpSocket;

use super::*;

/// Idle connections per source address (the server's default per-address limit is 256).
const IDLE_PER_ADDRESS: usize = 200;
/// Rooms and clients of the measured typing load.
const TYPING_ROOMS: usize = 20;
const TYPISTS_PER_ROOM: usize = 2;
const TYPING_RATE: f64 = 10.0;
/// Most sessions one abuser opens in a phase.
const MAX_ABUSER_SESSIONS: u64 = 2_000;
/// Most frames one abuser session sends.
const MAX_ABUSER_FRAMES: u64 = 1_000_000;

/// The `host:port` a URL template points at.
fn target_addr(template: &str) -> anyhow::Result<SocketAddr> {
    let rest = template
        .strip_prefix("ws://")
        .context("only ws:// URLs are supported")?;
    let authority = rest.split('/').next().unwrap_or_default();
    authority
        .parse()
        .with_context(|| format!("{authority:?} is not an IP:port"))
}

/// Opens a WebSocket to `url` from the loopback address `source`.
async fn connect_from(url: &str, source: Ipv4Addr) -> anyhow::Result<Ws> {
    let addr = target_addr(url)?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
        .await
        .context("connect timed out")??;
    tcp.set_nodelay(true)?;
    let (ws, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)),
    )
    .await
    .context("upgrade timed out")??;
    Ok(ws)
}

/// What the abusers did in one phase.
#[derive(Default)]
struct AbuseLog {
    sessions: BTreeMap<&'static str, u64>,
    bytes: BTreeMap<&'static str, u64>,
    /// `abuser: close code` → count.
    closes: BTreeMap<String, u64>,
}

type SharedLog = Arc<Mutex<AbuseLog>>;

fn log(shared: &SharedLog) -> std::sync::MutexGuard<'_, AbuseLog> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The frames an abuser sends, generated per frame so a flood is never a repeated no-op.
#[derive(Clone, Copy)]
enum Attack {
    Flood,
    Awareness,
    Frames,
    Garbage,
}

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Attack::Flood => "flood",
            Attack::Awareness => "awareness",
            Attack::Frames => "frames",
            Attack::Garbage => "garbage",
        }
    }

    fn frame(self, n: u64, rng: &mut rand::rngs::StdRng) -> Vec<u8> {
        match self {
            Attack::Flood => {
                // A fresh client each time: a real 32 KiB insert the server must apply and store.
                let doc = Doc::with_client_id(rng.gen_range(1 << 40..1 << 50));
                let text = doc.get_or_insert_text("content");
                let mut txn = doc.transact_mut();
                text.insert(&mut txn, 0, &"x".repeat(32 * 1024));
                encode_sync(SYNC_UPDATE, &txn.encode_update_v1())
            }
            Attack::Awareness => {
                let state = format!("{{\"pad\":\"{}\"}}", "a".repeat(60 * 1024));
                Message::Awareness(weft_protocol::AwarenessUpdate {
                    entries: vec![weft_protocol::AwarenessEntry {
                        client_id: 4242,
                        clock: n + 1,
                        state,
                    }],
                })
                .encode()
            }
            Attack::Frames => Message::QueryAwareness.encode(),
            Attack::Garbage => {
                let mut junk = vec![0u8; 64];
                rng.fill(&mut junk[..]);
                junk[0] = 0x7f;
                junk
            }
        }
    }
}

/// One abuser: connects from `source` to `url`, sends `attack` frames as fast as the socket
/// takes them until thrown out, records how it ended, and reconnects until `stop`.
async fn abuser(
    url: String,
    source: Ipv4Addr,
    attack: Attack,
    stop: Arc<AtomicBool>,
    log_to: SharedLog,
) {
    let name = attack.name();
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(u32::from(source)));
    for _ in 0..MAX_ABUSER_SESSIONS {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let ws = match connect_from(&url, source).await {
            Ok(ws) => ws,
            Err(e) => {
                *log(&log_to)
                    .closes
                    .entry(format!("{name}: connect failed: {e:#}"))
                    .or_default() += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        *log(&log_to).sessions.entry(name).or_default() += 1;
        let (mut sink, mut stream) = ws.split();
        let reader = tokio::spawn(async move {
            // Bounded by the server closing the socket, or by the session ending below.
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(WsMessage::Close(c)) => {
                        return c.map_or("close without code".to_owned(), |c| {
                            u16::from(c.code).to_string()
                        });
                    }
                    Ok(_) => {}
                    Err(_) => return "socket error".to_owned(),
                }
            }
            "socket ended".to_owned()
        });
        let _ = sink
            .send(WsMessage::binary(encode_sync(SYNC_STEP1, &[0])))
            .await;
        let mut sent = 0u64;
        for n in 0..MAX_ABUSER_FRAMES {
            if stop.load(Ordering::Relaxed) || reader.is_finished() {
                break;
            }
            let frame = attack.frame(n, &mut rng);
            sent += frame.len() as u64;
            let send =
                tokio::time::timeout(Duration::from_secs(5), sink.send(WsMessage::binary(frame)));
            if !matches!(send.await, Ok(Ok(()))) {
                break;
            }
        }
        *log(&log_to).bytes.entry(name).or_default() += sent;
        let _ = tokio::time::timeout(Duration::from_millis(500), sink.close()).await;
        let how = if stop.load(Ordering::Relaxed) {
            "still connected at the end".to_owned()
        } else {
            match tokio::time::timeout(Duration::from_secs(5), reader).await {
                Ok(Ok(how)) => how,
                _ => "no close seen".to_owned(),
            }
        };
        *log(&log_to)
            .closes
            .entry(format!("{name}: {how}"))
            .or_default() += 1;
    }
}

/// A member that joins `url` from `source` and never reads; rejoins when cut off.
async fn stalled(url: String, source: Ipv4Addr, stop: Arc<AtomicBool>, log_to: SharedLog) {
    for _ in 0..MAX_ABUSER_SESSIONS {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut ws) = connect_from(&url, source).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        *log(&log_to).sessions.entry("stalled").or_default() += 1;
        let _ = ws
            .send(WsMessage::binary(encode_sync(SYNC_STEP1, &[0])))
            .await;
        // Never reads: the server's queue for it fills, or TCP backs up, until it is closed.
        // Probe every 500 ms whether the server has given up on it (a write then fails).
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let probe = tokio::time::timeout(
                Duration::from_secs(2),
                ws.send(WsMessage::binary(Message::QueryAwareness.encode())),
            );
            if !matches!(probe.await, Ok(Ok(()))) {
                *log(&log_to)
                    .closes
                    .entry("stalled: cut off".into())
                    .or_default() += 1;
                break;
            }
        }
    }
}

/// The abusers `--attacks` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum AttackName {
    /// Valid 32 KiB document updates as fast as possible.
    Flood,
    /// 60 KiB awareness states as fast as possible.
    Awareness,
    /// Tiny frames as fast as possible.
    Frames,
    /// Undecodable frames, reconnecting at once.
    Garbage,
    /// A member of the flood room that never reads.
    Stalled,
}

/// `overload`: see the module documentation. `only` selects abusers (empty: all).
///
/// With `attack_cpu`, the abusers run in a child process (`--scenario attack`) pinned to that
/// CPU at the lowest priority, so generating the attack does not take CPU from the typists
/// being measured.
pub(super) async fn overload(
    target: &Target,
    seconds: f64,
    only: &[AttackName],
    attack_cpu: Option<usize>,
) -> Vec<Report> {
    let shared = Arc::new(Shared::new(IDLE_CONNECTIONS));
    let mut idle = Report {
        label: "overload-idle".into(),
        ..Report::default()
    };
    let before = proc_sample(target.pid);
    eprintln!("[overload] opening {IDLE_CONNECTIONS} idle connections from 10 addresses");
    let start = Instant::now();
    let sem = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut set = JoinSet::new();
    for i in 0..IDLE_CONNECTIONS {
        let url = target.url(&format!("overload-idle-r{}", i % IDLE_ROOMS));
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i / IDLE_PER_ADDRESS) as u8);
        let sem = Arc::clone(&sem);
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let mut ws = connect_from(&url, source).await?;
            ws.send(WsMessage::binary(encode_sync(SYNC_STEP1, &[0])))
                .await?;
            anyhow::Ok(ws)
        });
    }
    let stop_idle = Arc::new(AtomicBool::new(false));
    let mut holders = JoinSet::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(ws)) => {
                let (_sink, stream) = ws.split();
                holders.spawn(drain(stream, Arc::clone(&stop_idle)));
            }
            Ok(Err(e)) => shared.error(format!("idle connection: {e:#}")),
            Err(e) => shared.error(format!("idle task: {e}")),
        }
    }
    let connected = holders.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_idle = proc_sample(target.pid);
    idle.put("connections", connected as u64);
    idle.put("connect_wall_s", start.elapsed().as_secs_f64());
    put_server(&mut idle, before, after_idle);
    let idle = finish(idle, &shared, connected == IDLE_CONNECTIONS);

    eprintln!("[overload] typing alone");
    let calm = typing_phase(
        target,
        "overload-calm".into(),
        TYPING_ROOMS,
        TYPISTS_PER_ROOM,
        TYPING_RATE,
        seconds,
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let abuse_log = SharedLog::default();
    let mut abusers = JoinSet::new();
    let mut child = None;
    match attack_cpu {
        None => {
            eprintln!("[overload] typing while five abusers attack (in this process)");
            spawn_abusers(target, only, &stop, &abuse_log, &mut abusers);
        }
        Some(cpu) => {
            eprintln!("[overload] typing while five abusers attack (a child process on CPU {cpu})");
            child = Some(spawn_attack_process(target, only, seconds, cpu));
        }
    }
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (peak, stop, pid) = (Arc::clone(&peak), Arc::clone(&stop), target.pid);
        tokio::spawn(async move {
            // Bounded by `stop`, set when the measured phase ends (itself bounded).
            while !stop.load(Ordering::Relaxed) {
                if let Some(s) = proc_sample(pid) {
                    peak.fetch_max(s.rss_kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    // Let the attack get going before the typists start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut attacked = typing_phase(
        target,
        "overload-attacked".into(),
        TYPING_ROOMS,
        TYPISTS_PER_ROOM,
        TYPING_RATE,
        seconds,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    while abusers.join_next().await.is_some() {}
    attacked.put(
        "server_rss_mib_peak",
        peak.load(Ordering::Relaxed) as f64 / 1024.0,
    );
    match child {
        Some(child) => {
            let finished = match child {
                Ok(child) => finish_attack_process(child).await,
                Err(e) => Err(e),
            };
            match finished {
                Ok(fields) => attacked.metrics.extend(fields),
                Err(e) => {
                    attacked.errors += 1;
                    attacked.ok = false;
                    attacked
                        .error_samples
                        .push(format!("attack process: {e:#}"));
                }
            }
        }
        None => put_abuse(&mut attacked, &abuse_log),
    }
    stop_idle.store(true, Ordering::Relaxed);
    while holders.join_next().await.is_some() {}
    vec![idle, calm, attacked]
}

/// Starts the abusers `only` selects (empty: all five) against `target`, in `set`.
fn spawn_abusers(
    target: &Target,
    only: &[AttackName],
    stop: &Arc<AtomicBool>,
    abuse_log: &SharedLog,
    set: &mut JoinSet<()>,
) {
    let on = |a: AttackName| only.is_empty() || only.contains(&a);
    let attacks = [
        (AttackName::Flood, Attack::Flood, "abuse-flood", 30),
        (
            AttackName::Awareness,
            Attack::Awareness,
            "abuse-awareness",
            31,
        ),
        (AttackName::Frames, Attack::Frames, "abuse-frames", 32),
        (AttackName::Garbage, Attack::Garbage, "abuse-garbage", 33),
    ];
    for (_, attack, room, host) in attacks.into_iter().filter(|a| on(a.0)) {
        set.spawn(abuser(
            target.url(room),
            Ipv4Addr::new(127, 0, 0, host),
            attack,
            Arc::clone(stop),
            Arc::clone(abuse_log),
        ));
    }
    if on(AttackName::Stalled) {
        set.spawn(stalled(
            target.url("abuse-flood"),
            Ipv4Addr::new(127, 0, 0, 34),
            Arc::clone(stop),
            Arc::clone(abuse_log),
        ));
    }
}

/// Adds what the abusers did to `report`.
fn put_abuse(report: &mut Report, abuse_log: &SharedLog) {
    let done = std::mem::take(&mut *log(abuse_log));
    for (name, n) in &done.sessions {
        report.put(leak(format!("abuser_{name}_sessions")), *n);
    }
    for (name, n) in &done.bytes {
        report.put(
            leak(format!("abuser_{name}_mib_sent")),
            *n as f64 / (1024.0 * 1024.0),
        );
    }
    let closes: Vec<String> = done
        .closes
        .iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect();
    report.put("abuser_endings", closes.join("; "));
}

/// This binary again, as `--scenario attack` against the same target and rooms, pinned to
/// `cpu` with `taskset` and at the lowest priority (`nice -n 19`): sharing a core with the
/// typists, it takes only the CPU they leave, so their latencies measure the server rather
/// than a starved load generator. It attacks until its stdin closes (or `seconds` × 3 + 60
/// pass).
fn spawn_attack_process(
    target: &Target,
    only: &[AttackName],
    seconds: f64,
    cpu: usize,
) -> anyhow::Result<tokio::process::Child> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut cmd = tokio::process::Command::new("taskset");
    cmd.arg("-c")
        .arg(cpu.to_string())
        .args(["nice", "-n", "19"])
        .arg(exe)
        .args(["--url", &target.template, "--scenario", "attack", "--json"])
        .args(["--room-prefix", &target.prefix])
        .args([
            "--seconds",
            &format!("{}", (seconds * 3.0 + 60.0).min(MAX_SECONDS)),
        ]);
    if !only.is_empty() {
        let names: Vec<String> = only
            .iter()
            .filter_map(|a| a.to_possible_value().map(|v| v.get_name().to_owned()))
            .collect();
        cmd.args(["--attacks", &names.join(",")]);
    }
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn()
        .context("starting the attack process (is taskset installed?)")
}

/// Ends the attack process (closes its stdin) and returns the `abuser_*` and
/// `attacker_cpu_pct` fields of its report.
async fn finish_attack_process(
    mut child: tokio::process::Child,
) -> anyhow::Result<Vec<(&'static str, Value)>> {
    drop(child.stdin.take());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("the attack process did not stop within 30 s")??;
    let reports: Value =
        serde_json::from_slice(&out.stdout).context("the attack process printed no report")?;
    let report = reports
        .get(0)
        .and_then(Value::as_object)
        .context("the attack process printed an empty report")?;
    Ok(report
        .iter()
        .filter(|(k, _)| k.starts_with("abuser_") || k.starts_with("attacker_"))
        .map(|(k, v)| (leak(k.clone()), v.clone()))
        .collect())
}

/// `attack`: the abusers of `overload` alone, until stdin closes or `seconds` pass; what they
/// did, and the CPU this process spent generating it.
pub(super) async fn attack(target: &Target, seconds: f64, only: &[AttackName]) -> Vec<Report> {
    let mut report = Report {
        label: "attack".into(),
        ..Report::default()
    };
    let me = proc_sample(Some(std::process::id()));
    let stop = Arc::new(AtomicBool::new(false));
    let abuse_log = SharedLog::default();
    let mut set = JoinSet::new();
    spawn_abusers(target, only, &stop, &abuse_log, &mut set);
    let stdin_closed = tokio::task::spawn_blocking(|| {
        // Returns at EOF (the parent closed it) or on error; the timeout below bounds it too.
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    });
    let _ = tokio::time::timeout(Duration::from_secs_f64(seconds), stdin_closed).await;
    stop.store(true, Ordering::Relaxed);
    while set.join_next().await.is_some() {}
    if let (Some(b), Some(a)) = (me, proc_sample(Some(std::process::id()))) {
        report.put("attacker_cpu_pct", cpu_pct(&b, &a));
    }
    put_abuse(&mut report, &abuse_log);
    report.ok = true;
    vec![report]
}

/// Metric names are `&'static str`; the few built at run time live for the process.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}
