//! Blocking after abuse (`block_for`, `block_after`): a key that a rule denies `after` times
//! within one of the rule's windows is denied outright for `duration` from that denial.
//!
//! The denials are counted per window `floor(now / window)` of the rule's window (a token
//! bucket's: the time it takes to refill when empty), and only the rule's own denials count:
//! a request that another layer denied is no denial of this one, and a request denied while
//! the key is blocked neither counts nor lengthens the block. A block denies every cost,
//! its `retry_after` is the block's end, and it is kept apart from the quota's state (a
//! memory-store entry or a Redis key of its own, with an expiry at the later of the block's
//! end and the denial window's), so a key that was never denied carries nothing for it.

/// A rule's blocking: for how long (µs, never zero), after how many denials in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Block {
    pub(super) duration: u64,
    pub(super) after: u32,
}

impl Block {
    /// How long a block lasts.
    pub const fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.duration)
    }

    /// How many denials within one window start a block.
    pub const fn after(&self) -> u32 {
        self.after
    }
}

/// What a key's blocking remembers: until when it is blocked (µs; 0 when it is not), and the
/// denials counted in window `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Blocking {
    pub(super) until: u64,
    pub(super) index: u64,
    pub(super) denials: u64,
}

impl Blocking {
    /// The time left of the block at `now`, if the key is blocked.
    pub(super) fn left(&self, now: u64) -> Option<u64> {
        (self.until > now).then(|| self.until - now)
    }

    /// Counts a denial at `now` in windows of `window` µs; starts a block when it is the
    /// `after`-th of its window and answers its length.
    pub(super) fn deny(&mut self, block: &Block, window: u64, now: u64) -> Option<u64> {
        let index = now / window;
        self.denials = if self.index == index {
            self.denials + 1
        } else {
            1
        };
        self.index = index;
        if self.denials < u64::from(block.after) {
            return None;
        }
        self.denials = 0;
        self.until = now.saturating_add(block.duration);
        Some(block.duration)
    }

    /// From when this equals a key never denied.
    pub(super) fn expires_at(&self, window: u64) -> u64 {
        let counting = if self.denials > 0 {
            (self.index + 1).saturating_mul(window)
        } else {
            0
        };
        self.until.max(counting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_after_th_denial_of_a_window_blocks_for_the_duration() {
        let block = Block {
            duration: 5_000,
            after: 3,
        };
        let mut b = Blocking::default();
        assert_eq!(b.deny(&block, 1_000, 100), None);
        assert_eq!(b.deny(&block, 1_000, 200), None);
        // A new window starts the count again.
        assert_eq!(b.deny(&block, 1_000, 1_100), None);
        assert_eq!(b.expires_at(1_000), 2_000);
        assert_eq!(b.deny(&block, 1_000, 1_200), None);
        assert_eq!(b.deny(&block, 1_000, 1_300), Some(5_000));
        assert_eq!(b.left(1_300), Some(5_000));
        assert_eq!(b.left(6_299), Some(1));
        assert_eq!(b.left(6_300), None);
        assert_eq!(b.expires_at(1_000), 6_300);
    }
}
