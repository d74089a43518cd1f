//! [`Request`]: what a host asks the engine about one request, outside the HTTP layer.

use crate::clock::Timestamp;

/// One request to decide on. Build it with [`Request::new`] and the consuming setters; only
/// `method` and `path` are required.
///
/// ```
/// use floodwall::Request;
/// let request = Request::new("GET", "/api/orders/7").subject("alice").role("premium").ip("192.0.2.1");
/// assert_eq!(request.cost, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The HTTP method, any case.
    pub method: &'a str,
    /// The request path or target; the engine reads it in normal form (see
    /// [`crate::http::normalize_path`]): a query string or fragment is ignored.
    pub path: &'a str,
    /// The verified subject, if any.
    pub subject: Option<&'a str>,
    /// The caller's role, if any; it selects role overrides and role-restricted rules.
    pub role: Option<&'a str>,
    /// The client address, as the host determined it (mind trusted proxies), in any
    /// spelling: it is keyed as [`crate::http::address_key`] writes it.
    pub ip: Option<&'a str>,
    /// Request headers, for rules keyed on `header:NAME` (names compared case-insensitively).
    pub headers: &'a [(&'a str, &'a str)],
    /// How many units the request takes from every matching limit; 0 peeks without consuming.
    pub cost: u64,
    /// An explicit time instead of the engine's clock (tests, replays, conformance vectors).
    pub now: Option<Timestamp>,
}

impl<'a> Request<'a> {
    /// A request of cost 1 with nothing but a method and a path.
    pub const fn new(method: &'a str, path: &'a str) -> Self {
        Request {
            method,
            path,
            subject: None,
            role: None,
            ip: None,
            headers: &[],
            cost: 1,
            now: None,
        }
    }

    /// Sets the subject.
    pub const fn subject(mut self, subject: &'a str) -> Self {
        self.subject = Some(subject);
        self
    }

    /// Sets the role.
    pub const fn role(mut self, role: &'a str) -> Self {
        self.role = Some(role);
        self
    }

    /// Sets the client address.
    pub const fn ip(mut self, ip: &'a str) -> Self {
        self.ip = Some(ip);
        self
    }

    /// Sets the headers rules may key on.
    pub const fn headers(mut self, headers: &'a [(&'a str, &'a str)]) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the cost.
    pub const fn cost(mut self, cost: u64) -> Self {
        self.cost = cost;
        self
    }

    /// Decides at `now` instead of the engine's clock.
    pub const fn at(mut self, now: Timestamp) -> Self {
        self.now = Some(now);
        self
    }
}
