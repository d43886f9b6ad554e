//! Cluster mode end to end, with real NATS JetStream servers (`weft_tests::nats`) and real Weft
//! nodes on real sockets: two nodes serve one document and converge, over WebSockets and the
//! HTTP API; a node refuses to start without NATS and says where it looked; a node that loses
//! NATS acknowledges nothing, reports not ready, and takes edits again once NATS is back; and
//! with a three-server NATS cluster, neither a Weft node nor a NATS server killed with SIGKILL
//! loses an acknowledged update, and editing resumes on the surviving node.
//!
//! "Acknowledged" is what the server sent back: in strict durability a room broadcasts an
//! update (to its sender too) only once JetStream has acknowledged it, so whatever a client
//! that never types holds came from the server after that point. Skips visibly without
//! `nats-server`; fails under CI.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use reqwest::StatusCode;
use serde_json::{json, Value};
use weft_protocol::{encode_sync, Control, SYNC_STEP2};
use weft_tests::nats::{require_nats, NatsCluster, NatsServer, NATS_WAIT};
use weft_tests::{run_weft, wait_until, within, Client, Outcome, TestServer, WeftProcess, WAIT};

const GROUP: &str = "cluster tests";

/// A short flush deadline for the outage test: a flush waits this long for NATS before the
/// room gives up on it, and the test waits for that.
const OUTAGE_FLUSH_SECS: u64 = 3;

/// How long editing may pause after a NATS server dies before the test fails (a stream leader
/// election takes 5–6 s in NATS 2.9; the goal is under 15 s).
const RESUME_POLL: Duration = Duration::from_secs(20);

/// Writes past the test harness's capture, so measured figures show in a normal run.
fn report(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The `<...>` markers in `text`.
fn markers(text: &str) -> BTreeSet<String> {
    text.split('<')
        .skip(1)
        .filter_map(|s| s.split_once('>').map(|(m, _)| format!("<{m}>")))
        .collect()
}

/// Starts an in-process Weft node of the cluster whose NATS servers are `urls`.
async fn node(urls: &str, name: &str, flush_secs: Option<u64>) -> anyhow::Result<TestServer> {
    let (urls, name) = (urls.to_owned(), name.to_owned());
    TestServer::start_with(move |c| {
        c.nats.urls = urls.split(',').map(str::to_owned).collect();
        c.nats.node_name = Some(name);
        c.max_frames_per_sec = 1_000_000;
        if let Some(secs) = flush_secs {
            c.flush_timeout_secs = secs;
        }
    })
    .await
}

/// GET `url`: its status and body (the status is `None` when nothing answered).
async fn get(http: &reqwest::Client, url: &str) -> (Option<StatusCode>, String) {
    let request = http.get(url).timeout(Duration::from_secs(5)).send();
    match request.await {
        Ok(r) => {
            let status = r.status();
            (Some(status), r.text().await.unwrap_or_default())
        }
        Err(_) => (None, String::new()),
    }
}

/// Polls GET `url` until it answers `want`, failing after `timeout` with the last answer.
async fn wait_status(
    http: &reqwest::Client,
    url: &str,
    want: StatusCode,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = tokio::time::Instant::now();
    let mut last = (None, String::new());
    while started.elapsed() < timeout {
        last = get(http, url).await;
        if last.0 == Some(want) {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "GET {url} did not answer {want} within {timeout:?}; last: {:?} {:?}",
        last.0,
        last.1
    )
}

/// Polls GET `url` until its body satisfies `pred`, failing after [`WAIT`] with the last body.
async fn wait_body(
    http: &reqwest::Client,
    url: &str,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get(http, url).await;
        if status == Some(StatusCode::OK) && pred(&body) {
            return Ok(body);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("GET {url}: no {what} within {WAIT:?}; last: {status:?} {body:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ids `GET /api/docs` lists.
fn listed_ids(body: &str) -> Vec<String> {
    let page: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    page["docs"]
        .as_array()
        .map(|docs| {
            docs.iter()
                .filter_map(|d| d["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A client reconnecting with the document it had, as y-websocket does: after the sync with
/// the server it sends its whole state as sync step 2, so edits the server lacks are written
/// again. The server broadcasts them (to this client too) once they are saved.
async fn reconnect_with(url: &str, state: &[u8]) -> anyhow::Result<Client> {
    let client = Client::connect_synced(url).await?;
    client.send_raw(encode_sync(SYNC_STEP2, state))?;
    Ok(client)
}

/// Two nodes on one NATS server: clients on both edit one document at once and converge; the
/// HTTP API of either node shows the text and lists the document; a document created through
/// one node's API reads the same on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_converge_and_serve_the_same_documents() -> anyhow::Result<()> {
    if require_nats(GROUP).is_none() {
        return Ok(());
    }
    let nats = NatsServer::start().await?;
    let a = node(&nats.url(), "node-a", None).await?;
    // Node B is given a list whose first server is down: it connects to the next.
    let dead = format!("nats://127.0.0.1:{}", closed_port()?);
    let b = node(&format!("{dead},{}", nats.url()), "node-b", None).await?;
    let on_a = Client::connect_synced(&a.room_url("shared")).await?;
    let on_b = Client::connect_synced(&b.room_url("shared")).await?;
    for i in 0..15 {
        on_a.push(&format!("<a{i}>"))?;
        on_b.insert(0, &format!("<b{i}>"))?;
        if i % 3 == 0 {
            on_a.insert(0, &format!("<a{i}-front>"))?;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    on_a.wait_acked().await?;
    on_b.wait_acked().await?;
    let expected: BTreeSet<String> = (0..15)
        .flat_map(|i| [format!("<a{i}>"), format!("<b{i}>")])
        .chain((0..15).step_by(3).map(|i| format!("<a{i}-front>")))
        .collect();
    let all_there = |t: &str| markers(t) == expected;
    on_a.wait_text("every edit of both nodes at node A's client", all_there)
        .await?;
    on_b.wait_text("every edit of both nodes at node B's client", all_there)
        .await?;
    wait_until("both clients to hold the same text", WAIT, || {
        on_a.text() == on_b.text()
    })
    .await
    .with_context(|| format!("A: {:?}\nB: {:?}", on_a.text(), on_b.text()))?;
    let text = on_a.text();

    let http = reqwest::Client::new();
    for server in [&a, &b] {
        let url = format!("{}/api/docs/shared/text", server.http_base());
        wait_body(&http, &url, "the converged text", |t| t == text).await?;
        let list = format!("{}/api/docs", server.http_base());
        wait_body(&http, &list, "the document listed", |body| {
            listed_ids(body).iter().any(|id| id == "shared")
        })
        .await?;
    }
    created_on_one_read_on_other(&http, &a, &b).await
}

/// A document created through node A's API reads the same through node B, over the API and a
/// WebSocket, and cannot be created again through node B.
async fn created_on_one_read_on_other(
    http: &reqwest::Client,
    a: &TestServer,
    b: &TestServer,
) -> anyhow::Result<()> {
    let created = http
        .post(format!("{}/api/docs", a.http_base()))
        .json(&json!({"id": "from-a", "text": "Written through node A"}))
        .send()
        .await?;
    assert_eq!(
        created.status(),
        StatusCode::CREATED,
        "{:?}",
        created.text().await
    );
    let url = format!("{}/api/docs/from-a/text", b.http_base());
    wait_body(http, &url, "node A's document", |t| {
        t == "Written through node A"
    })
    .await?;
    let list = format!("{}/api/docs", b.http_base());
    wait_body(http, &list, "node A's document listed", |body| {
        listed_ids(body).iter().any(|id| id == "from-a")
    })
    .await?;
    let reader = Client::connect_synced(&b.room_url("from-a")).await?;
    assert_eq!(reader.text(), "Written through node A");
    // Creating it again through node B: it exists in the cluster, not only on node A.
    let again = http
        .post(format!("{}/api/docs", b.http_base()))
        .json(&json!({"id": "from-a", "text": "again"}))
        .send()
        .await?;
    assert_eq!(
        again.status(),
        StatusCode::CONFLICT,
        "{:?}",
        again.text().await
    );
    Ok(())
}

/// A free loopback port with nothing listening on it.
fn closed_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// With nothing listening at the NATS URL, opening a node fails within seconds with an error
/// naming the URL, and the binary exits non-zero saying so on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_nats_at_start_fails_with_the_url() -> anyhow::Result<()> {
    if require_nats(GROUP).is_none() {
        return Ok(());
    }
    let url = format!("nats://127.0.0.1:{}", closed_port()?);
    let started = std::time::Instant::now();
    let opened = within(
        "opening a node whose NATS is unreachable",
        Duration::from_secs(15),
        async {
            let url = url.clone();
            Ok(TestServer::start_with(move |c| c.nats.urls = vec![url]).await)
        },
    )
    .await?;
    let Err(error) = opened else {
        bail!("a node opened without NATS at {url}");
    };
    let error = format!("{error:#}");
    assert!(
        error.contains(&url),
        "the error does not name {url}: {error}"
    );
    report(&format!(
        "cluster: opening without NATS failed after {:?}: {error}",
        started.elapsed()
    ));

    let dir = tempfile::tempdir()?;
    let args: [&OsStr; 6] = [
        OsStr::new("--bind"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--data"),
        dir.path().as_os_str(),
        OsStr::new("--nats"),
        OsStr::new(&url),
    ];
    let (status, output) = run_weft(&args).await?;
    assert!(!status.success(), "weft started without NATS: {output}");
    assert!(
        output.contains(&url) && output.contains("cannot reach NATS"),
        "weft's output does not say it cannot reach {url}: {output}"
    );
    Ok(())
}

/// NATS killed under a running node: a new edit is not acknowledged (the writer hears
/// `not_saved` and is closed) and `/readyz` answers 503; once NATS is back, `/readyz` answers
/// 200 again, the writer reconnecting with its document gets the edit saved, a fresh client on
/// the other node sees it, and everything acknowledged before the kill is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_lost_while_running_refuses_then_recovers() -> anyhow::Result<()> {
    if require_nats(GROUP).is_none() {
        return Ok(());
    }
    let nats = NatsServer::start().await?;
    let a = node(&nats.url(), "node-a", Some(OUTAGE_FLUSH_SECS)).await?;
    let b = node(&nats.url(), "node-b", Some(OUTAGE_FLUSH_SECS)).await?;
    let http = reqwest::Client::new();
    let ready_a = format!("{}/readyz", a.http_base());
    let ready_b = format!("{}/readyz", b.http_base());
    wait_status(&http, &ready_a, StatusCode::OK, WAIT).await?;
    wait_status(&http, &ready_b, StatusCode::OK, WAIT).await?;

    let writer = Client::connect_synced(&a.room_url("outage")).await?;
    writer.hello().await?;
    for i in 0..5 {
        writer.push(&format!("<saved{i}>"))?;
    }
    writer.wait_acked().await?;
    let saved = markers(&writer.text());
    let watcher = Client::connect_synced(&b.room_url("outage")).await?;
    watcher
        .wait_text("node B to follow the saved edits", |t| markers(t) == saved)
        .await?;

    nats.kill()?;
    let took = wait_status(&http, &ready_a, StatusCode::SERVICE_UNAVAILABLE, WAIT).await?;
    report(&format!(
        "cluster: /readyz answered 503 {took:?} after NATS died"
    ));
    wait_status(&http, &ready_b, StatusCode::SERVICE_UNAVAILABLE, WAIT).await?;
    writer.push("<during-outage>")?;
    let outcome = writer
        .wait_acked_or_closed(Duration::from_secs(OUTAGE_FLUSH_SECS) + WAIT)
        .await?;
    assert!(
        matches!(&outcome, Outcome::Closed(1011, reason) if reason.starts_with("not saved")),
        "the edit made while NATS was down: {outcome:?}"
    );
    let told = writer
        .controls()
        .into_iter()
        .any(|c| matches!(c, Control::Error { code, .. } if code == "not_saved"));
    assert!(told, "no not_saved error: {:?}", writer.controls());
    assert!(
        !watcher.text().contains("<during-outage>"),
        "node B showed an edit NATS never acknowledged"
    );
    let state = writer.full_state();
    back_after_restart(&nats, (&a, &b), &state, saved).await
}

/// NATS restarted under nodes `a` and `b`: both report ready again, the client reconnecting
/// to node A with its document `state` gets its edit saved, and a fresh client on node B finds
/// it with every edit `saved` before the outage, each once.
async fn back_after_restart(
    nats: &NatsServer,
    (a, b): (&TestServer, &TestServer),
    state: &[u8],
    saved: BTreeSet<String>,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let ready_a = format!("{}/readyz", a.http_base());
    let ready_b = format!("{}/readyz", b.http_base());

    nats.restart().await?;
    let took = wait_status(&http, &ready_a, StatusCode::OK, NATS_WAIT).await?;
    report(&format!(
        "cluster: /readyz answered 200 {took:?} after NATS came back"
    ));
    wait_status(&http, &ready_b, StatusCode::OK, NATS_WAIT).await?;

    let again = reconnect_with(&a.room_url("outage"), state).await?;
    again
        .wait_text("the resent edit to be saved and echoed", |t| {
            t.contains("<during-outage>")
        })
        .await?;
    let saved_at = std::time::Instant::now();
    let mut expected = saved;
    expected.insert("<during-outage>".into());
    let fresh = Client::connect_synced(&b.room_url("outage")).await?;
    fresh
        .wait_text("a fresh client on node B to see every edit", |t| {
            markers(t) == expected
        })
        .await?;
    // Node B's room stayed open through the outage (its watcher is in it): it follows the log
    // again by itself.
    report(&format!(
        "cluster: node B showed the edit {:?} after node A saved it",
        saved_at.elapsed()
    ));
    assert_eq!(
        fresh.text().matches("<during-outage>").count(),
        1,
        "the resent edit is stored once: {:?}",
        fresh.text()
    );
    let url = format!("{}/api/docs/outage/text", b.http_base());
    wait_body(&http, &url, "every edit through the API", |t| {
        markers(t) == expected
    })
    .await?;
    Ok(())
}

/// The document the crash test types into.
const LEDGER: &str = "ledger";

/// A client typing markers `<{name}.{n}>` into [`LEDGER`] through one node. When the server
/// closes it, it reconnects with its document, as y-websocket does.
struct Typist {
    name: String,
    url: String,
    client: Client,
    /// The number of its next marker.
    next: u32,
    /// How often it reconnected after the server closed it.
    reconnects: u32,
}

impl Typist {
    async fn start(name: &str, url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            url: url.to_owned(),
            client: Client::connect_synced(url).await?,
            next: 0,
            reconnects: 0,
        })
    }

    /// Types its next marker at the end of its text, reconnecting first when closed.
    async fn type_next(&mut self) -> anyhow::Result<()> {
        if self.client.is_disconnected() {
            self.reconnects += 1;
            self.reconnect().await?;
        }
        // A send may fail while the connection goes down; the next call reconnects.
        let _ = self.client.push(&format!("<{}.{}>", self.name, self.next));
        self.next += 1;
        Ok(())
    }

    /// Reconnects to `url`, with its document.
    async fn move_to(&mut self, url: &str) -> anyhow::Result<()> {
        self.url = url.to_owned();
        self.reconnect().await
    }

    async fn reconnect(&mut self) -> anyhow::Result<()> {
        let state = self.client.full_state();
        self.client = reconnect_with(&self.url, &state)
            .await
            .with_context(|| format!("typist {} reconnecting to {}", self.name, self.url))?;
        Ok(())
    }
}

/// A client that never types: everything it holds the server sent, so every marker it ever
/// held was acknowledged. It reconnects when the server closes it (if `reconnect`).
struct Observer {
    url: String,
    client: Client,
    seen: BTreeSet<String>,
    reconnect: bool,
}

impl Observer {
    async fn start(url: &str, reconnect: bool) -> anyhow::Result<Self> {
        Ok(Self {
            url: url.to_owned(),
            client: Client::connect_synced(url).await?,
            seen: BTreeSet::new(),
            reconnect,
        })
    }

    /// Takes in the markers it holds now; reconnects when closed.
    async fn poll(&mut self) -> anyhow::Result<()> {
        self.seen.extend(markers(&self.client.text()));
        if self.reconnect && self.client.is_disconnected() {
            self.client = Client::connect_synced(&self.url).await?;
            self.seen.extend(markers(&self.client.text()));
        }
        Ok(())
    }
}

/// Which NATS server leads the `WEFT_LOG` stream, as the first answering `/jsz` says.
async fn log_stream_leader(cluster: &NatsCluster) -> Option<usize> {
    let http = reqwest::Client::new();
    for i in 0..cluster.len() {
        let server = cluster.server(i);
        if !server.is_running() {
            continue;
        }
        let url = format!("{}/jsz?accounts=true&streams=true", server.monitor_url());
        let Ok(response) = http.get(&url).timeout(Duration::from_secs(5)).send().await else {
            continue;
        };
        let Ok(jsz) = response.json::<Value>().await else {
            continue;
        };
        let accounts = jsz["account_details"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for stream in accounts
            .iter()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
        {
            if stream["name"] == "WEFT_LOG" {
                let leader = stream["cluster"]["leader"].as_str()?;
                return (0..cluster.len()).find(|&j| cluster.server(j).name() == leader);
            }
        }
    }
    None
}

/// Whether `marker` is `<{name}.{n}>` with `n >= from[name]`: typed after a point in time.
fn typed_since(marker: &str, from: &[(String, u32)]) -> bool {
    let inner = marker.trim_start_matches('<').trim_end_matches('>');
    let Some((name, n)) = inner.rsplit_once('.') else {
        return false;
    };
    let Ok(n) = n.parse::<u32>() else {
        return false;
    };
    from.iter().any(|(who, first)| who == name && n >= *first)
}

/// Checks that a fresh client on `url` holds every marker in `acked`, each once.
async fn assert_all_there(url: &str, acked: &BTreeSet<String>, when: &str) -> anyhow::Result<()> {
    let fresh = Client::connect_synced(url).await?;
    let r = fresh
        .wait_text(&format!("every acknowledged update {when}"), |t| {
            markers(t).is_superset(acked)
        })
        .await;
    if r.is_err() {
        let held = markers(&fresh.text());
        let missing: Vec<_> = acked.difference(&held).collect();
        bail!(
            "{} acknowledged updates lost {when}: {missing:?}",
            missing.len()
        );
    }
    let text = fresh.text();
    let doubled: Vec<_> = acked
        .iter()
        .filter(|m| text.matches(m.as_str()).count() != 1)
        .collect();
    assert!(
        doubled.is_empty(),
        "stored more than once {when}: {doubled:?}"
    );
    Ok(())
}

/// The flags of a Weft process in the cluster of `urls`, named `name`, without a rate limit on
/// fast typists.
fn weft_flags<'a>(urls: &'a str, name: &'a str) -> [&'a str; 6] {
    [
        "--nats",
        urls,
        "--node-name",
        name,
        "--max-frames-per-sec",
        "1000000",
    ]
}

/// The clients of the crash test: typists on both nodes, and a watcher on each node.
struct Ledger {
    typists: Vec<Typist>,
    /// On node A (not reconnected once node A is dead).
    watch_a: Observer,
    /// On node B.
    watch_b: Observer,
}

impl Ledger {
    /// Every typist types one marker; node B's watcher takes in what it holds.
    async fn round(&mut self) -> anyhow::Result<()> {
        for t in &mut self.typists {
            t.type_next().await?;
        }
        self.watch_a.poll().await?;
        self.watch_b.poll().await
    }

    /// Every marker a watcher held, and the others' markers a typist holds: all acknowledged.
    fn acked(&self) -> BTreeSet<String> {
        let mut acked: BTreeSet<String> = self
            .watch_a
            .seen
            .union(&self.watch_b.seen)
            .cloned()
            .collect();
        for t in &self.typists {
            let own = format!("<{}.", t.name);
            acked.extend(
                markers(&t.client.text())
                    .into_iter()
                    .filter(|m| !m.starts_with(&own)),
            );
        }
        acked
    }
}

/// Types on both nodes until node B has seen every typist's edits, kills node A mid-typing,
/// moves its typists to node B, and checks that node B holds every acknowledged update.
async fn kill_weft_node(
    ledger: &mut Ledger,
    weft_a: &mut WeftProcess,
    weft_b: &WeftProcess,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        ledger.round().await?;
        let seen = &ledger.watch_b.seen;
        let from_all = ["<a1.", "<a2.", "<b1."]
            .iter()
            .all(|p| seen.iter().any(|m| m.starts_with(p)));
        if from_all && ledger.typists[0].next >= 20 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "node B did not see every typist's edits within {WAIT:?}: {seen:?}\nnode A log:\n{}\nnode B log:\n{}",
                weft_a.log(),
                weft_b.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    weft_a.kill()?;
    wait_until("node A's clients to lose their connections", WAIT, || {
        ledger.watch_a.client.is_disconnected()
            && ledger.typists[..2]
                .iter()
                .all(|t| t.client.is_disconnected())
    })
    .await?;
    ledger.watch_a.poll().await?;
    ledger.watch_b.poll().await?;
    let url_b = weft_b.room_url(LEDGER);
    for t in &mut ledger.typists[..2] {
        t.move_to(&url_b).await?;
    }
    let acked = ledger.acked();
    report(&format!(
        "cluster: {} updates acknowledged when node A was killed",
        acked.len()
    ));
    assert_all_there(&url_b, &acked, "after node A was killed").await
}

/// Kills the NATS server leading the log (or the meta leader, when `/jsz` does not say) while
/// typing goes on through node B; returns how long until an edit typed after the kill was
/// acknowledged (node B's watcher has it), after waiting for node A's watcher to have one too.
async fn kill_nats_leader(
    ledger: &mut Ledger,
    cluster: &NatsCluster,
    weft_a: &WeftProcess,
    weft_b: &WeftProcess,
) -> anyhow::Result<Duration> {
    let (victim, role) = match log_stream_leader(cluster).await {
        Some(i) => (i, "the log stream's leader"),
        None => (cluster.wait_meta_leader().await?, "the meta leader"),
    };
    let from: Vec<(String, u32)> = ledger
        .typists
        .iter()
        .map(|t| (t.name.clone(), t.next))
        .collect();
    let reconnects: u32 = ledger.typists.iter().map(|t| t.reconnects).sum();
    cluster.kill(victim)?;
    let killed = tokio::time::Instant::now();
    let (mut on_b, mut on_a) = (None, None);
    while killed.elapsed() < RESUME_POLL {
        ledger.round().await?;
        let after_kill = |seen: &BTreeSet<String>| seen.iter().any(|m| typed_since(m, &from));
        if on_b.is_none() && after_kill(&ledger.watch_b.seen) {
            on_b = Some(killed.elapsed());
        }
        if on_a.is_none() && after_kill(&ledger.watch_a.seen) {
            on_a = Some(killed.elapsed());
        }
        if let (Some(gap), Some(followed)) = (on_b, on_a) {
            let closed = ledger.typists.iter().map(|t| t.reconnects).sum::<u32>() - reconnects;
            report(&format!(
                "cluster: {gap:?} after NATS server {} ({role}) was killed, node B acknowledged \
                 edits again; node A showed one {followed:?} after the kill; typists closed \
                 meanwhile: {closed}",
                cluster.server(victim).name()
            ));
            return Ok(gap);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "within {RESUME_POLL:?} of killing NATS server {victim} ({role}), node B acknowledged \
         an edit after {on_b:?} and node A followed one after {on_a:?}; node A log:\n{}\nnode B log:\n{}",
        weft_a.log(),
        weft_b.log()
    )
}

/// Three NATS servers (three replicas) and two Weft processes. Clients type on both nodes;
/// node A is killed with SIGKILL and its clients move to node B, which holds every
/// acknowledged update. Node A restarts; then the NATS server leading the log is killed while
/// typing goes on through node B: acknowledgements resume and node A follows them (the gaps
/// are reported), and a fresh client finds every update any client saw acknowledged, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_weft_and_nats_nodes_lose_nothing_acknowledged() -> anyhow::Result<()> {
    if require_nats(GROUP).is_none() {
        return Ok(());
    }
    let cluster = NatsCluster::start(3).await?;
    let urls = cluster.urls();
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut weft_a = WeftProcess::spawn(dir_a.path(), &weft_flags(&urls, "node-a")).await?;
    let weft_b = WeftProcess::spawn(dir_b.path(), &weft_flags(&urls, "node-b")).await?;
    let (url_a, url_b) = (weft_a.room_url(LEDGER), weft_b.room_url(LEDGER));
    let mut ledger = Ledger {
        typists: vec![
            Typist::start("a1", &url_a).await?,
            Typist::start("a2", &url_a).await?,
            Typist::start("b1", &url_b).await?,
        ],
        watch_a: Observer::start(&url_a, false).await?,
        watch_b: Observer::start(&url_b, true).await?,
    };
    kill_weft_node(&mut ledger, &mut weft_a, &weft_b).await?;
    // Node A comes back, and its watcher with it: what it sees next comes from following the
    // log, as every typist now types through node B.
    let weft_a = WeftProcess::spawn(dir_a.path(), &weft_flags(&urls, "node-a")).await?;
    let seen_on_a = std::mem::take(&mut ledger.watch_a.seen);
    ledger.watch_a = Observer::start(&weft_a.room_url(LEDGER), true).await?;
    ledger.watch_a.seen.extend(seen_on_a);
    kill_nats_leader(&mut ledger, &cluster, &weft_a, &weft_b).await?;

    // A little more typing, then every typist's last edits settle.
    for _ in 0..20 {
        ledger.round().await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in &ledger.typists {
        let outcome = t.client.wait_acked_or_closed(WAIT).await?;
        assert_eq!(outcome, Outcome::Acked, "typist {}", t.name);
    }
    ledger.watch_b.poll().await?;
    let acked = ledger.acked();
    report(&format!(
        "cluster: {} acknowledged updates in all",
        acked.len()
    ));
    assert_all_there(&url_b, &acked, "after a NATS server was killed").await?;
    let http = reqwest::Client::new();
    let url = format!("{}/api/docs/{LEDGER}/text", weft_b.http_base());
    wait_body(
        &http,
        &url,
        "every acknowledged update through the API",
        |t| markers(t).is_superset(&acked),
    )
    .await?;
    Ok(())
}
