//! The change feed and webhooks of a cluster: two Weft nodes on one real NATS server. Changes
//! made through either node show in `GET /api/changes` of both, the same events in the same
//! order under the same `seq`s (pages, `since` cursors and the live event stream alike), and a
//! webhook receiver configured on both nodes gets each event exactly once, in feed order; a node
//! that stops while retrying an event leaves it to the other at once, and a redelivery asked on
//! one node replays the events once; an edit acknowledged just before its node is killed
//! (its event not yet in the cluster's feed) reaches the feed when the node comes back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use weft_server::config::WebhookSecret;
use weft_tests::nats::{require_nats, NatsServer};
use weft_tests::{wait_until, Client, TestServer, WeftProcess, WAIT};

/// A node of the cluster on `nats`, with `adjust` on top.
async fn node(
    nats: &NatsServer,
    adjust: impl FnOnce(&mut weft_server::Config) + Send + 'static,
) -> anyhow::Result<TestServer> {
    let url = nats.url();
    TestServer::start_with(move |c| {
        c.nats.urls = vec![url];
        c.feed_debounce_ms = 20;
        adjust(c);
    })
    .await
}

async fn create(base: &str, doc: &str, text: &str) -> anyhow::Result<()> {
    reqwest::Client::new()
        .post(format!("{base}/api/docs"))
        .json(&json!({ "id": doc, "text": text }))
        .send()
        .await?
        .error_for_status()
        .with_context(|| format!("creating {doc} at {base}"))?;
    Ok(())
}

/// One page of the feed after `since`: its events and `next`.
async fn page(base: &str, since: u64, limit: usize) -> anyhow::Result<(Vec<Value>, u64)> {
    let page: Value = reqwest::get(format!("{base}/api/changes?since={since}&limit={limit}"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    let events = page["events"].as_array().context("events")?.clone();
    Ok((events, page["next"].as_u64().context("next")?))
}

/// Every event after `since`, following `next` in pages of `limit`.
async fn events_after(base: &str, since: u64, limit: usize) -> anyhow::Result<Vec<Value>> {
    let (mut out, mut since) = (Vec::new(), since);
    loop {
        let (events, next) = page(base, since, limit).await?;
        if events.is_empty() && next == since {
            return Ok(out);
        }
        out.extend(events);
        since = next;
    }
}

/// Polls `base`'s feed until `done` holds for it (bounded by [`WAIT`]).
async fn feed_until(
    base: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> anyhow::Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let events = events_after(base, 0, 1000).await?;
        if done(&events) {
            return Ok(events);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out waiting for {what} at {base}; feed: {events:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn has(events: &[Value], doc: &str, kind: &str) -> bool {
    events.iter().any(|e| e["doc"] == doc && e["type"] == kind)
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().filter_map(|e| e["seq"].as_u64()).collect()
}

/// Reads the event stream until an event about `doc` comes; returns the `(id, data)` seen.
async fn sse_until(
    stream: &mut reqwest::Response,
    buf: &mut String,
    doc: &str,
) -> anyhow::Result<Vec<(u64, Value)>> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let id = block.lines().find_map(|l| l.strip_prefix("id: "));
            let data = block.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(id), Some(data)) = (id, data) {
                let data: Value = serde_json::from_str(data)?;
                let found = data["doc"] == doc;
                seen.push((id.parse()?, data));
                if found {
                    return Ok(seen);
                }
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, stream.chunk()).await {
            Ok(Ok(Some(chunk))) => buf.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) => bail!("the event stream ended before {doc}: {seen:#?}"),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => bail!("no event about {doc} on the stream within {WAIT:?}: {seen:#?}"),
        }
    }
}

/// Documents created and edited through node A and node B (one document on both at once) show
/// in both nodes' feeds, identical: same events, same order, same seqs; a cursor taken from
/// one node pages on the other; a live stream on B shows an edit made on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_nodes_serve_one_feed() -> anyhow::Result<()> {
    let Some(_) = require_nats("cluster feed") else {
        return Ok(());
    };
    let nats = NatsServer::start().await?;
    let a = node(&nats, |_| {}).await?;
    let b = node(&nats, |_| {}).await?;
    let (base_a, base_b) = (a.http_base(), b.http_base());
    create(&base_a, "from-a", "Made on A").await?;
    create(&base_b, "from-b", "Made on B").await?;
    // One document open on both nodes, each with a writer.
    let on_a = Client::connect_synced(&a.room_url("shared")).await?;
    on_a.push("typed on A. ")?;
    on_a.wait_acked().await?;
    let on_b = Client::connect_synced(&b.room_url("shared")).await?;
    on_b.push("typed on B.")?;
    on_b.wait_acked().await?;
    let complete = |events: &[Value]| {
        has(events, "from-a", "document.created")
            && has(events, "from-b", "document.created")
            && has(events, "shared", "document.created")
            && events.iter().any(|e| {
                e["doc"] == "shared" && e["type"] == "document.updated" && e["text_length"] == 23
            })
    };
    let seen_a = feed_until(&base_a, "every node's events on A", complete).await?;
    let seen_b = feed_until(&base_b, "every node's events on B", |e| {
        e.len() >= seen_a.len() && complete(e)
    })
    .await?;
    assert_eq!(
        seen_a,
        seen_b[..seen_a.len()].to_vec(),
        "both nodes show the same events in the same order"
    );
    let s = seqs(&seen_b);
    assert!(s.windows(2).all(|w| w[0] < w[1]), "seqs increase: {s:?}");
    // A cursor from A's pages continues on B (and small pages see the same events).
    let (first, next) = page(&base_a, 0, 2).await?;
    assert_eq!(first, seen_b[..2].to_vec());
    let rest = events_after(&base_b, next, 1).await?;
    assert_eq!(rest[..seen_b.len() - 2], seen_b[2..]);
    // A live stream on B shows a document created on A, after what it had.
    let last = *s.last().context("events")?;
    let mut stream = reqwest::Client::new()
        .get(format!("{base_b}/api/changes"))
        .header("accept", "text/event-stream")
        .header("last-event-id", last.to_string())
        .send()
        .await?
        .error_for_status()?;
    create(&base_a, "late", "after the stream opened").await?;
    let mut buf = String::new();
    let live = sse_until(&mut stream, &mut buf, "late").await?;
    let ids: Vec<u64> = live.iter().map(|(id, _)| *id).collect();
    assert!(
        ids.iter().all(|&id| id > last),
        "only events after {last}: {ids:?}"
    );
    let (id, data) = live.last().context("the event")?;
    assert_eq!(data["seq"].as_u64(), Some(*id));
    // And A has the very same event under the same seq.
    let on_a_now = feed_until(&base_a, "the late document on A", |e| {
        has(e, "late", "document.created")
    })
    .await?;
    assert!(on_a_now.contains(data), "A shows {data} too");
    on_a.close().await;
    on_b.close().await;
    Ok(())
}

/// What a receiver accepted (`webhook-id`, body), in arrival order; it answers 503 (and
/// records nothing) while `failing`.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, Value)>>>,
    failing: Arc<AtomicBool>,
    refused: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn got(&self) -> Vec<(String, Value)> {
        self.got.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn refused(&self) -> usize {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// How often each id was accepted.
    fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for (id, _) in self.got() {
            *counts.entry(id).or_default() += 1;
        }
        counts
    }

    async fn serve(&self) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(addr)
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if r.failing.load(Ordering::SeqCst) {
        r.refused.lock().unwrap_or_else(|p| p.into_inner()).push(id);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.got
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((id, json));
    StatusCode::OK
}

fn with_hooks(addr: SocketAddr) -> impl FnOnce(&mut weft_server::Config) + Send + Copy + 'static {
    move |c: &mut weft_server::Config| {
        c.webhook_urls = vec![format!("http://{addr}/hook")];
        c.webhook_secret = Some(WebhookSecret(b"cluster webhook test key".to_vec()));
        c.webhook_retry_base_ms = 20;
    }
}

/// The state `GET /api/webhooks` shows for the one endpoint.
async fn hook_state(base: &str) -> anyhow::Result<String> {
    let listed: Value = reqwest::get(format!("{base}/api/webhooks"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(listed["endpoints"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// Both nodes post to one receiver: every event of the feed reaches it exactly once (counted by
/// `webhook-id`), in feed order, whichever node made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_each_event_once_from_two_nodes() -> anyhow::Result<()> {
    let Some(_) = require_nats("cluster webhooks") else {
        return Ok(());
    };
    let nats = NatsServer::start().await?;
    let receiver = Receiver::default();
    let addr = receiver.serve().await?;
    let hooks = with_hooks(addr);
    let a = node(&nats, hooks).await?;
    let b = node(&nats, hooks).await?;
    for i in 0..12 {
        let base = if i % 2 == 0 {
            a.http_base()
        } else {
            b.http_base()
        };
        create(&base, &format!("doc-{i}"), &format!("text {i}")).await?;
    }
    let feed = feed_until(&a.http_base(), "24 events", |e| e.len() >= 24).await?;
    let expected: Vec<String> = seqs(&feed)
        .iter()
        .map(|s| format!("msg_weft_{s}"))
        .collect();
    wait_until("every event at the receiver", WAIT, || {
        let ids: Vec<String> = receiver.got().into_iter().map(|(id, _)| id).collect();
        expected.iter().all(|id| ids.contains(id))
    })
    .await?;
    // Time for a second node's repeat to show up, were there one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.got();
    let counts = receiver.counts();
    let repeated: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        repeated.is_empty(),
        "delivered more than once: {repeated:?}"
    );
    let ids: Vec<String> = got.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        ids[..expected.len()],
        expected[..],
        "in feed order, nothing else"
    );
    for ((_, body), event) in got.iter().zip(&feed) {
        assert_eq!(body, event, "the POST carries the feed's event");
    }
    // Document events only: each document's first version (version.created) comes too.
    let made_on_b = got.iter().filter(|(_, e)| {
        e["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("document."))
            && e["doc"]
                .as_str()
                .and_then(|d| d.strip_prefix("doc-"))
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n % 2 == 1)
    });
    assert_eq!(
        made_on_b.count(),
        12,
        "B's events too (created and updated)"
    );
    Ok(())
}

/// A node that stops while it retries an event releases it: the other node delivers it at
/// once (well before the ack wait that covers a node dying), and each event is accepted once.
/// A redelivery asked on the remaining node then replays every event once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_leaves_its_event_to_the_other_and_redelivery_replays_once(
) -> anyhow::Result<()> {
    let Some(_) = require_nats("cluster webhook failover") else {
        return Ok(());
    };
    let nats = NatsServer::start().await?;
    let receiver = Receiver::default();
    receiver.failing.store(true, Ordering::SeqCst);
    let addr = receiver.serve().await?;
    let a = node(&nats, with_hooks(addr)).await?;
    let b = node(&nats, with_hooks(addr)).await?;
    create(&a.http_base(), "held", "retried").await?;
    // Whichever node took the first event retries it; the other waits its turn.
    let deadline = tokio::time::Instant::now() + WAIT;
    let holder = loop {
        if hook_state(&a.http_base()).await? == "retrying" {
            break "a";
        }
        if hook_state(&b.http_base()).await? == "retrying" {
            break "b";
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("no node retried; {} refusals", receiver.refused());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (stopping, staying) = if holder == "a" { (a, b) } else { (b, a) };
    stopping.stop().await?;
    receiver.failing.store(false, Ordering::SeqCst);
    let feed = feed_until(&staying.http_base(), "both events", |e| e.len() >= 2).await?;
    let expected: Vec<String> = seqs(&feed)
        .iter()
        .map(|s| format!("msg_weft_{s}"))
        .collect();
    // Well under the 30 s ack wait: the stopping node handed the event back.
    wait_until("the other node delivering", Duration::from_secs(15), || {
        let counts = receiver.counts();
        expected.iter().all(|id| counts.contains_key(id))
    })
    .await?;
    let replay: Value = reqwest::Client::new()
        .post(format!(
            "{}/api/webhooks/redeliver?since=0",
            staying.http_base()
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(replay["endpoints"], 1);
    wait_until("the replay", WAIT, || {
        let counts = receiver.counts();
        expected.iter().all(|id| counts.get(id) == Some(&2))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = receiver.counts();
    assert!(
        expected.iter().all(|id| counts.get(id) == Some(&2)) && counts.len() == expected.len(),
        "each event accepted once, then once more by the replay: {counts:?}"
    );
    Ok(())
}

/// A node killed right after acknowledging an edit, inside its debounce window, owes the
/// edit's events: they reach the cluster's feed (seen on the other node) once it restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_acknowledged_before_a_kill_reaches_the_cluster_feed() -> anyhow::Result<()> {
    let Some(_) = require_nats("cluster feed after a kill") else {
        return Ok(());
    };
    let nats = NatsServer::start().await?;
    let url = nats.url();
    let other = node(&nats, |_| {}).await?;
    let dir = tempfile::tempdir()?;
    let slow = ["--nats", &url, "--feed-debounce-ms", "60000"];
    let mut weft = WeftProcess::spawn(dir.path(), &slow).await?;
    let client = Client::connect_synced(&weft.room_url("crashy")).await?;
    client.push("saved before the crash")?;
    client.wait_acked().await?;
    weft.kill()?;
    drop(client);
    let _weft =
        WeftProcess::spawn(dir.path(), &["--nats", &url, "--feed-debounce-ms", "10"]).await?;
    let events = feed_until(&other.http_base(), "the owed events", |e| {
        has(e, "crashy", "document.updated")
    })
    .await?;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["document.created", "document.updated"]);
    assert_eq!(events[1]["text_length"], 22);
    assert_eq!(events[1]["title"], "saved before the crash");
    Ok(())
}
