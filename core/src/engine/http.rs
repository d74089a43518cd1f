//! The engine's HTTP entry points: [`Engine::http`], the HTTP layer's decision on one request
//! (the order of the steps is in [`crate::http`]), and [`Engine::http_finish`], what it does
//! once the response is known (recording it, refunds and `cost_header` charges). The types
//! they take and give are [`crate::http`]'s.

use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;

use super::{AddressText, Asked, Engine, Stage};
use crate::auth::Identity;
use crate::clock::Timestamp;
use crate::decision::{Decision, StoreUsed};
use crate::error::{Error, ErrorKind};
use crate::http::answer::{self, error_response};
use crate::http::{
    Admission, Exchange, HeaderLookup, HttpRequest, HttpSettings, HttpStage, HttpVerdict,
    PathBuffer, Refusal, address_key, client_address, is_dotted_v4, normalize_path,
};
use crate::monitor::{DecisionEvent, Event, EventOutcome, ResponseEvent};
use crate::store::Adjustment;

/// The largest cost: every count stays exact in a double (Lua's, JavaScript's).
const MAX_COST: f64 = 9_007_199_254_740_992.0;

/// A host's cost as a count, if it is one.
fn cost_of(cost: f64) -> Option<u64> {
    (cost.is_finite() && cost >= 0.0 && cost.fract() == 0.0 && cost <= MAX_COST)
        .then_some(cost as u64)
}

/// A response header's cost: a whole number from 0 to 2^53, spaces around it allowed.
fn header_cost(value: &str) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() || value.len() > 16 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u64>().ok().filter(|&c| c as f64 <= MAX_COST)
}

/// The rate-limit headers of what was decided so far.
fn headers_of(decision: &Option<Decision<'_>>) -> Vec<(&'static str, String)> {
    decision.as_ref().map(Decision::headers).unwrap_or_default()
}

/// How the request ended, for its decision event.
struct Ended<'a> {
    outcome: EventOutcome,
    rule: Option<&'a str>,
    error: Option<ErrorKind>,
    store: Option<StoreUsed>,
    shadow: Option<&'a str>,
    allowlisted: bool,
    blocked: bool,
    /// A rate-limit refusal's `retry_after`.
    retry: Option<Duration>,
}

impl Engine {
    /// The HTTP layer's verdict on one request (see [`crate::http`] for the steps): skip it,
    /// let it through with its headers, or answer it. Every verdict but a skip carries an
    /// [`Exchange`] to hand to [`http_finish`](Self::http_finish) when the response is done.
    ///
    /// On a Redis store this may wait on the network (up to `store.timeout` per step): call it
    /// off an event loop.
    ///
    /// ```
    /// use floodwall::Engine;
    /// use floodwall::http::{HttpRequest, HttpStage, HttpVerdict};
    ///
    /// let engine = Engine::from_toml(r#"
    ///     [[rules]]
    ///     name = "orders"
    ///     match = { paths = ["/api/orders"] }
    ///     key = "ip"
    ///     algorithm = "sliding_window"
    ///     limit = 1
    ///     window = "1m"
    /// "#)?;
    /// let headers: &[(&str, &str)] = &[];
    /// // No [auth] section: limits only.
    /// let limit = |method, target, peer| {
    ///     engine.http(&HttpRequest::new(method, target, &headers).peer(peer).stage(HttpStage::RateLimit))
    /// };
    /// assert!(matches!(limit("GET", "/api/orders", "192.0.2.7:5000"), HttpVerdict::Pass(_)));
    /// // Another spelling of the same path and the same address is the same counter.
    /// let again = limit("HEAD", "/API/orders/", "::ffff:192.0.2.7");
    /// let HttpVerdict::Refuse(refusal) = again else { panic!("limited") };
    /// assert_eq!(refusal.response.status, 429);
    /// assert_eq!(refusal.response.header("Retry-After"), Some("60"));
    /// # Ok::<(), floodwall::Error>(())
    /// ```
    pub fn http(&self, request: &HttpRequest<'_>) -> HttpVerdict<'_> {
        // One configuration from the first step to the last, whatever a reload does meanwhile.
        let snapshot = self.snapshot.load();
        let live = self
            .gens
            .find_id(snapshot.live)
            .unwrap_or_else(|| self.live());
        let now = request.now.unwrap_or_else(|| self.clock.now());
        let mut buffer = PathBuffer::new();
        let normal = normalize_path(request.target, live.http.fold_case, &mut buffer);
        let path = normal.as_str();
        if normal.exemptable() && HttpSettings::any_matches(&live.http.skip_paths, path) {
            return HttpVerdict::Skip;
        }
        let stage = request.stage;
        let continued = stage == HttpStage::RateLimit && request.after_authenticate;
        let mut exchange = Exchange::new(request.method, path, now, !continued, live.id);
        let headers = request.headers;
        let mut ended = Ended {
            outcome: EventOutcome::Failed,
            rule: None,
            error: None,
            store: None,
            shadow: None,
            allowlisted: false,
            blocked: false,
            retry: None,
        };
        let mut identity: Option<Arc<Identity>> = None;
        let (mut subject, mut role): (Option<&str>, Option<&str>) = (None, None);
        let verdict = 'verdict: {
            let Some(cost) = cost_of(request.cost) else {
                ended.error = Some(ErrorKind::InvalidCost);
                let error = Error::new(ErrorKind::InvalidCost, "");
                break 'verdict Err(error_response(&error, Vec::new(), now));
            };

            // The client address, only when something looks at it.
            let access = &snapshot.access;
            if live.http.trusted.is_empty()
                && (headers.header("x-forwarded-for").is_some()
                    || headers.header("forwarded").is_some())
            {
                self.http_state.note_untrusted(now);
            }
            let lists_read_addresses = access.allow.has_addresses() || access.deny.has_addresses();
            let forwarded = || headers.header(live.http.forwarded_header.name());
            let mut address = AddressText::new();
            let (client, ip) = match request.peer {
                // The usual case keyed as it is: a dotted IPv4 peer that is the client (no
                // trusted proxy speaks for it) when no list matches addresses.
                Some(peer)
                    if live.keys_ip
                        && !lists_read_addresses
                        && is_dotted_v4(peer)
                        && (live.http.trusted.is_empty() || forwarded().is_none()) =>
                {
                    (None, Some(peer))
                }
                _ if live.keys_ip || lists_read_addresses => {
                    let client = client_address(
                        request.peer,
                        forwarded(),
                        live.http.forwarded_header,
                        &live.http.trusted,
                    );
                    let ip = client.map(|client| {
                        let _ = address_key(client, live.http.ipv6_subnet, &mut address);
                        address.as_str()
                    });
                    (client, ip)
                }
                _ => (None, None),
            };

            if !access.deny.is_empty() && access.deny.names_request(client, headers) {
                ended.outcome = EventOutcome::Denied;
                break 'verdict Err(answer::access_denied());
            }
            ended.allowlisted =
                !access.allow.is_empty() && access.allow.names_request(client, headers);

            let mut asked = Asked {
                method: request.method,
                path,
                subject: None,
                role: None,
                ip,
                headers,
                cost,
                now,
            };
            let mut decision: Option<Decision<'_>> = None;
            if live.before_auth && !continued && !ended.allowlisted {
                match self.decide(live, &asked, Stage::BeforeAuth, Some(&mut exchange.pending)) {
                    Ok(d) if d.allowed() => decision = Some(d),
                    Ok(d) => {
                        ended.outcome = EventOutcome::RateLimited;
                        ended.rule = d.rule();
                        ended.store = Some(d.store());
                        ended.blocked = d.blocked();
                        ended.retry = Some(d.retry_after());
                        break 'verdict Err(answer::rate_limited(&d));
                    }
                    Err(e) => {
                        ended.error = Some(e.kind());
                        break 'verdict Err(error_response(&e, Vec::new(), now));
                    }
                }
            }

            let public =
                normal.exemptable() && HttpSettings::any_matches(&live.http.public_paths, path);
            match stage {
                HttpStage::Guard | HttpStage::Authenticate if !public => {
                    let verified = match &snapshot.auth {
                        Some(auth) => auth.authenticate(
                            headers.header("authorization").unwrap_or(""),
                            self.clock.now(),
                        ),
                        None => Err(Error::config(
                            "auth",
                            "this engine has no [auth] section: it cannot authenticate",
                        )),
                    };
                    match verified {
                        Ok(id) => identity = Some(id),
                        Err(e) => {
                            ended.outcome = if e.kind().is_auth() {
                                EventOutcome::AuthRejected
                            } else {
                                EventOutcome::Failed
                            };
                            ended.error = Some(e.kind());
                            break 'verdict Err(error_response(&e, headers_of(&decision), now));
                        }
                    }
                }
                HttpStage::RateLimit => {
                    if let Some(caller) = request.caller {
                        subject = Some(caller.subject);
                        role = caller.role;
                    }
                }
                _ => {}
            }
            if let Some(id) = &identity {
                subject = Some(id.subject.as_str());
                role = id.role.as_deref();
            }
            if let Some(s) = subject {
                if !access.deny.is_empty() && access.deny.names_caller(s, role) {
                    ended.outcome = EventOutcome::Denied;
                    break 'verdict Err(answer::access_denied());
                }
                if !access.allow.is_empty() && access.allow.names_caller(s, role) {
                    ended.allowlisted = true;
                }
            }

            if stage != HttpStage::Authenticate && !ended.allowlisted {
                asked.subject = subject;
                asked.role = role;
                match self.decide(live, &asked, Stage::AfterAuth, Some(&mut exchange.pending)) {
                    Ok(d) => match &mut decision {
                        Some(first) => first.absorb(d),
                        None => decision = Some(d),
                    },
                    Err(e) => {
                        ended.error = Some(e.kind());
                        break 'verdict Err(error_response(&e, headers_of(&decision), now));
                    }
                }
            }
            let decision = decision.unwrap_or_else(|| self.empty_decision(live));
            if decision.layers().len() > 0 {
                ended.store = Some(decision.store());
            }
            if !decision.allowed() {
                ended.outcome = EventOutcome::RateLimited;
                ended.rule = decision.rule();
                ended.blocked = decision.blocked();
                ended.retry = Some(decision.retry_after());
                break 'verdict Err(answer::rate_limited(&decision));
            }
            ended.outcome = EventOutcome::Admitted;
            ended.shadow = if live.shadows {
                decision.shadow_denied()
            } else {
                None
            };
            Ok(decision)
        };
        // A refusal the host waits out is not recorded: only the attempt it answers is.
        let retry_in = ended
            .retry
            .filter(|r| verdict.is_err() && !r.is_zero() && *r <= request.may_wait);
        if retry_in.is_some() {
            exchange.records = false;
        }
        // An authentication stage that lets a request through has decided nothing yet: the
        // rate-limit stage after it records the decision.
        if !(stage == HttpStage::Authenticate && verdict.is_ok()) && retry_in.is_none() {
            self.monitor.record(&Event::Decision(DecisionEvent {
                at: now,
                endpoint: Some((request.method, path)),
                subject,
                role,
                outcome: ended.outcome,
                rule: ended.rule,
                error: ended.error,
                store: ended.store,
                shadow_rule: ended.shadow,
                allowlisted: ended.allowlisted,
                blocked: ended.blocked,
            }));
        }
        match verdict {
            Ok(decision) => HttpVerdict::Pass(Admission {
                identity,
                decision,
                exchange,
            }),
            Err(response) => HttpVerdict::Refuse(Refusal {
                response,
                exchange,
                retry_in,
            }),
        }
    }

    /// The request headers the HTTP layer reads, lower-cased: a host hands over these (or
    /// all) in [`HttpRequest::headers`]. The allow and deny lists' headers are among them, so
    /// ask again after [`set_access_lists`](Self::set_access_lists).
    pub fn http_headers(&self) -> Vec<String> {
        let mut names: Vec<String> = ["authorization", "x-forwarded-for", "forwarded"]
            .map(str::to_owned)
            .into();
        let access = Arc::clone(&self.snapshot.load().access);
        let rule_headers = self.key_headers();
        for name in rule_headers
            .into_iter()
            .chain(access.allow.header_names())
            .chain(access.deny.header_names())
        {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        names
    }

    /// Forwarding headers seen while no proxy is trusted: how many requests, and when the
    /// first came (ms since the epoch).
    pub(crate) fn untrusted_forwarded(&self) -> (u64, u64) {
        self.http_state.untrusted_forwarded()
    }
}

impl Engine {
    /// The response headers [`http_finish`](Self::http_finish) reads (the rules'
    /// `cost_header`s), lower-cased.
    pub fn http_response_headers(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for rule in self.live().rules.iter() {
            if let Some(name) = &rule.response_counting().cost_header
                && !names.iter().any(|n| **n == **name)
            {
                names.push(name.to_string());
            }
        }
        names
    }

    /// Finishes an exchange once its response is: records the response (its status and the
    /// time since [`http`](Self::http) saw the request, under the normal path), gives back
    /// what rules that do not count this status took, and adds what a rule's `cost_header`
    /// says. `headers` are the response's (only the `cost_header`s are asked for).
    ///
    /// With a shared store this may write to it (one round trip): see
    /// [`Exchange::touches_shared_store`].
    pub fn http_finish(&self, exchange: Exchange, status: u16, headers: &dyn HeaderLookup) {
        self.http_finish_at(exchange, status, headers, self.clock.now());
    }

    /// [`http_finish`](Self::http_finish) at an explicit time.
    pub fn http_finish_at(
        &self,
        exchange: Exchange,
        status: u16,
        headers: &dyn HeaderLookup,
        now: Timestamp,
    ) {
        if exchange.records {
            let latency =
                Duration::from_micros(now.as_micros().saturating_sub(exchange.started.as_micros()));
            self.monitor.record(&Event::Response(ResponseEvent {
                at: now,
                method: exchange.method(),
                path: exchange.path(),
                status,
                latency,
            }));
        }
        if exchange.pending.is_empty() {
            return;
        }
        // The rules it was decided by, even when a reload replaced them since.
        let Some(live) = self.gens.find_id(exchange.live) else {
            return;
        };
        let mut ops = SmallVec::<[_; 4]>::new();
        for pending in &exchange.pending {
            let counting = live.rules[pending.rule as usize].response_counting();
            let layer = live.pending_layer(pending);
            if pending.cost > 0 && counting.refunds(status) {
                ops.push((
                    layer,
                    Adjustment::Refund {
                        cost: pending.cost,
                        at: pending.at,
                    },
                    pending.store,
                ));
            }
            if let Some(name) = &counting.cost_header
                && let Some(extra) = headers.header(name).and_then(header_cost)
                && extra > 0
            {
                ops.push((
                    layer,
                    Adjustment::Charge {
                        cost: extra,
                        at: now,
                    },
                    pending.store,
                ));
            }
        }
        self.adjust(&ops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs() {
        assert_eq!(cost_of(1.0), Some(1));
        assert_eq!(cost_of(0.0), Some(0));
        assert_eq!(cost_of(MAX_COST), Some(1 << 53));
        for bad in [-1.0, 1.5, f64::NAN, f64::INFINITY, MAX_COST * 2.0] {
            assert_eq!(cost_of(bad), None, "{bad}");
        }
        assert_eq!(header_cost(" 7 "), Some(7));
        assert_eq!(header_cost("-1"), None);
        assert_eq!(header_cost("1e3"), None);
        assert_eq!(header_cost(""), None);
    }
}
