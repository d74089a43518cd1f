//! The signing keys of a JWKS document (`auth.jwks`), and the algorithms each may verify.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::{AlgSet, Family, Key, alg_name, check_kid, hmac_min_len, read_file};
use crate::auth::config::JwksConfig;
use crate::error::Error;

/// Reads a JWKS document and returns its usable signing keys. Keys not meant for verifying
/// signatures (`use` other than `sig`, `key_ops` without `verify`, an `RSA-OAEP`-like `alg`)
/// and keys of curves or algorithms floodwall does not verify (P-521, Ed448, `ES512`) are
/// skipped; a key that cannot be read at all, or an `oct` key shorter than RFC 7518 §3.2
/// allows, is an error.
pub(super) fn load_jwks(
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
