//! The in-memory aggregate: per-minute counters over a horizon and bounded top lists.
//!
//! It is split into shards, one short uncontended lock each: a thread always records into the
//! same shard (threads are dealt shards in turn), so two threads recording at once rarely
//! share a lock or a cache line. A report merges the shards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

use super::event::{DecisionEvent, Event, EventOutcome, ResponseEvent, UpstreamEvent};
use super::topk::{TopEntry, TopK, merge};
use crate::breaker::CallOutcome;
use crate::clock::{Timestamp, duration_micros};
use crate::decision::StoreUsed;
use crate::error::ErrorKind;
use crate::path::{PathBuffer, normalize_path};

const MINUTE_MS: u64 = 60_000;
/// How many of the busiest minutes a report lists as peaks.
pub const PEAKS: usize = 5;
/// The longest horizon: a day of minutes.
pub const MAX_HORIZON_MINUTES: u64 = 24 * 60;
/// The longest top list a report may ask for.
pub const MAX_TOP: usize = 1000;
/// Decisions a shard counts into the high-cardinality top lists (endpoints, callers, breaches
/// by subject and by endpoint) one by one in a minute; past it, it samples (see [`SAMPLE`]).
pub const EXACT_PER_MINUTE: u64 = 6_000;
/// Past [`EXACT_PER_MINUTE`], one decision in this many (at random) feeds those top lists,
/// counting this many times: an unbiased estimate at a sixteenth of the cost.
pub const SAMPLE: u64 = 16;

/// Upper bounds (µs) of the response-latency histogram's buckets; the last is unbounded.
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

const STORES: [StoreUsed; 5] = StoreUsed::ALL;
const KINDS: usize = ErrorKind::ALL.len();

/// One minute's counters (or, in [`Report::totals`], everything's).
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
    latency_sum_us: u64,
    #[serde(skip)]
    latency_hist: [u64; BUCKETS],
}

impl MinuteCounts {
    fn is_empty(&self) -> bool {
        self.requests == 0 && self.responses == 0 && self.upstream_calls == 0
    }

    fn add(&mut self, other: &MinuteCounts) {
        self.requests += other.requests;
        self.admitted += other.admitted;
        self.rate_limited += other.rate_limited;
        self.auth_rejected += other.auth_rejected;
        self.failed += other.failed;
        self.denied += other.denied;
        self.shadow_limited += other.shadow_limited;
        self.allowlisted += other.allowlisted;
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
    fn finish(mut self) -> Self {
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

    fn count_decision(&mut self, e: &DecisionEvent<'_>) {
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
    }

    fn count_upstream(&mut self, e: &UpstreamEvent<'_>) {
        self.upstream_calls += 1;
        if e.outcome != CallOutcome::Success {
            self.upstream_failures += 1;
        }
        if e.tripped {
            self.breaker_trips += 1;
        }
    }

    fn count_response(&mut self, e: &ResponseEvent<'_>, us: u64) {
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

/// The response-latency histogram of everything recorded, Prometheus-style.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LatencyHistogram {
    /// Upper bounds of the buckets (µs); a last, unbounded bucket follows.
    pub bounds_us: Vec<u64>,
    /// Responses per bucket (not cumulative), one more than `bounds_us`.
    pub counts: Vec<u64>,
    /// Sum of all latencies (µs).
    pub sum_us: u64,
    /// Responses counted.
    pub count: u64,
}

/// The Redis Streams sink's counters, in a report of an engine that writes a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkStats {
    /// The stream's key.
    pub stream: String,
    /// Events written to the stream.
    pub written: u64,
    /// Events dropped: the queue was full, or a batch could not be written.
    pub dropped: u64,
    /// Events waiting for the writer now.
    pub queued: u64,
    /// Batches that failed.
    pub errors: u64,
    /// The last failure, until a batch succeeds again.
    pub last_error: Option<String>,
}

/// What a report answers: JSON-serialisable, the same shape in every binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// When the report was made (ms since the Unix epoch).
    pub generated_at_ms: u64,
    /// How many minutes the per-minute series covers.
    pub horizon_minutes: u64,
    /// `memory` (this engine's aggregate) or `stream` (built from a Redis stream).
    pub source: &'static str,
    /// The engine's store kind (`memory`, `redis`, `redis_cluster`); absent from a stream.
    pub store_kind: Option<&'static str>,
    /// Why the shared store is failing now (decisions fall back), if it is.
    pub store_failure: Option<String>,
    /// Every minute of the horizon that saw anything, oldest first.
    pub per_minute: Vec<MinuteCounts>,
    /// The busiest minutes of the horizon (by decisions, then responses), busiest first.
    pub peaks: Vec<MinuteCounts>,
    /// Counters since the aggregate started.
    pub totals: MinuteCounts,
    /// The most requested endpoints (`METHOD /path`).
    pub top_endpoints: Vec<TopEntry>,
    /// The callers (verified subjects) with the most decisions.
    pub top_subjects: Vec<TopEntry>,
    /// Rate-limit breaches by subject (`(anonymous)` without one).
    pub breaches_by_subject: Vec<TopEntry>,
    /// Rate-limit breaches by role (`(none)` without one).
    pub breaches_by_role: Vec<TopEntry>,
    /// Rate-limit breaches by endpoint.
    pub breaches_by_endpoint: Vec<TopEntry>,
    /// Rate-limit breaches by deciding rule.
    pub breaches_by_rule: Vec<TopEntry>,
    /// Admitted requests by the rule in shadow mode that would have denied them.
    pub shadow_breaches_by_rule: Vec<TopEntry>,
    /// Refused tokens by error kind.
    pub auth_rejections: BTreeMap<String, u64>,
    /// Failed decisions by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Failed or timed-out upstream calls by `service/upstream`.
    pub upstream_failures: Vec<TopEntry>,
    /// Breaker trips by `service/upstream`.
    pub breaker_trips: Vec<TopEntry>,
    /// Decisions by the store that made them (`memory`, `redis`, `fallback`, `unavailable`).
    pub stores: BTreeMap<String, u64>,
    /// Responses by status class (`2xx`, `4xx`, …).
    pub status_classes: BTreeMap<String, u64>,
    /// Every recorded response's latency.
    pub response_latency: LatencyHistogram,
    /// The Redis Streams sink's counters, when the engine writes one.
    pub sink: Option<SinkStats>,
    /// What looks wrong with how the engine is set up, each once with how often it was seen.
    pub warnings: Vec<Warning>,
}

/// Something that looks wrong with how an engine is set up, seen while serving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// A stable name: `untrusted_forwarded_header`.
    pub code: &'static str,
    /// What it means and what to do.
    pub message: String,
    /// How many times it was seen.
    pub count: u64,
    /// When it was first seen (ms since the Unix epoch).
    pub first_seen_ms: u64,
}

impl Report {
    /// The report as compact JSON: the document every binding hands its host.
    pub fn to_json(&self) -> String {
        // Plain data with string keys and integer values: serialising it cannot fail.
        serde_json::to_string(self).expect("a report serialises to JSON")
    }
}

#[derive(Debug)]
struct Shard {
    /// `minutes[m % horizon]` holds minute `m` (its `start_ms`) or an older one.
    minutes: Vec<MinuteCounts>,
    /// The minute last recorded and its slot, which spares most events a division.
    last: (u64, usize),
    /// The sampling draws' state (xorshift64).
    rng: u64,
    totals: MinuteCounts,
    endpoints: TopK,
    subjects: TopK,
    by_subject: TopK,
    by_role: TopK,
    by_endpoint: TopK,
    by_rule: TopK,
    shadow_by_rule: TopK,
    upstream_failures: TopK,
    breaker_trips: TopK,
    auth_rejections: [u64; KINDS],
    errors: [u64; KINDS],
    stores: [u64; STORES.len()],
    status_classes: [u64; 6],
}

/// Pads a shard to its own cache lines.
#[derive(Debug)]
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// The always-on, bounded in-memory aggregate of [`Event`]s. `Send + Sync`: record from any
/// thread.
#[derive(Debug)]
pub struct Aggregator {
    horizon: u64,
    top: usize,
    shards: Box<[Padded]>,
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
}

fn kind_index(kind: ErrorKind) -> usize {
    ErrorKind::ALL
        .iter()
        .position(|&k| k == kind)
        .unwrap_or(KINDS - 1)
}

impl Aggregator {
    /// An aggregate keeping `horizon_minutes` minutes of counters (1 to a day's) and `top`
    /// entries in each top list (1 to [`MAX_TOP`]). Each list's sketch holds four times
    /// `top` keys (at least 32), so that the `top` it reports are reliable.
    pub fn new(horizon_minutes: u64, top: usize) -> Self {
        let horizon = horizon_minutes.clamp(1, MAX_HORIZON_MINUTES);
        let top = top.clamp(1, MAX_TOP);
        let capacity = (top * 4).max(32);
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
        let shards = (threads * 2).next_power_of_two().clamp(2, 64);
        let shards = (0..shards)
            .map(|_| {
                Padded(Mutex::new(Shard {
                    minutes: vec![MinuteCounts::default(); horizon as usize],
                    last: (u64::MAX, 0),
                    rng: 0x2545_f491_4f6c_dd1d,
                    totals: MinuteCounts::default(),
                    endpoints: TopK::new(capacity),
                    subjects: TopK::new(capacity),
                    by_subject: TopK::new(capacity),
                    by_role: TopK::new(capacity),
                    by_endpoint: TopK::new(capacity),
                    by_rule: TopK::new(capacity),
                    shadow_by_rule: TopK::new(capacity),
                    upstream_failures: TopK::new(capacity),
                    breaker_trips: TopK::new(capacity),
                    auth_rejections: [0; KINDS],
                    errors: [0; KINDS],
                    stores: [0; STORES.len()],
                    status_classes: [0; 6],
                }))
            })
            .collect();
        Aggregator {
            horizon,
            top,
            shards,
        }
    }

    /// How many minutes the per-minute series covers.
    pub fn horizon_minutes(&self) -> u64 {
        self.horizon
    }

    /// How many entries each top list reports.
    pub fn top(&self) -> usize {
        self.top
    }

    /// Counts one event. An event older than the horizon (or than what its minute's slot
    /// already holds) still counts in the totals and the top lists, not in the series. Its
    /// path is counted in normal form ([`crate::http::normalize_path`]), case kept.
    pub fn record(&self, event: &Event<'_>) {
        self.record_folded(event, false);
    }

    /// [`record`](Self::record), lower-casing the path when `fold_case`.
    pub(crate) fn record_folded(&self, event: &Event<'_>, fold_case: bool) {
        let shard = SHARD.with(|s| *s) & (self.shards.len() - 1);
        let horizon = self.horizon;
        match event {
            Event::Decision(e) => self.shards[shard].0.lock().decision(horizon, e, fold_case),
            Event::Upstream(e) => {
                let mut s = self.shards[shard].0.lock();
                s.minute(horizon, e.at, |m| m.count_upstream(e));
                s.totals.count_upstream(e);
                if e.outcome != CallOutcome::Success || e.tripped {
                    let key = format!("{}/{}", e.service, e.upstream);
                    if e.outcome != CallOutcome::Success {
                        s.upstream_failures.add(&key, 1);
                    }
                    if e.tripped {
                        s.breaker_trips.add(&key, 1);
                    }
                }
            }
            Event::Response(e) => {
                let us = duration_micros(e.latency);
                let mut s = self.shards[shard].0.lock();
                s.minute(horizon, e.at, |m| m.count_response(e, us));
                s.totals.count_response(e, us);
                let class = usize::from(e.status / 100).min(5);
                s.status_classes[class] += 1;
            }
        }
    }

    /// The report at `now`: the per-minute series of the horizon ending at `now`'s minute.
    pub fn report(&self, now: Timestamp) -> Report {
        let current = now.as_millis() / MINUTE_MS;
        let oldest = current.saturating_sub(self.horizon - 1) * MINUTE_MS;
        let newest = current * MINUTE_MS;
        let shards: Vec<_> = self.shards.iter().map(|s| s.0.lock()).collect();

        let mut minutes: BTreeMap<u64, MinuteCounts> = BTreeMap::new();
        let mut totals = MinuteCounts::default();
        let mut auth = [0u64; KINDS];
        let mut errors = [0u64; KINDS];
        let mut stores = [0u64; STORES.len()];
        let mut classes = [0u64; 6];
        for s in &shards {
            for m in s
                .minutes
                .iter()
                .filter(|m| !m.is_empty() && (oldest..=newest).contains(&m.start_ms))
            {
                minutes
                    .entry(m.start_ms)
                    .or_insert(MinuteCounts {
                        start_ms: m.start_ms,
                        ..MinuteCounts::default()
                    })
                    .add(m);
            }
            totals.add(&s.totals);
            for i in 0..KINDS {
                auth[i] += s.auth_rejections[i];
                errors[i] += s.errors[i];
            }
            for (total, n) in stores.iter_mut().zip(&s.stores) {
                *total += n;
            }
            for (total, n) in classes.iter_mut().zip(&s.status_classes) {
                *total += n;
            }
        }
        let per_minute: Vec<MinuteCounts> =
            minutes.into_values().map(MinuteCounts::finish).collect();
        let mut peaks = per_minute.clone();
        peaks.sort_by(|a, b| {
            (b.requests, b.responses)
                .cmp(&(a.requests, a.responses))
                .then(a.start_ms.cmp(&b.start_ms))
        });
        peaks.truncate(PEAKS);
        let top = self.top;
        let list = |pick: fn(&Shard) -> &TopK| {
            let sketches: Vec<&TopK> = shards.iter().map(|s| pick(s)).collect();
            merge(&sketches, top)
        };
        let by_kind = |counts: &[u64; KINDS]| {
            ErrorKind::ALL
                .iter()
                .zip(counts)
                .filter(|&(_, &n)| n > 0)
                .map(|(k, &n)| (k.as_str().to_owned(), n))
                .collect()
        };
        Report {
            generated_at_ms: now.as_millis(),
            horizon_minutes: self.horizon,
            source: "memory",
            store_kind: None,
            store_failure: None,
            per_minute,
            peaks,
            totals: totals.finish(),
            top_endpoints: list(|s| &s.endpoints),
            top_subjects: list(|s| &s.subjects),
            breaches_by_subject: list(|s| &s.by_subject),
            breaches_by_role: list(|s| &s.by_role),
            breaches_by_endpoint: list(|s| &s.by_endpoint),
            breaches_by_rule: list(|s| &s.by_rule),
            shadow_breaches_by_rule: list(|s| &s.shadow_by_rule),
            auth_rejections: by_kind(&auth),
            errors: by_kind(&errors),
            upstream_failures: list(|s| &s.upstream_failures),
            breaker_trips: list(|s| &s.breaker_trips),
            stores: STORES
                .iter()
                .zip(stores)
                .filter(|&(_, n)| n > 0)
                .map(|(s, n)| (s.as_str().to_owned(), n))
                .collect(),
            status_classes: classes
                .iter()
                .enumerate()
                .filter(|&(_, &n)| n > 0)
                .map(|(i, &n)| {
                    let class = if i == 0 {
                        "other".to_owned()
                    } else {
                        format!("{i}xx")
                    };
                    (class, n)
                })
                .collect(),
            response_latency: LatencyHistogram {
                bounds_us: LATENCY_BOUNDS_US.to_vec(),
                counts: totals.latency_hist.to_vec(),
                sum_us: totals.latency_sum_us,
                count: totals.responses,
            },
            sink: None,
            warnings: Vec::new(),
        }
    }
}

impl Shard {
    /// Runs `f` on the slot of `at`'s minute, if the series still has it.
    /// Runs `f` on the slot of `at`'s minute, if the series still has it, and answers what `f`
    /// answered.
    fn minute<R>(
        &mut self,
        horizon: u64,
        at: Timestamp,
        f: impl FnOnce(&mut MinuteCounts) -> R,
    ) -> Option<R> {
        let minute = at.as_millis() / MINUTE_MS;
        let start_ms = minute * MINUTE_MS;
        let index = if self.last.0 == minute {
            self.last.1
        } else {
            let index = (minute % horizon) as usize;
            self.last = (minute, index);
            index
        };
        let slot = &mut self.minutes[index];
        if slot.start_ms < start_ms || slot.is_empty() {
            *slot = MinuteCounts {
                start_ms,
                ..MinuteCounts::default()
            };
        }
        (slot.start_ms == start_ms).then(|| f(slot))
    }

    /// How much the high-cardinality top lists count this decision: 1 while the shard's
    /// current minute has seen at most [`EXACT_PER_MINUTE`] decisions; past that, a random
    /// one in [`SAMPLE`] counts [`SAMPLE`] times and the others not at all.
    fn weight(&mut self, minute_requests: Option<u64>) -> u64 {
        if minute_requests.is_some_and(|n| n <= EXACT_PER_MINUTE) {
            return 1;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        if self.rng & (SAMPLE - 1) == 0 {
            SAMPLE
        } else {
            0
        }
    }

    fn decision(&mut self, horizon: u64, e: &DecisionEvent<'_>, fold_case: bool) {
        let minute_requests = self.minute(horizon, e.at, |m| {
            m.count_decision(e);
            m.requests
        });
        self.totals.count_decision(e);
        let weight = self.weight(minute_requests);
        if weight > 0 {
            // The path is put in normal form only when sampled: most decisions are not.
            let mut buffer = PathBuffer::new();
            let endpoint = e
                .endpoint
                .map(|(method, path)| (method, normalize_path(path, fold_case, &mut buffer)));
            if let Some((method, path)) = endpoint {
                self.endpoints.add_endpoint(method, path.as_str(), weight);
            }
            if let Some(subject) = e.subject {
                self.subjects.add(subject, weight);
            }
            if e.outcome == EventOutcome::RateLimited {
                self.by_subject
                    .add(e.subject.unwrap_or("(anonymous)"), weight);
                if let Some((method, path)) = endpoint {
                    self.by_endpoint.add_endpoint(method, path.as_str(), weight);
                }
            }
        }
        if let Some(rule) = e.shadow_rule {
            self.shadow_by_rule.add(rule, 1);
        }
        match e.outcome {
            EventOutcome::Admitted | EventOutcome::Denied => {}
            EventOutcome::RateLimited => {
                // Roles and rules are few: always counted exactly.
                self.by_role.add(e.role.unwrap_or("(none)"), 1);
                self.by_rule.add(e.rule.unwrap_or("(unknown)"), 1);
            }
            EventOutcome::AuthRejected => {
                if let Some(kind) = e.error {
                    self.auth_rejections[kind_index(kind)] += 1;
                }
            }
            EventOutcome::Failed => {
                if let Some(kind) = e.error {
                    self.errors[kind_index(kind)] += 1;
                }
            }
        }
        if let Some(store) = e.store {
            self.stores[store as usize] += 1;
        }
    }
}
