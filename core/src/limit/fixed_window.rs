//! `fixed_window`: a count per window — `floor(now / window)`, or with `align = "calendar"`
//! a day, week or month of a time zone ([`super::calendar`]).

use super::Outcome;
use super::calendar::Calendar;

/// Where a fixed window's windows lie: the number of the window an instant falls in, and
/// when each starts and ends (µs).
pub(super) trait Windows: Copy {
    fn index(self, now: u64) -> u64;
    fn start(self, index: u64) -> u64;
    fn end(self, index: u64) -> u64;
}

/// Windows of a fixed length (µs), from the epoch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Every(pub(super) u64);

impl Windows for Every {
    #[inline(always)]
    fn index(self, now: u64) -> u64 {
        now / self.0
    }
    #[inline(always)]
    fn start(self, index: u64) -> u64 {
        index * self.0
    }
    #[inline(always)]
    fn end(self, index: u64) -> u64 {
        (index + 1) * self.0
    }
}

impl Windows for &Calendar {
    fn index(self, now: u64) -> u64 {
        Calendar::index(self, now)
    }
    fn start(self, index: u64) -> u64 {
        Calendar::start(self, index)
    }
    fn end(self, index: u64) -> u64 {
        Calendar::end(self, index)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FixedWindow {
    /// The number of the window being counted.
    index: u64,
    count: u64,
}

impl FixedWindow {
    pub(super) fn new(windows: impl Windows, now: u64) -> Self {
        FixedWindow {
            index: windows.index(now),
            count: 0,
        }
    }

    pub(super) fn counted(index: u64, count: u64) -> Self {
        FixedWindow { index, count }
    }

    /// Rolls to the window of `now`; returns `now`, raised to the counted window's start if the
    /// clock stepped back before it.
    fn advance(&mut self, windows: impl Windows, now: u64) -> u64 {
        let index = windows.index(now);
        if index > self.index {
            self.index = index;
            self.count = 0;
            now
        } else {
            now.max(windows.start(self.index))
        }
    }

    fn outcome(&self, limit: u64, windows: impl Windows, now: u64, allowed: bool) -> Outcome {
        let end = windows.end(self.index);
        let reset_after = if self.count > 0 { end - now } else { 0 };
        let retry_after = if allowed { 0 } else { end - now };
        Outcome::new(
            allowed,
            limit.saturating_sub(self.count),
            reset_after,
            retry_after,
        )
    }

    pub(super) fn evaluate(
        &mut self,
        limit: u64,
        windows: impl Windows,
        now: u64,
        cost: u64,
    ) -> Outcome {
        let now = self.advance(windows, now);
        let allowed = self.count.saturating_add(cost) <= limit;
        self.outcome(limit, windows, now, allowed)
    }

    pub(super) fn consume(
        &mut self,
        limit: u64,
        windows: impl Windows,
        now: u64,
        cost: u64,
    ) -> Outcome {
        let now = self.advance(windows, now);
        self.count = (self.count + cost).min(limit);
        self.outcome(limit, windows, now, true)
    }

    pub(super) fn refund(&mut self, windows: impl Windows, at: u64, cost: u64) {
        if self.index == windows.index(at) {
            self.count = self.count.saturating_sub(cost);
        }
    }

    pub(super) fn charge(&mut self, limit: u64, windows: impl Windows, now: u64, cost: u64) {
        self.advance(windows, now);
        self.count = self.count.saturating_add(cost).min(limit);
    }

    pub(super) fn expires_at(&self, windows: impl Windows) -> u64 {
        if self.count == 0 {
            0
        } else {
            windows.end(self.index)
        }
    }
}
