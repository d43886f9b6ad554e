//! The crowd scenarios: many connections in one document.
//!
//! - `crowd-presence`: [`CROWD_CONNECTIONS`] clients in one room, each moving its caret (an
//!   awareness update with a fresh clock) every [`CROWD_AWARENESS_EVERY`] and typing one insert
//!   every [`CROWD_TYPE_EVERY`]. Reported: server CPU, awareness delivery latency (from a
//!   state's send to another member reading it, or a newer state of the same client: the newest
//!   state is what a cursor shows), the fraction of states delivered by the end of the drain,
//!   and the connections the server closed, by close code.
//! - `join-storm`: one client seeds a [`STORM_DOC_BYTES`] text, then [`STORM_JOINERS`] fresh
//!   clients join at once. Reported: time to synced (connect → a sync step 2 or update covering
//!   the whole seed) p50/p99/max and the server's peak RSS, sampled every 20 ms.
//!
//! Receivers stay cheap: awareness entries are read for client id and clock only (the JSON is
//! not parsed), and joiners read the client ranges of the document they get without building it.

use std::collections::BTreeMap;

use weft_protocol::{AwarenessEntry, AwarenessUpdate, Decoder, MESSAGE_AWARENESS};

use super::ranges::Ranges;
use super::*;

/// Connections of `crowd-presence`.
const CROWD_CONNECTIONS: usize = 1_500;

/// How often each `crowd-presence` client moves its caret.
const CROWD_AWARENESS_EVERY: Duration = Duration::from_secs(2);

/// How often each `crowd-presence` client types one insert.
const CROWD_TYPE_EVERY: Duration = Duration::from_secs(60);

/// How long `crowd-presence` clients read on after the send window.
const CROWD_DRAIN: Duration = Duration::from_secs(10);

/// Size of the `join-storm` document, in characters (ASCII, so also bytes of text).
const STORM_DOC_BYTES: usize = 10 * 1024 * 1024;

/// Characters per seed update of `join-storm`.
const STORM_CHUNK: usize = 256 * 1024;

/// Clients joining the `join-storm` document at once.
const STORM_JOINERS: usize = 150;

/// Longest one `join-storm` join may take.
const STORM_JOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// What the clients of `crowd-presence` share besides [`Shared`].
struct Crowd {
    /// Per client, the send time (µs since the epoch) of each awareness clock (clock 1 first).
    aw_sent: Vec<Mutex<Vec<u64>>>,
    /// Close codes the server sent, with counts.
    closes: Mutex<BTreeMap<String, u64>>,
}

/// What one `crowd-presence` client measured.
struct CrowdResult {
    /// Awareness delivery latencies, µs.
    aw_latency: Histogram<u64>,
    /// Other clients' awareness states read (or superseded by a newer one read).
    aw_delivered: u64,
    /// Of those, read within one second of being sent.
    aw_within_1s: u64,
    /// Document inserts: the typing client's counts.
    peer: PeerResult,
}

/// The (client id, sequence) pairs of an awareness message; `None` when `frame` is not an
/// awareness message. The sequence is the `"seq"` a crowd client puts first in its state (see
/// [`caret`]), read without parsing the JSON: a server may relay clocks above the sender's own
/// (Weft does, so clients that reconnect are not ignored), so the clock cannot index the
/// sender's log. A state without one (a removal) gives its clock.
fn awareness_clocks(frame: &[u8]) -> Option<Vec<(u64, u64)>> {
    let mut d = Decoder::new(frame);
    if d.read_var_uint("type").ok()? != MESSAGE_AWARENESS {
        return None;
    }
    let payload = d.read_var_bytes("awareness", usize::MAX).ok()?;
    let mut d = Decoder::new(payload);
    let n = d.read_var_uint("count").ok()?;
    let mut out = Vec::with_capacity(usize::try_from(n.min(4096)).unwrap_or(0));
    for _ in 0..n {
        let client = d.read_var_uint("client").ok()?;
        let clock = d.read_var_uint("clock").ok()?;
        let state = d.read_var_bytes("state", usize::MAX).ok()?;
        out.push((client, state_seq(state).unwrap_or(clock)));
    }
    Some(out)
}

/// The `N` of a state that starts `{"seq":N`.
fn state_seq(state: &[u8]) -> Option<u64> {
    let rest = state.strip_prefix(br#"{"seq":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The awareness message client `idx` sends for caret position `pos` at `clock`; the state
/// carries the clock as its `seq` too (see [`awareness_clocks`]).
fn caret(idx: usize, clock: u64, pos: u64) -> Vec<u8> {
    let state = format!(
        r##"{{"seq":{clock},"user":{{"name":"c{idx}","color":"#30bced"}},"cursor":{{"anchor":{pos},"head":{pos}}}}}"##
    );
    Message::Awareness(AwarenessUpdate {
        entries: vec![AwarenessEntry {
            client_id: CLIENT_BASE + idx as u64,
            clock,
            state,
        }],
    })
    .encode()
}

/// Counts the awareness clocks in `entries` that client `idx` had not seen yet.
fn count_states(
    entries: &[(u64, u64)],
    idx: usize,
    crowd: &Crowd,
    now: u64,
    seen: &mut [u64],
    res: &mut CrowdResult,
) {
    for &(client, clock) in entries {
        let Some(sender) = client
            .checked_sub(CLIENT_BASE)
            .and_then(|s| usize::try_from(s).ok())
        else {
            continue;
        };
        if sender == idx || sender >= seen.len() || clock <= seen[sender] {
            continue;
        }
        let log = crowd.aw_sent[sender]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for k in seen[sender]..clock {
            if let Some(&t) = log.get(k as usize) {
                let lat = now.saturating_sub(t).clamp(1, MAX_LATENCY_US);
                let _ = res.aw_latency.record(lat);
                res.aw_delivered += 1;
                if lat <= 1_000_000 {
                    res.aw_within_1s += 1;
                }
            }
        }
        seen[sender] = clock;
    }
}

/// One `crowd-presence` client: carets every 2 s, an insert now and then, reads until `end`.
#[allow(clippy::too_many_arguments)]
async fn crowd_client(
    conn: Conn,
    idx: usize,
    start: Instant,
    stop: Instant,
    end: Instant,
    shared: Arc<Shared>,
    crowd: Arc<Crowd>,
) -> CrowdResult {
    let Conn { ws, doc, .. } = conn;
    let text = doc.get_or_insert_text("content");
    let (sink, mut stream) = ws.split();
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(writer(sink, rx));
    let mut res = CrowdResult {
        aw_latency: histogram(),
        aw_delivered: 0,
        aw_within_1s: 0,
        peer: PeerResult {
            latency: histogram(),
            delivered: 0,
            sent: 0,
            text: String::new(),
            caught_up: true,
        },
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(idx as u64);
    let at = |period: Duration, rng: &mut rand::rngs::StdRng| {
        tokio::time::Instant::from_std(start + period.mul_f64(rng.gen::<f64>()))
    };
    let mut aw_tick =
        tokio::time::interval_at(at(CROWD_AWARENESS_EVERY, &mut rng), CROWD_AWARENESS_EVERY);
    let mut type_tick = tokio::time::interval_at(at(CROWD_TYPE_EVERY, &mut rng), CROWD_TYPE_EVERY);
    aw_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    type_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let finish = tokio::time::sleep_until(tokio::time::Instant::from_std(end));
    tokio::pin!(finish);
    let mut seen = vec![0u64; shared.sent.len()];
    let mut clocks: HashMap<u64, u32> = HashMap::new();
    let (mut aw_clock, mut typed) = (0u64, 0u64);
    let limits = Limits::DEFAULT;
    // Bounded by `end`.
    loop {
        let sending = Instant::now() < stop;
        tokio::select! {
            _ = &mut finish => break,
            _ = aw_tick.tick(), if sending => {
                aw_clock += 1;
                crowd.aw_sent[idx].lock().unwrap_or_else(|e| e.into_inner()).push(shared.now_us());
                let _ = tx.send(caret(idx, aw_clock, rng.gen_range(0..1000)));
            }
            _ = type_tick.tick(), if sending => {
                let update = {
                    let mut txn = doc.transact_mut();
                    let len = text.len(&txn);
                    text.insert(&mut txn, len, &format!("{:>7}|", typed % 10_000_000));
                    txn.encode_update_v1()
                };
                typed += 1;
                shared.sent[idx].lock().unwrap_or_else(|e| e.into_inner()).push(shared.now_us());
                res.peer.sent += 1;
                let _ = tx.send(encode_sync(SYNC_UPDATE, &update));
            }
            frame = stream.next() => {
                let bytes = match frame {
                    Some(Ok(WsMessage::Binary(b))) => b,
                    Some(Ok(WsMessage::Close(c))) => {
                        let code = c.map_or("none".to_string(), |f| u16::from(f.code).to_string());
                        *crowd.closes.lock().unwrap_or_else(|e| e.into_inner()).entry(code).or_default() += 1;
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        *crowd.closes.lock().unwrap_or_else(|e| e.into_inner()).entry("dropped".into()).or_default() += 1;
                        break;
                    }
                };
                if let Some(entries) = awareness_clocks(&bytes) {
                    count_states(&entries, idx, &crowd, shared.now_us(), &mut seen, &mut res);
                    continue;
                }
                let Ok(msgs) = decode_frame(&bytes, &limits) else {
                    shared.error(format!("client {idx}: undecodable frame"));
                    continue;
                };
                for msg in msgs {
                    match msg {
                        Message::SyncStep1(sv) => {
                            if let Ok(f) = step2_for(&doc, &sv) {
                                let _ = tx.send(f);
                            }
                        }
                        Message::SyncStep2(u) | Message::Update(u) => {
                            observe(&u, idx, &shared, &mut res.peer, &mut clocks);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    res
}

/// `crowd-presence`: 1,500 clients in one room moving their carets; see the module docs.
pub(super) async fn crowd_presence(target: &Target, seconds: f64) -> Report {
    let n = CROWD_CONNECTIONS;
    let label = "crowd-presence".to_string();
    let shared = Arc::new(Shared::new(n));
    let crowd = Arc::new(Crowd {
        aw_sent: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
        closes: Mutex::new(BTreeMap::new()),
    });
    let urls: Vec<String> = (0..n).map(|_| target.url("crowd")).collect();
    eprintln!("[{label}] connecting {n} clients to one room");
    let (conns, connect_wall) = connect_all(&urls, &shared).await;
    let connected = conns.iter().flatten().count();
    eprintln!("[{label}] {connected}/{n} connected; carets every 2 s for {seconds} s");
    let before = proc_sample(target.pid);
    let me_before = proc_sample(Some(std::process::id()));
    let start = Instant::now() + Duration::from_millis(200);
    let stop = start + Duration::from_secs_f64(seconds);
    let end = stop + CROWD_DRAIN;
    let mut set = JoinSet::new();
    for (i, c) in conns.into_iter().enumerate() {
        if let Some(c) = c {
            let (sh, cr) = (Arc::clone(&shared), Arc::clone(&crowd));
            set.spawn(async move { (i, crowd_client(c, i, start, stop, end, sh, cr).await) });
        }
    }
    // Server CPU over the send window only: the drain is the load generator catching up.
    tokio::time::sleep_until(tokio::time::Instant::from_std(stop)).await;
    let after = proc_sample(target.pid);
    let me_after = proc_sample(Some(std::process::id()));
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((_, res)) => results.push(res),
            Err(e) => shared.error(format!("client task: {e}")),
        }
    }
    let mut rep = Report {
        label,
        ..Report::default()
    };
    rep.put("connections", connected as u64);
    rep.put("connect_wall_s", connect_wall.as_secs_f64());
    crowd_figures(&mut rep, &results, &crowd, connected);
    put_server(&mut rep, before, after);
    put_generator(&mut rep, me_before, me_after);
    let closes: u64 = crowd
        .closes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .sum();
    finish(rep, &shared, connected == n && closes == 0)
}

/// Adds the awareness and document delivery figures of `crowd-presence` to `rep`.
fn crowd_figures(rep: &mut Report, results: &[CrowdResult], crowd: &Crowd, connected: usize) {
    let states_sent: u64 = crowd
        .aw_sent
        .iter()
        .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).len() as u64)
        .sum();
    let inserts_sent: u64 = results.iter().map(|r| r.peer.sent).sum();
    let mut lat = histogram();
    let (mut delivered, mut within, mut doc_delivered) = (0u64, 0u64, 0u64);
    for r in results {
        let _ = lat.add(&r.aw_latency);
        delivered += r.aw_delivered;
        within += r.aw_within_1s;
        doc_delivered += r.peer.delivered;
    }
    // Each state is owed to every other connected client (its own sender excluded).
    let others = connected.saturating_sub(1) as u64;
    let expected = states_sent * others;
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    rep.put("awareness_sent", states_sent);
    rep.put("awareness_expected", expected);
    rep.put("awareness_delivered", delivered);
    rep.put("delivered_ratio", ratio(delivered, expected));
    rep.put("delivered_within_1s_ratio", ratio(within, expected));
    rep.put("latency_p50_ms", ms(lat.value_at_quantile(0.5)));
    rep.put("latency_p99_ms", ms(lat.value_at_quantile(0.99)));
    rep.put("latency_max_ms", ms(lat.max()));
    rep.put("inserts_sent", inserts_sent);
    rep.put(
        "insert_delivered_ratio",
        ratio(doc_delivered, inserts_sent * others),
    );
    let closes = crowd.closes.lock().unwrap_or_else(|e| e.into_inner());
    rep.put("closes", closes.values().sum::<u64>());
    for (code, count) in closes.iter() {
        let name: &'static str = match code.as_str() {
            "1013" => "closes_1013",
            "1008" => "closes_1008",
            "1001" => "closes_1001",
            "dropped" => "closes_dropped",
            _ => "closes_other",
        };
        rep.put(name, *count);
    }
}

/// Joins `url` as a fresh client and waits until the server has sent it every clock of
/// `seeder` below `want_clock`, reading client ranges only (`ranges.rs`); returns the socket and
/// the time it took. Used by `join-storm` and `big-doc`.
pub(super) async fn join_cheap(
    url: &str,
    client_id: u64,
    seeder: u64,
    want_clock: u32,
) -> anyhow::Result<(Ws, Duration)> {
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + STORM_JOIN_TIMEOUT);
    let (mut ws, _) = tokio::time::timeout_at(deadline, tokio_tungstenite::connect_async(url))
        .await
        .context("connect timed out")?
        .with_context(|| format!("connect to {url}"))?;
    let empty = Doc::with_client_id(client_id);
    let sv = empty.transact().state_vector().encode_v1();
    ws.send(WsMessage::binary(encode_sync(SYNC_STEP1, &sv)))
        .await?;
    let limits = Limits::DEFAULT;
    // The seeder's characters received so far, from the step 2 and from broadcasts: a joiner
    // that arrives while the seed is still going in gets part of it in its step 2 and the rest
    // as updates, whose own state vector is empty (yrs counts only runs starting at clock 0).
    let (mut got, mut frames) = (Ranges::default(), 0u32);
    // Bounded by the deadline: every read is under `timeout_at`.
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .with_context(|| {
                let have = got.of(seeder);
                format!("join timed out after {frames} frames; of the seeder's 0..{want_clock}: {have:?}")
            })?
            .context("server closed during the join")??;
        frames += 1;
        let bytes = match frame {
            WsMessage::Binary(b) => b,
            WsMessage::Close(c) => bail!("server closed during the join: {c:?}"),
            _ => continue,
        };
        if awareness_clocks(&bytes).is_some() {
            continue;
        }
        for msg in decode_frame(&bytes, &limits)? {
            match msg {
                Message::SyncStep1(sv) => {
                    ws.send(WsMessage::binary(step2_for(&empty, &sv)?)).await?;
                }
                Message::SyncStep2(u) | Message::Update(u) => {
                    got.add(&u)?;
                    if got.covers(seeder, want_clock) {
                        return Ok((ws, start.elapsed()));
                    }
                }
                _ => {}
            }
        }
    }
}

/// Samples the RSS of `pid` every 20 ms until `stop` is set; returns the highest, in KiB.
async fn peak_rss(pid: Option<u32>, stop: Arc<AtomicBool>) -> u64 {
    let mut peak = 0;
    // Bounded: the caller sets `stop` once the storm is over (itself bounded by timeouts).
    while !stop.load(Ordering::Relaxed) {
        if let Some(s) = proc_sample(pid) {
            peak = peak.max(s.rss_kib);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peak
}

/// Seeds the `join-storm` document through one client; returns the seeder's id and last clock.
async fn storm_seed(url: &str, shared: &Shared) -> anyhow::Result<(u64, u32)> {
    let seeder_id = CLIENT_BASE - 5;
    let seeder = connect(url, seeder_id).await.context("seeder")?;
    let (mut sink, stream) = seeder.ws.split();
    let stop = Arc::new(AtomicBool::new(false));
    let drainer = tokio::spawn(drain(stream, Arc::clone(&stop)));
    let text = seeder.doc.get_or_insert_text("content");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5707);
    let alphabet = b"etaoin shrdlu cmfwyp vbgkjqxz, ETAOIN.\n";
    for _ in 0..STORM_DOC_BYTES / STORM_CHUNK {
        let chunk: String = (0..STORM_CHUNK)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
            .collect();
        let update = {
            let mut txn = seeder.doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, &chunk);
            txn.encode_update_v1()
        };
        if let Err(e) = sink
            .send(WsMessage::binary(encode_sync(SYNC_UPDATE, &update)))
            .await
        {
            shared.error(format!("seeding: {e}"));
            break;
        }
    }
    let clock = seeder
        .doc
        .transact()
        .state_vector()
        .get(&ClientID::new(seeder_id));
    // The seed is in once a fresh client gets all of it (bounded retries).
    let mut ok = false;
    for i in 0..60 {
        match join_cheap(url, CLIENT_BASE - 6 - i, seeder_id, clock).await {
            Ok(_) => {
                ok = true;
                break;
            }
            Err(e) => eprintln!("[join-storm] checking the seed: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = drainer.await;
    let _ = sink.close().await;
    anyhow::ensure!(ok, "the server never held the whole seed");
    Ok((seeder_id, clock))
}

/// `join-storm`: 150 clients join a 10 MB document at once; see the module docs.
pub(super) async fn join_storm(target: &Target) -> Report {
    let shared = Arc::new(Shared::new(1));
    let url = target.url("join-storm");
    let mut rep = Report {
        label: "join-storm".into(),
        ..Report::default()
    };
    let seeding = Instant::now();
    let (seeder, clock) = match storm_seed(&url, &shared).await {
        Ok(s) => s,
        Err(e) => {
            shared.error(format!("{e:#}"));
            return finish(rep, &shared, false);
        }
    };
    rep.put("doc_chars", u64::from(clock));
    rep.put("seed_s", seeding.elapsed().as_secs_f64());
    eprintln!("[join-storm] {clock} characters seeded; {STORM_JOINERS} joining at once");
    let before = proc_sample(target.pid);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(peak_rss(target.pid, Arc::clone(&stop)));
    let mut set = JoinSet::new();
    for i in 0..STORM_JOINERS {
        let url = url.clone();
        set.spawn(
            async move { join_cheap(&url, CLIENT_BASE + 300 + i as u64, seeder, clock).await },
        );
    }
    let mut times = histogram();
    let mut sockets = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok((ws, took))) => {
                let _ = times.record(
                    u64::try_from(took.as_micros())
                        .unwrap_or(1)
                        .clamp(1, MAX_LATENCY_US),
                );
                sockets.push(ws);
            }
            Ok(Err(e)) => shared.error(format!("join: {e:#}")),
            Err(e) => shared.error(format!("join task: {e}")),
        }
    }
    // Let the server settle with every joiner still connected, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = proc_sample(target.pid);
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.await.unwrap_or(0);
    for mut ws in sockets {
        let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
    }
    rep.put("joins", times.len());
    rep.put("join_p50_ms", ms(times.value_at_quantile(0.5)));
    rep.put("join_p99_ms", ms(times.value_at_quantile(0.99)));
    rep.put("join_max_ms", ms(times.max()));
    rep.put("server_rss_mib_peak", peak as f64 / 1024.0);
    put_server(&mut rep, before, after);
    let all = times.len() == STORM_JOINERS as u64;
    finish(rep, &shared, all)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caret relayed with a clock above the sender's own still names the sender's sequence.
    #[test]
    fn sequence_survives_a_relayed_clock() {
        let sent = caret(3, 7, 42);
        let mut relayed = match decode_frame(&sent, &Limits::default()) {
            Ok(mut msgs) => match msgs.pop() {
                Some(Message::Awareness(update)) => update,
                other => panic!("not an awareness message: {other:?}"),
            },
            Err(e) => panic!("undecodable: {e}"),
        };
        relayed.entries[0].clock += 1024;
        let frame = Message::Awareness(relayed).encode();
        assert_eq!(awareness_clocks(&frame), Some(vec![(CLIENT_BASE + 3, 7)]));
        assert_eq!(state_seq(b"null"), None);
    }
}
