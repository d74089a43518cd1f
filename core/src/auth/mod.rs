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
mod config;
mod keys;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::aws_lc;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

pub use config::{
    AuthCacheConfig, AuthConfig, DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_BYTES, DEFAULT_REALM,
    JwksConfig, KeyConfig,
};

use crate::clock::Timestamp;
use crate::error::{Error, ErrorKind};
use cache::{CacheWindow, TokenCache};
use keys::{AlgSet, Candidates, Key, KeySet, NoKey, alg_by_name, alg_name};

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

/// The header fields floodwall reads; any others are ignored, duplicates are refused.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(default, borrow)]
    kid: Option<Cow<'a, str>>,
    /// Whether `crit` is present at all (even as `null`).
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
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

    /// Verifies one token: its identity, and when and how a cache entry of it may be used.
    fn verify(&self, token: &str, now: Timestamp) -> Result<(Identity, CacheWindow), Error> {
        let malformed = |message: String| self.reject(ErrorKind::MalformedToken, message);
        let mut segments = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(malformed(format!(
                "a JWT has three dot-separated segments; this token has {}",
                token.split('.').count()
            )));
        };
        if h.is_empty() || p.is_empty() {
            return Err(malformed(
                "the header or payload segment is empty".to_owned(),
            ));
        }
        // Decoding checks the alphabet too: unpadded base64url only (RFC 7515).
        let decode = |segment: &str, name: &str| decode_segment(segment, name, token);
        let header_json = decode(h, "header").map_err(&malformed)?;
        let payload = decode(p, "payload").map_err(&malformed)?;
        let signature = decode(s, "signature").map_err(&malformed)?;
        // A JSON object, not the array serde would also read into the struct.
        if header_json.trim_ascii_start().first() != Some(&b'{') {
            return Err(malformed("the header is not a JSON object".to_owned()));
        }
        let header: Header<'_> = serde_json::from_slice(&header_json).map_err(|e| {
            malformed(format!(
                "the header is not a JSON object with a string \"alg\": {e}"
            ))
        })?;
        if header.crit {
            return Err(malformed(
                "the header has critical parameters (\"crit\"), which floodwall does not support"
                    .to_owned(),
            ));
        }
        let alg = match alg_by_name(&header.alg) {
            Some(alg) if self.allowed.contains(alg) => alg,
            _ => {
                return Err(self.reject(
                    ErrorKind::AlgorithmNotAllowed,
                    format!(
                        "algorithm {} is not accepted; accepted: {}",
                        shown(&header.alg),
                        self.allowed
                    ),
                ));
            }
        };
        let kid = header.kid.as_deref();
        let candidates = self.keys.select(kid, alg).map_err(|why| match why {
            NoKey::UnknownKid => self.reject(
                ErrorKind::UnknownKey,
                format!("no key has kid {}", shown(kid.unwrap_or_default())),
            ),
            NoKey::WrongAlgorithm(algs) => self.reject(
                ErrorKind::AlgorithmNotAllowed,
                format!(
                    "key {} verifies {algs}, not {}",
                    shown(kid.unwrap_or_default()),
                    alg_name(alg)
                ),
            ),
            NoKey::NoneForAlgorithm => self.reject(
                ErrorKind::UnknownKey,
                format!("no configured key verifies {} tokens", alg_name(alg)),
            ),
        })?;
        if signature.is_empty() {
            return Err(self.reject(ErrorKind::BadSignature, "the signature is empty"));
        }
        let message = &token.as_bytes()[..h.len() + 1 + p.len()];
        // floodwall's own backend, not the process-wide default a host (or another crate's
        // features) could change.
        let verifies = |key: &Key| {
            (aws_lc::DEFAULT_PROVIDER.verifier_factory)(&alg, &key.decoding)
                .is_ok_and(|verifier| verifier.verify(message, &signature).is_ok())
        };
        let key = match candidates {
            Candidates::One(key) => verifies(key).then_some(key),
            Candidates::Some(keys) => keys.into_iter().find(|&k| verifies(k)),
        }
        .ok_or_else(|| {
            self.reject(
                ErrorKind::BadSignature,
                match kid {
                    Some(kid) => format!(
                        "the {} signature does not verify with key {}",
                        alg_name(alg),
                        shown(kid)
                    ),
                    None => format!(
                        "the {} signature verifies with no configured key",
                        alg_name(alg)
                    ),
                },
            )
        })?;

        let claims: Map<String, Value> = serde_json::from_slice(&payload)
            .map_err(|e| malformed(format!("the payload is not a JSON object: {e}")))?;
        let Checked {
            exp,
            not_before,
            subject,
            role,
        } = self.check_claims(&claims, now)?;
        let leeway_s = self.leeway_us as f64 / 1e6;
        let window = CacheWindow {
            from_us: not_before.map_or(0, |at| seconds_to_micros(at - leeway_s)),
            until_us: exp.map(|exp| seconds_to_micros(exp - leeway_s)),
            bytes: token.len() + map_bytes(&claims),
        };
        let identity = Identity {
            subject,
            role,
            key_id: key.kid.clone(),
            algorithm: alg_name(alg),
            expires_at: exp.map(|e| Timestamp::from_micros(seconds_to_micros(e))),
            claims,
        };
        Ok((identity, window))
    }

    /// Checks the registered and configured claims; returns `exp`, the subject and the role.
    fn check_claims(&self, claims: &Map<String, Value>, now: Timestamp) -> Result<Checked, Error> {
        let now_s = now.as_micros() as f64 / 1e6;
        let leeway_s = self.leeway_us as f64 / 1e6;
        let exp = self.numeric_date(claims, "exp")?;
        match exp {
            None if self.require_exp => {
                return Err(self.reject(
                    ErrorKind::MissingClaim,
                    "the token has no \"exp\" claim (auth.require_exp)",
                ));
            }
            Some(exp) if now_s >= exp + leeway_s => {
                return Err(self.reject(
                    ErrorKind::Expired,
                    format!("the token expired at {exp} (now {now_s}, leeway {leeway_s} s)"),
                ));
            }
            _ => {}
        }
        let mut not_before = None::<f64>;
        for name in ["nbf", "iat"] {
            let at = self.numeric_date(claims, name)?;
            if let Some(at) = at {
                not_before = Some(not_before.map_or(at, |nb| nb.max(at)));
            }
            if let Some(at) = at
                && at > now_s + leeway_s
            {
                return Err(self.reject(
                    ErrorKind::NotYetValid,
                    format!(
                        "the token's \"{name}\" is {at}, in the future (now {now_s}, leeway {leeway_s} s)"
                    ),
                ));
            }
        }
        if !self.issuers.is_empty() {
            match claims.get("iss") {
                None | Some(Value::Null) => {
                    return Err(
                        self.reject(ErrorKind::MissingClaim, "the token has no \"iss\" claim")
                    );
                }
                Some(Value::String(iss)) if self.issuers.contains(iss) => {}
                Some(Value::String(iss)) => {
                    return Err(self.reject(
                        ErrorKind::WrongIssuer,
                        format!("issuer {} is not accepted", shown(iss)),
                    ));
                }
                Some(other) => {
                    return Err(self.reject(
                        ErrorKind::InvalidClaim,
                        format!("\"iss\" must be a string, not {}", type_name(other)),
                    ));
                }
            }
        }
        match claims.get("aud") {
            None | Some(Value::Null) if !self.audiences.is_empty() => {
                return Err(self.reject(ErrorKind::MissingClaim, "the token has no \"aud\" claim"));
            }
            None | Some(Value::Null) => {}
            Some(aud) => {
                let names: Vec<&str> = match aud {
                    Value::String(one) => vec![one.as_str()],
                    Value::Array(many) if many.iter().all(Value::is_string) => {
                        many.iter().filter_map(Value::as_str).collect()
                    }
                    other => {
                        return Err(self.reject(
                            ErrorKind::InvalidClaim,
                            format!(
                                "\"aud\" must be a string or a list of strings, not {}",
                                type_name(other)
                            ),
                        ));
                    }
                };
                if self.audiences.is_empty() {
                    return Err(self.reject(
                        ErrorKind::WrongAudience,
                        "the token names an audience and auth.audience accepts none",
                    ));
                }
                if !names.iter().any(|n| self.audiences.iter().any(|a| a == n)) {
                    return Err(self.reject(
                        ErrorKind::WrongAudience,
                        format!("audience {} is not accepted", shown(&names.join(", "))),
                    ));
                }
            }
        }
        let subject = match lookup(claims, &self.subject_claim) {
            None | Some(Value::Null) => {
                return Err(self.reject(
                    ErrorKind::MissingClaim,
                    format!("the token has no subject claim {:?}", self.subject_claim),
                ));
            }
            Some(Value::String(s)) if s.is_empty() => {
                return Err(self.reject(
                    ErrorKind::MissingClaim,
                    format!("the subject claim {:?} is empty", self.subject_claim),
                ));
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(self.reject(
                    ErrorKind::InvalidClaim,
                    format!(
                        "the subject claim {:?} must be a string, not {}",
                        self.subject_claim,
                        type_name(other)
                    ),
                ));
            }
        };
        for name in &self.required {
            if matches!(lookup(claims, name), None | Some(Value::Null)) {
                return Err(self.reject(
                    ErrorKind::MissingClaim,
                    format!("the token has no {name:?} claim (auth.required_claims)"),
                ));
            }
        }
        let role = self.role(claims)?;
        Ok(Checked {
            exp,
            not_before,
            subject,
            role,
        })
    }

    fn role(&self, claims: &Map<String, Value>) -> Result<Option<String>, Error> {
        let Some(path) = &self.role_claim else {
            return Ok(self.default_role.clone());
        };
        let values: Vec<&str> = match lookup(claims, path) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) if many.iter().all(Value::is_string) => {
                many.iter().filter_map(Value::as_str).collect()
            }
            Some(other) => {
                return Err(self.reject(
                    ErrorKind::InvalidClaim,
                    format!(
                        "the role claim {path:?} must be a string or a list of strings, not {}",
                        type_name(other)
                    ),
                ));
            }
        };
        let mapped = |v: &str| -> String {
            self.role_map
                .get(v)
                .cloned()
                .unwrap_or_else(|| v.to_owned())
        };
        let found = if self.roles.is_empty() {
            values.first().map(|v| mapped(v))
        } else {
            let held: Vec<String> = values.iter().map(|v| mapped(v)).collect();
            self.roles.iter().find(|r| held.contains(r)).cloned()
        };
        Ok(found.or_else(|| self.default_role.clone()))
    }

    /// A NumericDate claim: absent, or a number of seconds.
    fn numeric_date(&self, claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, Error> {
        match claims.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(seconds) if seconds.is_finite() => Ok(Some(seconds)),
                _ => Err(self.reject(
                    ErrorKind::InvalidClaim,
                    format!("\"{name}\" is not a representable number of seconds"),
                )),
            },
            Some(other) => Err(self.reject(
                ErrorKind::InvalidClaim,
                format!(
                    "\"{name}\" must be a number of seconds (NumericDate), not {}",
                    type_name(other)
                ),
            )),
        }
    }
}

/// What the claim checks yield.
struct Checked {
    exp: Option<f64>,
    /// The later of `nbf` and `iat`.
    not_before: Option<f64>,
    subject: String,
    role: Option<String>,
}

/// The claim at `path`: the top-level claim of that exact name, else the dotted path.
fn lookup<'c>(claims: &'c Map<String, Value>, path: &str) -> Option<&'c Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

fn check_path(path: &str, field: &str) -> Result<(), Error> {
    if path.is_empty() || path.split('.').any(str::is_empty) && !path.contains("://") {
        return Err(Error::config(
            field,
            format!("{path:?} is not a claim name or dotted path"),
        ));
    }
    Ok(())
}

/// Decodes one segment of `token`: unpadded base64url, the only encoding RFC 7515 allows in a
/// compact JWS. The error says what is wrong (whitespace, padding, standard base64 …).
fn decode_segment(segment: &str, name: &str, token: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD.decode(segment).map_err(|e| {
        if token.bytes().any(|b| b == b' ' || b == b'\t') {
            return "the Bearer credentials must be a single token".to_owned();
        }
        match segment
            .bytes()
            .find(|&b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            Some(b'=') => format!("the {name} is padded with '='; JWTs use unpadded base64url"),
            Some(bad @ (b'+' | b'/')) => format!(
                "the {name} contains '{}': standard base64, not base64url",
                bad as char
            ),
            Some(_) => format!("the {name} contains a character outside base64url"),
            None => format!("the {name} is not valid base64url: {e}"),
        }
    })
}

/// About how many bytes a parsed JSON value takes, with its allocations.
fn value_bytes(value: &Value) -> usize {
    const NODE: usize = std::mem::size_of::<Value>();
    match value {
        Value::String(s) => NODE + s.len(),
        Value::Array(items) => NODE + items.iter().map(value_bytes).sum::<usize>(),
        Value::Object(map) => NODE + map_bytes(map),
        _ => NODE,
    }
}

/// [`value_bytes`] of a map's entries (keys and B-tree node overhead included).
fn map_bytes(map: &Map<String, Value>) -> usize {
    map.iter()
        .map(|(k, v)| 2 * std::mem::size_of::<String>() + k.len() + value_bytes(v))
        .sum()
}

fn seconds_to_micros(seconds: f64) -> u64 {
    // `as` saturates: negative and NaN become 0, huge values u64::MAX.
    (seconds * 1e6).floor() as u64
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Token-supplied text for a log message: quoted, escaped, and cut to 64 characters.
fn shown(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}
