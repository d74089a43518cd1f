//! The `[store]` section: where limiter state lives and what happens when it fails.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::HumanDuration;

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
}

impl StoreKind {
    /// Whether the store is shared between processes (Redis, one node or a cluster).
    pub const fn is_shared(self) -> bool {
        !matches!(self, StoreKind::Memory)
    }

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
    /// Deadline of connecting and loading the script when the engine is built (shared stores).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// The share of each limit the in-process fallback grants while the shared store is down
    /// (`0 < share <= 1`; `1 / N` for N processes sharing one Redis keeps their sum near the
    /// limit).
    #[serde(default = "default_share")]
    pub fallback_share: f64,
    /// What to do when the store fails or is slow.
    #[serde(default)]
    pub on_error: OnStoreError,
    /// Whose clock scripts use.
    #[serde(default)]
    pub clock: StoreClock,
    /// The most keys the memory store holds; past it, the least used keys are evicted first
    /// (the nearest to expiry among equals) and keys that are denying last.
    #[serde(default = "default_max_keys")]
    pub max_keys: u64,
    /// Shared stores: remember each denial until its `retry_after`, and deny a repeat of the
    /// same request (same layers, keys and cost) before then without a round trip.
    #[serde(default = "crate::common::yes")]
    pub deny_cache: bool,
}

fn default_prefix() -> String {
    DEFAULT_PREFIX.to_owned()
}
fn default_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_STORE_TIMEOUT)
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_CONNECT_TIMEOUT)
}
fn default_share() -> f64 {
    1.0
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
            connect_timeout: default_connect_timeout(),
            fallback_share: 1.0,
            on_error: OnStoreError::Fallback,
            clock: StoreClock::Redis,
            max_keys: DEFAULT_MAX_KEYS,
            deny_cache: true,
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
