//! The `put-text` scenario (Weft only: the peers have no text API): two clients rewrite two
//! large documents through `PUT /api/docs/{id}/text` over and over, while `/healthz` is asked
//! every 20 ms. What it reports is how long `/healthz` takes meanwhile, and how long the
//! rewrites take: a rewrite planned on the server's async threads (an O(N·D) diff) shows as
//! seconds of `/healthz` latency; one planned off them, in bounded time, does not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

use crate::{ms, Report, Target, MAX_LATENCY_US};

/// Characters of each rewritten document.
const DOC_CHARS: usize = 30_000;

/// Documents rewritten at once.
const WRITERS: usize = 2;

/// How often `/healthz` is asked.
const PROBE_EVERY: Duration = Duration::from_millis(20);

/// `http://host:port` of the server behind a `ws://host:port/ws/{room}` template.
fn http_base(template: &str) -> anyhow::Result<String> {
    let rest = template
        .strip_prefix("ws://")
        .context("put-text needs a ws:// URL template")?;
    let authority = rest.split('/').next().unwrap_or_default();
    Ok(format!("http://{authority}"))
}

/// `DOC_CHARS` characters of random words in lines, from `seed`.
fn random_text(seed: u64) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut text = String::with_capacity(DOC_CHARS + 16);
    while text.len() < DOC_CHARS {
        for _ in 0..rng.gen_range(3..12) {
            let len = rng.gen_range(2..9);
            text.extend((0..len).map(|_| rng.gen_range(b'a'..=b'z') as char));
            text.push(' ');
        }
        text.push('\n');
    }
    text
}

/// One writer: creates its document, then replaces its whole text with fresh random text until
/// `stop`; returns how long each PUT took, in µs.
async fn rewrite(
    http: reqwest::Client,
    base: String,
    doc: String,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<u64>> {
    let create = serde_json::json!({ "id": doc, "text": random_text(0) });
    http.post(format!("{base}/api/docs"))
        .json(&create)
        .send()
        .await?
        .error_for_status()
        .context("creating the document")?;
    let mut took = Vec::new();
    let mut seed = 1;
    while !stop.load(Ordering::Relaxed) {
        let text = random_text(seed);
        seed += 1;
        let start = Instant::now();
        http.put(format!("{base}/api/docs/{doc}/text"))
            .body(text)
            .send()
            .await?
            .error_for_status()
            .context("PUT text")?;
        took.push(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    Ok(took)
}

/// Runs the scenario for `seconds` and reports `/healthz` and PUT latencies.
pub(crate) async fn put_text(target: &Target, seconds: f64) -> Report {
    let mut report = Report {
        label: "put-text".into(),
        ..Report::default()
    };
    if let Err(e) = measure(target, seconds, &mut report).await {
        report.errors += 1;
        report.error_samples.push(format!("{e:#}"));
        report.ok = false;
    }
    report
}

/// The scenario's body; fills `report`.
async fn measure(target: &Target, seconds: f64, report: &mut Report) -> anyhow::Result<()> {
    let base = http_base(&target.template)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    eprintln!("[put-text] {WRITERS} writers rewriting {DOC_CHARS}-character documents");
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let doc = format!("{}-put-text-{i}", target.prefix);
            tokio::spawn(rewrite(http.clone(), base.clone(), doc, stop.clone()))
        })
        .collect();
    let mut healthz = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        let start = Instant::now();
        http.get(format!("{base}/healthz"))
            .send()
            .await?
            .error_for_status()?;
        healthz.saturating_record(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
        tokio::time::sleep(PROBE_EVERY).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut puts = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
    for w in writers {
        for us in w.await.context("writer task")?? {
            puts.saturating_record(us);
        }
    }
    report.put("healthz_probes", healthz.len());
    report.put("healthz_p50_ms", ms(healthz.value_at_quantile(0.5)));
    report.put("healthz_p99_ms", ms(healthz.value_at_quantile(0.99)));
    report.put("healthz_max_ms", ms(healthz.max()));
    report.put("puts", puts.len());
    report.put("put_p50_ms", ms(puts.value_at_quantile(0.5)));
    report.put("put_max_ms", ms(puts.max()));
    report.ok = !puts.is_empty();
    Ok(())
}
