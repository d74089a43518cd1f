//! The Prometheus text exposition format (version 0.0.4) of a [`Report`]'s counters and of
//! the upstreams' state.
//!
//! The upstreams' state is the [`UpstreamStatus`] defined here, with its [`CallStats`]: what
//! [`Engine::upstreams`](crate::Engine::upstreams) reports and the balancer fills
//! ([`crate::balance`] re-exports both, the crate root [`crate::UpstreamStatus`]).
//!
//! Every counter is a total since the engine started (monotonic, as Prometheus expects);
//! labels take only bounded sets of values — outcomes, error kinds, stores, status classes,
//! rule names, configured upstreams — never subjects or paths, whose top lists stay in the
//! report.

use std::fmt::Write;
use std::time::Duration;

use super::aggregate::{LATENCY_BOUNDS_US, Report};
use crate::breaker::BreakerState;
use crate::store::StoreHealth;

/// Calls and latency of one upstream since it was added.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallStats {
    /// Calls finished (or dropped).
    pub calls: u64,
    /// … that succeeded.
    pub successes: u64,
    /// … that failed (dropped leases included).
    pub failures: u64,
    /// … that timed out.
    pub timeouts: u64,
    /// Mean latency of the finished calls.
    pub mean_latency: Duration,
    /// Exponentially weighted moving average of the latency (α = 0.1).
    pub ewma_latency: Duration,
    /// The slowest call.
    pub max_latency: Duration,
}

/// One upstream as [`Engine::upstreams`](crate::Engine::upstreams) reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamStatus {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// Its weight.
    pub weight: u32,
    /// Whether a host marked it down.
    pub down: bool,
    /// Its breaker's state.
    pub state: BreakerState,
    /// The failure and slow-call rates of the breaker's current window.
    pub window_rates: (f64, f64),
    /// Calls picked and not yet finished.
    pub in_flight: u64,
    /// Its call statistics.
    pub stats: CallStats,
}

impl UpstreamStatus {
    /// The status as a JSON object, the shape every binding reports: `name`, `url`, `weight`,
    /// `down`, breaker `state` (`closed`, `open`, `half_open`) and `open_until_ms` (when open),
    /// `in_flight`, the window's `failure_rate` and `slow_call_rate`, and `calls`,
    /// `successes`, `failures`, `timeouts`, `mean_latency_us`, `max_latency_us`.
    pub fn to_json(&self) -> serde_json::Value {
        let open_until_ms = match self.state {
            BreakerState::Open { until } => Some(until.as_millis()),
            _ => None,
        };
        serde_json::json!({
            "name": self.name,
            "url": self.url,
            "weight": self.weight,
            "down": self.down,
            "state": self.state.as_str(),
            "open_until_ms": open_until_ms,
            "in_flight": self.in_flight,
            "failure_rate": self.window_rates.0,
            "slow_call_rate": self.window_rates.1,
            "calls": self.stats.calls,
            "successes": self.stats.successes,
            "failures": self.stats.failures,
            "timeouts": self.stats.timeouts,
            "mean_latency_us": u64::try_from(self.stats.mean_latency.as_micros()).unwrap_or(u64::MAX),
            "max_latency_us": u64::try_from(self.stats.max_latency.as_micros()).unwrap_or(u64::MAX),
        })
    }
}

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value: backslash, double quote and line feed.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

struct Writer(String);

impl Writer {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn family<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        self.header(name, "counter", help);
        for (value, n) in values {
            self.sample(name, &[(label, value)], n);
        }
    }
}

/// Renders `report`, the store's health when known (its kind, `memory`, `redis` or
/// `redis_cluster`, and where it stands) and the upstreams of each service.
pub fn render(
    report: &Report,
    store: Option<(&str, &StoreHealth)>,
    services: &[(String, Vec<UpstreamStatus>)],
) -> String {
    let mut w = Writer(String::with_capacity(4096));
    if let Some((kind, health)) = store {
        let name = "floodwall_store_state";
        w.header(
            name,
            "gauge",
            "Where the store stands: 0 ok, 1 degraded (Redis failing, the in-process fallback decides), 2 failing (Redis failing, on_error answers alone).",
        );
        w.sample(name, &[("store", kind)], health.state.code());
        let name = "floodwall_store_state_since_seconds";
        w.header(
            name,
            "gauge",
            "Since when the store is in its state (Unix time, seconds).",
        );
        w.sample(name, &[("store", kind)], health.since_ms as f64 / 1e3);
    }
    let t = &report.totals;
    w.family(
        "floodwall_decisions_total",
        "Decisions taken, by outcome.",
        "outcome",
        [
            ("admitted", t.admitted),
            ("rate_limited", t.rate_limited),
            ("auth_rejected", t.auth_rejected),
            ("failed", t.failed),
            ("denied", t.denied),
        ],
    );
    w.family(
        "floodwall_shadow_limited_total",
        "Admitted requests a rule in shadow mode would have denied, by rule.",
        "rule",
        report
            .shadow_breaches_by_rule
            .iter()
            .map(|e| (e.key.as_str(), e.count)),
    );
    w.header(
        "floodwall_allowlisted_total",
        "counter",
        "Requests an allow list let skip the limits.",
    );
    w.sample("floodwall_allowlisted_total", &[], t.allowlisted);
    w.header(
        "floodwall_blocked_total",
        "counter",
        "Rate-limited requests whose key was blocked after denials (block_for).",
    );
    w.sample("floodwall_blocked_total", &[], t.blocked);
    // The rule list is exact while there are fewer rules than a top list's sketch holds.
    w.family(
        "floodwall_rate_limited_total",
        "Rate-limit denials, by deciding rule.",
        "rule",
        report
            .breaches_by_rule
            .iter()
            .map(|e| (e.key.as_str(), e.count)),
    );
    w.family(
        "floodwall_auth_rejections_total",
        "Refused bearer tokens, by reason.",
        "reason",
        report.auth_rejections.iter().map(|(k, &n)| (k.as_str(), n)),
    );
    w.family(
        "floodwall_decision_errors_total",
        "Decisions that failed, by error kind.",
        "kind",
        report.errors.iter().map(|(k, &n)| (k.as_str(), n)),
    );
    w.family(
        "floodwall_store_decisions_total",
        "Rate-limit decisions, by the store that made them.",
        "store",
        report.stores.iter().map(|(k, &n)| (k.as_str(), n)),
    );
    w.family(
        "floodwall_responses_total",
        "Responses the host recorded, by status class.",
        "class",
        report.status_classes.iter().map(|(k, &n)| (k.as_str(), n)),
    );

    let name = "floodwall_response_duration_seconds";
    w.header(
        name,
        "histogram",
        "End-to-end latency of recorded responses.",
    );
    let h = &report.response_latency;
    let mut cumulative = 0;
    for (i, n) in h.counts.iter().enumerate() {
        cumulative += n;
        let le = match LATENCY_BOUNDS_US.get(i) {
            Some(&us) => format!("{}", us as f64 / 1e6),
            None => "+Inf".to_owned(),
        };
        w.sample(&format!("{name}_bucket"), &[("le", &le)], cumulative);
    }
    w.sample(&format!("{name}_sum"), &[], h.sum_us as f64 / 1e6);
    w.sample(&format!("{name}_count"), &[], h.count);

    let upstreams = || {
        services
            .iter()
            .flat_map(|(service, list)| list.iter().map(move |u| (service.as_str(), u)))
    };
    let name = "floodwall_upstream_calls_total";
    w.header(name, "counter", "Finished upstream calls, by outcome.");
    for (service, u) in upstreams() {
        for (outcome, n) in [
            ("success", u.stats.successes),
            ("failure", u.stats.failures),
            ("timeout", u.stats.timeouts),
        ] {
            let labels = [
                ("service", service),
                ("upstream", &u.name),
                ("outcome", outcome),
            ];
            w.sample(name, &labels, n);
        }
    }
    let name = "floodwall_upstream_up";
    w.header(
        name,
        "gauge",
        "1 when the upstream takes calls (breaker not open, not marked down).",
    );
    for (service, u) in upstreams() {
        let healthy = !u.down && !matches!(u.state, BreakerState::Open { .. });
        w.sample(
            name,
            &[("service", service), ("upstream", &u.name)],
            u8::from(healthy),
        );
    }
    let name = "floodwall_upstream_in_flight";
    w.header(name, "gauge", "Calls picked and not yet finished.");
    for (service, u) in upstreams() {
        w.sample(
            name,
            &[("service", service), ("upstream", &u.name)],
            u.in_flight,
        );
    }

    w.family(
        "floodwall_breaker_trips_total",
        "Breakers that opened, by service/upstream.",
        "upstream",
        report
            .breaker_trips
            .iter()
            .map(|e| (e.key.as_str(), e.count)),
    );
    if let Some(sink) = &report.sink {
        w.header(
            "floodwall_stream_events_total",
            "counter",
            "Events offered to the Redis Streams sink, by fate.",
        );
        w.sample(
            "floodwall_stream_events_total",
            &[("stream", &sink.stream), ("fate", "written")],
            sink.written,
        );
        w.sample(
            "floodwall_stream_events_total",
            &[("stream", &sink.stream), ("fate", "dropped")],
            sink.dropped,
        );
        w.header(
            "floodwall_stream_queue",
            "gauge",
            "Events waiting for the stream's writer.",
        );
        w.sample(
            "floodwall_stream_queue",
            &[("stream", &sink.stream)],
            sink.queued,
        );
    }
    w.0
}
