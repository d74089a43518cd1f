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
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;

use crate::breaker::{Breaker, BreakerSettings, BreakerState};
use crate::clock::{Clock, Timestamp};
use crate::error::{Error, ErrorKind};
use crate::monitor::Monitor;

mod config;
mod lease;
mod status;

pub use config::{BreakerConfig, ServiceConfig, Strategy, UpstreamConfig, WindowConfig};
pub use lease::Lease;
pub(crate) use status::EventLog;
pub use status::{BreakerEvent, CallStats, UpstreamStatus};

/// The most upstreams one service may have.
pub const MAX_UPSTREAMS: usize = 256;
/// How many breaker events the engine keeps for monitoring to read.
pub const EVENT_LOG_CAPACITY: usize = 1024;

#[derive(Debug)]
struct UpstreamState {
    breaker: Breaker,
    stats: CallStats,
    latency_total_us: u128,
    ewma_us: u64,
}

/// The gate of an upstream that admits calls: eligible whenever `now >= gate`.
const GATE_OPEN: u64 = 0;

#[derive(Debug)]
struct Upstream {
    name: String,
    url: String,
    weight: u32,
    down: AtomicBool,
    in_flight: AtomicU64,
    /// The smooth round-robin score (changed only under the service's `rr` lock).
    score: AtomicI64,
    /// µs from which the breaker may admit again: 0 when closed or half-open with a probe slot
    /// free, the open time's end, or the probe deadline while every probe is out. Kept in step
    /// with the breaker under `state`'s lock, read without it to choose.
    gate: AtomicU64,
    state: Mutex<UpstreamState>,
}

impl Upstream {
    fn new(config: &UpstreamConfig, settings: BreakerSettings) -> Self {
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

    fn eligible(&self, now: Timestamp) -> bool {
        !self.down.load(Ordering::Relaxed) && now.as_micros() >= self.gate.load(Ordering::Acquire)
    }

    fn set_gate(&self, breaker: &Breaker, now: Timestamp) {
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
    fn lighter_than(&self, other: &Upstream) -> bool {
        let a = u128::from(self.in_flight.load(Ordering::Relaxed)) * u128::from(other.weight);
        let b = u128::from(other.in_flight.load(Ordering::Relaxed)) * u128::from(self.weight);
        a < b
    }
}

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

fn check_name(name: &str, field: &str, what: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(Error::config(
            field,
            format!("{what} {name:?} must be 1 to 256 characters without control characters"),
        ));
    }
    Ok(())
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
        Ok((Arc::clone(s), found))
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

fn check_upstream(config: &UpstreamConfig, at: &str) -> Result<(), Error> {
    check_name(&config.url, &format!("{at}.url"), "url")?;
    if let Some(name) = &config.name {
        check_name(name, &format!("{at}.name"), "name")?;
    }
    if !(1..=10_000).contains(&config.weight) {
        return Err(Error::config(
            format!("{at}.weight"),
            format!("must be 1 to 10000, got {}", config.weight),
        ));
    }
    Ok(())
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

/// One smooth round-robin step: who took part and the weight they shared.
struct RoundRobinStep {
    took_part: SmallVec<[usize; 16]>,
    total: i64,
}

impl RoundRobinStep {
    /// Takes the step back (the chosen upstream's permit was refused).
    fn undo(&self, upstreams: &[Arc<Upstream>], chosen: usize) {
        for &i in &self.took_part {
            upstreams[i]
                .score
                .fetch_sub(i64::from(upstreams[i].weight), Ordering::Relaxed);
        }
        upstreams[chosen]
            .score
            .fetch_add(self.total, Ordering::Relaxed);
    }
}

impl Service {
    /// The index of the upstream the strategy chooses among the eligible ones not left out
    /// (and, for round-robin, the step taken: the caller holds `rr`).
    fn choose(
        &self,
        upstreams: &[Arc<Upstream>],
        left_out: &[bool],
        now: Timestamp,
    ) -> Option<(usize, Option<RoundRobinStep>)> {
        let eligible = |i: usize| !left_out[i] && upstreams[i].eligible(now);
        match self.strategy {
            Strategy::RoundRobin => {
                let mut step = RoundRobinStep {
                    took_part: SmallVec::new(),
                    total: 0,
                };
                let mut best: Option<(usize, i64)> = None;
                for (i, u) in upstreams.iter().enumerate() {
                    if !eligible(i) {
                        continue;
                    }
                    let weight = i64::from(u.weight);
                    let score = u.score.load(Ordering::Relaxed) + weight;
                    u.score.store(score, Ordering::Relaxed);
                    step.total += weight;
                    step.took_part.push(i);
                    if best.is_none_or(|(_, s)| score > s) {
                        best = Some((i, score));
                    }
                }
                let (i, score) = best?;
                upstreams[i]
                    .score
                    .store(score - step.total, Ordering::Relaxed);
                Some((i, Some(step)))
            }
            Strategy::LeastConnections => {
                let n = upstreams.len();
                let start = (self.turn.fetch_add(1, Ordering::Relaxed) % n as u64) as usize;
                let mut best: Option<usize> = None;
                for i in (start..n).chain(0..start) {
                    if eligible(i) && best.is_none_or(|b| upstreams[i].lighter_than(&upstreams[b]))
                    {
                        best = Some(i);
                    }
                }
                best.map(|i| (i, None))
            }
            Strategy::P2c => {
                let candidates: SmallVec<[usize; 16]> =
                    (0..upstreams.len()).filter(|&i| eligible(i)).collect();
                let chosen = match candidates.len() {
                    0 => None,
                    1 => Some(candidates[0]),
                    n => {
                        let r = self.random();
                        let a = (r % n as u64) as usize;
                        let b = (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n;
                        let (a, b) = (candidates[a], candidates[b]);
                        Some(if upstreams[b].lighter_than(&upstreams[a]) {
                            b
                        } else {
                            a
                        })
                    }
                };
                chosen.map(|i| (i, None))
            }
        }
    }

    /// A uniformly distributed 64-bit number (wyrand).
    fn random(&self) -> u64 {
        let s = self
            .rng
            .fetch_add(0xa076_1d64_78bd_642f, Ordering::Relaxed)
            .wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        (t as u64) ^ ((t >> 64) as u64)
    }
}

fn foldhash_seed() -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::RandomState::default().hash_one(0x5eed_u64)
}
