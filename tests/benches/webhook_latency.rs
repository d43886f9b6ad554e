//! From an edit being acknowledged to its webhook POST arriving at a local receiver:
//! `cargo bench -p weft-tests --bench webhook_latency` (`SAMPLES=n`, default 60).
//!
//! The real server (in-process, strict durability, `--feed-debounce-ms` at its default 250)
//! posts `document.updated` events to a receiver on 127.0.0.1. Each sample appends one character
//! through `POST /api/docs/{id}/append`, whose answer comes once the edit is durable (the
//! acknowledgement), then waits for the event carrying the new length. Samples are spaced so each
//! edit opens a fresh debounce window: the figure is debounce + recording + delivery.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use weft_server::config::WebhookSecret;
use weft_tests::TestServer;

/// `(arrival, text_length)` of every `document.updated` received.
type Arrivals = Arc<Mutex<Vec<(Instant, u64)>>>;

async fn receive(State(arrivals): State<Arrivals>, body: Bytes) -> &'static str {
    let at = Instant::now();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if let Some(n) = json["text_length"].as_u64() {
        arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((at, n));
    }
    "ok"
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let samples: usize = std::env::var("SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let arrivals: Arrivals = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(arrivals.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let key =
        base64::engine::general_purpose::STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
    let server = TestServer::start_with(move |c| {
        c.webhook_urls = vec![hook];
        c.webhook_secret = Some(WebhookSecret(key));
        c.webhook_events = vec!["document.updated".into()];
    })
    .await?;
    let debounce = 250;
    let base = server.http_base();
    let http = reqwest::Client::new();
    http.post(format!("{base}/api/docs"))
        .json(&serde_json::json!({ "id": "latency" }))
        .send()
        .await?
        .error_for_status()?;
    let mut latencies = Vec::with_capacity(samples);
    for i in 1..=samples as u64 {
        http.post(format!("{base}/api/docs/latency/append"))
            .header("content-type", "text/plain")
            .body("x")
            .send()
            .await?
            .error_for_status()?;
        let acked = Instant::now();
        let deadline = acked + Duration::from_secs(10);
        let arrived = loop {
            let hit = arrivals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|(_, n)| *n == i)
                .map(|(at, _)| *at);
            if let Some(at) = hit {
                break at;
            }
            if Instant::now() > deadline {
                bail!("no event for length {i} within 10 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        latencies.push(arrived.saturating_duration_since(acked));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    latencies.sort();
    let ms = |q: f64| {
        let i = ((latencies.len() - 1) as f64 * q).round() as usize;
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "edit acknowledged -> webhook POST received, {} samples, --feed-debounce-ms {debounce}:",
        latencies.len()
    );
    println!(
        "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p50 <= {} ms)",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(1.0),
        debounce + 20
    );
    drop(server);
    Ok(())
}
