//! The configuration: one schema, read from TOML or the same structure as JSON.
//!
//! Reading ([`Config::from_toml`], [`Config::from_json`], [`Config::from_file`]) checks the
//! shape — unknown fields, wrong types, unknown algorithms — and
//! [`Engine::from_config`](crate::Engine::from_config) checks the values and compiles them once
//! (zero windows, negative or missing rates, duplicate rule names, bad patterns). Either way the
//! error has kind [`invalid_config`](crate::ErrorKind::InvalidConfig) and names the field:
//! `rules[1].refill_rate: refill_rate must be a positive number of tokens per second, got -2`.
//!
//! ```toml
//! [store]
//! kind = "memory"
//! max_keys = 1000000
//!
//! [[rules]]
//! name = "per-user"
//! match = { methods = ["GET", "POST"], paths = ["/api/**"] }
//! key = "subject"                  # subject | ip | endpoint | global | "header:X-Api-Key"
//! algorithm = "token_bucket"       # fixed_window | sliding_window | sliding_window_counter | token_bucket
//! capacity = 100
//! refill_rate = 10                 # tokens per second
//! roles.premium = { capacity = 1000, refill_rate = 100 }
//!
//! [[rules]]
//! name = "global"
//! key = "global"
//! algorithm = "fixed_window"
//! limit = 10000
//! window = "1s"
//! ```
//!
//! Durations are strings of a number and a unit: `us`, `ms`, `s`, `m`, `h` or `d`
//! (`"250ms"`, `"1.5s"`, `"1m"`). The `[auth]` section is [`AuthConfig`], each
//! `[services.NAME]` a [`ServiceConfig`], `[monitor]` a [`MonitorConfig`], `[http]` an
//! [`HttpConfig`].
//!
//! What a rule does in the HTTP layer ([`crate::http`]) is part of the rule:
//!
//! ```toml
//! [[rules]]
//! name = "login-attempts"
//! match = { methods = ["POST"], paths = ["/login"] }
//! key = "ip"
//! algorithm = "sliding_window"
//! limit = 5
//! window = "15m"
//! before_auth = true                 # decided before the token is verified
//! count_responses = "failed"         # all | failed | successful: the others are refunded
//! failed_statuses = [401, 403, "500-599"]   # default "400-599"
//! cost_header = "x-ratelimit-cost"   # a response header that adds cost after the fact
//! shadow = false                     # decide and record, never deny
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::auth::AuthConfig;
use crate::balance::ServiceConfig;
use crate::error::Error;
pub use crate::http::HttpConfig;
use crate::limit::{
    Algorithm, CountResponses, KeyKind, PathPattern, Policy, Quota, ResponseCounting, Rule,
    RuleMatcher, StatusSet, is_token,
};

/// The most rules one configuration may have (and so the most layers one decision applies
/// atomically).
pub const MAX_RULES: usize = 256;

/// The most role overrides (`roles.<name>`) one rule may have.
pub const MAX_ROLE_OVERRIDES: usize = 65_536;

/// The default cap on keys held by the memory store.
pub const DEFAULT_MAX_KEYS: u64 = 1_000_000;
/// The default deadline of one store call.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(50);
/// The default prefix of the keys a shared store writes.
pub const DEFAULT_PREFIX: &str = "fw:";

/// A whole configuration. Every section is optional; `Config::default()` is an engine with no
/// rules (it admits everything) on the memory store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where limiter state lives.
    #[serde(default)]
    pub store: StoreConfig,
    /// Which rate-limit response headers decisions render.
    #[serde(default)]
    pub headers: HeadersConfig,
    /// The rate-limit rules, applied together to every request they match.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// JWT authentication ([`AuthConfig`]).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Upstream services by name (`[services.orders]`), for [`Engine::pick`](crate::Engine::pick).
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
    /// Monitoring: the in-memory aggregate and the optional Redis Streams sink.
    #[serde(default)]
    pub monitor: MonitorConfig,
    /// How the HTTP layer reads requests and whom it lets through ([`crate::http`]).
    #[serde(default)]
    pub http: HttpConfig,
    /// The directory relative file names (key files, JWKS files) are read from: set by
    /// [`Config::from_file`] to the file's directory; otherwise the working directory.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

/// The `[monitor]` section. The in-memory aggregate is always on; `stream` adds the Redis
/// Streams sink.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// How long the per-minute series is: whole minutes, from `"1m"` to `"24h"`.
    #[serde(default = "default_horizon")]
    pub horizon: HumanDuration,
    /// How many entries each top list of a report holds (1 to 1000).
    #[serde(default = "default_top")]
    pub top: usize,
    /// The Redis stream every event is also written to (`XADD … MAXLEN ~`), if any.
    #[serde(default)]
    pub stream: Option<String>,
    /// The Redis server the stream lives on; by default the store's (`store.url`, or
    /// `store.urls` for a cluster).
    #[serde(default)]
    pub url: Option<String>,
    /// About how many entries the stream keeps (`MAXLEN ~`).
    #[serde(default = "default_maxlen")]
    pub maxlen: u64,
    /// How many events may wait for the writer; past it, events are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// The most events the writer sends in one round trip.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// The longest an event waits before the writer sends what it has.
    #[serde(default = "default_flush")]
    pub flush: HumanDuration,
    /// The name events in the stream carry as their source (default: host name and pid).
    #[serde(default)]
    pub instance: Option<String>,
}

fn default_horizon() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}
fn default_top() -> usize {
    10
}
fn default_maxlen() -> u64 {
    100_000
}
fn default_queue() -> usize {
    10_000
}
fn default_batch() -> usize {
    256
}
fn default_flush() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            horizon: default_horizon(),
            top: default_top(),
            stream: None,
            url: None,
            maxlen: default_maxlen(),
            queue: default_queue(),
            batch: default_batch(),
            flush: default_flush(),
            instance: None,
        }
    }
}

impl MonitorConfig {
    /// The horizon in whole minutes, or the error naming the field.
    pub fn horizon_minutes(&self) -> Result<u64, Error> {
        let micros = self.horizon.0.as_micros();
        let minutes = micros / 60_000_000;
        if !micros.is_multiple_of(60_000_000) || minutes == 0 || minutes > 24 * 60 {
            return Err(Error::config(
                "monitor.horizon",
                format!(
                    "must be whole minutes from \"1m\" to \"24h\", got \"{}\"",
                    self.horizon
                ),
            ));
        }
        Ok(minutes as u64)
    }

    /// Checks every field; `store` says where a stream would go by default.
    pub(crate) fn validate(&self, store: &StoreConfig) -> Result<(), Error> {
        self.horizon_minutes()?;
        if !(1..=1000).contains(&self.top) {
            return Err(Error::config("monitor.top", "must be from 1 to 1000"));
        }
        let Some(stream) = &self.stream else {
            return Ok(());
        };
        if stream.is_empty() {
            return Err(Error::config("monitor.stream", "must not be empty"));
        }
        if self.url.is_none() && store.kind == StoreKind::Memory {
            return Err(Error::config(
                "monitor.url",
                "the stream needs a Redis server: set monitor.url, or use a redis store",
            ));
        }
        if self.maxlen == 0 {
            return Err(Error::config("monitor.maxlen", "must be at least 1"));
        }
        if self.queue == 0 {
            return Err(Error::config("monitor.queue", "must be at least 1"));
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(Error::config("monitor.batch", "must be from 1 to 10000"));
        }
        if self.flush.0.is_zero() {
            return Err(Error::config("monitor.flush", "must be greater than zero"));
        }
        if self.instance.as_deref() == Some("") {
            return Err(Error::config("monitor.instance", "must not be empty"));
        }
        Ok(())
    }
}

/// Which store holds limiter state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// In this process: the embedded default.
    #[default]
    Memory,
    /// One Redis server.
    Redis,
    /// A Redis Cluster.
    RedisCluster,
}

impl StoreKind {
    /// `memory`, `redis` or `redis_cluster`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Redis => "redis",
            StoreKind::RedisCluster => "redis_cluster",
        }
    }
}

/// What to do when a shared store fails or is too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Decide in-process until the store is back.
    #[default]
    Fallback,
    /// Admit.
    Allow,
    /// Deny.
    Deny,
    /// Fail the call with `store_unavailable`, for a host that decides itself (e.g. answers
    /// 503, or applies a policy per route).
    Error,
}

/// Whose clock a shared store's scripts use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreClock {
    /// The store's own (`TIME` in Redis), so gateways with skewed clocks agree.
    #[default]
    Redis,
    /// The calling process's clock (or the request's explicit time).
    Local,
}

/// The `[store]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `memory`, `redis` or `redis_cluster`.
    #[serde(default)]
    pub kind: StoreKind,
    /// The Redis URL (`redis`).
    #[serde(default)]
    pub url: Option<String>,
    /// Seed node URLs (`redis_cluster`).
    #[serde(default)]
    pub urls: Vec<String>,
    /// Prefix of every key a shared store writes.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Deadline of one store call.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// What to do when the store fails or is slow.
    #[serde(default)]
    pub on_error: OnStoreError,
    /// Whose clock scripts use.
    #[serde(default)]
    pub clock: StoreClock,
    /// The most keys the memory store holds; past it, the keys nearest to expiry are evicted.
    #[serde(default = "default_max_keys")]
    pub max_keys: u64,
    /// Shared stores: remember each denial until its `retry_after`, and deny a repeat of the
    /// same request (same layers, keys and cost) before then without a round trip.
    #[serde(default = "yes")]
    pub deny_cache: bool,
}

fn default_prefix() -> String {
    DEFAULT_PREFIX.to_owned()
}
fn default_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_STORE_TIMEOUT)
}
fn default_max_keys() -> u64 {
    DEFAULT_MAX_KEYS
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Memory,
            url: None,
            urls: Vec::new(),
            prefix: default_prefix(),
            timeout: default_timeout(),
            on_error: OnStoreError::Fallback,
            clock: StoreClock::Redis,
            max_keys: DEFAULT_MAX_KEYS,
            deny_cache: true,
        }
    }
}

/// The `[headers]` section: which sets of response headers a decision renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// The IETF draft's `RateLimit-Policy` and `RateLimit` fields.
    #[serde(default = "yes")]
    pub ietf: bool,
    /// The widely used `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.
    #[serde(default = "yes")]
    pub legacy: bool,
    /// `Retry-After` on denial.
    #[serde(default = "yes")]
    pub retry_after: bool,
}

fn yes() -> bool {
    true
}

impl Default for HeadersConfig {
    fn default() -> Self {
        HeadersConfig {
            ietf: true,
            legacy: true,
            retry_after: true,
        }
    }
}

/// One `[[rules]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A unique name of letters, digits and `_.:-`; it names the rule in decisions and headers.
    pub name: String,
    /// Which requests the rule applies to; omitted, all of them.
    #[serde(rename = "match", default)]
    pub matching: MatchConfig,
    /// What to count by: `subject`, `ip`, `endpoint`, `global` or `header:NAME`.
    pub key: String,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Requests (cost units) per window, for the window algorithms.
    #[serde(default)]
    pub limit: Option<u64>,
    /// The window, for the window algorithms.
    #[serde(default)]
    pub window: Option<HumanDuration>,
    /// The burst size, for `token_bucket`.
    #[serde(default)]
    pub capacity: Option<u64>,
    /// Tokens per second, for `token_bucket`.
    #[serde(default)]
    pub refill_rate: Option<f64>,
    /// Parameters for callers with a given role, overriding some or all of the rule's own.
    #[serde(default)]
    pub roles: BTreeMap<String, RoleOverride>,
    /// Decided by the HTTP layer before the bearer token is verified, so that a flood of bad
    /// tokens is refused without a signature check each. Not for rules keyed on `subject`
    /// or restricted to roles (no caller is known yet).
    #[serde(default)]
    pub before_auth: bool,
    /// Shadow mode: the rule decides, counts and records what it would deny, but never denies.
    #[serde(default)]
    pub shadow: bool,
    /// Which responses stay counted: `all`, `failed` or `successful` (the others are refunded
    /// once the HTTP layer hears the status).
    #[serde(default)]
    pub count_responses: CountResponses,
    /// The statuses that are failures (codes and `"from-to"` ranges); `["400-599"]` by default.
    #[serde(default)]
    pub failed_statuses: Option<Vec<StatusItem>>,
    /// A response header whose integer value is added to the rule's count once the response
    /// is known (the cost a request turned out to have).
    #[serde(default)]
    pub cost_header: Option<String>,
}

/// One entry of `failed_statuses`: a status code, or a range `"500-599"` (or `"5xx"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StatusItem {
    /// One status.
    Code(i64),
    /// A range, `"from-to"` or `"Nxx"`.
    Range(String),
}

/// The HTTP methods a rule may match (RFC 9110 §9 and PATCH, RFC 5789).
pub const HTTP_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The `match` table of a rule. An empty or omitted list matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// HTTP methods, any case.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Path patterns: literal segments, `*`/`:name`/`{name}` for one segment, `**` for any.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Roles; a request without a role matches no rule that lists roles.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Per-role parameters of a rule; omitted ones are the rule's own.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleOverride {
    /// See [`RuleConfig::limit`].
    #[serde(default)]
    pub limit: Option<u64>,
    /// See [`RuleConfig::window`].
    #[serde(default)]
    pub window: Option<HumanDuration>,
    /// See [`RuleConfig::capacity`].
    #[serde(default)]
    pub capacity: Option<u64>,
    /// See [`RuleConfig::refill_rate`].
    #[serde(default)]
    pub refill_rate: Option<f64>,
}

/// A duration written as a number and a unit (`"250ms"`, `"1.5s"`, `"1m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `"250ms"`, `"1s"`, `"1.5m"` …; units `us` (or `µs`), `ms`, `s`, `m`, `h`, `d`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let s = text.trim();
        if s.starts_with('-') {
            return Err(format!("duration {text:?} is negative"));
        }
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| {
                format!("duration {text:?} has no unit; write e.g. \"250ms\", \"1s\" or \"1m\"")
            })?;
        let (number, unit) = s.split_at(split);
        let micros_per_unit: f64 = match unit.trim() {
            "us" | "µs" => 1.0,
            "ms" => 1e3,
            "s" => 1e6,
            "m" => 60e6,
            "h" => 3600e6,
            "d" => 86_400e6,
            other => {
                return Err(format!(
                    "duration {text:?} has an unknown unit {other:?}; use us, ms, s, m, h or d"
                ));
            }
        };
        let value: f64 = number
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| format!("duration {text:?} does not start with a number"))?;
        let micros = (value * micros_per_unit).round();
        if micros > u64::MAX as f64 / 2.0 {
            return Err(format!("duration {text:?} is too long"));
        }
        Ok(HumanDuration(Duration::from_micros(micros as u64)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_micros();
        if us == 0 {
            return f.write_str("0ms");
        }
        let units: [(u128, &str); 5] = [
            (86_400_000_000, "d"),
            (3_600_000_000, "h"),
            (60_000_000, "m"),
            (1_000_000, "s"),
            (1_000, "ms"),
        ];
        match units.iter().find(|(size, _)| us.is_multiple_of(*size)) {
            Some((size, unit)) => write!(f, "{}{unit}", us / size),
            None => write!(f, "{us}us"),
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"250ms\", \"1s\" or \"1m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                HumanDuration::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// serde reads a struct from a sequence field by field, so an array would silently pass for
/// a configuration; only an object is one.
fn not_an_object() -> Error {
    Error::config(
        "",
        "a JSON configuration must be an object ({ \"rules\": [...], ... }), not an array or a single value",
    )
}

impl Config {
    /// Reads a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let de = toml::Deserializer::parse(text).map_err(|e| toml_error("", &e, text))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let field = path_of(e.path());
            toml_error(&field, e.inner(), text)
        })
    }

    /// Reads a JSON document with the same structure.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        if !text.trim_start().starts_with('{') {
            return Err(not_an_object());
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
        de.end()
            .map_err(|e| Error::config("", format!("invalid JSON: {e}")))?;
        Ok(config)
    }

    /// Reads the same structure from an already parsed JSON value (a binding's dict or object).
    pub fn from_value(value: serde_json::Value) -> Result<Self, Error> {
        if !value.is_object() {
            return Err(not_an_object());
        }
        serde_path_to_error::deserialize(value).map_err(json_error)
    }

    /// Reads a file: JSON if its name ends in `.json`, TOML otherwise.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(
                "",
                format!("cannot read config file {}: {e}", path.display()),
            )
        })?;
        let is_json = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
        let parsed = if is_json {
            Self::from_json(&text)
        } else {
            Self::from_toml(&text)
        };
        let mut config = parsed.map_err(|e| e.in_file(path))?;
        config.base_dir = Some(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        );
        Ok(config)
    }

    /// Checks every value and compiles the rules, in configuration order.
    pub(crate) fn compile_rules(&self) -> Result<Vec<Rule>, Error> {
        if self.rules.len() > MAX_RULES {
            return Err(Error::config(
                "rules",
                format!(
                    "{} rules given; at most {MAX_RULES} are allowed",
                    self.rules.len()
                ),
            ));
        }
        let mut rules: Vec<Rule> = Vec::with_capacity(self.rules.len());
        for (index, rule) in self.rules.iter().enumerate() {
            let compiled = rule.compile(&format!("rules[{index}]"), self)?;
            if let Some(first) = rules.iter().position(|r| r.name() == compiled.name()) {
                return Err(Error::config(
                    format!("rules[{index}].name"),
                    format!(
                        "duplicate rule name {:?}: rules[{first}] has it already",
                        rule.name
                    ),
                ));
            }
            rules.push(compiled);
        }
        Ok(rules)
    }

    /// Checks the store section's values.
    pub(crate) fn check_store(&self) -> Result<(), Error> {
        let store = &self.store;
        if store.max_keys == 0 {
            return Err(Error::config("store.max_keys", "must be at least 1"));
        }
        if store.timeout.0.is_zero() {
            return Err(Error::config("store.timeout", "must be greater than zero"));
        }
        match store.kind {
            StoreKind::Memory => Ok(()),
            StoreKind::RedisCluster if store.urls.is_empty() => Err(Error::config(
                "store.urls",
                "the redis_cluster store needs seed nodes, e.g. [\"redis://127.0.0.1:7000\"]",
            )),
            StoreKind::RedisCluster => {
                for (i, url) in store.urls.iter().enumerate() {
                    check_redis_url(url)
                        .map_err(|m| Error::config(format!("store.urls[{i}]"), m))?;
                }
                Ok(())
            }
            StoreKind::Redis => match &store.url {
                None => Err(Error::config(
                    "store.url",
                    "the redis store needs a url, e.g. \"redis://127.0.0.1:6379\"",
                )),
                Some(url) => check_redis_url(url).map_err(|m| Error::config("store.url", m)),
            },
        }
    }
}

/// Says what is wrong with a Redis URL: `redis://[user[:password]@]host[:port][/db]`, or
/// `redis+unix:///path` / `unix:///path` for a Unix socket.
pub(crate) fn check_redis_url(url: &str) -> Result<(), String> {
    let example = "e.g. \"redis://127.0.0.1:6379\" or \"redis://:password@host:6379/0\"";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "{url:?} is not a Redis URL: it has no scheme ({example})"
        ));
    };
    match scheme {
        "redis" | "valkey" => {}
        "rediss" | "valkeys" => {
            return Err(format!(
                "{url:?}: TLS (rediss://) is not built in; connect with redis:// (through a TLS tunnel such as stunnel where the network needs one)"
            ));
        }
        "redis+unix" | "unix" => {
            return if rest.starts_with('/') {
                Ok(())
            } else {
                Err(format!(
                    "{url:?}: a Unix-socket URL names an absolute path, e.g. \"unix:///run/redis.sock\""
                ))
            };
        }
        other => {
            return Err(format!(
                "{url:?}: the scheme must be redis, redis+unix or unix, not {other:?} ({example})"
            ));
        }
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => return Err(format!("{url:?}: an IPv6 host needs its closing ']'")),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} names no host ({example})"));
    }
    if let Some(port) = port
        && port.parse::<u16>().ok().filter(|p| *p > 0).is_none()
    {
        return Err(format!(
            "{url:?}: the port must be a number from 1 to 65535, not {port:?}"
        ));
    }
    let path = &rest[authority.len()..];
    let db = path
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_start_matches('/');
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err(format!(
            "{url:?}: the path names the database by number (\"/0\"), not {db:?}"
        ));
    }
    Ok(())
}

/// serde's messages for a number of the wrong kind (`invalid value: integer `-5`, expected
/// u64`), as a sentence a person reads without knowing Rust's types.
fn humanize(message: &str) -> String {
    // serde names the Rust type it wanted (`expected struct AccessListConfig`): a person wants
    // to hear that a table or an object belongs there.
    if let Some(at) = message.find(", expected struct ") {
        let rest = &message[at + ", expected struct ".len()..];
        let tail = rest.find(' ').map_or("", |i| &rest[i..]);
        return format!("{}, expected a table (an object){tail}", &message[..at]);
    }
    let ranges = [
        ("u8", "from 0 to 255"),
        ("u16", "from 0 to 65535"),
        ("u32", "from 0 to 4294967295"),
        ("u64", "of 0 or more"),
        ("usize", "of 0 or more"),
        ("i64", "(positive or negative)"),
    ];
    for (ty, range) in ranges {
        let Some(head) = message
            .strip_suffix(&format!(", expected {ty}"))
            .or_else(|| {
                message
                    .find(&format!(", expected {ty} "))
                    .map(|at| &message[..at])
            })
        else {
            continue;
        };
        let tail = message[head.len()..]
            .strip_prefix(&format!(", expected {ty}"))
            .unwrap_or("");
        let got = if let Some(v) = head.strip_prefix("invalid value: integer ") {
            v.trim_matches('`').to_owned()
        } else if let Some(v) = head.strip_prefix("invalid type: floating point ") {
            v.trim_matches('`').to_owned()
        } else if let Some(v) = head.strip_prefix("invalid type: ") {
            v.to_owned()
        } else {
            continue;
        };
        return format!("must be a whole number {range}, got {got}{tail}");
    }
    message.to_owned()
}

fn path_of(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." { String::new() } else { text }
}

pub(crate) fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let field = path_of(e.path());
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        Error::config("", format!("invalid JSON: {inner}"))
    } else {
        // The position ("at line 1 column 57") means nothing to a caller who passed an object;
        // the field path says where.
        let text = inner.to_string();
        let text = match text.rfind(" at line ") {
            Some(at) if inner.line() > 0 => text[..at].to_owned(),
            _ => text,
        };
        Error::config(field, humanize(&text))
    }
}

fn toml_error(field: &str, e: &toml::de::Error, text: &str) -> Error {
    let mut message = humanize(e.message().trim_end());
    if let Some(span) = e.span() {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        message.push_str(&format!(" (line {line}, column {column})"));
    }
    if field.is_empty() && !message.starts_with("invalid TOML") {
        message = format!("invalid TOML: {message}");
    }
    Error::config(field, message)
}

impl RuleConfig {
    fn compile(&self, at: &str, config: &Config) -> Result<Rule, Error> {
        let http = &config.http;
        let fold_case = !http.case_sensitive;
        let name = self.name.as_str();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        {
            return Err(Error::config(
                format!("{at}.name"),
                format!("rule name {name:?} must be 1 to 64 letters, digits or _ . : -"),
            ));
        }
        let key = KeyKind::parse(&self.key).map_err(|m| Error::config(format!("{at}.key"), m))?;

        let mut methods = Vec::new();
        for (i, method) in self.matching.methods.iter().enumerate() {
            let upper = method.to_ascii_uppercase();
            if !is_token(method) || !HTTP_METHODS.contains(&upper.as_str()) {
                return Err(Error::config(
                    format!("{at}.match.methods[{i}]"),
                    format!(
                        "{method:?} is not an HTTP method; use one of {}",
                        HTTP_METHODS.join(", ")
                    ),
                ));
            }
            methods.push(upper.into_boxed_str());
        }
        let mut paths = Vec::new();
        for (i, pattern) in self.matching.paths.iter().enumerate() {
            paths.push(
                PathPattern::parse_folded(pattern, fold_case)
                    .map_err(|m| Error::config(format!("{at}.match.paths[{i}]"), m))?,
            );
        }
        let mut roles = Vec::new();
        for (i, role) in self.matching.roles.iter().enumerate() {
            if role.is_empty() {
                return Err(Error::config(
                    format!("{at}.match.roles[{i}]"),
                    "a role name must not be empty",
                ));
            }
            roles.push(role.clone().into_boxed_str());
        }

        let base = Params {
            limit: self.limit,
            window: self.window,
            capacity: self.capacity,
            refill_rate: self.refill_rate,
        };
        let default = base.quota(self.algorithm, at, None)?;
        if self.roles.len() > MAX_ROLE_OVERRIDES {
            return Err(Error::config(
                format!("{at}.roles"),
                format!(
                    "{} role overrides given; at most {MAX_ROLE_OVERRIDES} are allowed",
                    self.roles.len()
                ),
            ));
        }
        // The roles a caller can have: those a token can carry when `auth.roles` lists them
        // (and the default role), narrowed to the rule's own `match.roles`.
        let known_roles: Option<Vec<&str>> = config
            .auth
            .as_ref()
            .filter(|a| !a.roles.is_empty())
            .map(|a| {
                a.roles
                    .iter()
                    .map(String::as_str)
                    .chain(a.default_role.as_deref())
                    .collect()
            });
        let mut overrides = Vec::with_capacity(self.roles.len());
        for (role, o) in &self.roles {
            let at_role = format!("{at}.roles.{role}");
            if role.is_empty() {
                return Err(Error::config(at_role, "a role name must not be empty"));
            }
            if !self.matching.roles.is_empty() && !self.matching.roles.contains(role) {
                return Err(Error::config(
                    at_role,
                    format!(
                        "the rule only matches the roles {:?} (match.roles), so an override for {role:?} could never apply",
                        self.matching.roles
                    ),
                ));
            }
            if let Some(known) = &known_roles
                && !known.contains(&role.as_str())
            {
                return Err(Error::config(
                    at_role,
                    format!(
                        "{role:?} is not a role a caller can have: auth.roles lists {:?}{}",
                        config
                            .auth
                            .as_ref()
                            .map(|a| a.roles.clone())
                            .unwrap_or_default(),
                        config
                            .auth
                            .as_ref()
                            .and_then(|a| a.default_role.as_deref())
                            .map(|d| format!(" and the default role is {d:?}"))
                            .unwrap_or_default()
                    ),
                ));
            }
            let params = Params {
                limit: o.limit.or(base.limit),
                window: o.window.or(base.window),
                capacity: o.capacity.or(base.capacity),
                refill_rate: o.refill_rate.or(base.refill_rate),
            };
            // Fields the override sets that the algorithm does not take are errors too.
            Params {
                limit: o.limit,
                window: o.window,
                capacity: o.capacity,
                refill_rate: o.refill_rate,
            }
            .check_applicable(self.algorithm, &at_role)?;
            let quota = params.quota(self.algorithm, &at_role, Some(&base))?;
            overrides.push((role.clone().into_boxed_str(), quota));
        }
        let policies = std::iter::once(Policy::new(None, default))
            .chain(
                overrides
                    .into_iter()
                    .map(|(role, quota)| Policy::new(Some(role), quota)),
            )
            .collect();
        if self.before_auth {
            let why = if key == KeyKind::Subject {
                Some("a rule keyed on subject cannot be decided before the token names one")
            } else if !self.matching.roles.is_empty() || !self.roles.is_empty() {
                Some(
                    "a rule with roles (match.roles or role overrides) cannot be decided before the token names the role",
                )
            } else {
                None
            };
            if let Some(why) = why {
                return Err(Error::config(format!("{at}.before_auth"), why));
            }
        }
        let mut failed = StatusSet::empty();
        match &self.failed_statuses {
            None => failed = StatusSet::default(),
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let (from, to) = status_range(item)
                        .map_err(|m| Error::config(format!("{at}.failed_statuses[{i}]"), m))?;
                    failed = failed.with_range(from, to);
                }
            }
        }
        if self.failed_statuses.is_some() && self.count_responses == CountResponses::All {
            return Err(Error::config(
                format!("{at}.failed_statuses"),
                "has no effect unless count_responses is \"failed\" or \"successful\"",
            ));
        }
        let cost_header = match &self.cost_header {
            None => None,
            Some(name) if is_token(name) => Some(name.to_ascii_lowercase().into_boxed_str()),
            Some(name) => {
                return Err(Error::config(
                    format!("{at}.cost_header"),
                    format!("{name:?} is not an HTTP header name"),
                ));
            }
        };
        Ok(Rule::new(
            name.into(),
            RuleMatcher::new(methods, paths, roles).head_as_get(http.head_as_get),
            key,
            policies,
        )
        .before_auth(self.before_auth)
        .shadow(self.shadow || http.shadow)
        .responses(ResponseCounting {
            count: self.count_responses,
            failed,
            cost_header,
        }))
    }
}

/// One `failed_statuses` entry as an inclusive range of statuses.
fn status_range(item: &StatusItem) -> Result<(u16, u16), String> {
    let status = |n: i64| -> Result<u16, String> {
        u16::try_from(n)
            .ok()
            .filter(|s| (100..=999).contains(s))
            .ok_or_else(|| format!("{n} is not an HTTP status (100 to 999)"))
    };
    match item {
        StatusItem::Code(n) => status(*n).map(|s| (s, s)),
        StatusItem::Range(text) => {
            let t = text.trim();
            if t.len() == 3 && t.ends_with("xx") && t.as_bytes()[0].is_ascii_digit() {
                let class = i64::from(t.as_bytes()[0] - b'0');
                return Ok((status(class * 100)?, status(class * 100 + 99)?));
            }
            let parse = |s: &str| -> Result<u16, String> {
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| {
                        format!("{text:?} is not a status, a range \"500-599\" or a class \"5xx\"")
                    })
                    .and_then(status)
            };
            match t.split_once('-') {
                Some((a, b)) => {
                    let (from, to) = (parse(a)?, parse(b)?);
                    if from > to {
                        return Err(format!("{text:?}: the range runs backwards"));
                    }
                    Ok((from, to))
                }
                None => parse(t).map(|s| (s, s)),
            }
        }
    }
}

struct Params {
    limit: Option<u64>,
    window: Option<HumanDuration>,
    capacity: Option<u64>,
    refill_rate: Option<f64>,
}

impl Params {
    fn check_applicable(&self, algorithm: Algorithm, at: &str) -> Result<(), Error> {
        let wrong: &[(&str, bool)] = match algorithm {
            Algorithm::TokenBucket => &[
                ("limit", self.limit.is_some()),
                ("window", self.window.is_some()),
            ],
            _ => &[
                ("capacity", self.capacity.is_some()),
                ("refill_rate", self.refill_rate.is_some()),
            ],
        };
        if let Some((field, _)) = wrong.iter().find(|(_, set)| *set) {
            let takes = match algorithm {
                Algorithm::TokenBucket => "capacity and refill_rate",
                _ => "limit and window",
            };
            return Err(Error::config(
                format!("{at}.{field}"),
                format!("{algorithm} takes {takes}, not {field}"),
            ));
        }
        Ok(())
    }

    /// The quota these parameters describe; `inherited` is the rule's own parameters when these
    /// are a role's (so that a missing one is reported at the rule, where it belongs).
    fn quota(
        &self,
        algorithm: Algorithm,
        at: &str,
        inherited: Option<&Params>,
    ) -> Result<Quota, Error> {
        if inherited.is_none() {
            self.check_applicable(algorithm, at)?;
        }
        let field = |name: &str| format!("{at}.{name}");
        // A role's parameters fall back to the rule's, which were checked first: only the
        // rule's own can be missing.
        let missing = |name: &str| Error::config(field(name), format!("{algorithm} needs {name}"));
        let non_zero = |value: u64, name: &str| {
            NonZeroU64::new(value)
                .ok_or_else(|| Error::config(field(name), format!("{name} must be at least 1")))
        };
        match algorithm {
            Algorithm::TokenBucket => {
                let capacity = non_zero(
                    self.capacity.ok_or_else(|| missing("capacity"))?,
                    "capacity",
                )?;
                let rate = self.refill_rate.ok_or_else(|| missing("refill_rate"))?;
                Quota::token_bucket(capacity, rate).map_err(|e| {
                    let name = if e.message().contains("refill_rate") {
                        "refill_rate"
                    } else {
                        "capacity"
                    };
                    Error::config(field(name), e.message())
                })
            }
            _ => {
                let limit = non_zero(self.limit.ok_or_else(|| missing("limit"))?, "limit")?;
                let window = self.window.ok_or_else(|| missing("window"))?.0;
                if window.is_zero() {
                    return Err(Error::config(
                        field("window"),
                        "window must be greater than zero",
                    ));
                }
                let made = match algorithm {
                    Algorithm::FixedWindow => Quota::fixed_window(limit, window),
                    Algorithm::SlidingWindow => Quota::sliding_window(limit, window),
                    _ => Quota::sliding_window_counter(limit, window),
                };
                made.map_err(|e| Error::config(field("window"), e.message()))
            }
        }
    }
}
