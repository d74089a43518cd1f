//! A breaker's parameters: [`BreakerSettings`], its rolling window's [`WindowKind`], and their
//! checks.

use std::time::Duration;

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

impl BreakerSettings {
    /// Checks the settings; the error names the field (`failure_rate` …) and the problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (name, rate) in [
            ("failure_rate", self.failure_rate),
            ("slow_call_rate", self.slow_call_rate),
        ] {
            if !(rate > 0.0 && rate <= 1.0) {
                return Err((name, format!("must be a rate over (0, 1], got {rate}")));
            }
        }
        if self.min_calls == 0 {
            return Err(("min_calls", "must be at least 1".to_owned()));
        }
        match self.window {
            WindowKind::Count(0) => return Err(("window", "must hold at least 1 call".to_owned())),
            WindowKind::Count(n) if n > 100_000 => {
                return Err(("window", format!("{n} calls; at most 100000 are kept")));
            }
            WindowKind::Count(n) if self.min_calls > n => {
                return Err((
                    "min_calls",
                    format!(
                        "{} is more than the window's {n} calls: it could never trip",
                        self.min_calls
                    ),
                ));
            }
            WindowKind::Time(d) if d < Duration::from_millis(10) => {
                return Err(("window", "must be at least 10ms".to_owned()));
            }
            _ => {}
        }
        if self.open_for.is_zero() {
            return Err(("open_for", "must be greater than zero".to_owned()));
        }
        if !(self.backoff >= 1.0 && self.backoff.is_finite()) {
            return Err((
                "backoff",
                format!("must be a factor of at least 1, got {}", self.backoff),
            ));
        }
        if self.max_open_for < self.open_for {
            return Err((
                "max_open_for",
                format!(
                    "{:?} is shorter than open_for ({:?})",
                    self.max_open_for, self.open_for
                ),
            ));
        }
        if self.half_open_calls == 0 {
            return Err(("half_open_calls", "must be at least 1".to_owned()));
        }
        if self.slow_call_duration.is_some_and(|d| d.is_zero()) {
            return Err(("slow_call_duration", "must be greater than zero".to_owned()));
        }
        Ok(())
    }
}
