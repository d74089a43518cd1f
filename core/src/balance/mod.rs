//! Upstream services: where a call goes ([`Engine::pick`](crate::Engine::pick)) and what came
//! of it ([`Lease::finish`]).
//!
//! A service has upstreams, a strategy and a breaker per upstream ([`crate::breaker`]). `pick`
//! chooses among the *eligible* upstreams — not marked down, breaker closed, or half-open with
//! a probe slot free — by the service's strategy, takes the breaker's permit (a probe slot, when
//! half-open) and counts the call in flight; if the breaker refuses after all (another caller
//! took the last probe), the upstream is left out and the choice made again. When no upstream
//! is eligible, `pick` fails with `no_upstream_available` and the earliest time an open
//! breaker turns half-open.
//!
//! Strategies:
//! - `round_robin`: smooth weighted round-robin (nginx's): each pick adds every eligible
//!   upstream's weight to its running score, takes the highest and subtracts the total from
//!   it, so each cycle of `Σ weights` picks gives every upstream exactly its weight, spread
//!   out rather than in bursts.
//! - `least_connections`: the upstream with the fewest calls in flight per unit of weight
//!   (counted through leases); ties go round the upstreams in turn.
//! - `p2c` (power of two choices): two distinct eligible upstreams at random, the one with
//!   fewer calls in flight per unit of weight.
//!
//! A [`Lease`] is the call: `finish(outcome, latency)` records it once — the breaker, the
//! in-flight count and the latency statistics — from any thread; a lease dropped unfinished
//! records a failure with the time since the pick, so no in-flight count ever leaks. Upstreams
//! can be marked down and up, added and removed while the engine serves; leases on a removed
//! upstream finish normally.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;

use crate::breaker::{BreakerSettings, BreakerState};
use crate::clock::{Clock, Timestamp};
use crate::error::{Error, ErrorKind};
use crate::monitor::Monitor;

mod config;
mod lease;
mod status;
mod strategy;
mod upstream;

pub use crate::monitor::prometheus::{CallStats, UpstreamStatus};
pub use config::{BreakerConfig, ServiceConfig, Strategy, UpstreamConfig, WindowConfig};
use config::{check_name, check_upstream};
pub use lease::Lease;
pub use status::BreakerEvent;
pub(crate) use status::EventLog;
use strategy::foldhash_seed;
use upstream::Upstream;

/// The most upstreams one service may have.
pub const MAX_UPSTREAMS: usize = 256;
/// How many breaker events the engine keeps for monitoring to read.
pub const EVENT_LOG_CAPACITY: usize = 1024;

/// One service at run time.
#[derive(Debug)]
pub(crate) struct Service {
    name: String,
    strategy: Strategy,
    settings: BreakerSettings,
    upstreams: RwLock<Arc<[Arc<Upstream>]>>,
    /// Serialises smooth round-robin steps.
    rr: Mutex<()>,
    /// Where least-connections starts looking, so that ties rotate.
    turn: AtomicU64,
    /// The p2c random state (a Weyl sequence run through a mixer).
    rng: AtomicU64,
    /// The engine's breaker event log (shared by its services).
    events: Arc<EventLog>,
    /// The engine's monitoring, which records every finished call.
    monitor: Arc<Monitor>,
}

/// The services of an engine.
#[derive(Debug, Default)]
pub(crate) struct Services {
    by_name: HashMap<String, Arc<Service>, foldhash::fast::RandomState>,
    pub(crate) events: Arc<EventLog>,
}

impl Services {
    pub(crate) fn compile(
        configs: &BTreeMap<String, ServiceConfig>,
        monitor: Arc<Monitor>,
    ) -> Result<Self, Error> {
        let events: Arc<EventLog> = Arc::default();
        let mut by_name = HashMap::default();
        for (name, config) in configs {
            let at = format!("services.{name}");
            check_name(name, &at, "service name")?;
            let settings = config.breaker.compile(&format!("{at}.breaker"))?;
            if config.upstreams.is_empty() {
                return Err(Error::config(
                    format!("{at}.upstreams"),
                    "a service needs at least one upstream",
                ));
            }
            if config.upstreams.len() > MAX_UPSTREAMS {
                return Err(Error::config(
                    format!("{at}.upstreams"),
                    format!(
                        "{} upstreams; at most {MAX_UPSTREAMS}",
                        config.upstreams.len()
                    ),
                ));
            }
            let mut upstreams: Vec<Arc<Upstream>> = Vec::new();
            for (i, upstream) in config.upstreams.iter().enumerate() {
                check_upstream(upstream, &format!("{at}.upstreams[{i}]"))?;
                if let Some(first) = upstreams.iter().position(|u| u.name == upstream.name()) {
                    return Err(Error::config(
                        format!("{at}.upstreams[{i}]"),
                        format!(
                            "duplicate upstream {:?}: upstreams[{first}] has it already (give one a name)",
                            upstream.name()
                        ),
                    ));
                }
                upstreams.push(Arc::new(Upstream::new(upstream, settings)));
            }
            by_name.insert(
                name.clone(),
                Arc::new(Service {
                    name: name.clone(),
                    strategy: config.strategy,
                    settings,
                    upstreams: RwLock::new(upstreams.into()),
                    rr: Mutex::new(()),
                    turn: AtomicU64::new(0),
                    rng: AtomicU64::new(foldhash_seed()),
                    events: Arc::clone(&events),
                    monitor: Arc::clone(&monitor),
                }),
            );
        }
        Ok(Services { by_name, events })
    }

    /// The services' names, in order.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.keys().cloned().collect();
        names.sort();
        names
    }

    fn service(&self, name: &str) -> Result<&Arc<Service>, Error> {
        self.by_name.get(name).ok_or_else(|| {
            let mut known: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
            known.sort_unstable();
            Error::new(
                ErrorKind::UnknownService,
                format!(
                    "no service {name:?}; configured: {}",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })
    }

    /// Chooses an upstream of `service` and takes its breaker's permit.
    pub(crate) fn pick(&self, service: &str, clock: &Arc<dyn Clock>) -> Result<Lease, Error> {
        let service = self.service(service)?;
        let now = clock.now();
        let upstreams = service.upstreams.read();
        // Round-robin steps are serialised through the permit, so that the step of a refused
        // permit can be taken back exactly.
        let _rr = (service.strategy == Strategy::RoundRobin).then(|| service.rr.lock());
        let mut left_out: SmallVec<[bool; 16]> = SmallVec::from_elem(false, upstreams.len());
        for _ in 0..upstreams.len() {
            let Some((i, step)) = service.choose(&upstreams, &left_out, now) else {
                break;
            };
            let upstream = &upstreams[i];
            let permit = {
                let mut state = upstream.state.lock();
                let (permit, transition) = state.breaker.try_acquire(now);
                upstream.set_gate(&state.breaker, now);
                if let Some(t) = transition {
                    self.events.push(&service.name, &upstream.name, t);
                }
                if permit.is_some() {
                    upstream.in_flight.fetch_add(1, Ordering::AcqRel);
                }
                permit
            };
            match permit {
                Some(permit) => {
                    return Ok(Lease::new(
                        Arc::clone(service),
                        Arc::clone(upstream),
                        permit,
                        now,
                        Arc::clone(clock),
                    ));
                }
                None => {
                    if let Some(step) = step {
                        step.undo(&upstreams, i);
                    }
                    left_out[i] = true;
                }
            }
        }
        Err(no_upstream(service, &upstreams, now))
    }
}

/// The error when no upstream is eligible, saying why for each.
fn no_upstream(service: &Service, upstreams: &[Arc<Upstream>], now: Timestamp) -> Error {
    let mut reasons = Vec::new();
    let mut earliest: Option<Timestamp> = None;
    for u in upstreams {
        let why = if u.down.load(Ordering::Relaxed) {
            "marked down".to_owned()
        } else {
            let state = u.state.lock();
            match state.breaker.state(now) {
                BreakerState::Open { until } => {
                    earliest = Some(earliest.map_or(until, |e| e.min(until)));
                    format!(
                        "open for {} ms more",
                        until.as_millis().saturating_sub(now.as_millis())
                    )
                }
                BreakerState::HalfOpen => match state.breaker.probe_deadline() {
                    Some(deadline) => {
                        earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                        format!(
                            "half-open, its probe calls all out for {} ms more at most",
                            deadline.as_millis().saturating_sub(now.as_millis())
                        )
                    }
                    None => "half-open".to_owned(),
                },
                BreakerState::Closed => "taken by a concurrent change".to_owned(),
            }
        };
        reasons.push(format!("{} ({why})", u.name));
    }
    if reasons.is_empty() {
        reasons.push("it has no upstreams".to_owned());
    }
    Error::no_upstream(
        format!(
            "service {:?}: no upstream can take a call: {}",
            service.name,
            reasons.join(", ")
        ),
        earliest,
    )
}
