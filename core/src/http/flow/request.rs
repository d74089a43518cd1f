//! What a host's middleware hands the HTTP layer about one request: [`HttpRequest`], its
//! [`HttpStage`] and the [`Caller`] an earlier stage verified.

use crate::clock::Timestamp;
use crate::http::HeaderLookup;

/// Which part of the HTTP layer a host's middleware is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpStage {
    /// Everything in one call: the token, the lists and every rule.
    #[default]
    Guard,
    /// The token, the lists and the rules decided before it — no other rule.
    Authenticate,
    /// The rules. After an [`Authenticate`](HttpStage::Authenticate) stage on the same request
    /// (see [`HttpRequest::after_authenticate`]), only those it did not decide.
    RateLimit,
}

/// A caller an earlier stage verified, for the [`RateLimit`](HttpStage::RateLimit) stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    /// The verified subject.
    pub subject: &'a str,
    /// Its role.
    pub role: Option<&'a str>,
}

/// What a host's middleware hands the HTTP layer about one request. Build it with
/// [`HttpRequest::new`] and the consuming setters.
#[derive(Clone, Copy)]
pub struct HttpRequest<'a> {
    /// The method, as received.
    pub method: &'a str,
    /// The request target as received: `/api/orders?page=2`, or the absolute form.
    pub target: &'a str,
    /// The socket peer's address (any spelling, a port allowed); `None` when unknown.
    pub peer: Option<&'a str>,
    /// The request's headers; only those [`Engine::http_headers`] names are asked for.
    ///
    /// [`Engine::http_headers`]: crate::Engine::http_headers
    pub headers: &'a dyn HeaderLookup,
    /// The units the request takes from every matching limit, as the host's cost function
    /// answered (1 by default); anything but an integer from 0 to 2^53 is answered 400.
    pub cost: f64,
    /// Which stage this is.
    pub stage: HttpStage,
    /// For the [`RateLimit`](HttpStage::RateLimit) stage: the caller an earlier stage verified.
    pub caller: Option<Caller<'a>>,
    /// For the [`RateLimit`](HttpStage::RateLimit) stage: whether an
    /// [`Authenticate`](HttpStage::Authenticate) stage saw the request first (it applied the
    /// rules decided before the token, and it records the response).
    pub after_authenticate: bool,
    /// An explicit time instead of the engine's clock (tests, replays).
    pub now: Option<Timestamp>,
    /// How long the host may still wait for capacity rather than answer 429 (zero by default:
    /// it answers at once). A rate-limit refusal whose `retry_after` is within it is not
    /// recorded and comes back with [`Refusal::retry_in`] set: the host waits that long and
    /// asks again with what is left, and only the attempt it answers is recorded.
    ///
    /// [`Refusal::retry_in`]: crate::http::Refusal::retry_in
    pub may_wait: std::time::Duration,
}

impl std::fmt::Debug for HttpRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("peer", &self.peer)
            .field("cost", &self.cost)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl<'a> HttpRequest<'a> {
    /// A [`Guard`](HttpStage::Guard) request of cost 1 from an unknown peer.
    pub fn new(method: &'a str, target: &'a str, headers: &'a dyn HeaderLookup) -> Self {
        HttpRequest {
            method,
            target,
            peer: None,
            headers,
            cost: 1.0,
            stage: HttpStage::Guard,
            caller: None,
            after_authenticate: false,
            now: None,
            may_wait: std::time::Duration::ZERO,
        }
    }

    /// Sets the socket peer.
    pub fn peer(mut self, peer: &'a str) -> Self {
        self.peer = Some(peer);
        self
    }

    /// Sets the cost.
    pub fn cost(mut self, cost: f64) -> Self {
        self.cost = cost;
        self
    }

    /// Sets the stage.
    pub fn stage(mut self, stage: HttpStage) -> Self {
        self.stage = stage;
        self
    }

    /// Sets the caller an earlier stage verified.
    pub fn caller(mut self, subject: &'a str, role: Option<&'a str>) -> Self {
        self.caller = Some(Caller { subject, role });
        self
    }

    /// Marks the request as seen by an [`Authenticate`](HttpStage::Authenticate) stage first.
    pub fn after_authenticate(mut self) -> Self {
        self.after_authenticate = true;
        self
    }

    /// Lets the host wait up to `budget` for capacity instead of answering 429 (see
    /// [`may_wait`](Self::may_wait)).
    pub fn may_wait(mut self, budget: std::time::Duration) -> Self {
        self.may_wait = budget;
        self
    }

    /// Decides at `now` instead of the engine's clock.
    pub fn at(mut self, now: Timestamp) -> Self {
        self.now = Some(now);
        self
    }
}
