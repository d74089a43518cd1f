//! The `[store]` section: where limiter state lives and what happens when it fails.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::common::HumanDuration;
use crate::error::Error;

/// The default cap on keys held by the memory store.
pub const DEFAULT_MAX_KEYS: u64 = 1_000_000;
/// The default deadline of one store call.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(50);
/// The default deadline of connecting to a shared store when the engine is built.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default prefix of the keys a shared store writes.
pub const DEFAULT_PREFIX: &str = "fw:";

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
    /// A Redis primary found through Redis Sentinel.
    RedisSentinel,
}

impl StoreKind {
    /// Whether the store is shared between processes (Redis, one node or a cluster).
    pub const fn is_shared(self) -> bool {
        !matches!(self, StoreKind::Memory)
    }

    /// `memory`, `redis`, `redis_cluster` or `redis_sentinel`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Redis => "redis",
            StoreKind::RedisCluster => "redis_cluster",
            StoreKind::RedisSentinel => "redis_sentinel",
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

impl OnStoreError {
    /// `fallback`, `allow`, `deny` or `error`.
    pub const fn as_str(self) -> &'static str {
        match self {
            OnStoreError::Fallback => "fallback",
            OnStoreError::Allow => "allow",
            OnStoreError::Deny => "deny",
            OnStoreError::Error => "error",
        }
    }
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

/// The `[store]` section: where limiter state lives, by `kind`. Each kind carries only its own
/// fields; the table stays flat (`kind = "redis"` beside `url = …`). Where a server goes is
/// refused under a kind that does not take it, by name, rather than ignored (a `url` under the
/// memory store is a forgotten `kind`); the shared stores' policy fields (`prefix`, `timeout`,
/// `on_error` …) are read under every kind, so that one file switches between the memory
/// store and Redis by its `kind` alone, and are checked only where they apply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "StoreTable")]
pub enum StoreConfig {
    /// `kind = "memory"` (the default): in this process.
    Memory(MemoryStoreConfig),
    /// `kind = "redis"`: one Redis server.
    Redis(RedisStoreConfig),
    /// `kind = "redis_cluster"`: a Redis Cluster.
    RedisCluster(RedisClusterConfig),
    /// `kind = "redis_sentinel"`: the primary that Redis Sentinel names.
    RedisSentinel(RedisSentinelConfig),
}

/// The memory store's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryStoreConfig {
    /// The most keys it holds; past it, the keys whose state is nearest to fresh are evicted
    /// first and keys that are denying last.
    pub max_keys: u64,
}

/// A single Redis server's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisStoreConfig {
    /// Its URL (`redis://host:port[/db]`).
    pub url: String,
    /// What every shared store has.
    pub shared: SharedStoreConfig,
}

/// A Redis Cluster's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisClusterConfig {
    /// Seed node URLs.
    pub urls: Vec<String>,
    /// What every shared store has.
    pub shared: SharedStoreConfig,
}

/// A Sentinel-watched primary's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSentinelConfig {
    /// The sentinels' URLs (`redis://host:26379`); any one that answers names the primary.
    pub sentinels: Vec<String>,
    /// The name the sentinels monitor the primary by (`sentinel monitor NAME …`).
    pub master: String,
    /// What every shared store has.
    pub shared: SharedStoreConfig,
}

/// The fields every shared (Redis) store has.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedStoreConfig {
    /// Prefix of every key it writes.
    pub prefix: String,
    /// Deadline of one call.
    pub timeout: HumanDuration,
    /// Deadline of connecting and loading the script when the engine is built.
    pub connect_timeout: HumanDuration,
    /// The share of each limit the in-process fallback grants while the store is down
    /// (`0 < share <= 1`; `1 / N` for N processes sharing one Redis keeps their sum near the
    /// limit).
    pub fallback_share: f64,
    /// What to do when the store fails or is slow.
    pub on_error: OnStoreError,
    /// Whose clock scripts use.
    pub clock: StoreClock,
    /// Remember each denial until its `retry_after`, and deny a repeat of the same request
    /// (same layers, keys and cost) before then without a round trip.
    pub deny_cache: bool,
    /// The most keys the in-process fallback holds.
    pub max_keys: u64,
}

impl Default for SharedStoreConfig {
    fn default() -> Self {
        SharedStoreConfig {
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: HumanDuration(DEFAULT_STORE_TIMEOUT),
            connect_timeout: HumanDuration(DEFAULT_CONNECT_TIMEOUT),
            fallback_share: 1.0,
            on_error: OnStoreError::Fallback,
            clock: StoreClock::Redis,
            deny_cache: true,
            max_keys: DEFAULT_MAX_KEYS,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Memory(MemoryStoreConfig {
            max_keys: DEFAULT_MAX_KEYS,
        })
    }
}

impl StoreConfig {
    /// One Redis server at `url`, every other field its default.
    pub fn redis(url: impl Into<String>) -> Self {
        StoreConfig::Redis(RedisStoreConfig {
            url: url.into(),
            shared: SharedStoreConfig::default(),
        })
    }

    /// Which kind it is.
    pub const fn kind(&self) -> StoreKind {
        match self {
            StoreConfig::Memory(_) => StoreKind::Memory,
            StoreConfig::Redis(_) => StoreKind::Redis,
            StoreConfig::RedisCluster(_) => StoreKind::RedisCluster,
            StoreConfig::RedisSentinel(_) => StoreKind::RedisSentinel,
        }
    }

    /// A shared store's fields (`None` for the memory store).
    pub const fn shared(&self) -> Option<&SharedStoreConfig> {
        match self {
            StoreConfig::Memory(_) => None,
            StoreConfig::Redis(r) => Some(&r.shared),
            StoreConfig::RedisCluster(c) => Some(&c.shared),
            StoreConfig::RedisSentinel(s) => Some(&s.shared),
        }
    }

    /// [`shared`](Self::shared), to change.
    pub fn shared_mut(&mut self) -> Option<&mut SharedStoreConfig> {
        match self {
            StoreConfig::Memory(_) => None,
            StoreConfig::Redis(r) => Some(&mut r.shared),
            StoreConfig::RedisCluster(c) => Some(&mut c.shared),
            StoreConfig::RedisSentinel(s) => Some(&mut s.shared),
        }
    }

    /// Says what is wrong with the section's values, by field (`store.url` …).
    pub fn check(&self) -> Result<(), Error> {
        if self.max_keys() == 0 {
            return Err(Error::config("store.max_keys", "must be at least 1"));
        }
        let Some(shared) = self.shared() else {
            return Ok(());
        };
        if shared.timeout.0.is_zero() {
            return Err(Error::config("store.timeout", "must be greater than zero"));
        }
        if shared.connect_timeout.0.is_zero() {
            return Err(Error::config(
                "store.connect_timeout",
                "must be greater than zero",
            ));
        }
        let share = shared.fallback_share;
        if !(share > 0.0 && share <= 1.0) {
            return Err(Error::config(
                "store.fallback_share",
                format!(
                    "must be a share of each limit above 0 and at most 1 (e.g. 0.25 for 4 processes), got {share}"
                ),
            ));
        }
        match self {
            StoreConfig::Memory(_) => Ok(()),
            StoreConfig::RedisCluster(c) if c.urls.is_empty() => Err(Error::config(
                "store.urls",
                "the redis_cluster store needs seed nodes, e.g. [\"redis://127.0.0.1:7000\"]",
            )),
            StoreConfig::RedisCluster(c) => check_redis_urls("store.urls", &c.urls),
            StoreConfig::Redis(r) if r.url.is_empty() => Err(Error::config(
                "store.url",
                "the redis store needs a url, e.g. \"redis://127.0.0.1:6379\"",
            )),
            StoreConfig::Redis(r) => {
                check_redis_url(&r.url).map_err(|m| Error::config("store.url", m))
            }
            StoreConfig::RedisSentinel(s) if s.sentinels.is_empty() => Err(Error::config(
                "store.sentinels",
                "the redis_sentinel store needs the sentinels' URLs, e.g. [\"redis://127.0.0.1:26379\"]",
            )),
            StoreConfig::RedisSentinel(s) if s.master.is_empty() => Err(Error::config(
                "store.master",
                "the redis_sentinel store needs the name the sentinels monitor the primary by, e.g. \"mymaster\"",
            )),
            StoreConfig::RedisSentinel(s) => check_redis_urls("store.sentinels", &s.sentinels),
        }
    }

    /// The most keys the memory store (or a shared store's fallback) holds.
    pub const fn max_keys(&self) -> u64 {
        match self {
            StoreConfig::Memory(m) => m.max_keys,
            StoreConfig::Redis(r) => r.shared.max_keys,
            StoreConfig::RedisCluster(c) => c.shared.max_keys,
            StoreConfig::RedisSentinel(s) => s.shared.max_keys,
        }
    }
}

/// The `[store]` table as written: every kind's fields, each optional, sorted into a
/// [`StoreConfig`] by `kind`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreTable {
    #[serde(default)]
    kind: StoreKind,
    url: Option<String>,
    urls: Option<Vec<String>>,
    sentinels: Option<Vec<String>>,
    master: Option<String>,
    prefix: Option<String>,
    timeout: Option<HumanDuration>,
    connect_timeout: Option<HumanDuration>,
    fallback_share: Option<f64>,
    on_error: Option<OnStoreError>,
    clock: Option<StoreClock>,
    deny_cache: Option<bool>,
    max_keys: Option<u64>,
}

impl TryFrom<StoreTable> for StoreConfig {
    type Error = String;

    fn try_from(t: StoreTable) -> Result<Self, String> {
        let kind = t.kind;
        let refuse = |field: &str, belongs: &str| {
            Err(format!(
                "`{field}` is a field of {belongs}, and this store's kind is {:?}",
                kind.as_str()
            ))
        };
        let max_keys = t.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
        if kind != StoreKind::RedisSentinel && (t.sentinels.is_some() || t.master.is_some()) {
            let field = if t.sentinels.is_some() {
                "sentinels"
            } else {
                "master"
            };
            return refuse(
                field,
                if kind == StoreKind::Memory {
                    "kind = \"redis_sentinel\" (did you mean to set kind?)"
                } else {
                    "kind = \"redis_sentinel\""
                },
            );
        }
        if kind == StoreKind::Memory {
            if t.url.is_some() {
                return refuse("url", "kind = \"redis\" (did you mean to set kind?)");
            }
            if t.urls.is_some() {
                return refuse(
                    "urls",
                    "kind = \"redis_cluster\" (did you mean to set kind?)",
                );
            }
            return Ok(StoreConfig::Memory(MemoryStoreConfig { max_keys }));
        }
        let defaults = SharedStoreConfig::default();
        let shared = SharedStoreConfig {
            prefix: t.prefix.unwrap_or(defaults.prefix),
            timeout: t.timeout.unwrap_or(defaults.timeout),
            connect_timeout: t.connect_timeout.unwrap_or(defaults.connect_timeout),
            fallback_share: t.fallback_share.unwrap_or(defaults.fallback_share),
            on_error: t.on_error.unwrap_or(defaults.on_error),
            clock: t.clock.unwrap_or(defaults.clock),
            deny_cache: t.deny_cache.unwrap_or(defaults.deny_cache),
            max_keys,
        };
        // A missing url (or seed list) is left empty here and named by the engine's checks
        // (`store.url`: "the redis store needs a url"), with the other values' checks.
        match kind {
            StoreKind::RedisSentinel => match (t.url, t.urls) {
                (Some(_), _) => refuse(
                    "url",
                    "kind = \"redis\" (Sentinel names the primary: give `sentinels` and `master`)",
                ),
                (_, Some(_)) => refuse(
                    "urls",
                    "kind = \"redis_cluster\" (Sentinel names the primary: give `sentinels` and `master`)",
                ),
                (None, None) => Ok(StoreConfig::RedisSentinel(RedisSentinelConfig {
                    sentinels: t.sentinels.unwrap_or_default(),
                    master: t.master.unwrap_or_default(),
                    shared,
                })),
            },
            StoreKind::Redis => match t.urls {
                Some(_) => refuse("urls", "kind = \"redis_cluster\" (one server takes `url`)"),
                None => Ok(StoreConfig::Redis(RedisStoreConfig {
                    url: t.url.unwrap_or_default(),
                    shared,
                })),
            },
            _ => match t.url {
                Some(_) => refuse("url", "kind = \"redis\" (a cluster takes `urls`)"),
                None => Ok(StoreConfig::RedisCluster(RedisClusterConfig {
                    urls: t.urls.unwrap_or_default(),
                    shared,
                })),
            },
        }
    }
}

/// Says what is wrong with the first bad URL of `urls`, named `field[i]`.
fn check_redis_urls(field: &str, urls: &[String]) -> Result<(), Error> {
    for (i, url) in urls.iter().enumerate() {
        check_redis_url(url).map_err(|m| Error::config(format!("{field}[{i}]"), m))?;
    }
    Ok(())
}

/// Says what is wrong with a Redis URL: `redis://[user[:password]@]host[:port][/db]`, or
/// `redis+unix:///path` / `unix:///path` for a Unix socket.
fn check_redis_url(url: &str) -> Result<(), String> {
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
