//! `sliding_window_counter`: the previous window's count weighted by its remaining overlap,
//! plus the current window's count. Admit iff `p·(W − e) + (q + c)·W <= L·W`, in exact
//! integer arithmetic (`e` is the time into the current window).

use super::Outcome;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WindowCounter {
    /// `floor(now / window)` of the current window.
    index: u64,
    previous: u64,
    current: u64,
}

impl WindowCounter {
    pub(super) fn new(window: u64, now: u64) -> Self {
        WindowCounter {
            index: now / window,
            previous: 0,
            current: 0,
        }
    }

    pub(super) fn counted(index: u64, previous: u64, current: u64) -> Self {
        WindowCounter {
            index,
            previous,
            current,
        }
    }

    /// Rolls to the window of `now`; returns the time into the current window.
    fn advance(&mut self, window: u64, now: u64) -> u64 {
        let index = now / window;
        if index == self.index + 1 {
            self.previous = self.current;
            self.current = 0;
            self.index = index;
        } else if index > self.index + 1 {
            self.previous = 0;
            self.current = 0;
            self.index = index;
        }
        now.saturating_sub(self.index * window)
    }

    /// `L·W − p·(W − e) − q·W`: the room left, scaled by `W`.
    fn room(&self, limit: u64, window: u64, elapsed: u64) -> i128 {
        let (l, w) = (i128::from(limit), i128::from(window));
        l * w
            - i128::from(self.previous) * i128::from(window - elapsed)
            - i128::from(self.current) * w
    }

    fn reset_after(&self, window: u64, elapsed: u64) -> u64 {
        if self.current > 0 {
            2 * window - elapsed
        } else if self.previous > 0 {
            window - elapsed
        } else {
            0
        }
    }

    fn remaining(&self, limit: u64, window: u64, elapsed: u64) -> u64 {
        if let Some((budget, used)) = self.room_u64(limit, window, elapsed) {
            return budget.saturating_sub(used) / window;
        }
        let room = self.room(limit, window, elapsed).max(0);
        // room / W <= L, so it fits; divide in 64 bits when room does (a 128-bit division is
        // several times slower).
        match u64::try_from(room) {
            Ok(room) => room / window,
            Err(_) => (room / i128::from(window)) as u64,
        }
    }

    /// `(L·W, p·(W − e) + q·W)` when both fit in 64 bits (the usual case), so that the
    /// admission test and the remaining count need no 128-bit arithmetic.
    #[inline]
    fn room_u64(&self, limit: u64, window: u64, elapsed: u64) -> Option<(u64, u64)> {
        let budget = limit.checked_mul(window)?;
        let weighted = self.previous.checked_mul(window - elapsed)?;
        let used = self.current.checked_mul(window)?.checked_add(weighted)?;
        Some((budget, used))
    }

    pub(super) fn evaluate(&mut self, limit: u64, window: u64, now: u64, cost: u64) -> Outcome {
        let elapsed = self.advance(window, now);
        if let Some((budget, used)) = self.room_u64(limit, window, elapsed)
            && let Some(need) = cost.checked_mul(window)
        {
            // Exactly `cost·W <= L·W − used` and `max(0, L·W − used) / W` of the 128-bit path.
            let allowed = used <= budget && need <= budget - used;
            let retry_after = if allowed {
                0
            } else {
                self.retry_after(limit, window, elapsed, cost)
            };
            return Outcome::new(
                allowed,
                budget.saturating_sub(used) / window,
                self.reset_after(window, elapsed),
                retry_after,
            );
        }
        let room = self.room(limit, window, elapsed);
        let w = i128::from(window);
        let allowed = i128::from(cost) * w <= room;
        let retry_after = if allowed {
            0
        } else {
            self.retry_after(limit, window, elapsed, cost)
        };
        Outcome::new(
            allowed,
            self.remaining(limit, window, elapsed),
            self.reset_after(window, elapsed),
            retry_after,
        )
    }

    fn retry_after(&self, limit: u64, window: u64, elapsed: u64, cost: u64) -> u64 {
        let w = i128::from(window);
        let headroom = i128::from(limit) - i128::from(self.current) - i128::from(cost);
        if headroom >= 0 && self.previous > 0 {
            // Only the previous window's weight is in the way: wait until it has decayed to
            // p·(W − e') <= headroom·W.
            let until = w - (headroom * w) / i128::from(self.previous);
            return (until - i128::from(elapsed)).max(0) as u64;
        }
        // Wait into the next window, where the current count becomes the weighted one.
        let to_next = window - elapsed;
        let fit = i128::from(limit.saturating_sub(cost));
        let into_next = if self.current == 0 {
            0
        } else {
            (w - (fit * w) / i128::from(self.current)).max(0) as u64
        };
        to_next + into_next
    }

    pub(super) fn consume(&mut self, limit: u64, window: u64, now: u64, cost: u64) -> Outcome {
        let elapsed = self.advance(window, now);
        self.current = self.current.saturating_add(cost);
        Outcome::new(
            true,
            self.remaining(limit, window, elapsed),
            self.reset_after(window, elapsed),
            0,
        )
    }

    /// Takes `cost` off the counter of the window `at` fell in, if it is still counted.
    pub(super) fn refund(&mut self, window: u64, at: u64, cost: u64) {
        let index = at / window;
        if self.index == index {
            self.current = self.current.saturating_sub(cost);
        } else if self.index == index + 1 {
            self.previous = self.previous.saturating_sub(cost);
        }
    }

    pub(super) fn charge(&mut self, limit: u64, window: u64, now: u64, cost: u64) {
        self.advance(window, now);
        self.current = self.current.saturating_add(cost).min(limit);
    }

    pub(super) fn expires_at(&self, window: u64) -> u64 {
        if self.current > 0 {
            (self.index + 2) * window
        } else if self.previous > 0 {
            (self.index + 1) * window
        } else {
            0
        }
    }
}
