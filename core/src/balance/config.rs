//! What a service's configuration says: its strategy, upstreams and breaker settings, and the
//! checks of its names and weights.

use std::time::Duration;

use serde::Deserialize;

use crate::breaker::{BreakerSettings, WindowKind};
use crate::common::HumanDuration;
use crate::error::Error;

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

    pub(super) fn name(&self) -> &str {
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
    pub(super) fn compile(&self, at: &str) -> Result<BreakerSettings, Error> {
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

pub(super) fn check_name(name: &str, field: &str, what: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(Error::config(
            field,
            format!("{what} {name:?} must be 1 to 256 characters without control characters"),
        ));
    }
    Ok(())
}

pub(super) fn check_upstream(config: &UpstreamConfig, at: &str) -> Result<(), Error> {
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
