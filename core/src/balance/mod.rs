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

/// Services checked for a reload, not yet in force ([`Services::apply`]).
pub(crate) struct Prepared(ByName);

/// The services of an engine.
#[derive(Debug, Default)]
pub(crate) struct Services {
    /// Replaced whole by a reload ([`Services::reload`]).
    by_name: arc_swap::ArcSwap<ByName>,
    pub(crate) events: Arc<EventLog>,
}

type ByName = HashMap<String, Arc<Service>, foldhash::fast::RandomState>;

/// What a reload did to the services: how many upstreams kept their breaker and in-flight
/// count, how many started afresh, how many went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServicesChange {
    /// Upstreams kept as they were (same service, breaker settings, name, URL and weight).
    pub kept: usize,
    /// Upstreams that start closed with no history (new, or changed).
    pub started: usize,
    /// Upstreams no longer configured (leases on them finish normally).
    pub removed: usize,
}

impl Services {
    pub(crate) fn compile(
        configs: &BTreeMap<String, ServiceConfig>,
        monitor: Arc<Monitor>,
    ) -> Result<Self, Error> {
        let events: Arc<EventLog> = Arc::default();
        let by_name = Self::compile_map(configs, &monitor, &events)?;
        Ok(Services {
            by_name: arc_swap::ArcSwap::from_pointee(by_name),
            events,
        })
    }

    /// Checks `configs` for [`apply`](Self::apply): the services as they would be, every
    /// upstream fresh. Changes nothing.
    pub(crate) fn prepare(
        &self,
        configs: &BTreeMap<String, ServiceConfig>,
        monitor: &Arc<Monitor>,
    ) -> Result<Prepared, Error> {
        Ok(Prepared(Self::compile_map(configs, monitor, &self.events)?))
    }

    /// Puts `prepared` in force: a service whose strategy and breaker settings are unchanged
    /// is kept (its round-robin place too), and in it every upstream whose name, URL and
    /// weight are unchanged keeps its breaker, statistics and in-flight count.
    pub(crate) fn apply(&self, prepared: Prepared) -> ServicesChange {
        let old = self.by_name.load_full();
        let mut change = ServicesChange::default();
        let mut next: ByName = HashMap::default();
        for (name, fresh) in prepared.0 {
            let kept = old
                .get(&name)
                .filter(|o| o.strategy == fresh.strategy && o.settings == fresh.settings);
            let Some(service) = kept else {
                change.started += fresh.upstreams.read().len();
                next.insert(name, fresh);
                continue;
            };
            let before = Arc::clone(&*service.upstreams.read());
            let upstreams: Vec<Arc<Upstream>> = fresh
                .upstreams
                .read()
                .iter()
                .map(|u| {
                    match before
                        .iter()
                        .find(|b| b.name == u.name && b.url == u.url && b.weight == u.weight)
                    {
                        Some(b) => {
                            change.kept += 1;
                            Arc::clone(b)
                        }
                        None => {
                            change.started += 1;
                            Arc::clone(u)
                        }
                    }
                })
                .collect();
            change.removed += before
                .iter()
                .filter(|b| !upstreams.iter().any(|u| Arc::ptr_eq(u, b)))
                .count();
            *service.upstreams.write() = upstreams.into();
            next.insert(name, Arc::clone(service));
        }
        for (name, service) in old.iter() {
            if !next.contains_key(name) {
                change.removed += service.upstreams.read().len();
            }
        }
        self.by_name.store(Arc::new(next));
        change
    }

    fn compile_map(
        configs: &BTreeMap<String, ServiceConfig>,
        monitor: &Arc<Monitor>,
        events: &Arc<EventLog>,
    ) -> Result<ByName, Error> {
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
                    events: Arc::clone(events),
                    monitor: Arc::clone(monitor),
                }),
            );
        }
        Ok(by_name)
    }

    /// The services' names, in order.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.load().keys().cloned().collect();
        names.sort();
        names
    }

    fn service(&self, name: &str) -> Result<Arc<Service>, Error> {
        let by_name = self.by_name.load();
        by_name.get(name).cloned().ok_or_else(|| {
            let mut known: Vec<&str> = by_name.keys().map(String::as_str).collect();
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
                        Arc::clone(&service),
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
        Err(no_upstream(&service, &upstreams, now))
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
