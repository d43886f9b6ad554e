//! What the server counts about itself, kept in a Prometheus registry of its own: connections,
//! rooms, documents, traffic, updates, fan-out, flush latency, refusals and memory. `/metrics`
//! renders it as OpenMetrics text; the dashboard (`dashboard`) samples the same numbers once a
//! second.
//!
//! The registry belongs to one [`Metrics`] (no global recorder), so several servers in one
//! process (the integration tests) keep separate numbers. Hot paths only touch atomics.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram as Hdr;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The label of a refused connection: the stable error code the client was given.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

/// The label of a disconnect: the close code the server sent, `dropped` when the socket was
/// dropped without a close frame (unresponsive or gone), `peer` when the client closed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Code {
    code: String,
}

/// A label set made of one string value.
trait OneLabel {
    /// The label set for `value`.
    fn of(value: String) -> Self;
}

impl OneLabel for Reason {
    fn of(reason: String) -> Self {
        Self { reason }
    }
}

impl OneLabel for Code {
    fn of(code: String) -> Self {
        Self { code }
    }
}

/// A counter per label value that remembers the values seen, so a snapshot (the dashboard)
/// can list the family's counters, which prometheus-client cannot enumerate.
struct Tally<L> {
    family: Family<L, Counter>,
    seen: Mutex<Vec<String>>,
}

impl<L> Default for Tally<L>
where
    L: OneLabel + Clone + std::hash::Hash + Eq,
{
    fn default() -> Self {
        Self {
            family: Family::default(),
            seen: Mutex::new(Vec::new()),
        }
    }
}

impl<L> Tally<L>
where
    L: OneLabel + Clone + std::hash::Hash + Eq,
{
    /// Counts one under `value`.
    fn inc(&self, value: &str) {
        self.family.get_or_create(&L::of(value.to_owned())).inc();
        let mut seen = lock(&self.seen);
        if !seen.iter().any(|v| v == value) {
            seen.push(value.to_owned());
        }
    }

    /// Every value's count since start, sorted by value.
    fn totals(&self) -> Vec<(String, u64)> {
        let values = lock(&self.seen).clone();
        let mut totals: Vec<(String, u64)> = values
            .into_iter()
            .map(|v| {
                let n = self.family.get_or_create(&L::of(v.clone())).get();
                (v, n)
            })
            .collect();
        totals.sort();
        totals
    }
}

/// The label of the build-information gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Version {
    version: String,
}

/// Flush latencies above this are recorded as this (the window histogram must be bounded).
const FLUSH_MAX_MICROS: u64 = 60_000_000;

/// The server's counters and gauges, and the registry that renders them.
pub(crate) struct Metrics {
    registry: Registry,
    /// WebSockets open now (sync and dashboard sockets are counted apart).
    pub(crate) connections: Gauge,
    /// Documents loaded in memory (set when sampled).
    pub(crate) rooms: Gauge,
    /// Documents in the store (set when sampled).
    pub(crate) documents: Gauge,
    /// Resident memory of the process in bytes (set when sampled).
    pub(crate) memory: Gauge,
    /// Bytes of WebSocket messages read but not yet whole (kept by the read budget).
    pub(crate) unfinished: Gauge,
    /// Protocol messages received from clients.
    pub(crate) messages_in: Counter,
    /// WebSocket frames sent to clients (one protocol message each).
    pub(crate) messages_out: Counter,
    /// Bytes of binary frames received.
    pub(crate) bytes_in: Counter,
    /// Bytes of binary frames sent.
    pub(crate) bytes_out: Counter,
    /// Document updates that changed a document and were stored.
    pub(crate) updates_applied: Counter,
    /// Frames queued to room members (one broadcast to n members counts n).
    pub(crate) fanout: Counter,
    /// Members disconnected because their send queue was full.
    pub(crate) queue_full: Counter,
    /// Store write probes `/readyz` ran (its answer is cached, so at most about one a second).
    pub(crate) readiness_probes: Counter,
    /// Change-feed events POSTed to a webhook and answered 2xx.
    pub(crate) webhook_deliveries: Counter,
    /// Webhook delivery attempts that failed (non-2xx, timeout, refused connection).
    pub(crate) webhook_failures: Counter,
    /// Events recorded but not yet delivered, summed over webhook endpoints.
    pub(crate) webhook_outbox: Gauge,
    flush_seconds: Histogram,
    flushes: Counter,
    refused: Tally<Reason>,
    disconnects: Tally<Code>,
    /// Flush latencies since the last [`Metrics::take_flush_window`], in microseconds.
    flush_window: Mutex<Hdr<u64>>,
}

/// Flush latency percentiles over one sampling window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct FlushWindow {
    /// Flushes in the window.
    pub(crate) count: u64,
    /// Median latency, milliseconds (0 when there was no flush).
    pub(crate) p50_ms: f64,
    /// 99th percentile latency, milliseconds (0 when there was no flush).
    pub(crate) p99_ms: f64,
}

/// The build's version, as a gauge fixed at 1 labelled with it.
fn register_build_info(registry: &mut Registry) {
    // A gauge fixed at 1 rather than an OpenMetrics `info`: the classic text format (and
    // older scrapers) know no `info` type.
    let build = Family::<Version, Gauge>::default();
    build
        .get_or_create(&Version {
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .set(1);
    registry.register("build_info", "Version of the running weft binary", build);
}

impl Metrics {
    /// A fresh registry with every metric at zero, named `weft_*`.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("weft");
        let m = Self::zeroed();
        register_build_info(&mut registry);
        m.register_gauges(&mut registry);
        m.register_traffic(&mut registry);
        m.register_durability(&mut registry);
        m.register_webhooks(&mut registry);
        Self { registry, ..m }
    }

    /// Every metric at zero, registered nowhere yet.
    fn zeroed() -> Self {
        Self {
            connections: Gauge::default(),
            rooms: Gauge::default(),
            documents: Gauge::default(),
            memory: Gauge::default(),
            unfinished: Gauge::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            updates_applied: Counter::default(),
            fanout: Counter::default(),
            queue_full: Counter::default(),
            readiness_probes: Counter::default(),
            webhook_deliveries: Counter::default(),
            webhook_failures: Counter::default(),
            webhook_outbox: Gauge::default(),
            // 50 µs to ~1.6 s: an fdatasync on a quiet SSD is ~0.3 ms, a stalled disk seconds.
            flush_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            flushes: Counter::default(),
            refused: Tally::default(),
            disconnects: Tally::default(),
            flush_window: Mutex::new(new_window()),
            registry: Registry::default(),
        }
    }

    /// Webhook deliveries and what waits for them.
    fn register_webhooks(&self, registry: &mut Registry) {
        registry.register(
            "webhook_deliveries",
            "Change-feed events delivered to a webhook endpoint (answered 2xx)",
            self.webhook_deliveries.clone(),
        );
        registry.register(
            "webhook_failures",
            "Webhook delivery attempts that failed (non-2xx, timeout, connection refused)",
            self.webhook_failures.clone(),
        );
        registry.register(
            "webhook_outbox",
            "Change-feed events not yet delivered, summed over webhook endpoints",
            self.webhook_outbox.clone(),
        );
    }

    /// What is open and how much memory it takes.
    fn register_gauges(&self, registry: &mut Registry) {
        registry.register(
            "connections",
            "WebSocket connections open to document rooms",
            self.connections.clone(),
        );
        registry.register(
            "rooms",
            "Documents loaded in memory (open rooms)",
            self.rooms.clone(),
        );
        registry.register(
            "documents",
            "Documents in the store",
            self.documents.clone(),
        );
        registry.register_with_unit(
            "resident_memory",
            "Resident memory of the server process",
            Unit::Bytes,
            self.memory.clone(),
        );
        registry.register_with_unit(
            "unfinished_messages",
            "WebSocket message bytes read but not yet whole, held for all clients",
            Unit::Bytes,
            self.unfinished.clone(),
        );
    }

    /// What clients send and receive, and who is refused or dropped.
    fn register_traffic(&self, registry: &mut Registry) {
        registry.register(
            "messages_received",
            "Protocol messages received from clients",
            self.messages_in.clone(),
        );
        registry.register(
            "messages_sent",
            "Frames sent to clients",
            self.messages_out.clone(),
        );
        registry.register_with_unit(
            "received",
            "Bytes of binary frames received from clients",
            Unit::Bytes,
            self.bytes_in.clone(),
        );
        registry.register_with_unit(
            "sent",
            "Bytes of binary frames sent to clients",
            Unit::Bytes,
            self.bytes_out.clone(),
        );
        registry.register(
            "updates_applied",
            "Document updates applied and stored",
            self.updates_applied.clone(),
        );
        registry.register(
            "broadcast_fanout",
            "Frames queued to room members; one broadcast to n members counts n",
            self.fanout.clone(),
        );
        registry.register(
            "queue_full_disconnects",
            "Connections closed because their send queue was full (1013)",
            self.queue_full.clone(),
        );
    }

    /// Group-commit flushes and their latency.
    fn register_durability(&self, registry: &mut Registry) {
        // Named with its unit rather than given one: strict OpenMetrics parsers refuse a UNIT
        // line on histograms.
        registry.register(
            "flush_duration_seconds",
            "Time one group-commit flush took to reach the disk, in seconds",
            self.flush_seconds.clone(),
        );
        registry.register(
            "flushes",
            "Group-commit flushes (one per batch of writes)",
            self.flushes.clone(),
        );
        registry.register(
            "readiness_probes",
            "Store write probes run for /readyz (answers are cached for a second)",
            self.readiness_probes.clone(),
        );
        registry.register(
            "connections_refused",
            "WebSocket connections refused, by the error code the client was given",
            self.refused.family.clone(),
        );
        registry.register(
            "disconnects",
            "WebSocket connections ended, by the close code sent (dropped: no close frame; \
             peer: the client closed)",
            self.disconnects.family.clone(),
        );
    }

    /// Records one group-commit flush that took `elapsed`.
    pub(crate) fn observe_flush(&self, elapsed: Duration) {
        self.flush_seconds.observe(elapsed.as_secs_f64());
        self.flushes.inc();
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        lock(&self.flush_window).saturating_record(micros.clamp(1, FLUSH_MAX_MICROS));
    }

    /// Group-commit flushes since start.
    pub(crate) fn flushes(&self) -> u64 {
        self.flushes.get()
    }

    /// Flush latency percentiles since the previous call, which starts a new window.
    pub(crate) fn take_flush_window(&self) -> FlushWindow {
        let mut window = lock(&self.flush_window);
        let taken = std::mem::replace(&mut *window, new_window());
        drop(window);
        if taken.is_empty() {
            return FlushWindow::default();
        }
        let ms = |q: f64| taken.value_at_quantile(q) as f64 / 1000.0;
        FlushWindow {
            count: taken.len(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
        }
    }

    /// Counts a refused WebSocket connection under the code its client was told.
    pub(crate) fn refused(&self, reason: &str) {
        self.refused.inc(reason);
    }

    /// Refused connections since start, by reason, sorted by reason.
    pub(crate) fn refused_totals(&self) -> Vec<(String, u64)> {
        self.refused.totals()
    }

    /// Counts an ended WebSocket under its close code (`dropped`, `peer`: see [`Code`]).
    pub(crate) fn disconnected(&self, code: &str) {
        self.disconnects.inc(code);
    }

    /// Ended WebSockets since start, by close code, sorted.
    pub(crate) fn disconnect_totals(&self) -> Vec<(String, u64)> {
        self.disconnects.totals()
    }

    /// Reads the process's resident memory into the `memory` gauge and returns it.
    ///
    /// From `/proc/self/statm` (the `always_use_statm` feature): the default, `smaps`, walks
    /// every mapping and was 5 % of the server's CPU samples in a hot-room profile.
    pub(crate) fn sample_memory(&self) -> u64 {
        let rss = memory_stats::memory_stats().map_or(0, |m| m.physical_mem as u64);
        self.memory.set(i64::try_from(rss).unwrap_or(i64::MAX));
        rss
    }

    /// The registry as OpenMetrics text (what Prometheus asks for first).
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; a label that cannot encode would be our bug.
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }

    /// The registry in the classic Prometheus text format (0.0.4), for scrapers and tools
    /// that do not ask for OpenMetrics.
    pub(crate) fn render_classic(&self) -> String {
        to_classic(&self.render())
    }
}

/// Rewrites prometheus-client's OpenMetrics output as text format 0.0.4: there a counter's
/// HELP and TYPE name the `_total` series, and `# UNIT` and `# EOF` do not exist. Samples are
/// written the same way in both formats.
fn to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# EOF") || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            // Held until the TYPE line says whether the name needs `_total`.
            help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let series = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some(h) = help.take() {
                let text = h
                    .strip_prefix("# HELP ")
                    .and_then(|r| r.split_once(' '))
                    .map_or("", |(_, text)| text);
                out.push_str(&format!("# HELP {series} {text}\n"));
            }
            out.push_str(&format!("# TYPE {series} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn new_window() -> Hdr<u64> {
    // 2 significant figures: a percentile within 1 %, in a few KiB.
    Hdr::new_with_bounds(1, FLUSH_MAX_MICROS, 2).expect("constant bounds are valid")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters stay meaningful after a panic elsewhere: recover the guard.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rendered text carries every metric with its HELP and TYPE, and counters move.
    #[test]
    fn renders_openmetrics_with_moving_counters() {
        let m = Metrics::new();
        m.messages_in.inc_by(3);
        m.refused("too_many_connections");
        m.refused("too_many_connections");
        m.observe_flush(Duration::from_micros(400));
        let text = m.render();
        assert!(text.contains("weft_messages_received_total 3"), "{text}");
        assert!(
            text.contains(r#"weft_connections_refused_total{reason="too_many_connections"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("# TYPE weft_flush_duration_seconds histogram"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        assert_eq!(
            m.refused_totals(),
            vec![("too_many_connections".to_owned(), 2)]
        );
    }

    /// The classic format names counters' `_total` series in HELP and TYPE and has no UNIT
    /// or EOF lines.
    #[test]
    fn classic_format_names_counter_series() {
        let m = Metrics::new();
        m.bytes_in.inc_by(7);
        let text = m.render_classic();
        assert!(
            text.contains("# TYPE weft_received_bytes_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP weft_received_bytes_total Bytes of binary frames"),
            "{text}"
        );
        assert!(text.contains("\nweft_received_bytes_total 7\n"), "{text}");
        assert!(text.contains("# TYPE weft_connections gauge\n"), "{text}");
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    /// Each window reports its own flushes and then starts empty.
    #[test]
    fn flush_window_resets() {
        let m = Metrics::new();
        for us in [100, 200, 300, 400, 10_000] {
            m.observe_flush(Duration::from_micros(us));
        }
        let w = m.take_flush_window();
        assert_eq!(w.count, 5);
        assert!((0.29..=0.31).contains(&w.p50_ms), "{w:?}");
        assert!((9.9..=10.1).contains(&w.p99_ms), "{w:?}");
        assert_eq!(m.take_flush_window(), FlushWindow::default());
        assert_eq!(m.flushes(), 5);
    }
}
