//! The report ([`Report`] and what it holds) and how an [`Aggregator`] makes one, merging its
//! shards.

use std::collections::BTreeMap;

use serde::Serialize;

use super::minute::{LATENCY_BOUNDS_US, MinuteCounts};
use super::shard::Shard;
use super::{Aggregator, KINDS, MINUTE_MS, STORES};
use crate::clock::Timestamp;
use crate::error::ErrorKind;
use crate::monitor::topk::{TopEntry, TopK, merge};

/// How many of the busiest minutes a report lists as peaks.
pub const PEAKS: usize = 5;

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

impl Aggregator {
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
        // Admissions still in the threads' lanes: none moves while every shard is locked.
        for lane in self.lanes() {
            lane.each_pending(|minute, store, n| {
                let start_ms = minute * MINUTE_MS;
                if (oldest..=newest).contains(&start_ms) {
                    minutes
                        .entry(start_ms)
                        .or_insert(MinuteCounts {
                            start_ms,
                            ..MinuteCounts::default()
                        })
                        .count_admitted(n);
                }
                totals.count_admitted(n);
                if let Some(count) = stores.get_mut(store) {
                    *count += n;
                }
            });
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
