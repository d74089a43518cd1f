//! `fixed_window`: a count per window `floor(now / window)`.

use super::Outcome;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FixedWindow {
    /// `floor(now / window)` of the window being counted.
    index: u64,
    count: u64,
}

impl FixedWindow {
    pub(super) fn new(window: u64, now: u64) -> Self {
        FixedWindow {
            index: now / window,
            count: 0,
        }
    }

    pub(super) fn counted(index: u64, count: u64) -> Self {
        FixedWindow { index, count }
    }

    /// Rolls to the window of `now`; returns `now`, raised to the counted window's start if the
    /// clock stepped back before it.
    fn advance(&mut self, window: u64, now: u64) -> u64 {
        let index = now / window;
        if index > self.index {
            self.index = index;
            self.count = 0;
            now
        } else {
            now.max(self.index * window)
        }
    }

    fn outcome(&self, limit: u64, window: u64, now: u64, allowed: bool) -> Outcome {
        let end = (self.index + 1) * window;
        let reset_after = if self.count > 0 { end - now } else { 0 };
        let retry_after = if allowed { 0 } else { end - now };
        Outcome::new(allowed, limit - self.count, reset_after, retry_after)
    }

    pub(super) fn evaluate(&mut self, limit: u64, window: u64, now: u64, cost: u64) -> Outcome {
        let now = self.advance(window, now);
        let allowed = self.count.saturating_add(cost) <= limit;
        self.outcome(limit, window, now, allowed)
    }

    pub(super) fn consume(&mut self, limit: u64, window: u64, now: u64, cost: u64) -> Outcome {
        let now = self.advance(window, now);
        self.count = (self.count + cost).min(limit);
        self.outcome(limit, window, now, true)
    }

    pub(super) fn refund(&mut self, window: u64, at: u64, cost: u64) {
        if self.index == at / window {
            self.count = self.count.saturating_sub(cost);
        }
    }

    pub(super) fn charge(&mut self, limit: u64, window: u64, now: u64, cost: u64) {
        self.advance(window, now);
        self.count = self.count.saturating_add(cost).min(limit);
    }

    pub(super) fn expires_at(&self, window: u64) -> u64 {
        if self.count == 0 {
            0
        } else {
            (self.index + 1) * window
        }
    }
}
