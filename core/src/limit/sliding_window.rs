//! `sliding_window`: an exact log of admitted (time, cost); an entry counts while
//! `now < time + window`.

use std::collections::VecDeque;

use super::Outcome;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct SlidingLog {
    /// (time, cost), oldest first; costs are non-zero and times non-decreasing. At most `limit`
    /// entries, since their costs add up to at most `limit`.
    entries: VecDeque<(u64, u64)>,
    total: u64,
}

impl SlidingLog {
    /// Drops entries that no longer count at `now`; returns `now`, raised to the newest entry's
    /// time if the clock stepped back.
    fn advance(&mut self, window: u64, now: u64) -> u64 {
        let now = match self.entries.back() {
            Some(&(newest, _)) => now.max(newest),
            None => now,
        };
        while let Some(&(t, cost)) = self.entries.front() {
            if t + window > now {
                break;
            }
            self.total -= cost;
            self.entries.pop_front();
        }
        now
    }

    fn reset_after(&self, window: u64, now: u64) -> u64 {
        self.entries.back().map_or(0, |&(t, _)| t + window - now)
    }

    pub(super) fn evaluate(&mut self, limit: u64, window: u64, now: u64, cost: u64) -> Outcome {
        let now = self.advance(window, now);
        let remaining = limit.saturating_sub(self.total);
        let reset_after = self.reset_after(window, now);
        if cost <= remaining {
            return Outcome::new(true, remaining, reset_after, 0);
        }
        // Oldest first, find the entry whose expiry leaves room for `cost`.
        let must_free = self.total + cost - limit;
        let mut freed = 0;
        let mut retry_after = u64::MAX;
        for &(t, c) in &self.entries {
            freed += c;
            if freed >= must_free {
                retry_after = t + window - now;
                break;
            }
        }
        // Only a cost above the limit finds no such entry; it waits for the whole log to expire.
        if retry_after == u64::MAX {
            retry_after = reset_after;
        }
        Outcome::new(false, remaining, reset_after, retry_after)
    }

    pub(super) fn consume(&mut self, limit: u64, window: u64, now: u64, cost: u64) -> Outcome {
        let now = self.advance(window, now);
        if cost > 0 {
            match self.entries.back_mut() {
                Some((t, c)) if *t == now => *c += cost,
                _ => self.entries.push_back((now, cost)),
            }
            self.total += cost;
        }
        Outcome::new(
            true,
            limit.saturating_sub(self.total),
            self.reset_after(window, now),
            0,
        )
    }

    /// Takes `cost` off the entry logged at `at`, if it is still logged.
    pub(super) fn refund(&mut self, at: u64, cost: u64) {
        let Some(i) = self.entries.iter().rposition(|&(t, _)| t == at) else {
            return;
        };
        let taken = cost.min(self.entries[i].1);
        self.entries[i].1 -= taken;
        self.total -= taken;
        if self.entries[i].1 == 0 {
            self.entries.remove(i);
        }
    }

    /// Gives back `cost` from the newest entries first (whatever their times).
    pub(super) fn reward(&mut self, cost: u64) {
        let mut left = cost;
        while left > 0 {
            let Some(newest) = self.entries.back_mut() else {
                return;
            };
            let taken = left.min(newest.1);
            newest.1 -= taken;
            self.total -= taken;
            left -= taken;
            if newest.1 == 0 {
                self.entries.pop_back();
            }
        }
    }

    /// Logs `cost` at `now`, as much of it as fits once the entries that no longer count
    /// at `now` are gone.
    pub(super) fn charge(&mut self, limit: u64, window: u64, now: u64, cost: u64) {
        self.advance(window, now);
        let cost = cost.min(limit.saturating_sub(self.total));
        if cost > 0 {
            self.consume(limit, window, now, cost);
        }
    }

    pub(super) fn expires_at(&self, window: u64) -> u64 {
        self.entries.back().map_or(0, |&(t, _)| t + window)
    }
}
