//! `token_bucket` as GCRA: one theoretical arrival time (`tat`) per key. With emission interval
//! `T` and tolerance `capacity·T`, a request of cost `c` at `now` is admitted iff
//! `max(tat, now) + c·T − now <= capacity·T`.

use super::Outcome;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Gcra {
    tat: u64,
}

impl Gcra {
    pub(super) fn new(now: u64) -> Self {
        Gcra { tat: now }
    }

    fn outcome(
        capacity: u64,
        interval: u64,
        now: u64,
        tat: u64,
        allowed: bool,
        retry: u64,
    ) -> Outcome {
        let tolerance = capacity * interval;
        let remaining = (now + tolerance).saturating_sub(tat) / interval;
        Outcome::new(allowed, remaining.min(capacity), tat - now, retry)
    }

    pub(super) fn evaluate(
        &mut self,
        capacity: u64,
        interval: u64,
        now: u64,
        cost: u64,
    ) -> Outcome {
        let start = self.tat.max(now);
        let tolerance = capacity * interval;
        let needed = start + cost.saturating_mul(interval).min(u64::MAX - start) - now;
        let allowed = needed <= tolerance;
        let retry = if allowed { 0 } else { needed - tolerance };
        Self::outcome(capacity, interval, now, start, allowed, retry)
    }

    pub(super) fn consume(&mut self, capacity: u64, interval: u64, now: u64, cost: u64) -> Outcome {
        let start = self.tat.max(now);
        self.tat = start + cost * interval;
        Self::outcome(capacity, interval, now, self.tat, true, 0)
    }

    pub(super) fn refund(&mut self, interval: u64, cost: u64) {
        self.tat = self.tat.saturating_sub(cost.saturating_mul(interval));
    }

    pub(super) fn charge(&mut self, capacity: u64, interval: u64, now: u64, cost: u64) {
        let start = self.tat.max(now);
        let empty = now.saturating_add(capacity * interval);
        self.tat = start
            .saturating_add(cost.saturating_mul(interval))
            .min(empty.max(start));
    }

    pub(super) fn expires_at(&self) -> u64 {
        self.tat
    }
}
