//! The operator endpoints over real sockets: `/metrics` is valid OpenMetrics text whose
//! counters follow what clients do; the dashboard's push socket delivers a snapshot a second
//! with the documented fields; polling returns the same message; and with tokens on, every
//! dashboard endpoint needs an admin token.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use openmetrics_parser::{OpenMetricsValue, PrometheusType, PrometheusValue};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use weft_server::token::{mint, unix_now, Access, AuthSecret, Claims, Scope};
use weft_tests::{within, Client, TestServer, WAIT};

/// Every metric `/metrics` documents, by family name.
const FAMILIES: [&str; 17] = [
    "weft_build_info",
    "weft_connections",
    "weft_rooms",
    "weft_documents",
    "weft_resident_memory_bytes",
    "weft_unfinished_messages_bytes",
    "weft_messages_received",
    "weft_messages_sent",
    "weft_received_bytes",
    "weft_sent_bytes",
    "weft_updates_applied",
    "weft_broadcast_fanout",
    "weft_queue_full_disconnects",
    "weft_flush_duration_seconds",
    "weft_flushes",
    "weft_connections_refused",
    "weft_disconnects",
];

/// One scrape: each sample's value, keyed `family` or `family{label values}`.
type Scrape = HashMap<String, f64>;

/// Scrapes `/metrics` twice, as Prometheus (OpenMetrics) and as a plain client (text format
/// 0.0.4); fails unless each parses strictly and both carry the same samples.
async fn scrape(base: &str, token: Option<&str>) -> anyhow::Result<Scrape> {
    let fetch = |accept: &'static str| async move {
        let mut req = reqwest::Client::new()
            .get(format!("{base}/metrics"))
            .header("accept", accept);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await?;
        anyhow::ensure!(res.status() == StatusCode::OK, "/metrics: {}", res.status());
        let ctype = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok::<_, anyhow::Error>((ctype, res.text().await?))
    };
    // What Prometheus sends.
    let (ctype, text) = fetch(
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    )
    .await?;
    anyhow::ensure!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&text)
        .map_err(|e| anyhow::anyhow!("not OpenMetrics text: {e:?}\n{text}"))?;
    let mut out = Scrape::new();
    for (name, family) in parsed.families {
        for sample in family.iter_samples() {
            let value = match &sample.value {
                OpenMetricsValue::Counter(c) => c.value.as_f64(),
                OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => n.as_f64(),
                OpenMetricsValue::Histogram(h) => h.count.unwrap_or(0) as f64,
                other => anyhow::bail!("{name}: unexpected sample {other:?}"),
            };
            out.insert(key(&name, sample.get_labelset().ok()), value);
        }
    }
    let (ctype, text) = fetch("*/*").await?;
    anyhow::ensure!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let parsed = openmetrics_parser::prometheus::parse_prometheus(&text)
        .map_err(|e| anyhow::anyhow!("not Prometheus text: {e:?}\n{text}"))?;
    for (name, family) in parsed.families {
        for sample in family.iter_samples() {
            let name = name.strip_suffix("_total").unwrap_or(&name);
            let k = key(name, sample.get_labelset().ok());
            anyhow::ensure!(out.contains_key(&k), "{k} only in the classic format");
            anyhow::ensure!(
                matches!(
                    (&family.family_type, &sample.value),
                    (PrometheusType::Counter, PrometheusValue::Counter(_))
                        | (PrometheusType::Gauge, PrometheusValue::Gauge(_))
                        | (PrometheusType::Histogram, PrometheusValue::Histogram(_))
                ),
                "{k}: type and sample disagree"
            );
        }
    }
    Ok(out)
}

/// `family` or `family{label values}`.
fn key(name: &str, labels: Option<openmetrics_parser::LabelSet<'_>>) -> String {
    let values: Vec<String> = labels
        .map(|l| l.iter_values().cloned().collect())
        .unwrap_or_default();
    if values.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{}}}", values.join(","))
    }
}

fn get(s: &Scrape, key: &str) -> f64 {
    s.get(key).copied().unwrap_or(f64::NAN)
}

/// `/metrics` parses as OpenMetrics (and as Prometheus text), carries every documented
/// metric, and its counters and gauges move when clients connect and edit, when a connection
/// is refused, and when clients leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_follow_clients() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.max_room_connections = 2).await?;
    let base = server.http_base();
    // The refused and disconnect families have samples only once something happens.
    let before = scrape(&base, None).await?;
    let families: BTreeSet<&str> = before
        .keys()
        .map(|k| k.split('{').next().unwrap_or(k))
        .collect();
    for family in FAMILIES
        .iter()
        .filter(|f| !matches!(**f, "weft_connections_refused" | "weft_disconnects"))
    {
        assert!(
            families.contains(family),
            "{family} missing from {before:?}"
        );
    }
    // Same workspace version as the server's.
    let build = format!("weft_build_info{{{}}}", env!("CARGO_PKG_VERSION"));
    assert_eq!(get(&before, &build), 1.0, "{before:?}");
    assert_eq!(get(&before, "weft_connections"), 0.0);
    assert!(get(&before, "weft_resident_memory_bytes") > 1_000_000.0);

    let room = server.room_url("metrics-room");
    let a = Client::connect_synced(&room).await?;
    let b = Client::connect_synced(&room).await?;
    a.push("hello metrics")?;
    a.wait_acked().await?;
    b.wait_text("a's edit", |t| t.contains("hello metrics"))
        .await?;
    // A third member is over the room limit: refused with room_full.
    let c = Client::connect(&room).await?;
    c.wait_close().await?;

    let mut last = Scrape::new();
    let moved = within("counters to move", WAIT, async {
        loop {
            last = scrape(&base, None).await?;
            let grew = |k: &str| get(&last, k) > get(&before, k);
            if get(&last, "weft_connections") == 2.0
                && get(&last, "weft_rooms") == 1.0
                && get(&last, "weft_documents") == 1.0
                && grew("weft_messages_received")
                && grew("weft_messages_sent")
                && grew("weft_received_bytes")
                && grew("weft_sent_bytes")
                && get(&last, "weft_updates_applied") >= 1.0
                && get(&last, "weft_broadcast_fanout") >= 2.0
                && get(&last, "weft_flushes") >= 1.0
                && get(&last, "weft_flush_duration_seconds") >= 1.0
                && get(&last, "weft_connections_refused{room_full}") == 1.0
                && get(&last, "weft_disconnects{1013}") == 1.0
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    moved.map_err(|e| anyhow::anyhow!("{e}; last scrape: {last:?}"))?;

    // An invalid room name is refused before the upgrade, and counted under its code.
    let bad = format!("{}/{}", server.ws_base(), "x".repeat(300));
    assert!(tokio_tungstenite::connect_async(bad).await.is_err());
    a.close().await;
    b.close().await;
    let dropped = within("connections to drop to 0", WAIT, async {
        loop {
            last = scrape(&base, None).await?;
            if get(&last, "weft_connections") == 0.0
                && get(&last, "weft_connections_refused{invalid_room}") == 1.0
                && get(&last, "weft_disconnects{peer}") == 2.0
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    dropped.map_err(|e| anyhow::anyhow!("{e}; last scrape: {last:?}"))
}

/// The key set of a JSON object.
fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// Checks a dashboard message has exactly the documented fields.
fn assert_documented(msg: &Value) {
    assert_eq!(
        keys(msg),
        set(&[
            "server",
            "nodes",
            "totals",
            "rooms",
            "rooms_open",
            "webhooks",
            "snapshots"
        ]),
        "{msg}"
    );
    assert_eq!(
        keys(&msg["server"]),
        set(&[
            "version",
            "started_ms",
            "uptime_secs",
            "data_dir",
            "auth",
            "durability"
        ]),
    );
    assert_eq!(
        keys(&msg["totals"]),
        set(&[
            "messages_in",
            "messages_out",
            "bytes_in",
            "bytes_out",
            "updates_applied",
            "fanout",
            "flushes",
            "queue_full_disconnects",
            "refused",
            "disconnects"
        ]),
    );
    for s in msg["snapshots"].as_array().into_iter().flatten() {
        assert_eq!(
            keys(s),
            set(&[
                "t",
                "connections",
                "rooms",
                "documents",
                "memory_bytes",
                "messages_in_per_sec",
                "messages_out_per_sec",
                "bytes_in_per_sec",
                "bytes_out_per_sec",
                "updates_per_sec",
                "fanout_per_sec",
                "flushes_per_sec",
                "flush_p50_ms",
                "flush_p99_ms"
            ]),
        );
    }
    for r in msg["rooms"].as_array().into_iter().flatten() {
        assert_eq!(
            keys(r),
            set(&["id", "title", "users", "size_bytes", "active_ms"])
        );
    }
}

/// The next JSON message on a dashboard socket, within 5 s.
async fn next_push(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> anyhow::Result<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Err(_) => anyhow::bail!("no push within 5 s"),
            Ok(None) => anyhow::bail!("dashboard socket closed"),
            Ok(Some(msg)) => {
                if let WsMessage::Text(t) = msg? {
                    return Ok(serde_json::from_str(&t)?);
                }
            }
        }
    }
}

/// The push socket sends the history at once, then one snapshot a second with the documented
/// fields; while a client types, the rates, the rooms table and the totals show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_delivers_a_snapshot_every_second() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let url = format!(
        "ws://{}/dashboard/ws",
        server.http_base().trim_start_matches("http://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
    let history = next_push(&mut ws).await?;
    // Right after start the history may still be empty; its shape is what counts here.
    assert_documented(&history);
    assert_eq!(history["server"]["auth"], "open");
    assert_eq!(history["server"]["version"], env!("CARGO_PKG_VERSION"));

    let typist = Client::connect_synced(&server.room_url("watched-room")).await?;
    let typing = tokio::spawn(async move {
        for i in 0..80 {
            if typist.push(&format!("{i} ")).is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        typist
    });

    let mut times = Vec::new();
    let mut saw_typing = false;
    let mut saw_room = false;
    for _ in 0..6 {
        let msg = next_push(&mut ws).await?;
        assert_documented(&msg);
        let snaps = msg["snapshots"].as_array().cloned().unwrap_or_default();
        assert_eq!(snaps.len(), 1, "a push carries the newest snapshot only");
        let s = &snaps[0];
        times.push(s["t"].as_u64().unwrap_or(0));
        saw_typing |= s["messages_in_per_sec"].as_f64() > Some(0.0)
            && s["updates_per_sec"].as_f64() > Some(0.0)
            && s["connections"].as_i64() == Some(1);
        saw_room |= msg["rooms"].as_array().is_some_and(|rows| {
            rows.iter().any(|r| {
                r["id"] == "watched-room"
                    && r["users"] == 1
                    && r["size_bytes"].as_u64() > Some(0)
                    && r["active_ms"].as_u64() > Some(0)
            })
        });
    }
    let gaps: Vec<u64> = times
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    assert!(
        gaps.iter().all(|&g| g >= 500),
        "snapshots closer than a second apart: {times:?}"
    );
    let mut sorted = gaps.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    assert!(
        (800..=1600).contains(&median),
        "one snapshot a second expected, median gap {median} ms ({gaps:?})"
    );
    assert!(saw_typing, "no snapshot showed the typing client");
    assert!(saw_room, "the rooms table never listed the open room");
    typing.abort();
    Ok(())
}

/// Polling returns the same message as push; with `since` only newer snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_returns_newer_snapshots() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let http = reqwest::Client::new();
    let poll = |since: Option<u64>| {
        let mut url = format!("{}/dashboard/snapshots", server.http_base());
        if let Some(t) = since {
            url.push_str(&format!("?since={t}"));
        }
        let http = http.clone();
        async move {
            let res = http.get(url).send().await?;
            anyhow::ensure!(res.status() == StatusCode::OK, "poll: {}", res.status());
            Ok::<Value, anyhow::Error>(res.json().await?)
        }
    };
    let last = within("a first snapshot", WAIT, async {
        loop {
            let all = poll(None).await?;
            assert_documented(&all);
            if let Some(t) = all["snapshots"]
                .as_array()
                .and_then(|s| s.last())
                .and_then(|s| s["t"].as_u64())
            {
                return Ok(t);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await?;
    let mut newer = Value::Null;
    within("a snapshot newer than the last one", WAIT, async {
        loop {
            newer = poll(Some(last)).await?;
            if newer["snapshots"].as_array().is_some_and(|s| !s.is_empty()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await?;
    assert_documented(&newer);
    for s in newer["snapshots"].as_array().into_iter().flatten() {
        assert!(s["t"].as_u64() > Some(last), "{s} is not newer than {last}");
    }
    Ok(())
}

const SECRET: &str = "dashboard-secret-0123456789";

fn token(scope: Scope, role: Access) -> anyhow::Result<String> {
    let secret: AuthSecret = SECRET.parse()?;
    Ok(mint(
        &secret,
        &Claims {
            scope,
            role,
            exp: unix_now() + 3600,
            sub: None,
        },
    ))
}

/// With tokens on, every dashboard endpoint answers 401 without a token and 403 with a token
/// that is not an admin token for all documents; an admin token opens each of them, in the
/// header or the URL. Health checks stay open for load balancers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_endpoints_need_an_admin_token() -> anyhow::Result<()> {
    let secret: AuthSecret = SECRET.parse()?;
    let server = TestServer::start_with(move |c| c.auth_secret = Some(secret)).await?;
    let base = server.http_base();
    let http = reqwest::Client::new();
    let admin = token(Scope::AllDocs, Access::Admin)?;
    let writer = token(Scope::AllDocs, Access::Write)?;
    let one_doc_admin = token(Scope::Doc("x".into()), Access::Admin)?;
    for path in [
        "/metrics",
        "/dashboard",
        "/dashboard/snapshots",
        "/dashboard/ws",
    ] {
        let status = |res: reqwest::Response| res.status();
        let none = status(http.get(format!("{base}{path}")).send().await?);
        assert_eq!(none, StatusCode::UNAUTHORIZED, "{path} without a token");
        for (who, t) in [("write", &writer), ("one-document admin", &one_doc_admin)] {
            let got = status(
                http.get(format!("{base}{path}"))
                    .bearer_auth(t)
                    .send()
                    .await?,
            );
            assert_eq!(got, StatusCode::FORBIDDEN, "{path} with a {who} token");
        }
        if path != "/dashboard/ws" {
            let header = status(
                http.get(format!("{base}{path}"))
                    .bearer_auth(&admin)
                    .send()
                    .await?,
            );
            assert_eq!(header, StatusCode::OK, "{path} with an admin token");
            let query = status(
                http.get(format!("{base}{path}?token={admin}"))
                    .send()
                    .await?,
            );
            assert_eq!(query, StatusCode::OK, "{path}?token=admin");
        }
    }
    // The 401 page says what to do.
    let page = http
        .get(format!("{base}/dashboard"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        page.contains("weft token --all-docs --role admin"),
        "{page}"
    );
    // The push socket opens with the admin token in the URL, as the page sends it.
    let ws = format!(
        "ws://{}/dashboard/ws?token={admin}",
        base.trim_start_matches("http://")
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws).await?;
    let first = tokio::time::timeout(WAIT, socket.next()).await?;
    assert!(matches!(first, Some(Ok(WsMessage::Text(_)))), "{first:?}");
    assert!(scrape(&base, Some(&admin))
        .await?
        .contains_key("weft_connections"));
    for path in ["/healthz", "/readyz"] {
        let res = http.get(format!("{base}{path}")).send().await?;
        assert_eq!(res.status(), StatusCode::OK, "{path} stays open");
    }
    Ok(())
}
