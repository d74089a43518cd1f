//! The `[auth]` section of the configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::common::HumanDuration;

/// The default cap on a token's length, in bytes.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The default clock-skew allowance for `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// The default realm of `WWW-Authenticate` challenges.
pub const DEFAULT_REALM: &str = "floodwall";

/// The `[auth]` section: how bearer tokens are verified and what identity they yield.
///
/// ```toml
/// [auth]
/// algorithms = ["RS256", "ES256"]          # required: the only algorithms accepted
/// issuer = "https://login.example.com/"     # one string or a list
/// audience = ["api", "api-admin"]
/// leeway = "60s"
/// required_claims = ["tenant"]
/// subject_claim = "sub"
/// role_claim = "realm_access.roles"          # dotted path; a string or a list of strings
/// roles = ["admin", "premium", "free"]       # priority: the first one the token has wins
/// role_map = { gold = "premium" }            # claim value -> role name used by rules
/// default_role = "free"
///
/// [[auth.keys]]
/// kid = "2026-11"
/// pem_file = "keys/rs256.pub.pem"
///
/// [[auth.jwks]]
/// file = "jwks.json"
///
/// [auth.cache]
/// max_entries = 10000
/// ttl = "5m"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The accepted algorithms (`HS256` … `EdDSA`); a token naming any other is refused.
    pub algorithms: Vec<String>,
    /// Keys given one by one.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// JWKS documents (RFC 7517) whose signing keys are all active.
    #[serde(default)]
    pub jwks: Vec<JwksConfig>,
    /// The accepted `iss` values; when set, `iss` is required.
    #[serde(default, deserialize_with = "one_or_many")]
    pub issuer: Vec<String>,
    /// The accepted `aud` values; when set, `aud` is required and must name one of them. When
    /// empty, a token that names an audience is refused (as PyJWT and jsonwebtoken do).
    #[serde(default, deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Clock-skew allowance for `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
    /// Whether a token without `exp` is refused.
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// Claims (dotted paths) every token must carry.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// The claim (dotted path) holding the subject; it must be a string.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// The claim (dotted path) holding the role(s): a string or a list of strings.
    #[serde(default)]
    pub role_claim: Option<String>,
    /// The role names in priority order: the first one the token carries (after `role_map`)
    /// wins. Empty: the token's first role value wins.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Claim values to role names (`gold = "premium"`); unmapped values stand for themselves.
    #[serde(default)]
    pub role_map: BTreeMap<String, String>,
    /// The role of tokens that carry none (or none that `roles` knows).
    #[serde(default)]
    pub default_role: Option<String>,
    /// Tokens longer than this are refused before any decoding.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Whether a value without the `Bearer` scheme is taken as a bare token.
    #[serde(default)]
    pub bare_token: bool,
    /// The realm named in `WWW-Authenticate` challenges.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// The verified-token cache; absent, every token is verified each time.
    #[serde(default)]
    pub cache: Option<AuthCacheConfig>,
}

/// One key of `[[auth.keys]]`: exactly one of the sources.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key id tokens name in their header; a token's `kid` selects this key alone.
    #[serde(default)]
    pub kid: Option<String>,
    /// An HMAC secret, as its UTF-8 bytes.
    #[serde(default)]
    pub secret: Option<String>,
    /// An HMAC secret, base64 (standard or URL-safe) encoded.
    #[serde(default)]
    pub secret_base64: Option<String>,
    /// The name of an environment variable holding an HMAC secret (read when the engine is
    /// built).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// A PEM public key: `-----BEGIN PUBLIC KEY-----` (RSA, EC P-256/P-384, Ed25519) or
    /// `-----BEGIN RSA PUBLIC KEY-----`.
    #[serde(default)]
    pub pem: Option<String>,
    /// A file holding such a PEM key (relative to the configuration file's directory).
    #[serde(default)]
    pub pem_file: Option<String>,
    /// The algorithms this key verifies; default, every accepted one its type can.
    #[serde(default)]
    pub algorithms: Vec<String>,
}

/// One JWKS document of `[[auth.jwks]]`: exactly one of `json` or `file`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// The document itself.
    #[serde(default)]
    pub json: Option<String>,
    /// A file holding it (relative to the configuration file's directory).
    #[serde(default)]
    pub file: Option<String>,
}

/// `[auth.cache]`: the verified-token cache.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthCacheConfig {
    /// The most tokens held.
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
    /// The most bytes held (tokens and identities, approximately).
    #[serde(default = "default_cache_bytes")]
    pub max_bytes: usize,
    /// The longest an entry lives (never past the token's `exp` minus the leeway).
    #[serde(default = "default_cache_ttl")]
    pub ttl: HumanDuration,
}

impl Default for AuthCacheConfig {
    fn default() -> Self {
        AuthCacheConfig {
            max_entries: default_cache_entries(),
            max_bytes: default_cache_bytes(),
            ttl: default_cache_ttl(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_leeway() -> HumanDuration {
    HumanDuration(DEFAULT_LEEWAY)
}
fn default_subject_claim() -> String {
    "sub".to_owned()
}
fn default_max_token_bytes() -> usize {
    DEFAULT_MAX_TOKEN_BYTES
}
fn default_realm() -> String {
    DEFAULT_REALM.to_owned()
}
fn default_cache_entries() -> usize {
    10_000
}
fn default_cache_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_cache_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a string or a list of strings")]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}
