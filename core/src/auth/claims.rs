//! The claims: the registered ones (`exp`, `nbf`, `iat`, `iss`, `aud`), the subject, the
//! required ones, the role, and how token-supplied values are shown in messages.

use serde_json::{Map, Value};

use super::Authenticator;
use crate::clock::Timestamp;
use crate::error::{Error, ErrorKind};

impl Authenticator {
    /// Checks the registered and configured claims; returns `exp`, the subject and the role.
    pub(super) fn check_claims(
        &self,
        claims: &Map<String, Value>,
        now: Timestamp,
    ) -> Result<Checked, Error> {
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
pub(super) struct Checked {
    pub(super) exp: Option<f64>,
    /// The later of `nbf` and `iat`.
    pub(super) not_before: Option<f64>,
    pub(super) subject: String,
    pub(super) role: Option<String>,
}

/// The claim at `path`: the top-level claim of that exact name, else the dotted path.
pub(super) fn lookup<'c>(claims: &'c Map<String, Value>, path: &str) -> Option<&'c Value> {
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

pub(super) fn check_path(path: &str, field: &str) -> Result<(), Error> {
    if path.is_empty() || path.split('.').any(str::is_empty) && !path.contains("://") {
        return Err(Error::config(
            field,
            format!("{path:?} is not a claim name or dotted path"),
        ));
    }
    Ok(())
}

pub(super) fn seconds_to_micros(seconds: f64) -> u64 {
    // `as` saturates: negative and NaN become 0, huge values u64::MAX.
    (seconds * 1e6).floor() as u64
}

pub(super) fn type_name(value: &Value) -> &'static str {
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
pub(super) fn shown(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}
