//! The in-memory aggregate: per-minute counters over a horizon and bounded top lists.

use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use super::topk::{TopEntry, TopK};
use crate::breaker::CallOutcome;
use crate::clock::Timestamp;
use crate::decision::StoreUsed;
use crate::error::ErrorKind;

const MINUTE_MS: u64 = 60_000;
/// How many of the busiest minutes a report lists as peaks.
const PEAKS: usize = 5;

/// How a request ended, as monitoring counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// Admitted (and, when proxied, handed to an upstream).
    Admitted,
    /// Denied by a rate limit (`rule` says which).
    RateLimited,
    /// Its bearer token was refused (`error` says why).
    AuthRejected,
    /// Anything else that failed it (`error` says what, when the engine knows).
    Failed,
}

/// What happened to one request.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// When.
    pub at: Timestamp,
    /// The HTTP method.
    pub method: &'a str,
    /// The request path (a query string is ignored).
    pub path: &'a str,
    /// The verified subject, if any.
    pub subject: Option<&'a str>,
    /// The caller's role, if any.
    pub role: Option<&'a str>,
    /// How it ended.
    pub outcome: EventOutcome,
    /// For a rate-limited request, the deciding rule.
    pub rule: Option<&'a str>,
    /// For a refused or failed request, the error kind.
    pub error: Option<ErrorKind>,
    /// Which store decided, if a rate limit was checked.
    pub store: Option<StoreUsed>,
    /// The upstream call, if any: service, upstream, outcome.
    pub upstream: Option<(&'a str, &'a str, CallOutcome)>,
    /// How long the request took, if measured.
    pub latency: Option<Duration>,
}

/// One minute's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MinuteCounts {
    /// The minute's start, in milliseconds since the Unix epoch.
    pub start_ms: u64,
    /// Requests recorded.
    pub requests: u64,
    /// Admitted.
    pub admitted: u64,
    /// Denied by a rate limit.
    pub rate_limited: u64,
    /// Refused tokens.
    pub auth_rejected: u64,
    /// Failed otherwise.
    pub failed: u64,
    /// Upstream calls that failed or timed out.
    pub upstream_failures: u64,
    /// Mean latency of the requests that measured one, in microseconds.
    pub mean_latency_us: u64,
    /// Largest latency, in microseconds.
    pub max_latency_us: u64,
    #[serde(skip)]
    latency_total_us: u64,
    #[serde(skip)]
    latency_count: u64,
}

/// What a report answers: JSON-serialisable, the same shape in every binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// When the report was made (ms since the Unix epoch).
    pub generated_at_ms: u64,
    /// How many minutes the per-minute series covers.
    pub horizon_minutes: u64,
    /// Every minute of the horizon that saw a request, oldest first.
    pub per_minute: Vec<MinuteCounts>,
    /// The busiest minutes of the horizon, busiest first.
    pub peaks: Vec<MinuteCounts>,
    /// Counters since the aggregate started.
    pub totals: MinuteCounts,
    /// The most requested endpoints (`METHOD /path`).
    pub top_endpoints: Vec<TopEntry>,
    /// Rate-limit breaches by subject.
    pub breaches_by_subject: Vec<TopEntry>,
    /// Rate-limit breaches by role.
    pub breaches_by_role: Vec<TopEntry>,
    /// Rate-limit breaches by endpoint.
    pub breaches_by_endpoint: Vec<TopEntry>,
    /// Rate-limit breaches by deciding rule.
    pub breaches_by_rule: Vec<TopEntry>,
    /// Refused tokens by error kind.
    pub auth_rejections: BTreeMap<String, u64>,
    /// Failed upstream calls by `service/upstream`.
    pub upstream_failures: Vec<TopEntry>,
    /// Decisions by the store that made them (`memory`, `redis`, `fallback`, `unavailable`).
    pub stores: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct State {
    horizon: u64,
    top: usize,
    /// `minutes[m % horizon]` holds minute `m` (its `start_ms`) or an older one.
    minutes: Vec<MinuteCounts>,
    totals: MinuteCounts,
    endpoints: TopK,
    by_subject: TopK,
    by_role: TopK,
    by_endpoint: TopK,
    by_rule: TopK,
    upstream_failures: TopK,
    auth_rejections: BTreeMap<&'static str, u64>,
    stores: BTreeMap<&'static str, u64>,
}

/// The always-on, bounded in-memory aggregate of [`Event`]s. `Send + Sync`: record from any
/// thread; one short lock per event.
#[derive(Debug)]
pub struct Aggregator {
    state: Mutex<State>,
}

fn count(minute: &mut MinuteCounts, event: &Event<'_>) {
    minute.requests += 1;
    match event.outcome {
        EventOutcome::Admitted => minute.admitted += 1,
        EventOutcome::RateLimited => minute.rate_limited += 1,
        EventOutcome::AuthRejected => minute.auth_rejected += 1,
        EventOutcome::Failed => minute.failed += 1,
    }
    if let Some((_, _, CallOutcome::Failure | CallOutcome::Timeout)) = event.upstream {
        minute.upstream_failures += 1;
    }
    if let Some(latency) = event.latency {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        minute.latency_total_us = minute.latency_total_us.saturating_add(us);
        minute.latency_count += 1;
        minute.max_latency_us = minute.max_latency_us.max(us);
        minute.mean_latency_us = minute.latency_total_us / minute.latency_count;
    }
}

impl Aggregator {
    /// An aggregate keeping `horizon_minutes` minutes of counters (at least 1) and `top`
    /// entries in each top list (at least 1).
    pub fn new(horizon_minutes: u64, top: usize) -> Self {
        let horizon = horizon_minutes.max(1);
        let top = top.max(1);
        Aggregator {
            state: Mutex::new(State {
                horizon,
                top,
                minutes: vec![MinuteCounts::default(); horizon as usize],
                totals: MinuteCounts::default(),
                endpoints: TopK::new(top),
                by_subject: TopK::new(top),
                by_role: TopK::new(top),
                by_endpoint: TopK::new(top),
                by_rule: TopK::new(top),
                upstream_failures: TopK::new(top),
                auth_rejections: BTreeMap::new(),
                stores: BTreeMap::new(),
            }),
        }
    }

    /// Counts one event. An event older than the horizon still counts in the totals and the
    /// top lists, not in the per-minute series.
    pub fn record(&self, event: &Event<'_>) {
        let minute = event.at.as_millis() / MINUTE_MS;
        let path = event.path.split(['?', '#']).next().unwrap_or("/");
        let mut endpoint = String::with_capacity(event.method.len() + 1 + path.len());
        endpoint.extend(event.method.chars().map(|c| c.to_ascii_uppercase()));
        endpoint.push(' ');
        endpoint.push_str(path);

        let mut s = self.state.lock();
        let horizon = s.horizon;
        let slot = &mut s.minutes[(minute % horizon) as usize];
        let start_ms = minute * MINUTE_MS;
        if slot.start_ms < start_ms || slot.requests == 0 {
            *slot = MinuteCounts {
                start_ms,
                ..MinuteCounts::default()
            };
        }
        if slot.start_ms == start_ms {
            count(slot, event);
        }
        count(&mut s.totals, event);
        s.endpoints.add(&endpoint, 1);
        if event.outcome == EventOutcome::RateLimited {
            s.by_subject.add(event.subject.unwrap_or("(anonymous)"), 1);
            s.by_role.add(event.role.unwrap_or("(none)"), 1);
            s.by_endpoint.add(&endpoint, 1);
            s.by_rule.add(event.rule.unwrap_or("(unknown)"), 1);
        }
        if event.outcome == EventOutcome::AuthRejected {
            let kind = event.error.map_or("(unknown)", ErrorKind::as_str);
            *s.auth_rejections.entry(kind).or_default() += 1;
        }
        if let Some((service, upstream, CallOutcome::Failure | CallOutcome::Timeout)) =
            event.upstream
        {
            s.upstream_failures.add(&format!("{service}/{upstream}"), 1);
        }
        if let Some(store) = event.store {
            *s.stores.entry(store.as_str()).or_default() += 1;
        }
    }

    /// The report at `now`: the per-minute series of the horizon ending at `now`'s minute.
    pub fn report(&self, now: Timestamp) -> Report {
        let s = self.state.lock();
        let current = now.as_millis() / MINUTE_MS;
        let oldest = current.saturating_sub(s.horizon - 1) * MINUTE_MS;
        let newest = current * MINUTE_MS;
        let mut per_minute: Vec<MinuteCounts> = s
            .minutes
            .iter()
            .filter(|m| m.requests > 0 && m.start_ms >= oldest && m.start_ms <= newest)
            .copied()
            .collect();
        per_minute.sort_by_key(|m| m.start_ms);
        let mut peaks = per_minute.clone();
        peaks.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then(a.start_ms.cmp(&b.start_ms))
        });
        peaks.truncate(PEAKS);
        let top = s.top;
        Report {
            generated_at_ms: now.as_millis(),
            horizon_minutes: s.horizon,
            per_minute,
            peaks,
            totals: s.totals,
            top_endpoints: s.endpoints.top(top),
            breaches_by_subject: s.by_subject.top(top),
            breaches_by_role: s.by_role.top(top),
            breaches_by_endpoint: s.by_endpoint.top(top),
            breaches_by_rule: s.by_rule.top(top),
            auth_rejections: s
                .auth_rejections
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            upstream_failures: s.upstream_failures.top(top),
            stores: s
                .stores
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
        }
    }
}
