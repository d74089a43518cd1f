//! The HTTP meaning of a request and of the answer, once for every host.
//!
//! A host's middleware — Express, ASGI, WSGI, Go's `net/http` — builds an [`HttpRequest`]
//! from its framework (the method, the request target as received, the socket peer, and a
//! [`HeaderLookup`] for the few headers the engine asks for, [`Engine::http_headers`]) and
//! asks [`Engine::http`]. The answer is an [`HttpVerdict`]: leave the request alone
//! ([`HttpVerdict::Skip`]), let it through with the headers to add ([`HttpVerdict::Pass`]),
//! or answer it with a [`Response`] made here ([`HttpVerdict::Refuse`]). When the response is
//! finished, the host hands the [`Exchange`] back to [`Engine::http_finish`] with the status
//! (and the response headers a rule reads), which records it and settles response-aware
//! counting. A middleware is therefore only a translation: the rules, their texts and every
//! header value live here, and every host answers a request byte for byte alike (the
//! language-neutral cases in `tests/http/` check it over real HTTP).
//!
//! # What a request means
//!
//! - **Its path** is the target in normal form ([`normalize_path`]): percent-decoding of
//!   unreserved characters, dot segments, repeated slashes, `;` parameters, absolute-form
//!   targets, the trailing slash and — unless `http.case_sensitive` — case. Rules match it,
//!   endpoint keys are built from it, monitoring records it; the same normalisation runs in
//!   [`Engine::check`], so every entry point agrees. A request to `/API/orders/` is counted by
//!   the rule for `/api/orders`. Public and skipped paths are stricter: only a target that a
//!   host routes as its normal form can be exempted ([`NormalPath::exemptable`]).
//! - **Its method**: a rule for `GET` applies to `HEAD`, and a `HEAD` request counts against
//!   the `GET` endpoint's key (`http.head_as_get`, on by default: every framework answers
//!   `HEAD` with the `GET` handler).
//! - **Its client address**: the socket peer, unless the peer is in `http.trusted_proxies`;
//!   then the forwarding header (`X-Forwarded-For`, or RFC 7239 `Forwarded`) is walked right to
//!   left past the trusted hops ([`client_address`]). Every spelling of an address is one key,
//!   and IPv6 clients are counted by their `/56` (`http.ipv6_subnet`). A forwarding header
//!   that arrives while no proxy is trusted is counted and reported once (the report's
//!   `warnings`): the server is probably behind a proxy it does not know of, and every client
//!   shares the proxy's limits. A network covering every address is refused unless
//!   `http.trust_all` says so.
//!
//! # What the HTTP layer decides, in order
//!
//! 1. A skipped path (`http.skip_paths`) is left alone: nothing is checked or recorded.
//! 2. The host's cost must be an integer from 0 to 2^53 (else 400 `invalid_cost`).
//! 3. The deny list by address or header value answers 403 `access_denied`; the allow list by
//!    address or header value skips every limit (the token is still checked).
//! 4. Rules with `before_auth = true` are decided without a caller, so that a flood of bad
//!    tokens from one address is refused with 429 after its limit, without a signature check
//!    each. They count every request they match, whatever the token and the later rules say
//!    (they are one atomic step of their own).
//! 5. Unless the path is public (`http.public_paths`) or the stage does not authenticate, the
//!    bearer token is verified: 401 with the RFC 6750 challenge when it is refused.
//! 6. The deny list by subject or role answers 403; the allow list by subject or role skips
//!    the remaining limits.
//! 7. Every other matching rule is decided with the caller's subject and role, all at once.
//!
//! The answers are in [`answer`]; the rate-limit headers of every layer decided go on the
//! response that lets a request through, and on the 401 or 429 that stops it.
//!
//! # Response-aware counting and shadow mode
//!
//! A rule with `count_responses = "failed"` keeps only the requests answered with a failure
//! (`failed_statuses`, 400–599 by default) counted, `"successful"` only the others: when the
//! response is finished the rest are refunded — exactly, on both stores ([`Quota::refund`]).
//! `cost_header` names a response header whose integer value is then added to the count
//! ([`Quota::charge`]). A rule (or, with `http.shadow`, every rule) in shadow mode decides and
//! counts like the others, but its denial denies nothing: the request goes through and the
//! decision is recorded as one that rule would have denied.
//!
//! # Stages
//!
//! [`HttpStage::Guard`] does it all in one call. Hosts whose frameworks split authentication
//! from rate limiting (Express's `authenticate()` and `rateLimit()`) use
//! [`HttpStage::Authenticate`] — steps 1–6 — then [`HttpStage::RateLimit`] with the caller the
//! first stage verified: that stage applies step 7 only, and the first one records the
//! response.
//!
//! [`Engine::http`]: crate::Engine::http
//! [`Engine::http_finish`]: crate::Engine::http_finish
//! [`Engine::http_headers`]: crate::Engine::http_headers
//! [`Engine::check`]: crate::Engine::check
//! [`Quota::refund`]: crate::limit::Quota::refund
//! [`Quota::charge`]: crate::limit::Quota::charge

mod address;
pub mod answer;
mod config;
mod flow;

pub use crate::path::{NormalPath, PathBuffer, normalize_path};
pub(crate) use address::is_dotted_v4;
pub use address::{
    ForwardedHeader, MAX_ADDRESS_KEY, NetworkSet, address_key, client_address, parse_address,
};
pub use answer::{PROBLEM_CONTENT_TYPE, Response, error_response};
pub use config::{AccessListConfig, AccessLists, DEFAULT_IPV6_SUBNET, HttpConfig};
pub(crate) use config::{CompiledAccess, HttpSettings};
pub use flow::{Admission, Caller, Exchange, HttpRequest, HttpStage, HttpVerdict, Refusal};
pub(crate) use flow::{HttpState, Pending};

/// The request headers a host hands the HTTP layer, looked up by lower-case name.
///
/// A header sent on several lines is one value, its lines joined by `,` (RFC 9110 §5.3), so
/// that two `Authorization` headers are one malformed token and every line of
/// `X-Forwarded-For` is walked.
pub trait HeaderLookup {
    /// The value of the header `name` (lower-case), or `None` when the request has none.
    fn header(&self, name: &str) -> Option<&str>;
}

/// Pairs of (name, value), names compared case-insensitively; the first pair of a name wins
/// (join repeated headers before building the slice).
impl HeaderLookup for &[(&str, &str)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
    }
}

impl HeaderLookup for [(&str, &str)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
    }
}

impl HeaderLookup for Vec<(String, String)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// No headers at all.
impl HeaderLookup for () {
    fn header(&self, _name: &str) -> Option<&str> {
        None
    }
}
