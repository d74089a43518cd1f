//! The `[http]` section: how requests are read, and who is let through or turned away.
//!
//! ```toml
//! [http]
//! trusted_proxies = ["10.0.0.0/8"]       # CIDRs whose forwarding header is believed
//! forwarded_header = "x-forwarded-for"   # or "forwarded" (RFC 7239)
//! ipv6_subnet = 56                       # IPv6 clients are counted by this prefix
//! case_sensitive = false                 # match paths as the host routes them
//! head_as_get = true                     # a rule for GET applies to HEAD
//! public_paths = ["/health", "/docs/**"] # no token needed (still limited)
//! skip_paths = ["/metrics"]              # left alone entirely
//! shadow = false                         # every rule decides and records, none denies
//!
//! [http.allow]                           # skips every limit
//! addresses = ["192.0.2.0/24"]
//! subjects = ["ops-bot"]
//! [http.deny]                            # answered 403
//! headers = { "user-agent" = ["BadBot/1.0"] }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::HeaderLookup;
use super::address::{ForwardedHeader, NetworkSet};
use crate::error::Error;
use crate::limit::{PathPattern, RequestPath, is_token};

/// The default prefix length IPv6 clients are counted by (express-rate-limit's default).
pub const DEFAULT_IPV6_SUBNET: u8 = 56;

/// The `[http]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Networks (CIDRs or single addresses) of the proxies whose forwarding header is
    /// believed; none by default, so the socket peer is the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Required to trust a network covering every address (`0.0.0.0/0`, `::/0`): then any
    /// client can choose the address it is limited by, unless every peer really is a proxy.
    #[serde(default)]
    pub trust_all: bool,
    /// The forwarding header trusted proxies write: `x-forwarded-for` or `forwarded`.
    #[serde(default)]
    pub forwarded_header: ForwardedHeader,
    /// IPv6 clients are counted by the network of this prefix length (1 to 128).
    #[serde(default = "default_ipv6_subnet")]
    pub ipv6_subnet: u8,
    /// Whether paths are matched case-sensitively (for hosts that route that way).
    #[serde(default)]
    pub case_sensitive: bool,
    /// Whether a rule whose methods list `GET` applies to `HEAD` too (hosts answer `HEAD` with
    /// the `GET` handler).
    #[serde(default = "yes")]
    pub head_as_get: bool,
    /// Path patterns (the rules' syntax) that need no bearer token; still rate-limited.
    #[serde(default)]
    pub public_paths: Vec<String>,
    /// Path patterns the HTTP layer leaves alone: no token, no limit, nothing recorded.
    #[serde(default)]
    pub skip_paths: Vec<String>,
    /// Shadow mode for every rule: each decides, counts and records what it would deny, but
    /// none denies.
    #[serde(default)]
    pub shadow: bool,
    /// Callers that skip every limit (they still need a valid token).
    #[serde(default)]
    pub allow: AccessListConfig,
    /// Callers answered 403.
    #[serde(default)]
    pub deny: AccessListConfig,
}

fn default_ipv6_subnet() -> u8 {
    DEFAULT_IPV6_SUBNET
}

fn yes() -> bool {
    true
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            trusted_proxies: Vec::new(),
            trust_all: false,
            forwarded_header: ForwardedHeader::default(),
            ipv6_subnet: DEFAULT_IPV6_SUBNET,
            case_sensitive: false,
            head_as_get: true,
            public_paths: Vec::new(),
            skip_paths: Vec::new(),
            shadow: false,
            allow: AccessListConfig::default(),
            deny: AccessListConfig::default(),
        }
    }
}

/// An allow or a deny list: a request matches it when any entry names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessListConfig {
    /// Client addresses or networks (`192.0.2.7`, `10.0.0.0/8`, `2001:db8::/32`).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Verified subjects.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Roles of verified callers.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Request header values by header name (`{ "x-api-key" = ["k1", "k2"] }`); values
    /// compare exactly, names case-insensitively.
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
}

impl AccessListConfig {
    /// Whether the list names nothing.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
            && self.subjects.is_empty()
            && self.roles.is_empty()
            && self.headers.values().all(Vec::is_empty)
    }
}

/// The allow and deny lists together, as [`Engine::access_lists`](crate::Engine::access_lists)
/// answers them and [`Engine::set_access_lists`](crate::Engine::set_access_lists) takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLists {
    /// Callers that skip every limit.
    #[serde(default)]
    pub allow: AccessListConfig,
    /// Callers answered 403.
    #[serde(default)]
    pub deny: AccessListConfig,
}

impl AccessLists {
    /// Reads lists from JSON text (`{"allow": {...}, "deny": {...}}`); an unknown field or a
    /// value of the wrong type is an `invalid_config` error naming it (`deny.addresses[0]`).
    /// The entries themselves are checked by
    /// [`Engine::set_access_lists`](crate::Engine::set_access_lists).
    pub fn from_json(text: &str) -> Result<Self, Error> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::config("", format!("invalid JSON: {e}")))?;
        Self::from_value(value)
    }

    /// Reads lists from a parsed JSON value (a binding's dict or object).
    pub fn from_value(value: serde_json::Value) -> Result<Self, Error> {
        if !value.is_object() {
            return Err(Error::config(
                "",
                "access lists must be an object ({ \"allow\": {...}, \"deny\": {...} })",
            ));
        }
        serde_path_to_error::deserialize(value).map_err(crate::common::json_error)
    }

    /// The lists as compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("access lists serialise to JSON")
    }
}

/// One compiled list.
#[derive(Debug, Clone, Default)]
pub(crate) struct AccessList {
    networks: NetworkSet,
    subjects: HashSet<Box<str>>,
    roles: HashSet<Box<str>>,
    /// (lower-case name, values).
    headers: Vec<(Box<str>, HashSet<Box<str>>)>,
}

impl AccessList {
    fn compile(config: &AccessListConfig, at: &str) -> Result<Self, Error> {
        let mut list = AccessList::default();
        for (i, spec) in config.addresses.iter().enumerate() {
            list.networks
                .add(spec)
                .map_err(|m| Error::config(format!("{at}.addresses[{i}]"), m))?;
        }
        for (what, values, out) in [
            ("subjects", &config.subjects, &mut list.subjects),
            ("roles", &config.roles, &mut list.roles),
        ] {
            for (i, value) in values.iter().enumerate() {
                if value.is_empty() {
                    return Err(Error::config(
                        format!("{at}.{what}[{i}]"),
                        "must not be empty",
                    ));
                }
                out.insert(value.as_str().into());
            }
        }
        for (name, values) in &config.headers {
            if !is_token(name) {
                return Err(Error::config(
                    format!("{at}.headers"),
                    format!("{name:?} is not an HTTP header name"),
                ));
            }
            if values.is_empty() {
                continue;
            }
            list.headers.push((
                name.to_ascii_lowercase().into(),
                values.iter().map(|v| v.as_str().into()).collect(),
            ));
        }
        Ok(list)
    }

    /// Whether the list names nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.networks.is_empty()
            && self.subjects.is_empty()
            && self.roles.is_empty()
            && self.headers.is_empty()
    }

    /// Whether it names the request's address or one of its header values.
    pub(crate) fn names_request(
        &self,
        address: Option<IpAddr>,
        headers: &dyn HeaderLookup,
    ) -> bool {
        address.is_some_and(|a| self.networks.contains(a))
            || self
                .headers
                .iter()
                .any(|(name, values)| headers.header(name).is_some_and(|v| values.contains(v)))
    }

    /// Whether it names the verified caller.
    pub(crate) fn names_caller(&self, subject: &str, role: Option<&str>) -> bool {
        self.subjects.contains(subject) || role.is_some_and(|r| self.roles.contains(r))
    }

    /// Whether any entry is an address network (the client address must be worked out).
    pub(crate) fn has_addresses(&self) -> bool {
        !self.networks.is_empty()
    }

    /// The header names it looks at.
    pub(crate) fn header_names(&self) -> impl Iterator<Item = &str> {
        self.headers.iter().map(|(n, _)| &**n)
    }
}

/// Both lists, compiled.
#[derive(Debug, Clone, Default)]
pub(crate) struct CompiledAccess {
    pub(crate) source: AccessLists,
    pub(crate) allow: AccessList,
    pub(crate) deny: AccessList,
}

impl CompiledAccess {
    /// Compiles `lists`; `at` names the section in errors (`http`, or `` for lists given on
    /// their own).
    pub(crate) fn compile(lists: &AccessLists, at: &str) -> Result<Self, Error> {
        let field = |list: &str| {
            if at.is_empty() {
                list.to_owned()
            } else {
                format!("{at}.{list}")
            }
        };
        Ok(CompiledAccess {
            source: lists.clone(),
            allow: AccessList::compile(&lists.allow, &field("allow"))?,
            deny: AccessList::compile(&lists.deny, &field("deny"))?,
        })
    }
}

/// The `[http]` section, checked and compiled.
#[derive(Debug, Clone)]
pub(crate) struct HttpSettings {
    pub(crate) trusted: NetworkSet,
    pub(crate) forwarded_header: ForwardedHeader,
    pub(crate) ipv6_subnet: u8,
    pub(crate) fold_case: bool,
    pub(crate) head_as_get: bool,
    pub(crate) public_paths: Vec<PathPattern>,
    pub(crate) skip_paths: Vec<PathPattern>,
}

impl HttpSettings {
    /// Checks and compiles `config`; errors name the field (`http.trusted_proxies[1]`).
    pub(crate) fn compile(config: &HttpConfig) -> Result<Self, Error> {
        let mut trusted = NetworkSet::default();
        for (i, spec) in config.trusted_proxies.iter().enumerate() {
            trusted
                .add(spec)
                .map_err(|m| Error::config(format!("http.trusted_proxies[{i}]"), m))?;
        }
        if trusted.covers_everything() && !config.trust_all {
            return Err(Error::config(
                "http.trusted_proxies",
                "trusts every address, so any client could choose the address it is limited by \
                 with a forwarding header: list your proxies' networks, or set \
                 http.trust_all = true if every peer really is a proxy of yours",
            ));
        }
        if !(1..=128).contains(&config.ipv6_subnet) {
            return Err(Error::config(
                "http.ipv6_subnet",
                format!(
                    "must be a prefix length from 1 to 128 (56 counts each customer's /56 as one client), got {}",
                    config.ipv6_subnet
                ),
            ));
        }
        let fold_case = !config.case_sensitive;
        let patterns = |paths: &[String], field: &str| -> Result<Vec<PathPattern>, Error> {
            paths
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    PathPattern::parse_folded(p, fold_case)
                        .map_err(|m| Error::config(format!("http.{field}[{i}]"), m))
                })
                .collect()
        };
        Ok(HttpSettings {
            trusted,
            forwarded_header: config.forwarded_header,
            ipv6_subnet: config.ipv6_subnet,
            fold_case,
            head_as_get: config.head_as_get,
            public_paths: patterns(&config.public_paths, "public_paths")?,
            skip_paths: patterns(&config.skip_paths, "skip_paths")?,
        })
    }

    /// Whether `path` (normal) is one of `patterns`.
    pub(crate) fn any_matches(patterns: &[PathPattern], path: &str) -> bool {
        if patterns.is_empty() {
            return false;
        }
        let parsed = RequestPath::parse(path);
        patterns.iter().any(|p| p.matches(&parsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(toml: &str) -> Result<HttpSettings, Error> {
        let config: HttpConfig = toml::from_str(toml).expect("parses");
        HttpSettings::compile(&config)
    }

    #[test]
    fn defaults() {
        let s = compile("").unwrap();
        assert!(s.trusted.is_empty());
        assert_eq!(s.ipv6_subnet, 56);
        assert!(s.fold_case && s.head_as_get);
        assert_eq!(s.forwarded_header, ForwardedHeader::XForwardedFor);
    }

    #[test]
    fn lists_from_json() {
        let lists = AccessLists::from_json(r#"{"deny": {"addresses": ["10.0.0.0/8"]}}"#).unwrap();
        assert_eq!(lists.deny.addresses, ["10.0.0.0/8"]);
        assert_eq!(AccessLists::from_json(&lists.to_json()).unwrap(), lists);
        let e = AccessLists::from_json(r#"{"deny": {"addresses": "10.0.0.1"}}"#).unwrap_err();
        assert_eq!(e.field(), Some("deny.addresses"));
        let e = AccessLists::from_json(r#"{"block": {}}"#).unwrap_err();
        assert!(e.message().contains("block"), "{e}");
        assert!(AccessLists::from_json("[]").is_err());
    }

    #[test]
    fn errors_name_the_field() {
        let e = compile(r#"trusted_proxies = ["10.0.0.0/8", "nope"]"#).unwrap_err();
        assert_eq!(e.field(), Some("http.trusted_proxies[1]"));
        let e = compile(r#"trusted_proxies = ["0.0.0.0/0"]"#).unwrap_err();
        assert!(e.message().contains("trust_all"), "{e}");
        assert!(compile("trusted_proxies = [\"::/0\"]\ntrust_all = true").is_ok());
        let e = compile("ipv6_subnet = 0").unwrap_err();
        assert_eq!(e.field(), Some("http.ipv6_subnet"));
        let e = compile(r#"public_paths = ["health"]"#).unwrap_err();
        assert_eq!(e.field(), Some("http.public_paths[0]"));
        let lists = |toml: &str| {
            let config: HttpConfig = toml::from_str(toml).expect("parses");
            CompiledAccess::compile(
                &AccessLists {
                    allow: config.allow,
                    deny: config.deny,
                },
                "http",
            )
        };
        let e = lists("[deny]\naddresses = [\"10.0.0.1/8\"]").unwrap_err();
        assert_eq!(e.field(), Some("http.deny.addresses[0]"));
        let e = lists("[allow]\nheaders = { \"bad name\" = [\"x\"] }").unwrap_err();
        assert_eq!(e.field(), Some("http.allow.headers"));
        let e = lists("[allow]\nsubjects = [\"\"]").unwrap_err();
        assert_eq!(e.field(), Some("http.allow.subjects[0]"));
        assert!(toml::from_str::<HttpConfig>(r#"forwarded_header = "x-real-ip""#).is_err());
    }
}
