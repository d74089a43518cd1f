//! The [`Authenticator`]: built from `[auth]` (keys, accepted algorithms, claim rules, cache),
//! it takes a token from an `Authorization` value and answers it from the cache or verifies it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::cache::TokenCache;
use super::claims::{check_path, shown};
use super::config::AuthConfig;
use super::identity::Identity;
use super::keys::{AlgSet, KeySet, alg_by_name};
use crate::clock::Timestamp;
use crate::error::{Error, ErrorKind};

/// Verifies bearer tokens under one `[auth]` configuration. `Send + Sync`; an engine holds one
/// and replaces it whole on reload.
#[derive(Debug)]
pub struct Authenticator {
    pub(super) keys: KeySet,
    pub(super) allowed: AlgSet,
    pub(super) issuers: Vec<String>,
    pub(super) audiences: Vec<String>,
    pub(super) leeway_us: u64,
    pub(super) require_exp: bool,
    pub(super) required: Vec<String>,
    pub(super) subject_claim: String,
    pub(super) role_claim: Option<String>,
    pub(super) roles: Vec<String>,
    pub(super) role_map: HashMap<String, String>,
    pub(super) default_role: Option<String>,
    max_token_bytes: usize,
    bare_token: bool,
    realm: String,
    cache: Option<TokenCache>,
}

impl Authenticator {
    /// Builds an authenticator; key files are read relative to the working directory and
    /// `secret_env` from the process environment.
    pub fn new(config: &AuthConfig) -> Result<Self, Error> {
        Self::build(config, None, &|name| std::env::var(name).ok())
    }

    /// Builds an authenticator with relative key files read from `base_dir`.
    pub fn with_base_dir(config: &AuthConfig, base_dir: &Path) -> Result<Self, Error> {
        Self::build(config, Some(base_dir), &|name| std::env::var(name).ok())
    }

    pub(crate) fn build(
        config: &AuthConfig,
        base_dir: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        if config.algorithms.is_empty() {
            return Err(Error::config(
                "auth.algorithms",
                "list the accepted algorithms, e.g. [\"RS256\"]",
            ));
        }
        let mut allowed = AlgSet::empty();
        for (i, name) in config.algorithms.iter().enumerate() {
            let alg = alg_by_name(name).ok_or_else(|| {
                Error::config(
                    format!("auth.algorithms[{i}]"),
                    if name.eq_ignore_ascii_case("none") {
                        "\"none\" (unsigned tokens) is never accepted".to_owned()
                    } else {
                        format!(
                            "unknown algorithm {name:?}; use HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"
                        )
                    },
                )
            })?;
            allowed.insert(alg);
        }
        for (field, values) in [("issuer", &config.issuer), ("audience", &config.audience)] {
            if let Some(i) = values.iter().position(String::is_empty) {
                return Err(Error::config(
                    format!("auth.{field}[{i}]"),
                    "must not be empty",
                ));
            }
        }
        check_path(&config.subject_claim, "auth.subject_claim")?;
        if let Some(path) = &config.role_claim {
            check_path(path, "auth.role_claim")?;
        }
        for (i, path) in config.required_claims.iter().enumerate() {
            check_path(path, &format!("auth.required_claims[{i}]"))?;
        }
        for (i, role) in config.roles.iter().enumerate() {
            if role.is_empty() {
                return Err(Error::config(
                    format!("auth.roles[{i}]"),
                    "must not be empty",
                ));
            }
            if config.roles[..i].contains(role) {
                return Err(Error::config(
                    format!("auth.roles[{i}]"),
                    format!("duplicate role {role:?}"),
                ));
            }
        }
        for (from, to) in &config.role_map {
            if to.is_empty() || (!config.roles.is_empty() && !config.roles.contains(to)) {
                return Err(Error::config(
                    format!("auth.role_map.{from}"),
                    format!("maps to {to:?}, which is not one of auth.roles"),
                ));
            }
        }
        if config.default_role.as_deref() == Some("") {
            return Err(Error::config("auth.default_role", "must not be empty"));
        }
        if !(64..=1 << 20).contains(&config.max_token_bytes) {
            return Err(Error::config(
                "auth.max_token_bytes",
                format!(
                    "must be between 64 and 1048576, got {}",
                    config.max_token_bytes
                ),
            ));
        }
        if config.realm.is_empty()
            || !config
                .realm
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return Err(Error::config(
                "auth.realm",
                "must be printable ASCII without '\"' or '\\'",
            ));
        }
        let cache = match &config.cache {
            None => None,
            Some(c) => {
                if c.max_entries == 0 {
                    return Err(Error::config(
                        "auth.cache.max_entries",
                        "must be at least 1",
                    ));
                }
                if c.max_bytes < 4096 {
                    return Err(Error::config(
                        "auth.cache.max_bytes",
                        "must be at least 4096",
                    ));
                }
                if c.ttl.0.is_zero() {
                    return Err(Error::config("auth.cache.ttl", "must be greater than zero"));
                }
                Some(TokenCache::new(
                    c.max_entries,
                    c.max_bytes,
                    u64::try_from(c.ttl.0.as_micros()).unwrap_or(u64::MAX),
                ))
            }
        };
        let keys = KeySet::load(&config.keys, &config.jwks, allowed, base_dir, env)?;
        Ok(Authenticator {
            keys,
            allowed,
            issuers: config.issuer.clone(),
            audiences: config.audience.clone(),
            leeway_us: u64::try_from(config.leeway.0.as_micros()).unwrap_or(u64::MAX),
            require_exp: config.require_exp,
            required: config.required_claims.clone(),
            subject_claim: config.subject_claim.clone(),
            role_claim: config.role_claim.clone(),
            roles: config.roles.clone(),
            role_map: config
                .role_map
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            default_role: config.default_role.clone(),
            max_token_bytes: config.max_token_bytes,
            bare_token: config.bare_token,
            realm: config.realm.clone(),
            cache,
        })
    }

    /// How many verification keys are active.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// How many verified tokens the cache holds (0 without a cache).
    pub fn cached_tokens(&self) -> usize {
        self.cache.as_ref().map_or(0, TokenCache::len)
    }

    /// About how many bytes the cache holds (0 without a cache).
    pub fn cached_bytes(&self) -> usize {
        self.cache.as_ref().map_or(0, TokenCache::bytes)
    }

    /// The most tokens the cache holds (0 without a cache).
    pub fn cache_capacity(&self) -> usize {
        self.cache.as_ref().map_or(0, TokenCache::max_entries)
    }

    /// Authenticates an `Authorization` header value (or a bare token, if configured) at `now`.
    pub fn authenticate(
        &self,
        authorization: &str,
        now: Timestamp,
    ) -> Result<Arc<Identity>, Error> {
        let token = self.extract(authorization)?;
        if token.len() > self.max_token_bytes {
            return Err(self.reject(
                ErrorKind::TokenTooLarge,
                format!(
                    "the token is {} bytes; at most {} are accepted (auth.max_token_bytes)",
                    token.len(),
                    self.max_token_bytes
                ),
            ));
        }
        let now_us = now.as_micros();
        if let Some(cache) = &self.cache
            && let Some(identity) = cache.get(token.as_bytes(), now_us)
        {
            return Ok(identity);
        }
        let (identity, window) = self.verify(token, now)?;
        let identity = Arc::new(identity);
        if let Some(cache) = &self.cache {
            cache.insert(token.as_bytes(), &identity, window, now_us);
        }
        Ok(identity)
    }

    pub(super) fn reject(&self, kind: ErrorKind, message: impl Into<String>) -> Error {
        Error::auth(kind, &self.realm, message)
    }

    /// The token in an `Authorization` value.
    fn extract<'t>(&self, authorization: &'t str) -> Result<&'t str, Error> {
        let value = authorization.trim_matches([' ', '\t']);
        if value.is_empty() {
            return Err(self.reject(ErrorKind::MissingToken, "no Authorization value"));
        }
        match value.split_once([' ', '\t']) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
                // Whitespace inside the token is refused by `verify`: it keeps a cache hit from
                // scanning the token twice.
                Ok(rest.trim_start_matches([' ', '\t']))
            }
            Some((scheme, _)) => Err(self.reject(
                ErrorKind::MissingToken,
                format!(
                    "the Authorization value uses the {} scheme; a Bearer token is required",
                    shown(scheme)
                ),
            )),
            None if value.eq_ignore_ascii_case("bearer") => Err(self.reject(
                ErrorKind::MissingToken,
                "the Authorization value is \"Bearer\" with no token",
            )),
            None if self.bare_token => Ok(value),
            // No Bearer credentials (RFC 6750 §3.1): a challenge without an error code.
            None => Err(self.reject(
                ErrorKind::MissingToken,
                "the Authorization value must be \"Bearer <token>\" (bare tokens are not accepted: auth.bare_token)",
            )),
        }
    }
}
