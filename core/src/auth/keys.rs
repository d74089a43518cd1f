//! The verification keys: loaded once from the configuration (inline or environment secrets,
//! PEM public keys, JWKS documents), each with the set of algorithms it may verify.
//!
//! A key verifies only the algorithms of its own family — an HMAC secret `HS*`, an RSA key
//! `RS*`/`PS*`, a P-256 key `ES256`, a P-384 key `ES384`, an Ed25519 key `EdDSA` — further
//! narrowed by the configuration's `algorithms`, the key's own `algorithms` (or a JWK's `alg`),
//! and for HMAC by the secret's length (RFC 7518 §3.2: at least the hash's size). That per-key
//! set is what defeats key confusion: an `HS256` token naming an RSA key's `kid` is refused
//! before any HMAC is computed with the public key's bytes.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::config::{JwksConfig, KeyConfig};
use crate::error::Error;

/// Every algorithm floodwall verifies with its JOSE name, in the order of [`AlgSet`]'s bits.
const NAMED: [(Algorithm, &str); 12] = [
    (Algorithm::HS256, "HS256"),
    (Algorithm::HS384, "HS384"),
    (Algorithm::HS512, "HS512"),
    (Algorithm::RS256, "RS256"),
    (Algorithm::RS384, "RS384"),
    (Algorithm::RS512, "RS512"),
    (Algorithm::PS256, "PS256"),
    (Algorithm::PS384, "PS384"),
    (Algorithm::PS512, "PS512"),
    (Algorithm::ES256, "ES256"),
    (Algorithm::ES384, "ES384"),
    (Algorithm::EdDSA, "EdDSA"),
];

fn index_of(alg: Algorithm) -> usize {
    NAMED
        .iter()
        .position(|&(a, _)| a == alg)
        .expect("floodwall names every algorithm it verifies")
}

/// The JOSE name of `alg`.
pub(crate) fn alg_name(alg: Algorithm) -> &'static str {
    NAMED[index_of(alg)].1
}

/// The algorithm named exactly `name` (names are case-sensitive, RFC 7515 §4.1.1).
pub(crate) fn alg_by_name(name: &str) -> Option<Algorithm> {
    NAMED.iter().find(|&&(_, n)| n == name).map(|&(a, _)| a)
}

/// A set of algorithms, one bit each.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct AlgSet(u16);

impl AlgSet {
    pub(crate) const fn empty() -> Self {
        AlgSet(0)
    }

    fn bit(alg: Algorithm) -> u16 {
        1 << index_of(alg)
    }

    pub(crate) fn of(algs: &[Algorithm]) -> Self {
        AlgSet(algs.iter().fold(0, |set, &a| set | Self::bit(a)))
    }

    pub(crate) fn contains(self, alg: Algorithm) -> bool {
        self.0 & Self::bit(alg) != 0
    }

    pub(crate) fn insert(&mut self, alg: Algorithm) {
        self.0 |= Self::bit(alg);
    }

    pub(crate) const fn and(self, other: AlgSet) -> AlgSet {
        AlgSet(self.0 & other.0)
    }

    pub(crate) const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn iter(self) -> impl Iterator<Item = Algorithm> {
        NAMED
            .into_iter()
            .map(|(a, _)| a)
            .filter(move |&a| self.contains(a))
    }
}

impl fmt::Debug for AlgSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(alg_name)).finish()
    }
}

impl fmt::Display for AlgSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(alg_name).collect();
        f.write_str(&names.join(", "))
    }
}

/// What kind of key material a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Hmac,
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl Family {
    /// Every algorithm a key of this family can verify.
    fn algorithms(self) -> AlgSet {
        use Algorithm::*;
        AlgSet::of(match self {
            Family::Hmac => &[HS256, HS384, HS512],
            Family::Rsa => &[RS256, RS384, RS512, PS256, PS384, PS512],
            Family::EcP256 => &[ES256],
            Family::EcP384 => &[ES384],
            Family::Ed25519 => &[EdDSA],
        })
    }

    fn describe(self) -> &'static str {
        match self {
            Family::Hmac => "an HMAC secret",
            Family::Rsa => "an RSA key",
            Family::EcP256 => "an EC P-256 key",
            Family::EcP384 => "an EC P-384 key",
            Family::Ed25519 => "an Ed25519 key",
        }
    }
}

/// The least secret length for an HMAC algorithm: the hash's output size (RFC 7518 §3.2).
fn hmac_min_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

/// One verification key.
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    family: Family,
    pub(crate) algorithms: AlgSet,
    pub(crate) decoding: DecodingKey,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material: an HMAC secret must not reach logs.
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// Every configured key, with an index by `kid`.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<Key>,
    by_kid: HashMap<String, usize>,
}

/// The keys to try for one token.
pub(crate) enum Candidates<'k> {
    /// The key the token's `kid` names.
    One(&'k Key),
    /// Every key that verifies the algorithm (the token has no `kid`).
    Some(Vec<&'k Key>),
}

/// Why no key was selected.
pub(crate) enum NoKey {
    /// The `kid` names no key.
    UnknownKid,
    /// The `kid` names a key of a family that cannot verify the algorithm.
    WrongAlgorithm(AlgSet),
    /// No key at all verifies the algorithm.
    NoneForAlgorithm,
}

impl KeySet {
    /// Loads every key of `keys` and `jwks`, verifying only algorithms in `allowed`.
    /// Relative file names are resolved against `base_dir`; `env` reads environment variables.
    pub(crate) fn load(
        keys: &[KeyConfig],
        jwks: &[JwksConfig],
        allowed: AlgSet,
        base_dir: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let mut set = KeySet::default();
        for (i, key) in keys.iter().enumerate() {
            let at = format!("auth.keys[{i}]");
            let loaded = load_key(key, allowed, base_dir, env, &at)?;
            set.add(loaded, &at)?;
        }
        for (i, source) in jwks.iter().enumerate() {
            let at = format!("auth.jwks[{i}]");
            let before = set.keys.len();
            for (key, key_at) in load_jwks(source, allowed, base_dir, &at)? {
                set.add(key, &key_at)?;
            }
            if set.keys.len() == before {
                return Err(Error::config(
                    at,
                    format!(
                        "the JWKS has no signing key usable with the accepted algorithms ({allowed})"
                    ),
                ));
            }
        }
        if set.keys.is_empty() {
            return Err(Error::config(
                "auth",
                "no verification key: give auth.keys or auth.jwks",
            ));
        }
        Ok(set)
    }

    fn add(&mut self, key: Key, at: &str) -> Result<(), Error> {
        let index = self.keys.len();
        if let Some(kid) = &key.kid
            && self.by_kid.insert(kid.clone(), index).is_some()
        {
            return Err(Error::config(
                format!("{at}.kid"),
                format!("duplicate key id {kid:?}: every kid must name one key"),
            ));
        }
        self.keys.push(key);
        Ok(())
    }

    /// How many keys there are.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The keys that may verify a token with header `kid` and `alg`.
    pub(crate) fn select(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Candidates<'_>, NoKey> {
        if let Some(kid) = kid {
            if let Some(&index) = self.by_kid.get(kid) {
                let key = &self.keys[index];
                return if key.algorithms.contains(alg) {
                    Ok(Candidates::One(key))
                } else {
                    Err(NoKey::WrongAlgorithm(key.algorithms))
                };
            }
            return Err(NoKey::UnknownKid);
        }
        let all: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.algorithms.contains(alg))
            .collect();
        match all.len() {
            0 => Err(NoKey::NoneForAlgorithm),
            1 => Ok(Candidates::One(all[0])),
            _ => Ok(Candidates::Some(all)),
        }
    }
}

fn load_key(
    config: &KeyConfig,
    allowed: AlgSet,
    base_dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    at: &str,
) -> Result<Key, Error> {
    if let Some(kid) = &config.kid {
        check_kid(kid, &format!("{at}.kid"))?;
    }
    let sources: Vec<&str> = [
        ("secret", config.secret.is_some()),
        ("secret_base64", config.secret_base64.is_some()),
        ("secret_env", config.secret_env.is_some()),
        ("pem", config.pem.is_some()),
        ("pem_file", config.pem_file.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if sources.len() != 1 {
        return Err(Error::config(
            at,
            format!(
                "a key needs exactly one of secret, secret_base64, secret_env, pem or pem_file; {}",
                if sources.is_empty() {
                    "none is given".to_owned()
                } else {
                    format!("got {}", sources.join(" and "))
                }
            ),
        ));
    }
    let (family, decoding, secret_len) = if let Some(secret) = &config.secret {
        let bytes = secret.as_bytes();
        (Family::Hmac, DecodingKey::from_secret(bytes), bytes.len())
    } else if let Some(encoded) = &config.secret_base64 {
        let bytes = STANDARD
            .decode(encoded.trim())
            .or_else(|_| URL_SAFE_NO_PAD.decode(encoded.trim()))
            .map_err(|e| {
                Error::config(
                    format!("{at}.secret_base64"),
                    format!("not valid base64: {e}"),
                )
            })?;
        (Family::Hmac, DecodingKey::from_secret(&bytes), bytes.len())
    } else if let Some(name) = &config.secret_env {
        let value = env(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            Error::config(
                format!("{at}.secret_env"),
                format!("environment variable {name} is not set or empty"),
            )
        })?;
        let bytes = value.as_bytes();
        (Family::Hmac, DecodingKey::from_secret(bytes), bytes.len())
    } else {
        let (pem, field) = match (&config.pem, &config.pem_file) {
            (Some(pem), _) => (pem.clone(), "pem"),
            (None, Some(file)) => (
                read_file(file, base_dir, &format!("{at}.pem_file"))?,
                "pem_file",
            ),
            (None, None) => unreachable!("exactly one source is set"),
        };
        let (family, decoding) =
            parse_public_pem(&pem).map_err(|m| Error::config(format!("{at}.{field}"), m))?;
        (family, decoding, 0)
    };

    let mut algorithms = family.algorithms().and(allowed);
    if family == Family::Hmac {
        // Only the HMAC algorithms whose hash the secret is long enough for.
        let mut fit = AlgSet::empty();
        for alg in algorithms.iter().filter(|&a| secret_len >= hmac_min_len(a)) {
            fit.insert(alg);
        }
        if fit.is_empty() && !algorithms.is_empty() && config.algorithms.is_empty() {
            return Err(Error::config(
                at,
                format!(
                    "the secret is {secret_len} bytes; HS256 needs at least 32 (RFC 7518 §3.2)"
                ),
            ));
        }
        if config.algorithms.is_empty() {
            algorithms = fit;
        }
    }
    if !config.algorithms.is_empty() {
        let mut own = AlgSet::empty();
        for (j, name) in config.algorithms.iter().enumerate() {
            let field = format!("{at}.algorithms[{j}]");
            let alg = alg_by_name(name)
                .ok_or_else(|| Error::config(&field, format!("unknown algorithm {name:?}")))?;
            if !family.algorithms().contains(alg) {
                return Err(Error::config(
                    &field,
                    format!("{name} cannot be verified with {}", family.describe()),
                ));
            }
            if !allowed.contains(alg) {
                return Err(Error::config(
                    &field,
                    format!("{name} is not in auth.algorithms"),
                ));
            }
            if family == Family::Hmac && secret_len < hmac_min_len(alg) {
                return Err(Error::config(
                    &field,
                    format!(
                        "the secret is {secret_len} bytes; {name} needs at least {} (RFC 7518 §3.2)",
                        hmac_min_len(alg)
                    ),
                ));
            }
            own.insert(alg);
        }
        algorithms = own;
    }
    if algorithms.is_empty() {
        return Err(Error::config(
            at,
            format!(
                "this is {} and auth.algorithms ({allowed}) has none of its algorithms",
                family.describe()
            ),
        ));
    }
    Ok(Key {
        kid: config.kid.clone(),
        family,
        algorithms,
        decoding,
    })
}

fn check_kid(kid: &str, field: &str) -> Result<(), Error> {
    if kid.is_empty() || kid.len() > 256 {
        return Err(Error::config(field, "a kid must be 1 to 256 characters"));
    }
    Ok(())
}

fn read_file(name: &str, base_dir: Option<&Path>, field: &str) -> Result<String, Error> {
    let path = match base_dir {
        Some(dir) if Path::new(name).is_relative() => dir.join(name),
        _ => Path::new(name).to_path_buf(),
    };
    std::fs::read_to_string(&path)
        .map_err(|e| Error::config(field, format!("cannot read {}: {e}", path.display())))
}

/// A PEM public key (SubjectPublicKeyInfo, or PKCS#1 `RSA PUBLIC KEY`) and its family.
fn parse_public_pem(pem: &str) -> Result<(Family, DecodingKey), String> {
    let text = pem.trim();
    let label = text
        .strip_prefix("-----BEGIN ")
        .and_then(|rest| rest.split_once("-----"))
        .map(|(label, _)| label)
        .ok_or("not a PEM document (it must start with -----BEGIN PUBLIC KEY-----)")?;
    if label.contains("PRIVATE") {
        return Err(format!(
            "this is a private key ({label}); give the public key: the verifier never needs the private one"
        ));
    }
    if !matches!(label, "PUBLIC KEY" | "RSA PUBLIC KEY") {
        return Err(format!(
            "a {label} is not supported; give a public key (-----BEGIN PUBLIC KEY-----)"
        ));
    }
    let bytes = text.as_bytes();
    if let Ok(key) = DecodingKey::from_rsa_pem(bytes) {
        return Ok((Family::Rsa, key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(bytes) {
        // The uncompressed point: 0x04 ‖ x ‖ y.
        let len = key.try_get_as_bytes().map(<[u8]>::len).unwrap_or(0);
        return match len {
            65 => Ok((Family::EcP256, key)),
            97 => Ok((Family::EcP384, key)),
            _ => Err("unsupported EC curve: only P-256 (ES256) and P-384 (ES384) are".to_owned()),
        };
    }
    if let Ok(key) = DecodingKey::from_ed_pem(bytes) {
        let len = key.try_get_as_bytes().map(<[u8]>::len).unwrap_or(0);
        return if len == 32 {
            Ok((Family::Ed25519, key))
        } else {
            Err("unsupported EdDSA curve: only Ed25519 is".to_owned())
        };
    }
    Err("not a readable RSA, EC (P-256, P-384) or Ed25519 public key".to_owned())
}

/// Reads a JWKS document and returns its usable signing keys. Keys not meant for verifying
/// signatures (`use` other than `sig`, `key_ops` without `verify`, an `RSA-OAEP`-like `alg`)
/// and keys of curves or algorithms floodwall does not verify (P-521, Ed448, `ES512`) are
/// skipped; a key that cannot be read at all, or an `oct` key shorter than RFC 7518 §3.2
/// allows, is an error.
fn load_jwks(
    source: &JwksConfig,
    allowed: AlgSet,
    base_dir: Option<&Path>,
    at: &str,
) -> Result<Vec<(Key, String)>, Error> {
    let (text, field) = match (&source.json, &source.file) {
        (Some(json), None) => (json.clone(), format!("{at}.json")),
        (None, Some(file)) => (
            read_file(file, base_dir, &format!("{at}.file"))?,
            format!("{at}.file"),
        ),
        _ => {
            return Err(Error::config(
                at,
                "a JWKS source needs exactly one of json or file",
            ));
        }
    };
    let document: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::config(&field, format!("the JWKS is not JSON: {e}")))?;
    let keys = document
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| Error::config(&field, "a JWKS is an object with a \"keys\" array"))?;
    let mut out = Vec::new();
    for (i, value) in keys.iter().enumerate() {
        let key_at = format!("{field}.keys[{i}]");
        let kty = value.get("kty").and_then(serde_json::Value::as_str);
        let crv = value.get("crv").and_then(serde_json::Value::as_str);
        // Shapes jsonwebtoken has no type for: skip rather than refuse the whole set.
        if matches!(
            crv,
            Some("P-521" | "Ed448" | "X25519" | "X448" | "secp256k1")
        ) || !matches!(kty, Some("RSA" | "EC" | "OKP" | "oct"))
        {
            if kty.is_none() {
                return Err(Error::config(&key_at, "a JWK needs a \"kty\""));
            }
            continue;
        }
        let jwk: Jwk = serde_json::from_value(value.clone())
            .map_err(|e| Error::config(&key_at, format!("not a readable JWK: {e}")))?;
        // Only keys meant for signatures (RFC 7517 §4.2, §4.3).
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
            || jwk
                .common
                .key_operations
                .as_ref()
                .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
        {
            continue;
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => Family::EcP256,
                EllipticCurve::P384 => Family::EcP384,
                _ => continue,
            },
            AlgorithmParameters::OctetKeyPair(p) => match p.curve {
                EllipticCurve::Ed25519 => Family::Ed25519,
                _ => continue,
            },
            AlgorithmParameters::OctetKey(_) => Family::Hmac,
            _ => continue,
        };
        let mut algorithms = family.algorithms().and(allowed);
        if let Some(alg) = jwk.common.key_algorithm {
            match jwk_signing_alg(alg) {
                Some(alg) if family.algorithms().contains(alg) => {
                    algorithms = algorithms.and(AlgSet::of(&[alg]));
                }
                Some(alg) => {
                    return Err(Error::config(
                        format!("{key_at}.alg"),
                        format!(
                            "{} cannot be verified with {}",
                            alg_name(alg),
                            family.describe()
                        ),
                    ));
                }
                // An encryption or unknown algorithm: not a key to verify signatures with.
                None => continue,
            }
        }
        if family == Family::Hmac {
            // RFC 7518 §3.2, as for configured secrets: a short `k` verifies nothing.
            let len = match &jwk.algorithm {
                AlgorithmParameters::OctetKey(p) => URL_SAFE_NO_PAD
                    .decode(p.value.trim_end_matches('='))
                    .map(|k| k.len())
                    .map_err(|e| Error::config(&key_at, format!("\"k\" is not base64url: {e}")))?,
                _ => 0,
            };
            let mut fit = AlgSet::empty();
            for alg in algorithms.iter().filter(|&a| len >= hmac_min_len(a)) {
                fit.insert(alg);
            }
            if fit.is_empty() && !algorithms.is_empty() {
                return Err(Error::config(
                    format!("{key_at}.k"),
                    format!("the secret is {len} bytes; HS256 needs at least 32 (RFC 7518 §3.2)"),
                ));
            }
            algorithms = fit;
        }
        if algorithms.is_empty() {
            continue;
        }
        if let Some(kid) = &jwk.common.key_id {
            check_kid(kid, &format!("{key_at}.kid"))?;
        }
        let decoding = DecodingKey::from_jwk(&jwk)
            .map_err(|e| Error::config(&key_at, format!("unusable JWK: {e}")))?;
        out.push((
            Key {
                kid: jwk.common.key_id.clone(),
                family,
                algorithms,
                decoding,
            },
            key_at,
        ));
    }
    Ok(out)
}

fn jwk_signing_alg(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}
