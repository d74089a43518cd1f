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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use smallvec::SmallVec;

use crate::breaker::{
    Breaker, BreakerSettings, BreakerState, CallOutcome, Permit, Transition, WindowKind,
};
use crate::clock::{Clock, Timestamp};
use crate::config::HumanDuration;
use crate::error::{Error, ErrorKind};
use crate::monitor::{Event, Monitor, UpstreamEvent};

/// The most upstreams one service may have.
pub const MAX_UPSTREAMS: usize = 256;
/// How many breaker events the engine keeps for monitoring to read.
pub const EVENT_LOG_CAPACITY: usize = 1024;

/// How a service chooses among its eligible upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Smooth weighted round-robin.
    #[default]
    RoundRobin,
    /// Fewest calls in flight per unit of weight.
    LeastConnections,
    /// Power of two random choices by calls in flight.
    #[serde(alias = "power_of_two_choices")]
    P2c,
}

impl Strategy {
    /// `round_robin`, `least_connections` or `p2c`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastConnections => "least_connections",
            Strategy::P2c => "p2c",
        }
    }
}

/// One `[services.NAME]` section.
///
/// ```toml
/// [services.orders]
/// strategy = "least_connections"     # round_robin (default) | least_connections | p2c
/// upstreams = [{ url = "http://127.0.0.1:9001" }, { url = "http://127.0.0.1:9002", weight = 2 }]
/// breaker = { failure_rate = 0.5, min_calls = 20, window = "10s", open_for = "5s", half_open_calls = 3 }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// How upstreams are chosen.
    #[serde(default)]
    pub strategy: Strategy,
    /// The upstreams (at least one).
    pub upstreams: Vec<UpstreamConfig>,
    /// Each upstream's breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
}

/// One upstream of a service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Where it is (the host uses it; floodwall only reports it).
    pub url: String,
    /// Its name in leases, reports and run-time changes; default, the URL.
    #[serde(default)]
    pub name: Option<String>,
    /// Its share of the traffic (1 to 10,000).
    #[serde(default = "one")]
    pub weight: u32,
}

impl UpstreamConfig {
    /// An upstream of weight 1 named by its URL.
    pub fn new(url: impl Into<String>) -> Self {
        UpstreamConfig {
            url: url.into(),
            name: None,
            weight: 1,
        }
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.url)
    }
}

/// The rolling window of a breaker: a number of calls, or a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "a number of calls (100) or a duration (\"10s\")"
)]
pub enum WindowConfig {
    /// The last this many calls.
    Calls(u32),
    /// The calls of this last span of time.
    Span(HumanDuration),
}

/// A service's `breaker = { … }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// The failure rate, over (0, 1], at which the breaker opens.
    #[serde(default = "default_failure_rate")]
    pub failure_rate: f64,
    /// Calls the window must hold before it is judged.
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
    /// The rolling window: a number of calls or a duration.
    #[serde(default = "default_window")]
    pub window: WindowConfig,
    /// A call at least this slow counts as slow; unset, slowness is not judged.
    #[serde(default)]
    pub slow_call_duration: Option<HumanDuration>,
    /// The slow-call rate, over (0, 1], at which the breaker opens.
    #[serde(default = "default_slow_call_rate")]
    pub slow_call_rate: f64,
    /// How long the breaker stays open after a trip.
    #[serde(default = "default_open_for")]
    pub open_for: HumanDuration,
    /// The factor the open time grows by at each consecutive trip (≥ 1; 1: no growth).
    #[serde(default = "default_backoff")]
    pub backoff: f64,
    /// The cap on the open time.
    #[serde(default = "default_max_open_for")]
    pub max_open_for: HumanDuration,
    /// Probe calls admitted while half-open.
    #[serde(default = "default_half_open_calls")]
    pub half_open_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_rate: default_failure_rate(),
            min_calls: default_min_calls(),
            window: default_window(),
            slow_call_duration: None,
            slow_call_rate: default_slow_call_rate(),
            open_for: default_open_for(),
            backoff: default_backoff(),
            max_open_for: default_max_open_for(),
            half_open_calls: default_half_open_calls(),
        }
    }
}

fn one() -> u32 {
    1
}
fn default_failure_rate() -> f64 {
    0.5
}
fn default_min_calls() -> u32 {
    20
}
fn default_window() -> WindowConfig {
    WindowConfig::Span(HumanDuration(Duration::from_secs(10)))
}
fn default_slow_call_rate() -> f64 {
    1.0
}
fn default_open_for() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_backoff() -> f64 {
    1.0
}
fn default_max_open_for() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_half_open_calls() -> u32 {
    3
}

impl BreakerConfig {
    fn compile(&self, at: &str) -> Result<BreakerSettings, Error> {
        let settings = BreakerSettings {
            window: match self.window {
                WindowConfig::Calls(n) => WindowKind::Count(n),
                WindowConfig::Span(d) => WindowKind::Time(d.0),
            },
            min_calls: self.min_calls,
            failure_rate: self.failure_rate,
            slow_call_duration: self.slow_call_duration.map(|d| d.0),
            slow_call_rate: self.slow_call_rate,
            open_for: self.open_for.0,
            backoff: self.backoff,
            max_open_for: self.max_open_for.0,
            half_open_calls: self.half_open_calls,
        };
        settings
            .validate()
            .map_err(|(field, message)| Error::config(format!("{at}.{field}"), message))?;
        Ok(settings)
    }
}

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
    fn push(&self, service: &str, upstream: &str, transition: Transition) {
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
                    return Ok(Lease {
                        call: Some(Call {
                            service: Arc::clone(service),
                            upstream: Arc::clone(upstream),
                            permit,
                            started: now,
                            clock: Arc::clone(clock),
                        }),
                    });
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
