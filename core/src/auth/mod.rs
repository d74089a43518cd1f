//! JWT authentication: a bearer token in, an [`Identity`] (subject, role, claims) out — or a
//! rejection with a stable kind, the HTTP status and the `WWW-Authenticate` challenge to send.
//!
//! Built from the `[auth]` section ([`AuthConfig`]) and reached through
//! [`Engine::authenticate`](crate::Engine::authenticate) and
//! [`Engine::authorize`](crate::Engine::authorize). Signatures are
//! checked by the `jsonwebtoken` crate on its `aws_lc_rs` backend (chosen by measurement: RSA
//! and ECDSA verify 4–9× faster than on `rust_crypto`, see the README's performance section),
//! called directly rather than through jsonwebtoken's process-wide provider, which another
//! crate's features or a host's `install_default` could change;
//! everything around them — token shape, header, key selection, claims — is checked here, so
//! that every rejection has its own kind and the clock is the engine's (injected in tests).
//!
//! # What is checked, in order
//!
//! 1. The `Authorization` value: `Bearer <token>` (scheme in any case), or a bare token when
//!    `bare_token` is set. Nothing, another scheme, or a bare token otherwise: `missing_token`
//!    (RFC 6750 §3.1: no credentials, so a challenge without an error code).
//! 2. The token's length against `max_token_bytes` (default 8 KiB), before any decoding:
//!    `token_too_large`.
//! 3. Its shape: three segments of unpadded base64url, a header that is a JSON object with a
//!    string `alg`, no `crit` (not even `null`); otherwise `malformed_token`.
//! 4. `alg` is one of `algorithms` (never `none`): `algorithm_not_allowed`.
//! 5. The key: the token's `kid` selects that key alone, and the key must verify `alg` —
//!    otherwise `algorithm_not_allowed` (an `HS256` token naming an RSA key's `kid` is the
//!    key-confusion attack). A `kid` that names no key is `unknown_key`. A token without a
//!    `kid` is tried against every key that verifies its `alg` (so give keys a `kid` when
//!    there are many: each try of a forged token costs a verification).
//! 6. The signature: `bad_signature`.
//! 7. The payload is a JSON object (`malformed_token`), then the claims: `exp` (required unless
//!    `require_exp = false`; expired when `now >= exp + leeway`: `expired`), `nbf` and
//!    `iat` (`> now + leeway`: `not_yet_valid`), `iss` (`wrong_issuer`), `aud` (string
//!    or list; `wrong_audience` — a token naming an audience is refused when none is
//!    configured), the subject (a non-empty string), the required claims (`missing_claim`),
//!    and claims of the wrong type (`invalid_claim`).
//! 8. The role: the claim at `role_claim` (a dotted path, e.g. `realm_access.roles`; a
//!    top-level claim whose name contains dots, like `https://example.com/roles`, is found
//!    too), a string or a list of strings, each value mapped through `role_map`; with `roles`
//!    set, the first of `roles` the token carries wins, else the first value. None:
//!    `default_role`.
//!
//! # Error kinds
//!
//! | kind | when | HTTP | `WWW-Authenticate` |
//! |---|---|---|---|
//! | `missing_token` | no bearer token | 401 | `Bearer realm="…"` |
//! | `malformed_token` | not a compact JWS / not JSON | 401 | `error="invalid_token"` |
//! | `token_too_large` | over `max_token_bytes` | 401 | `error="invalid_token"` |
//! | `algorithm_not_allowed` | `alg` not accepted, or not the selected key's | 401 | `error="invalid_token"` |
//! | `unknown_key` | `kid` names no key / no key for `alg` | 401 | `error="invalid_token"` |
//! | `bad_signature` | the signature does not verify | 401 | `error="invalid_token"` |
//! | `expired` | `exp` passed | 401 | `error="invalid_token"` |
//! | `not_yet_valid` | `nbf`/`iat` in the future | 401 | `error="invalid_token"` |
//! | `wrong_issuer` | `iss` not accepted | 401 | `error="invalid_token"` |
//! | `wrong_audience` | `aud` not accepted | 401 | `error="invalid_token"` |
//! | `missing_claim` | `exp`, subject, `iss`/`aud` or a required claim absent | 401 | `error="invalid_token"` |
//! | `invalid_claim` | a claim of the wrong type | 401 | `error="invalid_token"` |
//!
//! The challenge's `error_description` is a fixed sentence per kind
//! ([`ErrorKind::challenge_description`]); the error's message, for logs, gives the details,
//! with any token-supplied text quoted and cut short.
//!
//! # Cache
//!
//! With `[auth.cache]`, a token verified once is answered from memory until its `exp` minus the
//! leeway or the TTL (see the `cache` module). Rejections are never cached.

mod cache;
mod claims;
mod config;
mod keys;
mod token;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

pub use config::{
    AuthCacheConfig, AuthConfig, DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_BYTES, DEFAULT_REALM,
    JwksConfig, KeyConfig,
};

use crate::clock::Timestamp;
use crate::error::{Error, ErrorKind};
use cache::TokenCache;
use claims::{check_path, lookup, shown};
use keys::{AlgSet, KeySet, alg_by_name};

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Identity {
    /// The subject (`sub`, or the configured `subject_claim`).
    pub subject: String,
    /// The role, as the rules name it (after `role_map`, or the `default_role`).
    pub role: Option<String>,
    /// Every claim of the token.
    pub claims: Map<String, Value>,
    /// The `kid` of the key that verified the token, if it has one.
    pub key_id: Option<String>,
    /// The algorithm the token was signed with (`RS256` …).
    pub algorithm: &'static str,
    /// When the token expires (`exp`), if it says.
    pub expires_at: Option<Timestamp>,
}

impl Identity {
    /// The claim at `path`: a top-level claim of that exact name, or else a dotted path into
    /// nested objects (`realm_access.roles`).
    pub fn claim(&self, path: &str) -> Option<&Value> {
        lookup(&self.claims, path)
    }
}

/// Verifies bearer tokens under one `[auth]` configuration. `Send + Sync`; an engine holds one
/// and replaces it whole on reload.
#[derive(Debug)]
pub struct Authenticator {
    keys: KeySet,
    allowed: AlgSet,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway_us: u64,
    require_exp: bool,
    required: Vec<String>,
    subject_claim: String,
    role_claim: Option<String>,
    roles: Vec<String>,
    role_map: HashMap<String, String>,
    default_role: Option<String>,
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

    fn reject(&self, kind: ErrorKind, message: impl Into<String>) -> Error {
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
