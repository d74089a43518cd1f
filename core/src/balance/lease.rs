//! A call in progress on one upstream: its lease, finished once from any thread.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Service, Upstream};
use crate::breaker::{BreakerState, CallOutcome, Permit};
use crate::clock::{Clock, Timestamp};
use crate::monitor::{Event, UpstreamEvent};

/// A call in progress on one upstream, from [`Engine::pick`](crate::Engine::pick). Finish it
/// with [`finish`](Self::finish) (from any thread); dropped unfinished, it records a failure.
#[derive(Debug)]
pub struct Lease {
    call: Option<Call>,
}

#[derive(Debug)]
struct Call {
    service: Arc<Service>,
    upstream: Arc<Upstream>,
    permit: Permit,
    started: Timestamp,
    clock: Arc<dyn Clock>,
}

impl Lease {
    /// The lease of a call just admitted by `upstream`'s breaker (`permit`) at `started`.
    pub(super) fn new(
        service: Arc<Service>,
        upstream: Arc<Upstream>,
        permit: Permit,
        started: Timestamp,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Lease {
            call: Some(Call {
                service,
                upstream,
                permit,
                started,
                clock,
            }),
        }
    }

    fn call(&self) -> &Call {
        self.call
            .as_ref()
            .expect("a lease holds its call until it is finished")
    }

    /// The upstream's name.
    pub fn upstream(&self) -> &str {
        &self.call().upstream.name
    }

    /// The upstream's URL.
    pub fn url(&self) -> &str {
        &self.call().upstream.url
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.call().service.name
    }

    /// Whether this call is one of a half-open breaker's probes.
    pub fn is_probe(&self) -> bool {
        self.call().permit.is_probe()
    }

    /// When the upstream was picked.
    pub fn started(&self) -> Timestamp {
        self.call().started
    }

    /// Records how the call ended and how long it took: the breaker judges it, the in-flight
    /// count drops, the statistics take it in. Exactly once: the lease is consumed.
    pub fn finish(mut self, outcome: CallOutcome, latency: Duration) {
        if let Some(call) = self.call.take() {
            call.complete(outcome, latency);
        }
    }

    /// [`finish`](Self::finish) with the time since the pick, by the engine's clock, as the
    /// latency: for a host that does not time the call itself.
    pub fn finish_now(mut self, outcome: CallOutcome) {
        if let Some(call) = self.call.take() {
            let latency = call.elapsed();
            call.complete(outcome, latency);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            let latency = call.elapsed();
            call.complete(CallOutcome::Failure, latency);
        }
    }
}

impl Call {
    /// The time since the pick, by the engine's clock.
    fn elapsed(&self) -> Duration {
        Duration::from_micros(
            self.clock
                .now()
                .as_micros()
                .saturating_sub(self.started.as_micros()),
        )
    }

    fn complete(self, outcome: CallOutcome, latency: Duration) {
        let now = self.clock.now();
        let upstream = &self.upstream;
        {
            let mut state = upstream.state.lock();
            let stats = &mut state.stats;
            stats.calls += 1;
            match outcome {
                CallOutcome::Success => stats.successes += 1,
                CallOutcome::Failure => stats.failures += 1,
                CallOutcome::Timeout => stats.timeouts += 1,
            }
            stats.max_latency = stats.max_latency.max(latency);
            let calls = stats.calls;
            let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            // α = 1/10, in integer µs.
            state.ewma_us = if calls == 1 {
                us
            } else {
                state.ewma_us - state.ewma_us / 10 + us / 10
            };
            state.stats.ewma_latency = Duration::from_micros(state.ewma_us);
            state.latency_total_us += latency.as_micros();
            let mean = state.latency_total_us / u128::from(calls);
            state.stats.mean_latency =
                Duration::from_micros(u64::try_from(mean).unwrap_or(u64::MAX));
            upstream.in_flight.fetch_sub(1, Ordering::AcqRel);
            let transition = state.breaker.record(self.permit, outcome, latency, now);
            upstream.set_gate(&state.breaker, now);
            // Logged under the upstream's lock, so its events are in the order they happened.
            if let Some(t) = transition {
                self.service
                    .events
                    .push(&self.service.name, &upstream.name, t);
            }
            self.service.monitor.record(&Event::Upstream(UpstreamEvent {
                at: now,
                service: &self.service.name,
                upstream: &upstream.name,
                outcome,
                latency,
                tripped: transition.is_some_and(|t| matches!(t.to, BreakerState::Open { .. })),
            }));
        }
    }
}
