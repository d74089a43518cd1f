//! The verification keys: loaded once from the configuration (inline or environment secrets,
//! PEM public keys, JWKS documents), each with the set of algorithms it may verify.
//!
//! A key verifies only the algorithms of its own family — an HMAC secret `HS*`, an RSA key
//! `RS*`/`PS*`, a P-256 key `ES256`, a P-384 key `ES384`, an Ed25519 key `EdDSA` — further
//! narrowed by the configuration's `algorithms`, the key's own `algorithms` (or a JWK's `alg`),
//! and for HMAC by the secret's length (RFC 7518 §3.2: at least the hash's size). That per-key
//! set is what defeats key confusion: an `HS256` token naming an RSA key's `kid` is refused
//! before any HMAC is computed with the public key's bytes.

mod algorithms;
mod configured;
mod jwks;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey};

use super::config::{JwksConfig, KeyConfig};
use crate::error::Error;

pub(crate) use algorithms::{AlgSet, alg_by_name, alg_name};
use algorithms::{Family, hmac_min_len};
use configured::load_key;
use jwks::load_jwks;

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
