//! What monitoring records: one [`Event`] per decision, upstream call or answered request.

use std::time::Duration;

use crate::breaker::CallOutcome;
use crate::clock::Timestamp;
use crate::decision::StoreUsed;
use crate::error::ErrorKind;

/// How a decision ended, as monitoring counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// Admitted.
    Admitted,
    /// Denied by a rate limit (`rule` says which).
    RateLimited,
    /// Its bearer token was refused (`error` says why).
    AuthRejected,
    /// The decision itself failed (`error` says how), e.g. `store_unavailable`.
    Failed,
    /// A deny list of the HTTP layer named the caller (answered 403).
    Denied,
}

impl EventOutcome {
    /// `admitted`, `rate_limited`, `auth_rejected`, `failed` or `denied`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Admitted => "admitted",
            EventOutcome::RateLimited => "rate_limited",
            EventOutcome::AuthRejected => "auth_rejected",
            EventOutcome::Failed => "failed",
            EventOutcome::Denied => "denied",
        }
    }

    /// Reads what [`as_str`](Self::as_str) writes.
    pub fn parse(text: &str) -> Option<Self> {
        [
            EventOutcome::Admitted,
            EventOutcome::RateLimited,
            EventOutcome::AuthRejected,
            EventOutcome::Failed,
            EventOutcome::Denied,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }
}

/// A decision on one request: an authentication refusal, or a rate-limit check (admitted,
/// limited, or failed), or a deny list's refusal. The engine records one per
/// [`check`](crate::Engine::check), per [`authorize`](crate::Engine::authorize), per HTTP
/// request ([`http`](crate::Engine::http)), and per refused
/// [`authenticate`](crate::Engine::authenticate) (without an endpoint: it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionEvent<'a> {
    /// When.
    pub at: Timestamp,
    /// The HTTP method and the path, when known. The path may be as the request gave it:
    /// the monitor records its normal form ([`crate::http::normalize_path`]; no query).
    pub endpoint: Option<(&'a str, &'a str)>,
    /// The verified subject, if any.
    pub subject: Option<&'a str>,
    /// The caller's role, if any.
    pub role: Option<&'a str>,
    /// How it ended.
    pub outcome: EventOutcome,
    /// For a rate-limited request, the deciding rule.
    pub rule: Option<&'a str>,
    /// For a refused or failed decision, the error kind.
    pub error: Option<ErrorKind>,
    /// Which store decided, when a rate limit was checked.
    pub store: Option<StoreUsed>,
    /// For an admitted request, the rule in shadow mode that would have denied it.
    pub shadow_rule: Option<&'a str>,
    /// Whether an allow list of the HTTP layer let the request skip the limits.
    pub allowlisted: bool,
    /// For a rate-limited request, whether its key was blocked (`block_for`).
    pub blocked: bool,
}

/// A finished call to an upstream (a [`Lease`](crate::Lease) finished or dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamEvent<'a> {
    /// When it finished.
    pub at: Timestamp,
    /// The service.
    pub service: &'a str,
    /// The upstream.
    pub upstream: &'a str,
    /// How it ended.
    pub outcome: CallOutcome,
    /// How long it took.
    pub latency: Duration,
    /// Whether this call's outcome opened the upstream's breaker (a trip).
    pub tripped: bool,
}

/// A request the host answered: its status and how long it took, end to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseEvent<'a> {
    /// When it was answered.
    pub at: Timestamp,
    /// The HTTP method.
    pub method: &'a str,
    /// The path, recorded in normal form as a decision's is.
    pub path: &'a str,
    /// The HTTP status.
    pub status: u16,
    /// From the request's arrival to its answer.
    pub latency: Duration,
}

/// One thing that happened, as the aggregate and the stream take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A decision on a request.
    Decision(DecisionEvent<'a>),
    /// A finished upstream call.
    Upstream(UpstreamEvent<'a>),
    /// An answered request.
    Response(ResponseEvent<'a>),
}

impl Event<'_> {
    /// When it happened.
    pub const fn at(&self) -> Timestamp {
        match self {
            Event::Decision(e) => e.at,
            Event::Upstream(e) => e.at,
            Event::Response(e) => e.at,
        }
    }
}

/// The path without its query string or fragment.
pub(crate) fn bare_path(path: &str) -> &str {
    // A byte search: `?` and `#` are ASCII, so the cut is on a character boundary.
    match path.bytes().position(|b| b == b'?' || b == b'#') {
        Some(i) => &path[..i],
        None => path,
    }
}
