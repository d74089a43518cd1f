//! The decision path: a request in normal form ([`Asked`]), the rules that match it (all, or
//! one [`Stage`] of the HTTP layer's), each layer's key built on the stack, and all layers
//! handed to the store in one atomic step. On the memory store the whole call allocates
//! nothing for keys it has seen before.

use smallvec::SmallVec;

use super::Engine;
use super::live::Live;
use super::request::Request;
use crate::clock::Timestamp;
use crate::decision::{Decision, StoreUsed};
use crate::error::{Error, ErrorKind};
use crate::http::{HeaderLookup, PathBuffer, Pending, address_key, normalize_path, parse_address};
use crate::limit::{KeyKind, Outcome, Policy, RequestPath, Rule};
use crate::monitor::{DecisionEvent, Event, EventOutcome};
use crate::store::{ABSENT, Ask, Layer};

/// A request as the decision path reads it: the path in normal form (as given when no rule
/// reads it), the address as it is keyed, the time fixed.
#[derive(Clone, Copy)]
pub(crate) struct Asked<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) subject: Option<&'a str>,
    pub(crate) role: Option<&'a str>,
    pub(crate) ip: Option<&'a str>,
    pub(crate) headers: &'a dyn HeaderLookup,
    pub(crate) cost: u64,
    pub(crate) now: Timestamp,
}

/// Which rules a decision applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Every matching rule ([`Engine::check`]).
    All,
    /// The rules the HTTP layer decides before verifying the token.
    BeforeAuth,
    /// The others.
    AfterAuth,
}

impl Stage {
    #[inline]
    fn includes(self, rule: &Rule) -> bool {
        match self {
            Stage::All => true,
            Stage::BeforeAuth => rule.is_before_auth(),
            Stage::AfterAuth => !rule.is_before_auth(),
        }
    }
}

/// An address key on the stack.
pub(crate) struct AddressText {
    bytes: [u8; 48],
    len: usize,
}

impl AddressText {
    pub(crate) const fn new() -> Self {
        AddressText {
            bytes: [0; 48],
            len: 0,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for AddressText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.bytes.len() {
            return Err(std::fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl Engine {
    /// Decides on `request`: every matching rule is applied at once, all-or-nothing. If any layer
    /// denies, nothing is consumed anywhere. Takes the engine's clock unless the request carries
    /// a time. The path is read in normal form and the address keyed as the HTTP layer keys it
    /// (see [`crate::http`]), so `GET /API/orders/` counts against a rule for `/api/orders`.
    ///
    /// Fails with [`ErrorKind::CostExceedsLimit`] when the cost is larger than a matching layer's
    /// limit (it could never pass); nothing is consumed then either.
    pub fn check(&self, request: &Request<'_>) -> Result<Decision<'_>, Error> {
        let live = self.live();
        let now = request.now.unwrap_or_else(|| self.clock.now());
        // Put in normal form only when a rule reads it; the monitor normalises what it records.
        let mut buffer = PathBuffer::new();
        let path = if live.parse_paths {
            normalize_path(request.path, live.http.fold_case, &mut buffer).as_str()
        } else {
            request.path
        };
        let mut address = AddressText::new();
        let asked = Asked {
            method: request.method,
            path,
            subject: request.subject,
            role: request.role,
            ip: live.ip_key(request.ip, &mut address),
            headers: &request.headers,
            cost: request.cost,
            now,
        };
        // Filled and recorded in the return slot: a decision is not moved on the way out.
        let mut result = Ok(self.empty_decision(live));
        if live.holds {
            let mut pending = Vec::new();
            self.fill(live, &asked, Stage::All, Some(&mut pending), &mut result);
            if let Ok(decision) = &mut result
                && !pending.is_empty()
            {
                decision.hold(self, live.permit_of(pending));
            }
        } else {
            self.fill(live, &asked, Stage::All, None, &mut result);
        }
        self.record_decision(live, &asked, &result);
        result
    }

    /// What identifies the limits `request` is judged by: each matching layer's slot and key,
    /// in configuration order (the line of [`Engine::acquire`]'s waiters).
    pub(crate) fn layers_key(&self, request: &Request<'_>) -> Result<Vec<u8>, Error> {
        let live = self.live();
        let mut buffer = PathBuffer::new();
        let path = normalize_path(request.path, live.http.fold_case, &mut buffer);
        let mut address = AddressText::new();
        let asked = Asked {
            method: request.method,
            path: path.as_str(),
            subject: request.subject,
            role: request.role,
            ip: live.ip_key(request.ip, &mut address),
            headers: &request.headers,
            cost: request.cost,
            now: Timestamp::EPOCH,
        };
        let mut endpoint: SmallVec<[u8; 128]> = SmallVec::new();
        let mut decision = self.empty_decision(live);
        live.match_rules(&asked, Stage::All, &mut endpoint, &mut decision)?;
        let mut key = Vec::new();
        for matched in decision.all_matched() {
            let layer = live.layer(&asked, &endpoint, matched);
            key.extend_from_slice(&layer.slot.to_le_bytes());
            key.extend_from_slice(&(layer.key.len() as u32).to_le_bytes());
            key.extend_from_slice(layer.key);
        }
        Ok(key)
    }

    /// Records a decision (or its failure) on `asked` for monitoring.
    pub(crate) fn record_decision(
        &self,
        live: &Live,
        asked: &Asked<'_>,
        result: &Result<Decision<'_>, Error>,
    ) {
        // A request no rule matched consulted no store.
        let store = |d: &Decision<'_>| (d.layers().len() > 0).then(|| d.store());
        let blocked = matches!(result, Ok(d) if d.blocked());
        let (outcome, rule, error, store, shadow) = match result {
            Ok(d) if d.allowed() => (
                EventOutcome::Admitted,
                None,
                None,
                store(d),
                if live.shadows {
                    d.shadow_denied()
                } else {
                    None
                },
            ),
            Ok(d) => (EventOutcome::RateLimited, d.rule(), None, store(d), None),
            Err(e) => (EventOutcome::Failed, None, Some(e.kind()), None, None),
        };
        self.monitor.record(&Event::Decision(DecisionEvent {
            at: asked.now,
            endpoint: Some((asked.method, asked.path)),
            subject: asked.subject,
            role: asked.role,
            outcome,
            rule,
            error,
            store,
            shadow_rule: shadow,
            allowlisted: false,
            blocked,
        }));
    }

    /// The decision on `asked` by the rules of `stage`. When `pending` is given and the
    /// request is admitted, every layer whose rule hears about the response is added to it.
    #[inline]
    pub(crate) fn decide<'e>(
        &'e self,
        live: &'e Live,
        asked: &Asked<'_>,
        stage: Stage,
        pending: Option<&mut Vec<Pending>>,
    ) -> Result<Decision<'e>, Error> {
        let mut result = Ok(self.empty_decision(live));
        self.fill(live, asked, stage, pending, &mut result);
        result
    }

    /// Fills `result` (an empty decision) as [`decide`](Self::decide) says, in place: the
    /// decision's layers and their outcomes, or the error.
    #[inline(always)]
    fn fill<'e>(
        &'e self,
        live: &'e Live,
        asked: &Asked<'_>,
        stage: Stage,
        pending: Option<&mut Vec<Pending>>,
        result: &mut Result<Decision<'e>, Error>,
    ) {
        if let Ok(decision) = result
            && let Err(e) = self.fill_layers(live, asked, stage, pending, decision)
        {
            *result = Err(e);
        }
    }

    /// Fills `decision` (empty) with the layers of the rules of `stage` matching `asked` and
    /// their outcomes.
    #[inline(always)]
    fn fill_layers<'e>(
        &'e self,
        live: &'e Live,
        asked: &Asked<'_>,
        stage: Stage,
        pending: Option<&mut Vec<Pending>>,
        decision: &mut Decision<'e>,
    ) -> Result<(), Error> {
        // Every endpoint-keyed layer of one request has the same key: `METHOD /normal/path`.
        let mut endpoint: SmallVec<[u8; 128]> = SmallVec::new();
        live.match_rules(asked, stage, &mut endpoint, decision)?;
        let (cost, now) = (asked.cost, asked.now);
        match decision.len() {
            0 => {}
            1 => {
                let layer = live.layer(asked, &endpoint, decision.matched(0));
                let (outcome, verdict, at) = self.store.decide_one(&layer, cost, now)?;
                decision.set_outcome(0, &outcome);
                if let Some(pending) = pending
                    && live.responses
                    && verdict.allowed
                {
                    let matched = [decision.matched(0)];
                    keep(
                        live,
                        pending,
                        &matched,
                        &[layer],
                        &[outcome],
                        &[at],
                        cost,
                        verdict.store,
                    );
                }
                decision.set_store(verdict.store);
                decision.settle(verdict.allowed, live.shadows);
            }
            n => {
                // Up to four layers in a fixed array (nothing is moved on the way in), more in a
                // vector.
                let mut few = [live.layer(asked, &endpoint, decision.matched(0)); 4];
                let many: SmallVec<[Layer<'_>; 4]>;
                let layers: &[Layer<'_>] = if n <= few.len() {
                    for (i, slot) in few.iter_mut().enumerate().take(n).skip(1) {
                        *slot = live.layer(asked, &endpoint, decision.matched(i));
                    }
                    &few[..n]
                } else {
                    many = decision
                        .all_matched()
                        .map(|m| live.layer(asked, &endpoint, m))
                        .collect();
                    &many
                };
                let mut outcomes: SmallVec<[Outcome; 4]> =
                    SmallVec::from_elem(Outcome::default(), n);
                // When each layer was decided: `now` on this process, the store's time on Redis.
                let mut times: SmallVec<[Timestamp; 4]> = SmallVec::from_elem(now, n);
                let verdict = self
                    .store
                    .decide(layers, cost, now, &mut outcomes, &mut times)?;
                if let Some(pending) = pending
                    && live.responses
                    && verdict.allowed
                {
                    let matched: SmallVec<[(usize, usize); 4]> = decision.all_matched().collect();
                    keep(
                        live,
                        pending,
                        &matched,
                        layers,
                        &outcomes,
                        &times,
                        cost,
                        verdict.store,
                    );
                }
                decision.set_outcomes(&outcomes);
                decision.set_store(verdict.store);
                decision.settle(verdict.allowed, live.shadows);
            }
        }
        Ok(())
    }

    /// A decision with no layers yet, on `live`'s rules.
    pub(crate) fn empty_decision<'e>(&'e self, live: &'e Live) -> Decision<'e> {
        Decision::empty(&live.rules, live.headers, self.store.used())
    }

    /// Decides on each request in turn (each one atomic on its own), returning one result per
    /// request in order. On a shared store the batch is one round trip (a pipeline of script
    /// calls); if that fails, each request gets the `on_error` policy.
    pub fn check_many(&self, requests: &[Request<'_>]) -> Vec<Result<Decision<'_>, Error>> {
        self.check_many_queued(requests, None)
    }

    /// [`check_many`](Self::check_many) for requests that have waited in a queue since
    /// `queued`: the shared store's deadline (`store.timeout`) counts from then, so that a
    /// caller waits at most about the timeout in all. A batch whose deadline has passed gets
    /// the `on_error` policy without asking Redis (and without counting against it).
    pub fn check_many_since(
        &self,
        requests: &[Request<'_>],
        queued: std::time::Instant,
    ) -> Vec<Result<Decision<'_>, Error>> {
        self.check_many_queued(requests, Some(queued))
    }

    fn check_many_queued(
        &self,
        requests: &[Request<'_>],
        queued: Option<std::time::Instant>,
    ) -> Vec<Result<Decision<'_>, Error>> {
        let live = self.live();
        if live.holds {
            // A permit names the time its store decided at, which a batch does not report:
            // requests that may hold are decided one by one.
            return requests.iter().map(|r| self.check(r)).collect();
        }
        // Each request's normal path and address key, owned for the length of the batch.
        let texts: Vec<(String, Option<String>)> = requests
            .iter()
            .map(|r| {
                let mut buffer = PathBuffer::new();
                let path = normalize_path(r.path, live.http.fold_case, &mut buffer)
                    .as_str()
                    .to_owned();
                let mut address = AddressText::new();
                let ip = live.ip_key(r.ip, &mut address).map(str::to_owned);
                (path, ip)
            })
            .collect();
        let asked: Vec<Asked<'_>> = requests
            .iter()
            .zip(&texts)
            .map(|(r, (path, ip))| Asked {
                method: r.method,
                path,
                subject: r.subject,
                role: r.role,
                ip: ip.as_deref(),
                headers: &r.headers,
                cost: r.cost,
                now: r.now.unwrap_or_else(|| self.clock.now()),
            })
            .collect();
        /// ((rule index, policy index), slot, key) of each layer of one request.
        type Parts = Vec<((usize, usize), u64, SmallVec<[u8; 32]>)>;
        let mut parts: Vec<Parts> = Vec::with_capacity(asked.len());
        let prepared: Vec<Result<Decision<'_>, Error>> = asked
            .iter()
            .map(|a| {
                parts.push(Vec::new());
                let mut endpoint: SmallVec<[u8; 128]> = SmallVec::new();
                let mut decision = self.empty_decision(live);
                live.match_rules(a, Stage::All, &mut endpoint, &mut decision)?;
                let these = decision
                    .all_matched()
                    .map(|m| {
                        let layer = live.layer(a, &endpoint, m);
                        (m, layer.slot, SmallVec::from_slice(layer.key))
                    })
                    .collect();
                if let Some(last) = parts.last_mut() {
                    *last = these;
                }
                Ok(decision)
            })
            .collect();
        // The layers of every prepared request, rebuilt over the copied keys.
        let mut layers: Vec<Vec<Layer<'_>>> = Vec::with_capacity(prepared.len());
        let mut outcomes: Vec<Vec<Outcome>> = Vec::with_capacity(prepared.len());
        for (p, request_parts) in prepared.iter().zip(&parts) {
            let (these, out) = match p {
                Ok(_) => {
                    let these: Vec<Layer<'_>> = request_parts
                        .iter()
                        .map(|((index, variant), slot, key)| {
                            let rule = &live.rules[*index];
                            Layer {
                                rule: rule.stored_name(),
                                slot: *slot,
                                quota: rule.policies()[*variant].quota(),
                                key,
                                shadow: rule.is_shadow(),
                            }
                        })
                        .collect();
                    let n = these.len();
                    (these, vec![Outcome::default(); n])
                }
                Err(_) => (Vec::new(), Vec::new()),
            };
            layers.push(these);
            outcomes.push(out);
        }
        // The requests with layers go to the store together (one round trip on Redis).
        let asks_store: Vec<bool> = prepared
            .iter()
            .zip(&layers)
            .map(|(p, l)| p.is_ok() && !l.is_empty())
            .collect();
        let asks: Vec<Ask<'_>> = layers
            .iter()
            .zip(&asked)
            .zip(&asks_store)
            .filter(|(_, ask)| **ask)
            .map(|((l, a), _)| Ask {
                layers: l,
                cost: a.cost,
                now: a.now,
                queued,
            })
            .collect();
        let mut slices: Vec<&mut [Outcome]> = outcomes
            .iter_mut()
            .zip(&asks_store)
            .filter(|(_, ask)| **ask)
            .map(|(o, _)| o.as_mut_slice())
            .collect();
        let mut verdicts = self.store.decide_many(&asks, &mut slices).into_iter();
        drop(slices);
        let results: Vec<Result<Decision<'_>, Error>> = prepared
            .into_iter()
            .zip(layers.iter().zip(outcomes))
            .map(|(p, (these, out))| {
                let mut decision = p?;
                if these.is_empty() {
                    return Ok(decision);
                }
                let verdict = verdicts.next().unwrap_or_else(|| {
                    Err(Error::new(
                        ErrorKind::StoreUnavailable,
                        "the store answered fewer decisions than asked",
                    ))
                })?;
                decision.set_outcomes(&out);
                decision.set_store(verdict.store);
                decision.settle(verdict.allowed, live.shadows);
                Ok(decision)
            })
            .collect();
        for (a, result) in asked.iter().zip(&results) {
            self.record_decision(live, a, result);
        }
        results
    }
}

impl Live {
    /// The key of a host-given client address: its canonical form (IPv6 by subnet) when it is
    /// an address, the text itself otherwise.
    #[inline]
    pub(crate) fn ip_key<'a>(
        &self,
        ip: Option<&'a str>,
        out: &'a mut AddressText,
    ) -> Option<&'a str> {
        let ip = ip?;
        if !self.keys_ip || crate::http::is_dotted_v4(ip) {
            return Some(ip);
        }
        match parse_address(ip) {
            Some(address) => {
                let _ = address_key(address, self.http.ipv6_subnet, out);
                Some(out.as_str())
            }
            None => Some(ip),
        }
    }

    /// Records in `decision` the (rule index, policy index) of every rule of `stage` matching
    /// `asked`, in configuration order, and builds the endpoint key if a matching rule needs
    /// it.
    #[inline(always)]
    pub(crate) fn match_rules<'e>(
        &'e self,
        asked: &Asked<'_>,
        stage: Stage,
        endpoint: &mut SmallVec<[u8; 128]>,
        decision: &mut Decision<'e>,
    ) -> Result<(), Error> {
        let mut path = RequestPath::empty();
        if self.parse_paths {
            path.fill_normal(asked.path);
        }
        for (index, rule) in self.rules.iter().enumerate() {
            if !stage.includes(rule) || !rule.matcher().matches(asked.method, &path, asked.role) {
                continue;
            }
            let (variant, policy) = rule.policy_for(asked.role);
            // A shadow rule never denies, not even a cost it could never admit.
            if asked.cost > policy.quota().limit() && !rule.is_shadow() {
                return Err(cost_exceeds_limit(asked.cost, rule, policy));
            }
            if endpoint.is_empty() && *rule.key() == KeyKind::Endpoint {
                let method = if self.http.head_as_get && asked.method.eq_ignore_ascii_case("HEAD") {
                    "GET"
                } else {
                    asked.method
                };
                endpoint.extend_from_slice(method.as_bytes());
                endpoint.make_ascii_uppercase();
                endpoint.push(b' ');
                path.write_normalized_bytes(endpoint);
            }
            decision.push_layer((index, variant));
        }
        Ok(())
    }

    /// The layer of the matched rule `index` under its policy `variant`.
    #[inline(always)]
    pub(crate) fn layer<'a>(
        &'a self,
        asked: &Asked<'a>,
        endpoint: &'a [u8],
        (index, variant): (usize, usize),
    ) -> Layer<'a> {
        let rule: &Rule = &self.rules[index];
        let part = match rule.key() {
            KeyKind::Subject => asked.subject.map(str::as_bytes),
            KeyKind::Ip => asked.ip.map(str::as_bytes),
            KeyKind::Header(name) => asked.headers.header(name).map(str::as_bytes),
            KeyKind::Global => Some(&[][..]),
            KeyKind::Endpoint => Some(endpoint),
        };
        Layer {
            rule: rule.stored_name(),
            slot: slot_of(rule, variant, part.is_none()),
            quota: rule.policies()[variant].quota(),
            key: part.unwrap_or_default(),
            shadow: rule.is_shadow(),
        }
    }

    /// The layer a [`Pending`] names.
    pub(crate) fn pending_layer<'a>(&'a self, pending: &'a Pending) -> Layer<'a> {
        let rule = &self.rules[pending.rule as usize];
        Layer {
            rule: rule.stored_name(),
            slot: pending.slot,
            quota: rule.policies()[pending.variant as usize].quota(),
            key: &pending.key,
            shadow: rule.is_shadow(),
        }
    }
}

/// The [`Layer::slot`] of `rule` under its policy `variant`: the rule's state and the variant,
/// [`ABSENT`] when the request lacks the keyed part.
#[inline(always)]
pub(crate) fn slot_of(rule: &Rule, variant: usize, absent: bool) -> u64 {
    (u64::from(rule.state()) << 32) | variant as u64 | if absent { ABSENT } else { 0 }
}

/// Adds to `pending` the layers of an admitted request that consumed and hear about the
/// response; `matched` is each layer's (rule index, policy index).
#[allow(clippy::too_many_arguments)]
fn keep(
    live: &Live,
    pending: &mut Vec<Pending>,
    matched: &[(usize, usize)],
    layers: &[Layer<'_>],
    outcomes: &[Outcome],
    times: &[Timestamp],
    cost: u64,
    store: StoreUsed,
) {
    for (((layer, outcome), &at), &(index, variant)) in
        layers.iter().zip(outcomes).zip(times).zip(matched)
    {
        if !outcome.allowed || !live.rules[index].response_counting().needs_response() {
            continue;
        }
        pending.push(Pending {
            rule: index as u32,
            variant: variant as u32,
            slot: layer.slot,
            key: SmallVec::from_slice(layer.key),
            cost,
            at,
            store,
        });
    }
}

fn cost_exceeds_limit(cost: u64, rule: &Rule, policy: &Policy) -> Error {
    Error::new(
        ErrorKind::CostExceedsLimit,
        format!(
            "cost {cost} exceeds the limit {} of rule {:?}{}: it can never be admitted",
            policy.quota().limit(),
            rule.name(),
            policy
                .role()
                .map(|r| format!(" for role {r:?}"))
                .unwrap_or_default()
        ),
    )
}
