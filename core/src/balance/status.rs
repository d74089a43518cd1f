//! What monitoring reads of the upstreams: breaker events, and each upstream's status as
//! monitoring defines it ([`UpstreamStatus`] and its [`CallStats`], in [`crate::monitor::prometheus`]).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use super::{EVENT_LOG_CAPACITY, Services};
use crate::breaker::Transition;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::monitor::prometheus::UpstreamStatus;

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
