//! The circuit breaker of one upstream: a pure state machine over injected time.
//!
//! - **Closed**: every call passes; outcomes go into a rolling window — the last `N` calls
//!   (`window = 100`) or the calls of the last `T` (`window = "10s"`, kept in ten buckets of
//!   `T/10`, so a call leaves the window within `T/10` of its age reaching `T`). Once the
//!   window holds at least `min_calls` calls, the breaker opens when the failure rate reaches
//!   `failure_rate`, or — with `slow_call_duration` set — when the rate of calls at least that
//!   slow reaches `slow_call_rate`. Failures are `failure` and `timeout` outcomes.
//! - **Open** for `open_for`, then `open_for × backoff^k` after the `k`-th consecutive trip
//!   without a recovery in between, never longer than `max_open_for`. No call passes.
//! - **Half-open**: once the open time is over, exactly `half_open_calls` probe calls pass
//!   (however many callers race for them); the rest are refused until the probes report. The
//!   breaker closes, with an empty window and the backoff reset, when every probe succeeded
//!   (and, with a slow-call threshold, was not slow); it opens again at the first that did not.
//!
//! Each admission returns a [`Permit`] stamped with the breaker's epoch (it changes at every
//! transition), so the outcome of a call admitted before a transition — a slow call that ends
//! after the breaker opened, a closed-state call that ends during half-open — is counted in
//! the statistics but never mistaken for a probe or for a call of the new closed period.

use std::fmt;
use std::time::Duration;

use crate::clock::Timestamp;

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass; outcomes are watched.
    Closed,
    /// No call passes until `until`.
    Open {
        /// When the breaker turns half-open.
        until: Timestamp,
    },
    /// Probe calls pass, up to the configured number.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call through an upstream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// The upstream answered well.
    Success,
    /// The upstream failed (a 5xx, a refused connection …).
    Failure,
    /// The call timed out; counted as a failure.
    Timeout,
}

impl CallOutcome {
    /// `success`, `failure` or `timeout`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Success => "success",
            CallOutcome::Failure => "failure",
            CallOutcome::Timeout => "timeout",
        }
    }

    /// Reads `success`, `failure` or `timeout`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "success" => Some(CallOutcome::Success),
            "failure" => Some(CallOutcome::Failure),
            "timeout" => Some(CallOutcome::Timeout),
            _ => None,
        }
    }

    const fn failed(self) -> bool {
        !matches!(self, CallOutcome::Success)
    }
}

/// The rolling window a closed breaker judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// The last this many calls.
    Count(u32),
    /// The calls of this last span of time.
    Time(Duration),
}

/// A breaker's parameters (checked by the configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// The rolling window.
    pub window: WindowKind,
    /// Calls the window must hold before it is judged.
    pub min_calls: u32,
    /// The failure rate (0–1] at which the breaker opens.
    pub failure_rate: f64,
    /// A call at least this slow is slow; `None`: slowness is not judged.
    pub slow_call_duration: Option<Duration>,
    /// The slow-call rate (0–1] at which the breaker opens.
    pub slow_call_rate: f64,
    /// How long the breaker stays open after a first trip.
    pub open_for: Duration,
    /// The factor the open time grows by at each consecutive trip (1: it does not grow).
    pub backoff: f64,
    /// The longest open time.
    pub max_open_for: Duration,
    /// Probe calls admitted while half-open.
    pub half_open_calls: u32,
}

/// Leave to make one call, from [`Breaker::try_acquire`]; hand it back to
/// [`Breaker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    epoch: u64,
    probe: bool,
}

impl Permit {
    /// Whether this call is one of the half-open probes.
    pub const fn is_probe(&self) -> bool {
        self.probe
    }
}

/// A state change, for monitoring.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// When.
    pub at: Timestamp,
    /// The window's failure rate when the breaker opened from closed (else 0).
    pub failure_rate: f64,
    /// The window's slow-call rate when the breaker opened from closed (else 0).
    pub slow_call_rate: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Start of the bucket's span in µs (time windows); unused for count windows.
    start: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

/// The rolling window: counts over the last N calls or the last T.
#[derive(Debug, Clone)]
struct Window {
    kind: WindowKind,
    /// Count window: one entry per call (`calls` 1); time window: ten buckets.
    slots: Box<[Bucket]>,
    next: usize,
    calls: u32,
    failures: u32,
    slow: u32,
}

const TIME_BUCKETS: usize = 10;

impl Window {
    fn new(kind: WindowKind) -> Self {
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

    fn clear(&mut self) {
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

    fn add(&mut self, failed: bool, slow: bool, now: u64) {
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
        b.failures += u32::from(failed);
        b.slow += u32::from(slow);
        self.calls += 1;
        self.failures += u32::from(failed);
        self.slow += u32::from(slow);
    }

    fn rates(&self) -> (f64, f64) {
        if self.calls == 0 {
            return (0.0, 0.0);
        }
        let calls = f64::from(self.calls);
        (
            f64::from(self.failures) / calls,
            f64::from(self.slow) / calls,
        )
    }
}

/// One upstream's breaker. Not synchronised: the balancer keeps it under the upstream's lock.
#[derive(Debug, Clone)]
pub struct Breaker {
    settings: BreakerSettings,
    state: BreakerState,
    epoch: u64,
    window: Window,
    /// Consecutive trips without a recovery (for the backoff).
    trips: u32,
    probes_admitted: u32,
    probes_succeeded: u32,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        Breaker {
            settings,
            state: BreakerState::Closed,
            epoch: 0,
            window: Window::new(settings.window),
            trips: 0,
            probes_admitted: 0,
            probes_succeeded: 0,
        }
    }

    /// The state at `now` (an open breaker whose time is over reads as half-open).
    pub fn state(&self, now: Timestamp) -> BreakerState {
        match self.state {
            BreakerState::Open { until } if now >= until => BreakerState::HalfOpen,
            state => state,
        }
    }

    /// The failure and slow-call rates of the current window (0 when it is empty).
    pub fn rates(&self) -> (f64, f64) {
        self.window.rates()
    }

    /// Whether a call could pass at `now`, without taking a probe slot.
    pub fn available(&self, now: Timestamp) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen => {
                matches!(self.state, BreakerState::Open { .. })
                    || self.probes_admitted < self.settings.half_open_calls
            }
        }
    }

    /// When an open breaker turns half-open; `None` when it is not open.
    pub fn reopens_at(&self) -> Option<Timestamp> {
        match self.state {
            BreakerState::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Admits a call at `now`, or refuses it. Turning half-open is a transition, returned too.
    pub fn try_acquire(&mut self, now: Timestamp) -> (Option<Permit>, Option<Transition>) {
        let mut transition = None;
        if let BreakerState::Open { until } = self.state {
            if now < until {
                return (None, None);
            }
            transition = Some(self.enter(BreakerState::HalfOpen, now, 0.0, 0.0));
        }
        let permit = match self.state {
            BreakerState::Closed => Some(Permit {
                epoch: self.epoch,
                probe: false,
            }),
            BreakerState::HalfOpen if self.probes_admitted < self.settings.half_open_calls => {
                self.probes_admitted += 1;
                Some(Permit {
                    epoch: self.epoch,
                    probe: true,
                })
            }
            _ => None,
        };
        (permit, transition)
    }

    /// Gives back a permit that was never used for a call (nothing is recorded).
    pub fn release(&mut self, permit: Permit) {
        if permit.probe && permit.epoch == self.epoch && self.probes_admitted > 0 {
            self.probes_admitted -= 1;
        }
    }

    /// Records how the call of `permit` ended at `now`, having taken `latency`; returns the
    /// transition it caused, if any.
    pub fn record(
        &mut self,
        permit: Permit,
        outcome: CallOutcome,
        latency: Duration,
        now: Timestamp,
    ) -> Option<Transition> {
        if permit.epoch != self.epoch {
            // Admitted before the last transition: not a call of the current period.
            return None;
        }
        let slow = self
            .settings
            .slow_call_duration
            .is_some_and(|limit| latency >= limit);
        match self.state {
            BreakerState::Closed => {
                self.window.add(outcome.failed(), slow, now.as_micros());
                if self.window.calls < self.settings.min_calls {
                    return None;
                }
                let (failure_rate, slow_rate) = self.window.rates();
                let trips_on_slow = self.settings.slow_call_duration.is_some()
                    && slow_rate >= self.settings.slow_call_rate;
                if failure_rate >= self.settings.failure_rate || trips_on_slow {
                    Some(self.trip(now, failure_rate, slow_rate))
                } else {
                    None
                }
            }
            BreakerState::HalfOpen if permit.probe => {
                if outcome.failed() || slow {
                    return Some(self.trip(now, 0.0, 0.0));
                }
                self.probes_succeeded += 1;
                if self.probes_succeeded >= self.settings.half_open_calls {
                    self.trips = 0;
                    self.window.clear();
                    Some(self.enter(BreakerState::Closed, now, 0.0, 0.0))
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Opens the breaker at `now` for the current backoff.
    fn trip(&mut self, now: Timestamp, failure_rate: f64, slow_rate: f64) -> Transition {
        let s = &self.settings;
        let grown = s.open_for.as_secs_f64() * s.backoff.powi(self.trips.min(64) as i32);
        let open_for = if grown.is_finite() && grown < s.max_open_for.as_secs_f64() {
            Duration::from_secs_f64(grown)
        } else {
            s.max_open_for
        }
        .max(s.open_for.min(s.max_open_for));
        self.trips = self.trips.saturating_add(1);
        let until = now.saturating_add(open_for);
        self.enter(BreakerState::Open { until }, now, failure_rate, slow_rate)
    }

    fn enter(
        &mut self,
        to: BreakerState,
        now: Timestamp,
        failure_rate: f64,
        slow_call_rate: f64,
    ) -> Transition {
        let from = self.state;
        self.state = to;
        self.epoch += 1;
        self.probes_admitted = 0;
        self.probes_succeeded = 0;
        if to != BreakerState::Closed {
            self.window.clear();
        }
        Transition {
            from,
            to,
            at: now,
            failure_rate,
            slow_call_rate,
        }
    }

    /// Forces the breaker closed (an operator, or an active health check, says the upstream is
    /// well again).
    pub fn reset(&mut self, now: Timestamp) -> Option<Transition> {
        self.trips = 0;
        self.window.clear();
        (self.state != BreakerState::Closed)
            .then(|| self.enter(BreakerState::Closed, now, 0.0, 0.0))
    }
}
