//! One minute's counters ([`MinuteCounts`]): how an event adds to them, how two add up, and
//! the response-latency histogram they carry with its quantiles.

use serde::Serialize;

use crate::breaker::CallOutcome;
use crate::monitor::event::{DecisionEvent, EventOutcome, ResponseEvent, UpstreamEvent};

/// Upper bounds (µs) of the response-latency histogram's buckets; the last is unbounded.
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// One minute's counters (or, in [`Report::totals`](super::Report::totals), everything's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MinuteCounts {
    /// The minute's start, in milliseconds since the Unix epoch (0 in the totals).
    pub start_ms: u64,
    /// Decisions taken (one per request the engine was asked about).
    pub requests: u64,
    /// … admitted.
    pub admitted: u64,
    /// … denied by a rate limit.
    pub rate_limited: u64,
    /// … refused for their token.
    pub auth_rejected: u64,
    /// … that failed (e.g. `store_unavailable`).
    pub failed: u64,
    /// … refused by a deny list (403).
    pub denied: u64,
    /// Admitted requests a rule in shadow mode would have denied.
    pub shadow_limited: u64,
    /// Admitted requests an allow list let skip the limits.
    pub allowlisted: u64,
    /// Rate-limited requests whose key was blocked (`block_for`).
    pub blocked: u64,
    /// Upstream calls finished.
    pub upstream_calls: u64,
    /// … that failed or timed out.
    pub upstream_failures: u64,
    /// Breakers that opened.
    pub breaker_trips: u64,
    /// Responses the host recorded.
    pub responses: u64,
    /// … with a 4xx status.
    pub client_errors: u64,
    /// … with a 5xx status.
    pub server_errors: u64,
    /// Median response latency (µs, estimated from the histogram; 0 without responses).
    pub latency_p50_us: u64,
    /// 99th-percentile response latency (µs, estimated from the histogram).
    pub latency_p99_us: u64,
    /// Mean response latency (µs).
    pub mean_latency_us: u64,
    /// Slowest response (µs).
    pub max_latency_us: u64,
    #[serde(skip)]
    pub(super) latency_sum_us: u64,
    #[serde(skip)]
    pub(super) latency_hist: [u64; BUCKETS],
}

impl MinuteCounts {
    pub(super) fn is_empty(&self) -> bool {
        self.requests == 0 && self.responses == 0 && self.upstream_calls == 0
    }

    pub(super) fn add(&mut self, other: &MinuteCounts) {
        self.requests += other.requests;
        self.admitted += other.admitted;
        self.rate_limited += other.rate_limited;
        self.auth_rejected += other.auth_rejected;
        self.failed += other.failed;
        self.denied += other.denied;
        self.shadow_limited += other.shadow_limited;
        self.allowlisted += other.allowlisted;
        self.blocked += other.blocked;
        self.upstream_calls += other.upstream_calls;
        self.upstream_failures += other.upstream_failures;
        self.breaker_trips += other.breaker_trips;
        self.responses += other.responses;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.max_latency_us = self.max_latency_us.max(other.max_latency_us);
        self.latency_sum_us = self.latency_sum_us.saturating_add(other.latency_sum_us);
        for (a, b) in self.latency_hist.iter_mut().zip(&other.latency_hist) {
            *a += b;
        }
    }

    /// Fills the fields derived from the histogram.
    pub(super) fn finish(mut self) -> Self {
        if let Some(mean) = self.latency_sum_us.checked_div(self.responses) {
            self.mean_latency_us = mean;
            self.latency_p50_us = self.quantile(0.50);
            self.latency_p99_us = self.quantile(0.99);
        }
        self
    }

    /// The `q` quantile, interpolated linearly inside its bucket and never above the maximum.
    fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.latency_hist.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = (q * total as f64).ceil().max(1.0);
        let mut seen = 0u64;
        for (i, &n) in self.latency_hist.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_US[i - 1] };
                let upper = LATENCY_BOUNDS_US
                    .get(i)
                    .copied()
                    .unwrap_or(self.max_latency_us)
                    .min(self.max_latency_us.max(lower));
                let within = (rank - seen as f64) / n as f64;
                return lower + ((upper.saturating_sub(lower)) as f64 * within).round() as u64;
            }
            seen += n;
        }
        self.max_latency_us
    }

    /// Counts `n` plain admissions (what a lane holds).
    pub(super) fn count_admitted(&mut self, n: u64) {
        self.requests += n;
        self.admitted += n;
    }

    pub(super) fn count_decision(&mut self, e: &DecisionEvent<'_>) {
        self.requests += 1;
        match e.outcome {
            EventOutcome::Admitted => self.admitted += 1,
            EventOutcome::RateLimited => self.rate_limited += 1,
            EventOutcome::AuthRejected => self.auth_rejected += 1,
            EventOutcome::Failed => self.failed += 1,
            EventOutcome::Denied => self.denied += 1,
        }
        if e.shadow_rule.is_some() {
            self.shadow_limited += 1;
        }
        if e.allowlisted {
            self.allowlisted += 1;
        }
        if e.blocked {
            self.blocked += 1;
        }
    }

    pub(super) fn count_upstream(&mut self, e: &UpstreamEvent<'_>) {
        self.upstream_calls += 1;
        if e.outcome != CallOutcome::Success {
            self.upstream_failures += 1;
        }
        if e.tripped {
            self.breaker_trips += 1;
        }
    }

    pub(super) fn count_response(&mut self, e: &ResponseEvent<'_>, us: u64) {
        self.responses += 1;
        match e.status {
            400..=499 => self.client_errors += 1,
            500..=599 => self.server_errors += 1,
            _ => {}
        }
        self.latency_sum_us = self.latency_sum_us.saturating_add(us);
        self.max_latency_us = self.max_latency_us.max(us);
        let bucket = LATENCY_BOUNDS_US.partition_point(|&bound| bound < us);
        self.latency_hist[bucket] += 1;
    }
}
