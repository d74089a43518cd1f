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
//!   (and, with a slow-call threshold, was not slow); it opens again at the first that did not
//!   — or when every probe is out and `open_for` has passed since the latest was admitted with
//!   no answer (a hung probe counts as failed, so an upstream is never stuck half-open).
//!
//! Each admission returns a [`Permit`] stamped with the breaker's epoch (it changes at every
//! transition), so the outcome of a call admitted before a transition — a slow call that ends
//! after the breaker opened, a closed-state call that ends during half-open — is counted in
//! the statistics but never mistaken for a probe or for a call of the new closed period.

mod settings;
mod window;

use std::fmt;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::error::Error;

pub use settings::{BreakerSettings, WindowKind};
use window::Window;

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

/// Leave to make one call, from [`Breaker::try_acquire`]; hand it back to
/// [`Breaker::record`] or [`Breaker::release`] — once: it is neither `Clone` nor `Copy`.
#[derive(Debug, PartialEq, Eq)]
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
    /// While half-open: when the latest probe was admitted plus `open_for`. If every probe is
    /// out and none has failed by then, the breaker opens again (a hung probe is a failure).
    probe_deadline: Timestamp,
}

impl Breaker {
    /// A closed breaker, if the settings are valid ([`BreakerSettings::validate`]).
    pub fn new(settings: BreakerSettings) -> Result<Self, Error> {
        settings
            .validate()
            .map_err(|(field, message)| Error::config(format!("breaker.{field}"), message))?;
        Ok(Breaker {
            settings,
            state: BreakerState::Closed,
            epoch: 0,
            window: Window::new(settings.window),
            trips: 0,
            probes_admitted: 0,
            probes_succeeded: 0,
            probe_deadline: Timestamp::from_micros(0),
        })
    }

    /// The state at `now` (an open breaker whose time is over reads as half-open).
    pub fn state(&self, now: Timestamp) -> BreakerState {
        match self.state {
            BreakerState::Open { until } if now >= until => BreakerState::HalfOpen,
            state => state,
        }
    }

    /// The failure and slow-call rates of the window at `now` (0 when it is empty).
    pub fn rates(&self, now: Timestamp) -> (f64, f64) {
        self.window.rates(Some(now.as_micros()))
    }

    /// Whether a call could pass at `now`, without taking a probe slot.
    pub fn available(&self, now: Timestamp) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen => {
                matches!(self.state, BreakerState::Open { .. })
                    || self.probes_admitted < self.settings.half_open_calls
                    || now >= self.probe_deadline
            }
        }
    }

    /// While half-open with every probe out: when the breaker gives up waiting for them.
    pub fn probe_deadline(&self) -> Option<Timestamp> {
        (self.state == BreakerState::HalfOpen
            && self.probes_admitted >= self.settings.half_open_calls)
            .then_some(self.probe_deadline)
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
        if self
            .probe_deadline()
            .is_some_and(|deadline| now >= deadline)
        {
            // Every probe is out and none answered in time: as good as failed.
            return (None, Some(self.trip(now, 0.0, 0.0)));
        }
        let permit = match self.state {
            BreakerState::Closed => Some(Permit {
                epoch: self.epoch,
                probe: false,
            }),
            BreakerState::HalfOpen if self.probes_admitted < self.settings.half_open_calls => {
                self.probes_admitted += 1;
                self.probe_deadline = now.saturating_add(self.settings.open_for);
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
        // Only while the slot's half-open period lasts and no probe has reported.
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
                if self.window.calls < u64::from(self.settings.min_calls) {
                    return None;
                }
                let (failure_rate, slow_rate) = self.window.rates(None);
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
        let open_for = if grown.is_finite() && grown >= 0.0 && grown < s.max_open_for.as_secs_f64()
        {
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

    /// Forces the breaker open at `now` for its current backoff (a call that failed before any
    /// was recorded: a store that cannot be reached when it is built); `None` when it is open
    /// already.
    pub fn force_open(&mut self, now: Timestamp) -> Option<Transition> {
        (!matches!(self.state, BreakerState::Open { .. })).then(|| self.trip(now, 1.0, 0.0))
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
