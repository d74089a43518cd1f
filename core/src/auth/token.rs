//! The token itself: its shape, its header, the key that verifies it and its signature, then
//! the identity its claims give.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::aws_lc;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::cache::CacheWindow;
use super::claims::{Checked, seconds_to_micros, shown};
use super::keys::{Candidates, Key, NoKey, alg_by_name, alg_name};
use super::{Authenticator, Identity};
use crate::clock::Timestamp;
use crate::error::{Error, ErrorKind};

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
    /// Verifies one token: its identity, and when and how a cache entry of it may be used.
    pub(super) fn verify(
        &self,
        token: &str,
        now: Timestamp,
    ) -> Result<(Identity, CacheWindow), Error> {
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
