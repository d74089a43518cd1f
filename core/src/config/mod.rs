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

mod rules;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::balance::ServiceConfig;
use crate::error::Error;
pub use crate::http::HttpConfig;
use crate::limit::Rule;

pub(crate) use crate::common::json_error;
pub use crate::common::{HeadersConfig, HumanDuration};
use crate::common::{not_an_object, path_of, toml_error};
pub use crate::monitor::MonitorConfig;
pub use crate::store::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_KEYS, DEFAULT_PREFIX, DEFAULT_STORE_TIMEOUT,
    MemoryStoreConfig, OnStoreError, RedisClusterConfig, RedisStoreConfig, SharedStoreConfig,
    StoreClock, StoreConfig, StoreKind,
};
pub use rules::{
    Align, DEFAULT_MAX_HOLD, HTTP_METHODS, MatchConfig, RoleOverride, RuleConfig, StatusItem,
    WindowLength,
};

pub use crate::common::{MAX_ROLE_OVERRIDES, MAX_RULES};

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
}
