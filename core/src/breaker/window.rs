//! The rolling window a closed breaker judges: the last N calls, or ten time buckets of the
//! last T, and the failure and slow-call rates over it.

use super::WindowKind;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Start of the bucket's span in µs (time windows); unused for count windows.
    start: u64,
    calls: u64,
    failures: u64,
    slow: u64,
}

/// The rolling window: counts over the last N calls or the last T.
#[derive(Debug, Clone)]
pub(super) struct Window {
    kind: WindowKind,
    /// Count window: one entry per call (`calls` 1); time window: ten buckets.
    slots: Box<[Bucket]>,
    next: usize,
    pub(super) calls: u64,
    failures: u64,
    slow: u64,
}

const TIME_BUCKETS: usize = 10;

impl Window {
    pub(super) fn new(kind: WindowKind) -> Self {
        let len = match kind {
            WindowKind::Count(n) => n.max(1) as usize,
            WindowKind::Time(_) => TIME_BUCKETS,
        };
        Window {
            kind,
            slots: vec![Bucket::default(); len].into(),
            next: 0,
            calls: 0,
            failures: 0,
            slow: 0,
        }
    }

    pub(super) fn clear(&mut self) {
        self.slots.fill(Bucket::default());
        self.next = 0;
        self.calls = 0;
        self.failures = 0;
        self.slow = 0;
    }

    fn remove(&mut self, i: usize) {
        let old = std::mem::take(&mut self.slots[i]);
        self.calls -= old.calls;
        self.failures -= old.failures;
        self.slow -= old.slow;
    }

    /// Drops time buckets that have left the window by `now`.
    fn expire(&mut self, now: u64) {
        if let WindowKind::Time(span) = self.kind {
            let span = span.as_micros() as u64;
            for i in 0..self.slots.len() {
                let b = self.slots[i];
                if b.calls > 0 && b.start.saturating_add(span) <= now {
                    self.remove(i);
                }
            }
        }
    }

    pub(super) fn add(&mut self, failed: bool, slow: bool, now: u64) {
        let i = match self.kind {
            WindowKind::Count(_) => {
                let i = self.next;
                self.next = (i + 1) % self.slots.len();
                self.remove(i);
                i
            }
            WindowKind::Time(span) => {
                self.expire(now);
                let width = (span.as_micros() as u64 / TIME_BUCKETS as u64).max(1);
                let start = now - now % width;
                let i = ((now / width) % TIME_BUCKETS as u64) as usize;
                if self.slots[i].start != start {
                    self.remove(i);
                    self.slots[i].start = start;
                }
                i
            }
        };
        let b = &mut self.slots[i];
        b.calls += 1;
        b.failures += u64::from(failed);
        b.slow += u64::from(slow);
        self.calls += 1;
        self.failures += u64::from(failed);
        self.slow += u64::from(slow);
    }

    /// The failure and slow-call rates; at `now`, for a time window, as if it had expired.
    pub(super) fn rates(&self, now: Option<u64>) -> (f64, f64) {
        let (calls, failures, slow) = match (self.kind, now) {
            (WindowKind::Time(span), Some(now)) => {
                let span = span.as_micros() as u64;
                self.slots
                    .iter()
                    .filter(|b| b.calls > 0 && b.start.saturating_add(span) > now)
                    .fold((0, 0, 0), |(c, f, s), b| {
                        (c + b.calls, f + b.failures, s + b.slow)
                    })
            }
            _ => (self.calls, self.failures, self.slow),
        };
        if calls == 0 {
            return (0.0, 0.0);
        }
        (failures as f64 / calls as f64, slow as f64 / calls as f64)
    }
}
