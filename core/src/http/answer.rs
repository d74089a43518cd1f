//! The responses floodwall answers itself, built once for every host: status, headers and an
//! RFC 9457 problem body (`application/problem+json`) whose `code` is stable and whose
//! `detail` is a fixed sentence — nothing of the request (its token least of all) is ever
//! echoed.
//!
//! | status | `code` | when | headers |
//! |---|---|---|---|
//! | 400 | `invalid_cost` | the host's cost for the request is not an integer from 0 to 2^53 | |
//! | 401 | the error kind (`missing_token`, `expired` …) | the bearer token is refused | `WWW-Authenticate` (RFC 6750) |
//! | 403 | `access_denied` | a deny list names the caller | |
//! | 429 | `rate_limited` | a rate limit denies | the decision's `RateLimit` headers, `Retry-After` |
//! | 429 | `cost_exceeds_limit` | the cost is above a limit: never admitted | |
//! | 503 | `store_unavailable` | the shared store failed and `on_error = "error"` | `Retry-After` |
//! | 503 | `no_upstream_available` | no upstream can take the call | `Retry-After` when a breaker reopens |
//! | 503 | `invalid_config`, `unknown_rule`, `unknown_service`, `unknown_upstream` | the server is not set up to serve it | |
//! | 502 | `bad_gateway` | a proxy's upstream could not be reached or broke off | |
//! | 504 | `upstream_timeout` | a proxy's upstream did not answer in time | |
//!
//! Every answer carries `Content-Type` and `Content-Length`, and the rate-limit headers of
//! the layers decided before it was given. No error kind is ever a 500.

use std::fmt::Write as _;

use crate::clock::Timestamp;
use crate::decision::Decision;
use crate::error::{Error, ErrorKind};

/// The media type of every body floodwall writes.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// One HTTP response: what a host writes, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, in order, by canonical name.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: String,
}

impl Response {
    /// One header's value by name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body's `code`.
    pub fn code(&self) -> Option<String> {
        let body: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        body.get("code")?.as_str().map(str::to_owned)
    }
}

/// The reason phrase of the statuses floodwall answers with (RFC 9110 §15).
pub fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        429 => "Too Many Requests",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// The `detail` sentence of a refused token's 401, by kind.
fn auth_detail(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::MissingToken => {
            "The request carries no bearer token in its Authorization header."
        }
        ErrorKind::MalformedToken => "The bearer token is not a well-formed JWT.",
        ErrorKind::TokenTooLarge => "The bearer token is larger than this server accepts.",
        ErrorKind::AlgorithmNotAllowed => {
            "The bearer token is signed with an algorithm this server does not accept."
        }
        ErrorKind::UnknownKey => "The bearer token names a signing key this server does not know.",
        ErrorKind::BadSignature => "The bearer token's signature is not valid.",
        ErrorKind::Expired => "The bearer token has expired.",
        ErrorKind::NotYetValid => "The bearer token is not valid yet.",
        ErrorKind::WrongIssuer => {
            "The bearer token comes from an issuer this server does not accept."
        }
        ErrorKind::WrongAudience => "The bearer token is meant for another audience.",
        ErrorKind::MissingClaim => "The bearer token lacks a claim this server requires.",
        ErrorKind::InvalidClaim => {
            "A claim of the bearer token has a value this server does not accept."
        }
        ErrorKind::InvalidConfig
        | ErrorKind::CostExceedsLimit
        | ErrorKind::InvalidCost
        | ErrorKind::NoUpstreamAvailable
        | ErrorKind::UnknownRule
        | ErrorKind::UnknownService
        | ErrorKind::UnknownUpstream
        | ErrorKind::StoreUnavailable => "The bearer token was refused.",
    }
}

/// The problem body: `{"type":"about:blank","title":…,"status":…,"detail":…,"code":…}` and
/// `extra` members after them.
fn problem_body(
    status: u16,
    detail: &str,
    code: &str,
    extra: &[(&str, ProblemValue<'_>)],
) -> String {
    let mut body = String::with_capacity(160);
    body.push_str("{\"type\":\"about:blank\",\"title\":");
    push_json_string(&mut body, reason(status));
    let _ = write!(body, ",\"status\":{status},\"detail\":");
    push_json_string(&mut body, detail);
    body.push_str(",\"code\":");
    push_json_string(&mut body, code);
    for (name, value) in extra {
        body.push(',');
        push_json_string(&mut body, name);
        body.push(':');
        match value {
            ProblemValue::Text(t) => push_json_string(&mut body, t),
            ProblemValue::Number(n) => {
                let _ = write!(body, "{n}");
            }
            ProblemValue::Flag(f) => {
                let _ = write!(body, "{f}");
            }
        }
    }
    body.push('}');
    body
}

enum ProblemValue<'a> {
    Text(&'a str),
    Number(u64),
    Flag(bool),
}

fn push_json_string(out: &mut String, text: &str) {
    // serde_json's escaping, without a `Value` in between.
    out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned()));
}

fn problem(
    status: u16,
    code: &str,
    detail: &str,
    mut headers: Vec<(&'static str, String)>,
    extra: &[(&str, ProblemValue<'_>)],
) -> Response {
    let body = problem_body(status, detail, code, extra);
    headers.push(("Content-Type", PROBLEM_CONTENT_TYPE.to_owned()));
    headers.push(("Content-Length", body.len().to_string()));
    Response {
        status,
        headers,
        body,
    }
}

/// Seconds, rounded up: a client that waits as told is never early.
fn ceil_secs(micros: u64) -> u64 {
    micros.div_ceil(1_000_000)
}

/// The 429 of a request a rate limit denied: `headers` are the decision's (with
/// `Retry-After` when the configuration renders it), `rule` the denying rule. The body's
/// `retry_after` is in whole seconds, rounded up, as `Retry-After` is. A denial by a block
/// (`block_for`) says so, and its `retry_after` is the block's end.
pub(crate) fn rate_limited(decision: &Decision<'_>) -> Response {
    let seconds = decision.retry_after_ms().div_ceil(1_000);
    let blocked = decision.blocked();
    let detail = if blocked {
        format!(
            "This client is blocked after too many requests over the rate limit; retry in {seconds} s."
        )
    } else {
        format!("The rate limit is exhausted; retry in {seconds} s.")
    };
    let mut extra = Vec::with_capacity(3);
    if let Some(rule) = decision.rule() {
        extra.push(("rule", ProblemValue::Text(rule)));
    }
    extra.push(("retry_after", ProblemValue::Number(seconds)));
    if blocked {
        extra.push(("blocked", ProblemValue::Flag(true)));
    }
    problem(429, "rate_limited", &detail, decision.headers(), &extra)
}

/// The 403 of a caller a deny list names.
pub(crate) fn access_denied() -> Response {
    problem(
        403,
        "access_denied",
        "This client is not allowed to use this service.",
        Vec::new(),
        &[],
    )
}

/// The 502 a proxy answers when its upstream could not be reached or broke off before
/// answering.
pub fn bad_gateway() -> Response {
    problem(
        502,
        "bad_gateway",
        "The upstream could not be reached or broke off before answering.",
        Vec::new(),
        &[],
    )
}

/// The 504 a proxy answers when its upstream did not answer within `timeout_ms`.
pub fn upstream_timeout(timeout_ms: u64) -> Response {
    problem(
        504,
        "upstream_timeout",
        &format!(
            "The upstream did not answer within {} s.",
            timeout_ms.div_ceil(1_000)
        ),
        Vec::new(),
        &[],
    )
}

/// The 503 a proxy answers when no upstream can take the call, with `Retry-After` (whole
/// seconds from `now`, at least 1) when a breaker lets calls through again at `available_at`.
pub fn no_upstream_available(available_at: Option<Timestamp>, now: Timestamp) -> Response {
    no_upstream(available_at, now, Vec::new())
}

fn no_upstream(
    available_at: Option<Timestamp>,
    now: Timestamp,
    mut headers: Vec<(&'static str, String)>,
) -> Response {
    let mut extra = Vec::new();
    if let Some(at) = available_at {
        let seconds = ceil_secs(at.as_micros().saturating_sub(now.as_micros())).max(1);
        headers.push(("Retry-After", seconds.to_string()));
        extra.push(("retry_after", ProblemValue::Number(seconds)));
    }
    problem(
        503,
        "no_upstream_available",
        "No upstream of this service can take the request now.",
        headers,
        &extra,
    )
}

/// The answer to a request that failed with `error` at `now`; `headers` are the rate-limit
/// headers of the layers decided before it failed.
///
/// ```
/// use floodwall::http::error_response;
/// use floodwall::{Engine, Timestamp};
///
/// let engine = Engine::from_toml(r#"
///     [auth]
///     algorithms = ["HS256"]
///     keys = [{ secret = "an example secret of at least 32 bytes!" }]
/// "#)?;
/// let refused = engine.authenticate("Bearer x.y.z").unwrap_err();
/// let answer = error_response(&refused, Vec::new(), Timestamp::EPOCH);
/// assert_eq!(answer.status, 401);
/// assert_eq!(answer.code().as_deref(), Some("malformed_token"));
/// assert!(answer.header("WWW-Authenticate").unwrap().starts_with("Bearer realm="));
/// # Ok::<(), floodwall::Error>(())
/// ```
pub fn error_response(
    error: &Error,
    mut headers: Vec<(&'static str, String)>,
    now: Timestamp,
) -> Response {
    let kind = error.kind();
    let code = kind.as_str();
    match kind {
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
        | ErrorKind::InvalidClaim => {
            let challenge = error
                .www_authenticate()
                .map_or_else(|| "Bearer".to_owned(), str::to_owned);
            headers.insert(0, ("WWW-Authenticate", challenge));
            problem(401, code, auth_detail(kind), headers, &[])
        }
        ErrorKind::CostExceedsLimit => problem(
            429,
            code,
            "The request costs more than a rate limit allows; it can never be admitted.",
            headers,
            &[],
        ),
        ErrorKind::InvalidCost => problem(
            400,
            code,
            "The request's cost must be an integer from 0 to 2^53.",
            Vec::new(),
            &[],
        ),
        ErrorKind::StoreUnavailable => {
            let seconds = crate::store::UNAVAILABLE_RETRY.as_secs().max(1);
            headers.push(("Retry-After", seconds.to_string()));
            problem(
                503,
                code,
                "The rate-limit store is unavailable; retry shortly.",
                headers,
                &[("retry_after", ProblemValue::Number(seconds))],
            )
        }
        ErrorKind::NoUpstreamAvailable => no_upstream(error.available_at(), now, headers),
        ErrorKind::InvalidConfig
        | ErrorKind::UnknownRule
        | ErrorKind::UnknownService
        | ErrorKind::UnknownUpstream => problem(
            503,
            code,
            "This server is not set up to serve the request.",
            Vec::new(),
            &[],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The second of two requests at `now_ms` on a rule of one request per 2s.
    fn denied(extra: &str, now_ms: u64) -> Response {
        let engine = crate::Engine::from_toml(&format!(
            "[[rules]]\nname = \"per-user\"\nkey = \"subject\"\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"2s\"\n{extra}"
        ))
        .unwrap();
        let request = crate::Request::new("GET", "/")
            .subject("alice")
            .at(Timestamp::from_millis(now_ms));
        assert!(engine.check(&request).unwrap().allowed());
        rate_limited(&engine.check(&request).unwrap())
    }

    #[test]
    fn bodies_are_compact_json_with_a_stable_code() {
        let r = denied("", 500);
        assert_eq!(r.status, 429);
        assert_eq!(r.header("Retry-After"), Some("2"));
        assert_eq!(
            r.body,
            r#"{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"The rate limit is exhausted; retry in 2 s.","code":"rate_limited","rule":"per-user","retry_after":2}"#
        );
        let blocked = denied("block_for = \"1m\"", 500);
        assert_eq!(blocked.header("Retry-After"), Some("60"));
        assert_eq!(
            blocked.body,
            r#"{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"This client is blocked after too many requests over the rate limit; retry in 60 s.","code":"rate_limited","rule":"per-user","retry_after":60,"blocked":true}"#
        );
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
        assert_eq!(r.header("Content-Type"), Some(PROBLEM_CONTENT_TYPE));
        let _: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    }

    #[test]
    fn no_kind_is_a_500() {
        for kind in ErrorKind::ALL {
            let error = Error::new(kind, "x");
            let status = error_response(&error, Vec::new(), Timestamp::EPOCH).status;
            assert!(matches!(status, 400 | 401 | 429 | 503), "{kind}: {status}");
            assert_eq!(status, kind.http_status(), "{kind}");
        }
    }

    #[test]
    fn upstream_answers() {
        let later = Timestamp::from_millis(2_500);
        let error = Error::no_upstream("none", Some(later));
        let r = error_response(&error, Vec::new(), Timestamp::from_millis(1_000));
        assert_eq!(r.header("Retry-After"), Some("2"));
        assert!(
            r.body
                .ends_with(r#""code":"no_upstream_available","retry_after":2}"#)
        );
        assert_eq!(bad_gateway().status, 502);
        assert!(upstream_timeout(10_000).body.contains("within 10 s"));
    }
}
