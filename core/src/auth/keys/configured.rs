//! A key given in `auth.keys`: an inline, base64 or environment secret, or a PEM public key,
//! and the algorithms it may verify.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::DecodingKey;

use super::{AlgSet, Family, Key, alg_by_name, check_kid, hmac_min_len, read_file};
use crate::auth::config::KeyConfig;
use crate::error::Error;

pub(super) fn load_key(
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
