//! Monitoring: what happened to each request, kept so that an operator can see a surge coming
//! and who hit the limits.
//!
//! # What is recorded
//!
//! Three kinds of [`Event`], all recorded by the engine itself, so that every binding and host
//! gets them without code of its own:
//!
//! - a [`DecisionEvent`] per decision: every [`check`](crate::Engine::check) (and each request
//!   of [`check_many`](crate::Engine::check_many)) and [`authorize`](crate::Engine::authorize)
//!   — admitted, rate limited (with the deciding rule, the subject and the role), refused for
//!   its token (with why), or failed — and every refused
//!   [`authenticate`](crate::Engine::authenticate), which has no endpoint;
//! - an [`UpstreamEvent`] per finished [`Lease`](crate::Lease): outcome, latency, and whether
//!   it tripped the breaker;
//! - a [`ResponseEvent`] when the host reports how it answered
//!   ([`Engine::record_response`](crate::Engine::record_response)): status and end-to-end
//!   latency. The Express, ASGI and WSGI middlewares report every response.
//!
//! # Where it goes
//!
//! The [`Aggregator`] is always on and bounded: per-minute counters over a configurable horizon
//! (`[monitor] horizon`, an hour by default), exact counters by outcome, error kind, store and
//! status class, and space-saving top lists ([`TopK`]) of the most requested endpoints, of
//! rate-limit breaches by subject, role, endpoint and rule, and of failing upstreams and
//! breaker trips. Recording takes one short lock on one of several shards (a thread keeps its
//! shard), hashes the endpoint once, and allocates only for a key a top list has not seen —
//! measured by `benches/monitor.rs`. A [`Report`] (JSON-serialisable, the same shape in every
//! binding) is computed from it at any time, and [`prometheus`] renders its counters in the
//! Prometheus text format.
//!
//! With `[monitor] stream`, every event is also written to a Redis Stream, so that a separate
//! analytics process can build the same report from what several gateways wrote.

mod aggregate;
mod event;
pub mod prometheus;
mod topk;

pub use aggregate::{
    Aggregator, LATENCY_BOUNDS_US, LatencyHistogram, MAX_HORIZON_MINUTES, MAX_TOP, MinuteCounts,
    PEAKS, Report, SinkStats,
};
pub use event::{DecisionEvent, Event, EventOutcome, ResponseEvent, UpstreamEvent};
pub use topk::{TopEntry, TopK, merge};

use crate::clock::Timestamp;
use crate::config::{MonitorConfig, StoreConfig};
use crate::error::Error;

/// An engine's monitoring: the aggregate, and the stream sink when configured.
#[derive(Debug)]
pub struct Monitor {
    aggregator: Aggregator,
}

impl Monitor {
    /// Monitoring as `config` asks; `store` is where a stream goes by default.
    pub fn new(config: &MonitorConfig, store: &StoreConfig) -> Result<Self, Error> {
        config.validate(store)?;
        if config.stream.is_some() {
            return Err(Error::config(
                "monitor.stream",
                "the Redis Streams sink is not available in this build",
            ));
        }
        Ok(Monitor {
            aggregator: Aggregator::new(config.horizon_minutes()?, config.top),
        })
    }

    /// Records one event: into the aggregate, and onto the stream's queue (never waiting).
    pub fn record(&self, event: &Event<'_>) {
        self.aggregator.record(event);
    }

    /// The report at `now`.
    pub fn report(&self, now: Timestamp) -> Report {
        self.aggregator.report(now)
    }

    /// The aggregate.
    pub fn aggregator(&self) -> &Aggregator {
        &self.aggregator
    }
}

impl Default for Monitor {
    fn default() -> Self {
        let config = MonitorConfig::default();
        Monitor {
            aggregator: Aggregator::new(60, config.top),
        }
    }
}
