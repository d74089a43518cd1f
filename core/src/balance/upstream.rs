//! An upstream at run time (its breaker, the gate read to choose, its calls in flight), and a
//! service's upstreams changed while the engine serves: marked down, reset, added, removed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::{CallStats, MAX_UPSTREAMS, Service, Services, UpstreamConfig, check_upstream};
use crate::breaker::{Breaker, BreakerSettings, BreakerState};
use crate::clock::Timestamp;
use crate::error::{Error, ErrorKind};

#[derive(Debug)]
pub(super) struct UpstreamState {
    pub(super) breaker: Breaker,
    pub(super) stats: CallStats,
    pub(super) latency_total_us: u128,
    pub(super) ewma_us: u64,
}

/// The gate of an upstream that admits calls: eligible whenever `now >= gate`.
const GATE_OPEN: u64 = 0;

#[derive(Debug)]
pub(super) struct Upstream {
    pub(super) name: String,
    pub(super) url: String,
    pub(super) weight: u32,
    pub(super) down: AtomicBool,
    pub(super) in_flight: AtomicU64,
    /// The smooth round-robin score (changed only under the service's `rr` lock).
    pub(super) score: AtomicI64,
    /// µs from which the breaker may admit again: 0 when closed or half-open with a probe slot
    /// free, the open time's end, or the probe deadline while every probe is out. Kept in step
    /// with the breaker under `state`'s lock, read without it to choose.
    gate: AtomicU64,
    pub(super) state: Mutex<UpstreamState>,
}

impl Upstream {
    pub(super) fn new(config: &UpstreamConfig, settings: BreakerSettings) -> Self {
        Upstream {
            name: config.name().to_owned(),
            url: config.url.clone(),
            weight: config.weight,
            down: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            score: AtomicI64::new(0),
            gate: AtomicU64::new(GATE_OPEN),
            state: Mutex::new(UpstreamState {
                breaker: Breaker::new(settings).expect("settings validated by the service"),
                stats: CallStats::default(),
                latency_total_us: 0,
                ewma_us: 0,
            }),
        }
    }

    pub(super) fn eligible(&self, now: Timestamp) -> bool {
        !self.down.load(Ordering::Relaxed) && now.as_micros() >= self.gate.load(Ordering::Acquire)
    }

    pub(super) fn set_gate(&self, breaker: &Breaker, now: Timestamp) {
        let gate = match breaker.state(now) {
            BreakerState::Closed => GATE_OPEN,
            BreakerState::HalfOpen => match breaker.probe_deadline() {
                // Every probe out: eligible again when the breaker stops waiting for them.
                Some(deadline) => deadline.as_micros(),
                None => GATE_OPEN,
            },
            BreakerState::Open { until } => until.as_micros(),
        };
        self.gate.store(gate, Ordering::Release);
    }

    /// In-flight calls per unit of weight, compared without division: `a < b` iff
    /// `a.in_flight × b.weight < b.in_flight × a.weight`.
    pub(super) fn lighter_than(&self, other: &Upstream) -> bool {
        let a = u128::from(self.in_flight.load(Ordering::Relaxed)) * u128::from(other.weight);
        let b = u128::from(other.in_flight.load(Ordering::Relaxed)) * u128::from(self.weight);
        a < b
    }
}

impl Services {
    fn upstream(
        &self,
        service: &str,
        upstream: &str,
    ) -> Result<(Arc<Service>, Arc<Upstream>), Error> {
        let s = self.service(service)?;
        let found = s
            .upstreams
            .read()
            .iter()
            .find(|u| u.name == upstream)
            .cloned()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::UnknownUpstream,
                    format!("service {service:?} has no upstream {upstream:?}"),
                )
            })?;
        Ok((s, found))
    }

    pub(crate) fn set_down(&self, service: &str, upstream: &str, down: bool) -> Result<(), Error> {
        let (_, u) = self.upstream(service, upstream)?;
        u.down.store(down, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn reset_breaker(
        &self,
        service: &str,
        upstream: &str,
        now: Timestamp,
    ) -> Result<(), Error> {
        let (s, u) = self.upstream(service, upstream)?;
        let mut state = u.state.lock();
        if let Some(t) = state.breaker.reset(now) {
            self.events.push(&s.name, &u.name, t);
        }
        u.set_gate(&state.breaker, now);
        Ok(())
    }

    pub(crate) fn add_upstream(&self, service: &str, config: &UpstreamConfig) -> Result<(), Error> {
        let s = self.service(service)?;
        check_upstream(config, "upstream")?;
        let mut list = s.upstreams.write();
        if list.iter().any(|u| u.name == config.name()) {
            return Err(Error::config(
                "upstream.name",
                format!(
                    "service {service:?} already has an upstream {:?}",
                    config.name()
                ),
            ));
        }
        if list.len() >= MAX_UPSTREAMS {
            return Err(Error::config(
                "upstream",
                format!("service {service:?} has {MAX_UPSTREAMS} upstreams already"),
            ));
        }
        let mut next: Vec<Arc<Upstream>> = list.iter().cloned().collect();
        next.push(Arc::new(Upstream::new(config, s.settings)));
        *list = next.into();
        Ok(())
    }

    pub(crate) fn remove_upstream(&self, service: &str, upstream: &str) -> Result<(), Error> {
        let (s, found) = self.upstream(service, upstream)?;
        let mut list = s.upstreams.write();
        // The very upstream looked up: one added since under the same name stays.
        let next: Vec<Arc<Upstream>> = list
            .iter()
            .filter(|u| !Arc::ptr_eq(u, &found))
            .cloned()
            .collect();
        if next.is_empty() {
            return Err(Error::config(
                "upstream",
                format!(
                    "{upstream:?} is the last upstream of service {service:?}; add another first"
                ),
            ));
        }
        *list = next.into();
        Ok(())
    }
}
