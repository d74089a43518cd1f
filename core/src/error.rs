//! The one error type of the core crate.
//!
//! [`Error`] is opaque; what a caller branches on is its [`ErrorKind`], whose snake_case name
//! ([`ErrorKind::as_str`]) is the same in Rust, C, Python and Node. The enum is
//! `#[non_exhaustive]`, so code outside this crate needs a catch-all arm when it matches on
//! it; each binding maps that arm to an "unknown" code of its own and has a test that walks
//! [`ErrorKind::ALL`] and fails on any kind that reaches it, so a new kind forces a decision
//! there.

use std::fmt;

use crate::clock::Timestamp;

/// What went wrong, as a stable, enumerable kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration could not be read or is invalid; [`Error::field`] names the field.
    InvalidConfig,
    /// The request's cost is larger than a matching layer's limit (or bucket capacity): it can
    /// never be admitted, however long the caller waits. Nothing was consumed.
    CostExceedsLimit,
    /// The cost a host gave for a request is not an integer from 0 to 2^53 (a host's cost
    /// function answered a negative, fractional or huge number): the HTTP layer answers 400.
    InvalidCost,
    /// No bearer token: no `Authorization` value, an empty one, another scheme than `Bearer`,
    /// or a bare token where `auth.bare_token` is off.
    MissingToken,
    /// The token is not a compact JWS: wrong number of segments, not base64url (or padded),
    /// header or payload not a JSON object, header without `alg`, unsupported `crit`.
    MalformedToken,
    /// The token is longer than the configured cap; it was not decoded at all.
    TokenTooLarge,
    /// The header names an algorithm the configuration does not accept (including `none`), or
    /// one the key its `kid` selects cannot verify (the key-confusion attack).
    AlgorithmNotAllowed,
    /// The header's `kid` names no configured key, or no key verifies the token's algorithm.
    UnknownKey,
    /// The signature does not verify with the selected key(s).
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    NotYetValid,
    /// `iss` is not one of the accepted issuers.
    WrongIssuer,
    /// `aud` names none of the accepted audiences (or names one when none is configured).
    WrongAudience,
    /// A required claim is absent: `exp`, the subject, `iss`/`aud` when configured, or a
    /// configured custom claim.
    MissingClaim,
    /// A claim has the wrong type: a non-numeric `exp`/`nbf`/`iat`, a non-string subject or
    /// issuer, a role claim that is neither a string nor a list of strings.
    InvalidClaim,
    /// No upstream of the service can take a call now: every one is down, open, or half-open
    /// with all its probes out. [`Error::available_at`] says when the first may reopen.
    NoUpstreamAvailable,
    /// No rule of that name is configured (per-key administration names a rule).
    UnknownRule,
    /// No service of that name is configured.
    UnknownService,
    /// The service has no upstream of that name.
    UnknownUpstream,
    /// The shared store (Redis) failed or timed out, and `store.on_error = "error"` asks for
    /// the failure instead of a decision. Nothing was consumed in the fallback store.
    StoreUnavailable,
}

impl ErrorKind {
    /// The kind's stable snake_case name, shared by every binding.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::CostExceedsLimit => "cost_exceeds_limit",
            ErrorKind::InvalidCost => "invalid_cost",
            ErrorKind::MissingToken => "missing_token",
            ErrorKind::MalformedToken => "malformed_token",
            ErrorKind::TokenTooLarge => "token_too_large",
            ErrorKind::AlgorithmNotAllowed => "algorithm_not_allowed",
            ErrorKind::UnknownKey => "unknown_key",
            ErrorKind::BadSignature => "bad_signature",
            ErrorKind::Expired => "expired",
            ErrorKind::NotYetValid => "not_yet_valid",
            ErrorKind::WrongIssuer => "wrong_issuer",
            ErrorKind::WrongAudience => "wrong_audience",
            ErrorKind::MissingClaim => "missing_claim",
            ErrorKind::InvalidClaim => "invalid_claim",
            ErrorKind::NoUpstreamAvailable => "no_upstream_available",
            ErrorKind::UnknownRule => "unknown_rule",
            ErrorKind::UnknownService => "unknown_service",
            ErrorKind::UnknownUpstream => "unknown_upstream",
            ErrorKind::StoreUnavailable => "store_unavailable",
        }
    }

    /// Every kind, in declaration order (for bindings that export them and for tests).
    pub const ALL: [ErrorKind; 20] = [
        ErrorKind::InvalidConfig,
        ErrorKind::CostExceedsLimit,
        ErrorKind::InvalidCost,
        ErrorKind::MissingToken,
        ErrorKind::MalformedToken,
        ErrorKind::TokenTooLarge,
        ErrorKind::AlgorithmNotAllowed,
        ErrorKind::UnknownKey,
        ErrorKind::BadSignature,
        ErrorKind::Expired,
        ErrorKind::NotYetValid,
        ErrorKind::WrongIssuer,
        ErrorKind::WrongAudience,
        ErrorKind::MissingClaim,
        ErrorKind::InvalidClaim,
        ErrorKind::NoUpstreamAvailable,
        ErrorKind::UnknownRule,
        ErrorKind::UnknownService,
        ErrorKind::UnknownUpstream,
        ErrorKind::StoreUnavailable,
    ];

    /// Reads what [`as_str`](Self::as_str) writes (`"expired"` → [`ErrorKind::Expired`]).
    pub fn parse(text: &str) -> Option<Self> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Whether this kind is an authentication rejection (the request's credentials are at
    /// fault, not the configuration or the request's cost).
    pub const fn is_auth(self) -> bool {
        !matches!(
            self,
            ErrorKind::InvalidConfig
                | ErrorKind::CostExceedsLimit
                | ErrorKind::InvalidCost
                | ErrorKind::NoUpstreamAvailable
                | ErrorKind::UnknownRule
                | ErrorKind::UnknownService
                | ErrorKind::UnknownUpstream
                | ErrorKind::StoreUnavailable
        )
    }

    /// The HTTP status of the answer [`crate::http`] gives: 401 for every authentication
    /// rejection (RFC 6750 §3.1), 429 for a cost that can never be admitted, 400 for a cost
    /// that is no count at all, and 503 for everything the server cannot do now — no upstream
    /// can take the call, the shared store is unavailable, or the server is not set up for the
    /// request (a configuration error, an unknown service or upstream). No kind is a 500.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorKind::CostExceedsLimit => 429,
            ErrorKind::InvalidCost => 400,
            ErrorKind::InvalidConfig
            | ErrorKind::UnknownRule
            | ErrorKind::UnknownService
            | ErrorKind::UnknownUpstream
            | ErrorKind::NoUpstreamAvailable
            | ErrorKind::StoreUnavailable => 503,
            ErrorKind::MissingToken
            | ErrorKind::MalformedToken
            | ErrorKind::TokenTooLarge
            | ErrorKind::AlgorithmNotAllowed
            | ErrorKind::UnknownKey
            | ErrorKind::BadSignature
            | ErrorKind::Expired
            | ErrorKind::NotYetValid
            | ErrorKind::WrongIssuer
            | ErrorKind::WrongAudience
            | ErrorKind::MissingClaim
            | ErrorKind::InvalidClaim => 401,
        }
    }

    /// A fixed, human-readable description for the `error_description` attribute of a
    /// `WWW-Authenticate` challenge; never contains request data. `None` for `missing_token`
    /// (RFC 6750 §3.1: no error code when the request carried no credentials) and for the
    /// kinds that are not authentication rejections.
    pub const fn challenge_description(self) -> Option<&'static str> {
        Some(match self {
            ErrorKind::InvalidConfig
            | ErrorKind::CostExceedsLimit
            | ErrorKind::InvalidCost
            | ErrorKind::MissingToken
            | ErrorKind::NoUpstreamAvailable
            | ErrorKind::UnknownRule
            | ErrorKind::UnknownService
            | ErrorKind::UnknownUpstream
            | ErrorKind::StoreUnavailable => {
                return None;
            }
            ErrorKind::MalformedToken => "The access token is malformed",
            ErrorKind::TokenTooLarge => "The access token is too large",
            ErrorKind::AlgorithmNotAllowed => {
                "The access token is signed with an algorithm that is not accepted"
            }
            ErrorKind::UnknownKey => "The access token is signed by an unknown key",
            ErrorKind::BadSignature => "The access token signature is invalid",
            ErrorKind::Expired => "The access token expired",
            ErrorKind::NotYetValid => "The access token is not valid yet",
            ErrorKind::WrongIssuer => "The access token issuer is not accepted",
            ErrorKind::WrongAudience => "The access token audience is not accepted",
            ErrorKind::MissingClaim => "The access token lacks a required claim",
            ErrorKind::InvalidClaim => "The access token has a claim of the wrong type",
        })
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from floodwall: a [`kind`](Error::kind), a message a person can act on, and for
/// configuration errors the path of the offending field (`rules[2].window`).
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    field: Option<String>,
    message: String,
    /// For authentication rejections, the `WWW-Authenticate` value to send.
    challenge: Option<String>,
    /// For `no_upstream_available`, when the first upstream may take calls again.
    available_at: Option<Timestamp>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            field: None,
            message: message.into(),
            challenge: None,
            available_at: None,
        }
    }

    /// An authentication rejection, with the RFC 6750 challenge for `realm` (already checked
    /// to be a valid quoted-string body).
    pub(crate) fn auth(kind: ErrorKind, realm: &str, message: impl Into<String>) -> Self {
        let challenge = match kind.challenge_description() {
            Some(description) => format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{description}\""
            ),
            None => format!("Bearer realm=\"{realm}\""),
        };
        Error {
            kind,
            field: None,
            message: message.into(),
            challenge: Some(challenge),
            available_at: None,
        }
    }

    /// A configuration error about `field` (a path such as `rules[0].window`, or empty for the
    /// document as a whole).
    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        Error {
            kind: ErrorKind::InvalidConfig,
            field: (!field.is_empty()).then_some(field),
            message: message.into(),
            challenge: None,
            available_at: None,
        }
    }

    /// A `no_upstream_available` error; `available_at` is when the first upstream reopens, if
    /// any is merely waiting for its open time to end.
    pub(crate) fn no_upstream(message: impl Into<String>, available_at: Option<Timestamp>) -> Self {
        let mut e = Error::new(ErrorKind::NoUpstreamAvailable, message);
        e.available_at = available_at;
        e
    }

    /// The same error, its message naming the configuration file it came from.
    pub(crate) fn in_file(mut self, path: &std::path::Path) -> Self {
        self.message = format!("{} (in {})", self.message, path.display());
        self
    }

    /// The kind of error, to branch on.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// For configuration errors, the path of the field at fault, e.g. `rules[1].refill_rate`.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The message without the field path.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// For `no_upstream_available`: the earliest time an upstream's breaker turns half-open
    /// or stops waiting for its probes (send it as `Retry-After`). `None` when every upstream
    /// is marked down.
    pub fn available_at(&self) -> Option<Timestamp> {
        self.available_at
    }

    /// The HTTP status a server should answer with ([`ErrorKind::http_status`]).
    pub fn http_status(&self) -> u16 {
        self.kind.http_status()
    }

    /// For authentication rejections, the `WWW-Authenticate` header value to send with the
    /// 401 (RFC 6750 §3): `Bearer realm="api", error="invalid_token", error_description="The
    /// access token expired"`. It carries a fixed description per kind, never request data;
    /// the detailed [`message`](Self::message) is for logs.
    pub fn www_authenticate(&self) -> Option<&str> {
        self.challenge.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({}: {self})", self.kind)
    }
}

impl std::error::Error for Error {}
