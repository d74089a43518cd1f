//! A shard of the aggregate: its series, totals and top lists, and how it counts one decision
//! (exactly, or sampled past [`EXACT_PER_MINUTE`] in a minute).

use super::minute::MinuteCounts;
use super::{KINDS, MINUTE_MS, STORES};
use crate::clock::Timestamp;
use crate::error::ErrorKind;
use crate::monitor::event::{DecisionEvent, EventOutcome};
use crate::monitor::topk::TopK;
use crate::path::{PathBuffer, normalize_path};

/// Decisions a thread counts into the high-cardinality top lists (endpoints, callers, breaches
/// by subject and by endpoint) one by one in a minute; past it, it samples (see [`SAMPLE`]).
/// (A thread past the aggregator's lanes counts by its shard's minute instead.)
pub const EXACT_PER_MINUTE: u64 = 6_000;
/// Past [`EXACT_PER_MINUTE`], one decision in this many (at random) feeds those top lists,
/// counting this many times: an unbiased estimate at a sixteenth of the cost.
pub const SAMPLE: u64 = 16;

#[derive(Debug)]
pub(super) struct Shard {
    /// `minutes[m % horizon]` holds minute `m` (its `start_ms`) or an older one.
    pub(super) minutes: Vec<MinuteCounts>,
    /// The minute last recorded and its slot, which spares most events a division.
    last: (u64, usize),
    /// The sampling draws' state (xorshift64).
    rng: u64,
    pub(super) totals: MinuteCounts,
    pub(super) endpoints: TopK,
    pub(super) subjects: TopK,
    pub(super) by_subject: TopK,
    pub(super) by_role: TopK,
    pub(super) by_endpoint: TopK,
    pub(super) by_rule: TopK,
    pub(super) shadow_by_rule: TopK,
    pub(super) upstream_failures: TopK,
    pub(super) breaker_trips: TopK,
    pub(super) auth_rejections: [u64; KINDS],
    pub(super) errors: [u64; KINDS],
    pub(super) stores: [u64; STORES.len()],
    pub(super) status_classes: [u64; 6],
}

fn kind_index(kind: ErrorKind) -> usize {
    ErrorKind::ALL
        .iter()
        .position(|&k| k == kind)
        .unwrap_or(KINDS - 1)
}

impl Shard {
    /// An empty shard keeping `horizon` minutes of counters and top lists of `capacity` keys.
    pub(super) fn new(horizon: u64, capacity: usize) -> Self {
        Shard {
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
        }
    }

    /// Runs `f` on the slot of `at`'s minute, if the series still has it, and answers what `f`
    /// answered.
    pub(super) fn minute<R>(
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

    /// Counts one decision, feeding the high-cardinality top lists `weight` times (when
    /// `None`, as [`weight`](Self::weight) draws it from this shard's minute).
    pub(super) fn decision(
        &mut self,
        horizon: u64,
        e: &DecisionEvent<'_>,
        fold_case: bool,
        weight: Option<u64>,
    ) {
        let minute_requests = self.minute(horizon, e.at, |m| {
            m.count_decision(e);
            m.requests
        });
        self.totals.count_decision(e);
        let weight = weight.unwrap_or_else(|| self.weight(minute_requests));
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
