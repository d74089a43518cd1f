//! What monitoring reads of the upstreams: breaker events, call statistics, each upstream's status.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;

use super::{EVENT_LOG_CAPACITY, Services};
use crate::breaker::{BreakerState, Transition};
use crate::clock::Timestamp;
use crate::error::Error;

/// A breaker's change of state, as monitoring reads it ([`Engine::breaker_events`](crate::Engine::breaker_events)).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerEvent {
    /// Its place in the engine's sequence (1, 2, …), to read on from.
    pub seq: u64,
    /// The service.
    pub service: String,
    /// The upstream.
    pub upstream: String,
    /// The state change.
    pub transition: Transition,
}

/// A bounded log of breaker events: the newest [`EVENT_LOG_CAPACITY`] are kept.
#[derive(Debug, Default)]
pub(crate) struct EventLog {
    events: Mutex<(u64, VecDeque<BreakerEvent>)>,
}

impl EventLog {
    pub(super) fn push(&self, service: &str, upstream: &str, transition: Transition) {
        let mut log = self.events.lock();
        log.0 += 1;
        let seq = log.0;
        if log.1.len() == EVENT_LOG_CAPACITY {
            log.1.pop_front();
        }
        log.1.push_back(BreakerEvent {
            seq,
            service: service.to_owned(),
            upstream: upstream.to_owned(),
            transition,
        });
    }

    pub(crate) fn since(&self, after: u64) -> Vec<BreakerEvent> {
        let log = self.events.lock();
        log.1.iter().filter(|e| e.seq > after).cloned().collect()
    }
}

/// Calls and latency of one upstream since it was added.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallStats {
    /// Calls finished (or dropped).
    pub calls: u64,
    /// … that succeeded.
    pub successes: u64,
    /// … that failed (dropped leases included).
    pub failures: u64,
    /// … that timed out.
    pub timeouts: u64,
    /// Mean latency of the finished calls.
    pub mean_latency: Duration,
    /// Exponentially weighted moving average of the latency (α = 0.1).
    pub ewma_latency: Duration,
    /// The slowest call.
    pub max_latency: Duration,
}

/// One upstream as [`Engine::upstreams`](crate::Engine::upstreams) reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamStatus {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// Its weight.
    pub weight: u32,
    /// Whether a host marked it down.
    pub down: bool,
    /// Its breaker's state.
    pub state: BreakerState,
    /// The failure and slow-call rates of the breaker's current window.
    pub window_rates: (f64, f64),
    /// Calls picked and not yet finished.
    pub in_flight: u64,
    /// Its call statistics.
    pub stats: CallStats,
}

impl UpstreamStatus {
    /// The status as a JSON object, the shape every binding reports: `name`, `url`, `weight`,
    /// `down`, breaker `state` (`closed`, `open`, `half_open`) and `open_until_ms` (when open),
    /// `in_flight`, the window's `failure_rate` and `slow_call_rate`, and `calls`,
    /// `successes`, `failures`, `timeouts`, `mean_latency_us`, `max_latency_us`.
    pub fn to_json(&self) -> serde_json::Value {
        let open_until_ms = match self.state {
            BreakerState::Open { until } => Some(until.as_millis()),
            _ => None,
        };
        serde_json::json!({
            "name": self.name,
            "url": self.url,
            "weight": self.weight,
            "down": self.down,
            "state": self.state.as_str(),
            "open_until_ms": open_until_ms,
            "in_flight": self.in_flight,
            "failure_rate": self.window_rates.0,
            "slow_call_rate": self.window_rates.1,
            "calls": self.stats.calls,
            "successes": self.stats.successes,
            "failures": self.stats.failures,
            "timeouts": self.stats.timeouts,
            "mean_latency_us": u64::try_from(self.stats.mean_latency.as_micros()).unwrap_or(u64::MAX),
            "max_latency_us": u64::try_from(self.stats.max_latency.as_micros()).unwrap_or(u64::MAX),
        })
    }
}

impl Services {
    pub(crate) fn status(
        &self,
        service: &str,
        now: Timestamp,
    ) -> Result<Vec<UpstreamStatus>, Error> {
        let service = self.service(service)?;
        let upstreams = service.upstreams.read().clone();
        Ok(upstreams
            .iter()
            .map(|u| {
                let state = u.state.lock();
                UpstreamStatus {
                    name: u.name.clone(),
                    url: u.url.clone(),
                    weight: u.weight,
                    down: u.down.load(Ordering::Relaxed),
                    state: state.breaker.state(now),
                    window_rates: state.breaker.rates(now),
                    in_flight: u.in_flight.load(Ordering::Relaxed),
                    stats: state.stats,
                }
            })
            .collect())
    }
}
