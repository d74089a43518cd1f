//! The facade the bindings call: build an [`Engine`] from a configuration, then ask it about
//! each [`Request`].
//!
//! [`Engine::check`] selects the rules that match the request (compiled once at load), picks
//! each rule's policy for the caller's role, builds each layer's key on the stack, and hands
//! all layers to the store in one atomic step. On the memory store the whole call allocates
//! nothing for keys it has seen before.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use smallvec::SmallVec;

use crate::auth::{AuthConfig, Authenticator, Identity};
use crate::balance::{BreakerEvent, Lease, Services, UpstreamConfig, UpstreamStatus};
use crate::breaker::{Breaker, BreakerSettings, CallOutcome, WindowKind};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::config::{Config, HeadersConfig};
use crate::config::{OnStoreError, StoreKind};
use crate::decision::{Decision, DetachedDecision, StoreUsed};
use crate::error::{Error, ErrorKind};
use crate::limit::Algorithm;
use crate::limit::{KeyKind, Outcome, Policy, RequestPath, Rule};
use crate::monitor::{DecisionEvent, Event, EventOutcome, Monitor, Report, ResponseEvent};
use crate::store::redis::{RedisStore, StoreFailure};
use crate::store::{ABSENT, Layer, MemoryStore, Store};

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
    /// The request path; a query string or fragment is ignored.
    pub path: &'a str,
    /// The verified subject, if any.
    pub subject: Option<&'a str>,
    /// The caller's role, if any; it selects role overrides and role-restricted rules.
    pub role: Option<&'a str>,
    /// The client address, as the host determined it (mind trusted proxies).
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

    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
    }
}

/// The traffic-control engine: compiled rules, a store, a clock.
///
/// An `Engine` is `Send + Sync`; share one (for instance in an `Arc`) between all threads.
///
/// ```
/// use floodwall::{Engine, Request, Timestamp};
///
/// let engine = Engine::from_toml(r#"
///     [[rules]]
///     name = "per-user"
///     key = "subject"
///     algorithm = "fixed_window"
///     limit = 2
///     window = "1m"
///     roles.premium = { limit = 100 }
/// "#)?;
/// let t = Timestamp::from_millis(60_000);
/// let free = Request::new("GET", "/api/orders").subject("bob").role("free").at(t);
/// assert!(engine.check(&free)?.allowed());
/// assert!(engine.check(&free)?.allowed());
/// let third = engine.check(&free)?;
/// assert!(!third.allowed());
/// assert_eq!(third.retry_after_ms(), 60_000);
/// assert_eq!(third.header("Retry-After").as_deref(), Some("60"));
///
/// let premium = Request::new("GET", "/api/orders").subject("carol").role("premium").at(t);
/// assert_eq!(engine.check(&premium)?.remaining(), Some(99));
/// # Ok::<(), floodwall::Error>(())
/// ```
#[derive(Debug)]
pub struct Engine {
    rules: Box<[Rule]>,
    store: MemoryStore,
    clock: Arc<dyn Clock>,
    headers: HeadersConfig,
    parse_paths: bool,
    /// Replaced whole by [`Engine::reload_auth`]; a verification holds the read lock.
    auth: RwLock<Option<Arc<Authenticator>>>,
    base_dir: Option<PathBuf>,
    services: Services,
    /// The shared store, when the configuration names one; `store` is then its fallback.
    shared: Option<Shared>,
    store_kind: StoreKind,
    /// Every decision, upstream call and reported response is recorded here.
    monitor: Arc<Monitor>,
}

/// A shared store with its failure policy and the breaker that spares callers its deadline
/// while it is down.
#[derive(Debug)]
struct Shared {
    redis: RedisStore,
    policy: OnStoreError,
    breaker: parking_lot::Mutex<Breaker>,
    last_failure: parking_lot::Mutex<Option<StoreFailure>>,
    /// Denials remembered until they expire (`store.deny_cache`).
    denials: Option<DenyCache>,
}

/// The most denials remembered; past it, expired ones are dropped, then the whole map.
const DENY_CACHE_CAPACITY: usize = 100_000;

/// Recent denials by the shared store of requests of cost 1, keyed by the request's layers and
/// keys.
///
/// A denial whose longest `retry_after` is R holds for R at least: limits only fill up when
/// others consume, they never give back, so until then the same request is denied again. It
/// is answered here with `allowed = false`, the exact remaining wait, and the denying layer's
/// `remaining` (0 until then, for a cost of 1) and `reset_after` (which only runs down). Only
/// the figures of the layers that admitted — shared counters others keep consuming — may be
/// staler than a round trip would give. A larger cost is not cached: what remains can grow
/// below it before it fits.
#[derive(Debug, Default)]
struct DenyCache {
    entries: parking_lot::Mutex<std::collections::HashMap<Vec<u8>, Denial>>,
}

#[derive(Debug, Clone)]
struct Denial {
    at: u64,
    until: u64,
    outcomes: SmallVec<[Outcome; 4]>,
}

impl DenyCache {
    fn key(layers: &[Layer<'_>]) -> Vec<u8> {
        let mut key = Vec::with_capacity(layers.iter().map(|l| l.key.len() + 12).sum::<usize>());
        for layer in layers {
            key.extend_from_slice(&layer.slot.to_le_bytes());
            key.extend_from_slice(&(layer.key.len() as u32).to_le_bytes());
            key.extend_from_slice(layer.key);
        }
        key
    }

    /// The remembered denial of this request at `now`, aged, if it still holds.
    fn get(&self, key: &[u8], now: Timestamp, outcomes: &mut [Outcome]) -> bool {
        let now = now.as_micros();
        let entries = self.entries.lock();
        let Some(d) = entries.get(key) else {
            return false;
        };
        if now >= d.until || now < d.at || d.outcomes.len() != outcomes.len() {
            return false;
        }
        let aged = now - d.at;
        for (out, o) in outcomes.iter_mut().zip(&d.outcomes) {
            *out = Outcome::new(
                o.allowed,
                o.remaining,
                o.reset_after_us().saturating_sub(aged),
                o.retry_after_us().saturating_sub(aged),
            );
        }
        true
    }

    fn put(&self, key: Vec<u8>, now: Timestamp, outcomes: &[Outcome]) {
        let wait = outcomes
            .iter()
            .filter(|o| !o.allowed)
            .map(Outcome::retry_after_us)
            .max()
            .unwrap_or(0);
        if wait == 0 {
            return;
        }
        let now = now.as_micros();
        let mut entries = self.entries.lock();
        if entries.len() >= DENY_CACHE_CAPACITY {
            entries.retain(|_, d| d.until > now);
            if entries.len() >= DENY_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Denial {
                at: now,
                until: now.saturating_add(wait),
                outcomes: outcomes.iter().copied().collect(),
            },
        );
    }
}

/// How long a caller denied because the shared store is unavailable (`on_error = "deny"`) is
/// told to wait.
pub(crate) const UNAVAILABLE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// The breaker around the shared store: open after 3 failures in the last 10 calls (half of
/// them failing), for 500 ms, doubling up to 30 s while Redis stays down; one probe at a time.
fn store_breaker() -> Breaker {
    Breaker::new(BreakerSettings {
        window: WindowKind::Count(10),
        min_calls: 3,
        failure_rate: 0.5,
        slow_call_duration: None,
        slow_call_rate: 1.0,
        open_for: std::time::Duration::from_millis(500),
        backoff: 2.0,
        max_open_for: std::time::Duration::from_secs(30),
        half_open_calls: 1,
    })
    .expect("valid breaker settings")
}

/// The answer of [`Engine::authorize`]: who the caller is and the rate-limit
/// decision taken with their subject and role.
#[derive(Debug)]
pub struct Authorized<'e> {
    /// The verified identity.
    pub identity: Arc<Identity>,
    /// The rate-limit decision.
    pub decision: Decision<'e>,
}

impl Engine {
    /// Checks and compiles `config` into an engine on the system clock.
    pub fn from_config(config: Config) -> Result<Self, Error> {
        config.check_store()?;
        let monitor = Arc::new(Monitor::new(&config.monitor, &config.store)?);
        let rules = config.compile_rules()?;
        // Paths are split only when a rule matches on them or keys by endpoint.
        let parse_paths = rules
            .iter()
            .any(|r| r.matcher().has_paths() || *r.key() == KeyKind::Endpoint);
        let base_dir = config.base_dir.clone();
        let auth = match &config.auth {
            Some(auth) => Some(Arc::new(Authenticator::build(
                auth,
                base_dir.as_deref(),
                &|name| std::env::var(name).ok(),
            )?)),
            None => None,
        };
        let services = Services::compile(&config.services, Arc::clone(&monitor))?;
        let shared = match config.store.kind {
            StoreKind::Memory => None,
            StoreKind::Redis | StoreKind::RedisCluster => {
                check_redis_arithmetic(&rules)?;
                Some(Shared {
                    redis: RedisStore::new(&config.store)?,
                    policy: config.store.on_error,
                    breaker: parking_lot::Mutex::new(store_breaker()),
                    last_failure: parking_lot::Mutex::new(None),
                    denials: config.store.deny_cache.then(DenyCache::default),
                })
            }
        };
        Ok(Engine {
            rules: rules.into(),
            store: MemoryStore::new(config.store.max_keys),
            clock: Arc::new(SystemClock),
            headers: config.headers,
            parse_paths,
            auth: RwLock::new(auth),
            base_dir,
            services,
            shared,
            store_kind: config.store.kind,
            monitor,
        })
    }

    /// Reads a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        Self::from_config(Config::from_toml(text)?)
    }

    /// Reads a JSON configuration of the same structure.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        Self::from_config(Config::from_json(text)?)
    }

    /// Reads a configuration file: JSON if it ends in `.json`, TOML otherwise.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        Self::from_config(Config::from_file(path)?).map_err(|e| e.in_file(path))
    }

    /// Uses `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// A [`Decision::detach`]ed decision back as a [`Decision`], for the engine that made it;
    /// `None` when another engine made it.
    pub fn attach(&self, decision: &DetachedDecision) -> Option<Decision<'_>> {
        decision.attach(&self.rules)
    }

    /// The kind of store the configuration names: anything but `memory` may wait on the
    /// network (up to `store.timeout`) in [`check`](Self::check), which bindings use to decide
    /// whether to release their interpreter or run the call off their event loop.
    pub fn store_kind(&self) -> StoreKind {
        self.store_kind
    }

    /// The request headers some rule is keyed on (`key = "header:NAME"`), lower-cased, each
    /// once: all a host needs to hand over in [`Request::headers`].
    pub fn key_headers(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for rule in self.rules.iter() {
            if let KeyKind::Header(name) = rule.key()
                && !names.contains(&&**name)
            {
                names.push(name);
            }
        }
        names
    }

    /// Whether some rule is keyed on the client address (`key = "ip"`): a host that has to
    /// work the address out (trusted proxies, forwarding headers) can skip it otherwise.
    pub fn keys_ip(&self) -> bool {
        self.rules.iter().any(|r| *r.key() == KeyKind::Ip)
    }

    /// Which response headers decisions render (the `[headers]` section).
    pub fn headers_config(&self) -> HeadersConfig {
        self.headers
    }

    /// The compiled rules, in configuration order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The engine's current time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Decides on `request`: every matching rule is applied at once, all-or-nothing. If any layer
    /// denies, nothing is consumed anywhere. Takes the engine's clock unless the request carries
    /// a time.
    ///
    /// Fails with [`ErrorKind::CostExceedsLimit`] when the cost is larger than a matching layer's
    /// limit (it could never pass); nothing is consumed then either.
    pub fn check(&self, request: &Request<'_>) -> Result<Decision<'_>, Error> {
        let now = request.now.unwrap_or_else(|| self.clock.now());
        let result = self.decide(request, now);
        self.record_decision(request, now, &result);
        result
    }

    /// Records a decision (or its failure) on `request` for monitoring.
    fn record_decision(
        &self,
        request: &Request<'_>,
        now: Timestamp,
        result: &Result<Decision<'_>, Error>,
    ) {
        // A request no rule matched consulted no store.
        let store = |d: &Decision<'_>| (d.layers().len() > 0).then(|| d.store());
        let (outcome, rule, error, store) = match result {
            Ok(d) if d.allowed() => (EventOutcome::Admitted, None, None, store(d)),
            Ok(d) => (EventOutcome::RateLimited, d.rule(), None, store(d)),
            Err(e) => (EventOutcome::Failed, None, Some(e.kind()), None),
        };
        self.monitor.record(&Event::Decision(DecisionEvent {
            at: now,
            endpoint: Some((request.method, request.path)),
            subject: request.subject,
            role: request.role,
            outcome,
            rule,
            error,
            store,
        }));
    }

    fn decide(&self, request: &Request<'_>, now: Timestamp) -> Result<Decision<'_>, Error> {
        // Every endpoint-keyed layer of one request has the same key: `METHOD /normalised/path`.
        let mut endpoint: SmallVec<[u8; 128]> = SmallVec::new();
        // Built in the return slot, so that the decision is not copied on the way out.
        let mut result = Ok(self.empty_decision());
        let Ok(decision) = &mut result else {
            unreachable!("just built")
        };
        self.match_rules(request, &mut endpoint, decision)?;
        let matched = decision.matched_mut();
        match matched.len() {
            0 => {}
            1 if self.shared.is_none() => {
                let layer = self.layer(request, &endpoint, matched[0]);
                let outcome = self.store.acquire_one(&layer, request.cost, now);
                decision.outcomes_mut().push(outcome);
                decision.settle(outcome.allowed);
            }
            n => {
                // Up to four layers in a fixed array (nothing is moved on the way in), more in a
                // vector.
                let mut few = [self.layer(request, &endpoint, matched[0]); 4];
                let many: SmallVec<[Layer<'_>; 4]>;
                let layers: &[Layer<'_>] = if n <= few.len() {
                    for (slot, &m) in few[1..n].iter_mut().zip(&matched[1..]) {
                        *slot = self.layer(request, &endpoint, m);
                    }
                    &few[..n]
                } else {
                    many = matched
                        .iter()
                        .map(|&m| self.layer(request, &endpoint, m))
                        .collect();
                    &many
                };
                let outcomes = decision.outcomes_mut();
                outcomes.resize(n, Outcome::default());
                let allowed = match &self.shared {
                    None => self.store.acquire(layers, request.cost, now, outcomes)?,
                    Some(shared) => {
                        let (allowed, used) =
                            self.decide_shared(shared, layers, request.cost, now, outcomes)?;
                        decision.set_store(used);
                        allowed
                    }
                };
                decision.settle(allowed);
            }
        }
        result
    }

    fn empty_decision(&self) -> Decision<'_> {
        Decision::empty(
            &self.rules,
            self.headers,
            if self.shared.is_some() {
                StoreUsed::Redis
            } else {
                StoreUsed::Memory
            },
        )
    }

    /// Records in `decision` the (rule index, policy index) of every rule matching `request`,
    /// in configuration order, and builds the endpoint key if a matching rule needs it.
    #[inline(always)]
    fn match_rules<'e>(
        &'e self,
        request: &Request<'_>,
        endpoint: &mut SmallVec<[u8; 128]>,
        decision: &mut Decision<'e>,
    ) -> Result<(), Error> {
        let mut path = RequestPath::empty();
        if self.parse_paths {
            path.fill(request.path);
        }
        let matched = decision.matched_mut();
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.matcher().matches(request.method, &path, request.role) {
                continue;
            }
            let (variant, policy) = rule.policy_for(request.role);
            if request.cost > policy.quota().limit() {
                return Err(cost_exceeds_limit(request.cost, rule, policy));
            }
            if endpoint.is_empty() && *rule.key() == KeyKind::Endpoint {
                endpoint.extend_from_slice(request.method.as_bytes());
                endpoint.make_ascii_uppercase();
                endpoint.push(b' ');
                path.write_normalized_bytes(endpoint);
            }
            matched.push((index, variant));
        }
        Ok(())
    }

    /// A decision on the shared store, or — when it fails, is slow, or its breaker is open —
    /// by the `on_error` policy.
    fn decide_shared(
        &self,
        shared: &Shared,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
    ) -> Result<(bool, StoreUsed), Error> {
        // Only cost-1 denials are remembered (see `DenyCache`).
        let cached = shared
            .denials
            .as_ref()
            .filter(|_| cost == 1)
            .map(|cache| (cache, DenyCache::key(layers)));
        if let Some((cache, key)) = &cached
            && cache.get(key, now, outcomes)
        {
            return Ok((false, StoreUsed::Redis));
        }
        if let Some(allowed) =
            self.through_breaker(shared, || shared.redis.decide(layers, cost, now, outcomes))
        {
            if let (false, Some((cache, key))) = (allowed, cached) {
                cache.put(key, now, outcomes);
            }
            return Ok((allowed, StoreUsed::Redis));
        }
        self.decide_unavailable(shared, layers, cost, now, outcomes)
    }

    /// Runs `call` on the shared store unless its breaker is open, and tells the breaker how
    /// it went; `None` when the store was not asked or failed. A failure is kept for
    /// [`store_failure`](Self::store_failure) until a call succeeds.
    fn through_breaker<T>(
        &self,
        shared: &Shared,
        call: impl FnOnce() -> Result<T, StoreFailure>,
    ) -> Option<T> {
        let permit = shared.breaker.lock().try_acquire(self.clock.now()).0?;
        let started = std::time::Instant::now();
        let result = call();
        let outcome = if result.is_ok() {
            CallOutcome::Success
        } else {
            CallOutcome::Failure
        };
        shared
            .breaker
            .lock()
            .record(permit, outcome, started.elapsed(), self.clock.now());
        match result {
            Ok(value) => {
                let mut last = shared.last_failure.lock();
                if last.is_some() {
                    *last = None;
                }
                Some(value)
            }
            Err(failure) => {
                *shared.last_failure.lock() = Some(failure);
                None
            }
        }
    }

    /// A decision while the shared store is unavailable, by the `on_error` policy.
    fn decide_unavailable(
        &self,
        shared: &Shared,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
    ) -> Result<(bool, StoreUsed), Error> {
        match shared.policy {
            OnStoreError::Fallback => Ok((
                self.store.acquire(layers, cost, now, outcomes)?,
                StoreUsed::Fallback,
            )),
            OnStoreError::Allow => {
                for (outcome, layer) in outcomes.iter_mut().zip(layers) {
                    *outcome = Outcome::new(true, layer.quota.limit(), 0, 0);
                }
                Ok((true, StoreUsed::Unavailable))
            }
            OnStoreError::Deny => {
                let retry = u64::try_from(UNAVAILABLE_RETRY.as_micros()).unwrap_or(u64::MAX);
                for outcome in outcomes.iter_mut() {
                    *outcome = Outcome::new(false, 0, 0, retry);
                }
                Ok((false, StoreUsed::Unavailable))
            }
            OnStoreError::Error => Err(Error::new(
                ErrorKind::StoreUnavailable,
                match shared.last_failure.lock().as_ref() {
                    Some(failure) => format!("the shared store is unavailable: {failure}"),
                    None => "the shared store is unavailable".to_owned(),
                },
            )),
        }
    }

    /// Why the shared store is failing: its last failure, until a call to it succeeds again
    /// (`None` when it is healthy, and always for the memory store). For health checks and logs.
    pub fn store_failure(&self) -> Option<String> {
        self.shared
            .as_ref()
            .and_then(|s| s.last_failure.lock().as_ref().map(ToString::to_string))
    }

    /// The layer of the matched rule `index` under its policy `variant`.
    #[inline(always)]
    fn layer<'a>(
        &'a self,
        request: &Request<'a>,
        endpoint: &'a [u8],
        (index, variant): (usize, usize),
    ) -> Layer<'a> {
        let rule: &Rule = &self.rules[index];
        let part = match rule.key() {
            KeyKind::Subject => request.subject.map(str::as_bytes),
            KeyKind::Ip => request.ip.map(str::as_bytes),
            KeyKind::Header(name) => request.header(name).map(str::as_bytes),
            KeyKind::Global => Some(&[][..]),
            KeyKind::Endpoint => Some(endpoint),
        };
        Layer {
            rule: rule.name(),
            slot: ((index as u64) << 32) | variant as u64 | if part.is_none() { ABSENT } else { 0 },
            quota: rule.policies()[variant].quota(),
            key: part.unwrap_or_default(),
        }
    }

    /// Verifies a bearer token — an `Authorization` header value (`Bearer <token>`), or a bare
    /// token when `auth.bare_token` is set — at the engine's current time. See [`crate::auth`]
    /// for what is checked and the error kinds; every rejection carries its HTTP status and
    /// `WWW-Authenticate` value. Fails with `invalid_config` when there is no `[auth]` section.
    pub fn authenticate(&self, authorization: &str) -> Result<Arc<Identity>, Error> {
        self.authenticate_at(authorization, self.clock.now())
    }

    /// [`authenticate`](Self::authenticate) at an explicit time.
    pub fn authenticate_at(
        &self,
        authorization: &str,
        now: Timestamp,
    ) -> Result<Arc<Identity>, Error> {
        let result = self.verify(authorization, now);
        if let Err(e) = &result {
            self.record_refusal(None, e, now);
        }
        result
    }

    /// Records a refused token (or an authentication that could not run) for monitoring.
    fn record_refusal(&self, endpoint: Option<(&str, &str)>, error: &Error, now: Timestamp) {
        let outcome = if error.kind() == ErrorKind::InvalidConfig {
            EventOutcome::Failed
        } else {
            EventOutcome::AuthRejected
        };
        self.monitor.record(&Event::Decision(DecisionEvent {
            at: now,
            endpoint,
            subject: None,
            role: None,
            outcome,
            rule: None,
            error: Some(error.kind()),
            store: None,
        }));
    }

    fn verify(&self, authorization: &str, now: Timestamp) -> Result<Arc<Identity>, Error> {
        // The lock is not held while verifying: a reload never waits for an RSA check.
        let auth = self.auth.read().clone();
        match auth {
            Some(auth) => auth.authenticate(authorization, now),
            None => Err(Error::config(
                "auth",
                "this engine has no [auth] section: it cannot authenticate",
            )),
        }
    }

    /// Authenticates, then checks `request` under the identity's subject and role (whatever
    /// `request` says of them is replaced): one call per request for a host. The token is
    /// always judged at the engine's clock — a request's explicit time only dates the
    /// rate-limit decision, it cannot revive an expired token.
    ///
    /// ```
    /// use floodwall::{Engine, ErrorKind};
    ///
    /// let engine = Engine::from_toml(r#"
    ///     [auth]
    ///     algorithms = ["HS256"]
    ///     keys = [{ secret = "an example secret of at least 32 bytes!" }]
    ///
    ///     [[rules]]
    ///     name = "per-user"
    ///     key = "subject"
    ///     algorithm = "fixed_window"
    ///     limit = 10
    ///     window = "1m"
    /// "#)?;
    /// let refused = engine
    ///     .authorize("Bearer not-a-jwt", &floodwall::Request::new("GET", "/"))
    ///     .unwrap_err();
    /// assert_eq!(refused.kind(), ErrorKind::MalformedToken);
    /// assert_eq!(refused.http_status(), 401);
    /// assert_eq!(
    ///     refused.www_authenticate(),
    ///     Some(r#"Bearer realm="floodwall", error="invalid_token", error_description="The access token is malformed""#)
    /// );
    /// # Ok::<(), floodwall::Error>(())
    /// ```
    pub fn authorize(
        &self,
        authorization: &str,
        request: &Request<'_>,
    ) -> Result<Authorized<'_>, Error> {
        let identity = match self.verify(authorization, self.clock.now()) {
            Ok(identity) => identity,
            Err(e) => {
                let now = request.now.unwrap_or_else(|| self.clock.now());
                self.record_refusal(Some((request.method, request.path)), &e, now);
                return Err(e);
            }
        };
        let mut as_caller = *request;
        as_caller.subject = Some(&identity.subject);
        as_caller.role = identity.role.as_deref();
        let decision = self.check(&as_caller)?;
        Ok(Authorized { identity, decision })
    }

    /// Replaces the `[auth]` section (or removes it, with `None`) while the engine serves:
    /// keys rotate, JWKS documents are re-read, relative files resolve against the original
    /// configuration's directory. The verified-token cache starts empty, so no token verified
    /// by a removed key — or under the old claims policy — is accepted afterwards. On error the
    /// running authenticator is kept.
    pub fn reload_auth(&self, auth: Option<&AuthConfig>) -> Result<(), Error> {
        let next = match auth {
            Some(auth) => Some(Arc::new(Authenticator::build(
                auth,
                self.base_dir.as_deref(),
                &|name| std::env::var(name).ok(),
            )?)),
            None => None,
        };
        *self.auth.write() = next;
        Ok(())
    }

    /// The current authenticator, if the engine has an `[auth]` section. It is a snapshot: after
    /// [`reload_auth`](Self::reload_auth) it keeps the old keys and cache, so ask again rather
    /// than hold on to it.
    pub fn authenticator(&self) -> Option<Arc<Authenticator>> {
        self.auth.read().clone()
    }

    /// Picks an upstream of `service` for one call: by the service's strategy, among upstreams
    /// not marked down whose breaker admits a call (see [`crate::balance`]). Finish the lease
    /// with the call's outcome and latency; a lease dropped unfinished counts as a failure.
    ///
    /// Fails with `no_upstream_available` (and [`Error::available_at`]) when no upstream can
    /// take the call, `unknown_service` for a name that is not configured.
    ///
    /// ```
    /// use std::time::Duration;
    /// use floodwall::{CallOutcome, Engine};
    ///
    /// let engine = Engine::from_toml(r#"
    ///     [services.orders]
    ///     upstreams = [{ url = "http://10.0.0.1:8080" }, { url = "http://10.0.0.2:8080", weight = 2 }]
    /// "#)?;
    /// let lease = engine.pick("orders")?;
    /// assert_eq!(lease.url(), "http://10.0.0.2:8080");
    /// lease.finish(CallOutcome::Success, Duration::from_millis(12));
    /// # Ok::<(), floodwall::Error>(())
    /// ```
    pub fn pick(&self, service: &str) -> Result<Lease, Error> {
        self.services.pick(service, &self.clock)
    }

    /// Every upstream of `service`: breaker state, in-flight calls, call statistics.
    pub fn upstreams(&self, service: &str) -> Result<Vec<UpstreamStatus>, Error> {
        self.services.status(service, self.clock.now())
    }

    /// Breaker state changes after sequence number `after` (0 for all that are kept: the
    /// newest [`EVENT_LOG_CAPACITY`](crate::balance::EVENT_LOG_CAPACITY)).
    pub fn breaker_events(&self, after: u64) -> Vec<BreakerEvent> {
        self.services.events.since(after)
    }

    /// Marks an upstream down (no call is picked for it, whatever its breaker says) or up
    /// again: for hosts that run active health checks.
    pub fn set_upstream_down(
        &self,
        service: &str,
        upstream: &str,
        down: bool,
    ) -> Result<(), Error> {
        self.services.set_down(service, upstream, down)
    }

    /// Closes an upstream's breaker now, with an empty window (an operator's override).
    pub fn reset_breaker(&self, service: &str, upstream: &str) -> Result<(), Error> {
        self.services
            .reset_breaker(service, upstream, self.clock.now())
    }

    /// Adds an upstream to `service` while serving; it starts closed with no history.
    pub fn add_upstream(&self, service: &str, upstream: &UpstreamConfig) -> Result<(), Error> {
        self.services.add_upstream(service, upstream)
    }

    /// Removes an upstream from `service`; leases already on it finish normally.
    pub fn remove_upstream(&self, service: &str, upstream: &str) -> Result<(), Error> {
        self.services.remove_upstream(service, upstream)
    }

    /// Decides on each request in turn (each one atomic on its own), returning one result per
    /// request in order. On a shared store the batch is one round trip (a pipeline of script
    /// calls); if that fails, each request gets the `on_error` policy.
    pub fn check_many(&self, requests: &[Request<'_>]) -> Vec<Result<Decision<'_>, Error>> {
        let Some(shared) = &self.shared else {
            return requests.iter().map(|r| self.check(r)).collect();
        };
        /// One request's layers, with the keys copied out of the request.
        struct Prepared<'e> {
            decision: Decision<'e>,
            cost: u64,
            now: Timestamp,
        }
        /// ((rule index, policy index), slot, key) of each layer of one request.
        type Parts = Vec<((usize, usize), u64, SmallVec<[u8; 32]>)>;
        let mut parts: Vec<Parts> = Vec::with_capacity(requests.len());
        let prepared: Vec<Result<Prepared<'_>, Error>> = requests
            .iter()
            .map(|request| {
                parts.push(Vec::new());
                let mut endpoint: SmallVec<[u8; 128]> = SmallVec::new();
                let mut decision = self.empty_decision();
                self.match_rules(request, &mut endpoint, &mut decision)?;
                let these = decision
                    .matched_mut()
                    .iter()
                    .map(|&m| {
                        let layer = self.layer(request, &endpoint, m);
                        (m, layer.slot, SmallVec::from_slice(layer.key))
                    })
                    .collect();
                if let Some(last) = parts.last_mut() {
                    *last = these;
                }
                Ok(Prepared {
                    decision,
                    cost: request.cost,
                    now: request.now.unwrap_or_else(|| self.clock.now()),
                })
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
                            let rule = &self.rules[*index];
                            Layer {
                                rule: rule.name(),
                                slot: *slot,
                                quota: rule.policies()[*variant].quota(),
                                key,
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
        let batch: Vec<(&[Layer<'_>], u64, Timestamp)> = prepared
            .iter()
            .zip(&layers)
            .filter_map(|(p, l)| p.as_ref().ok().map(|p| (l.as_slice(), p.cost, p.now)))
            .filter(|(l, _, _)| !l.is_empty())
            .collect();
        let mut slices: Vec<&mut [Outcome]> = prepared
            .iter()
            .zip(outcomes.iter_mut())
            .filter(|(p, o)| p.is_ok() && !o.is_empty())
            .map(|(_, o)| o.as_mut_slice())
            .collect();
        let verdicts =
            self.through_breaker(shared, || shared.redis.decide_many(&batch, &mut slices));
        let mut verdicts = verdicts.map(Vec::into_iter);
        let results: Vec<Result<Decision<'_>, Error>> = prepared
            .into_iter()
            .zip(layers.iter().zip(outcomes))
            .map(|(p, (these, mut out))| {
                let mut p = p?;
                if these.is_empty() {
                    return Ok(p.decision);
                }
                let (allowed, used) = match verdicts.as_mut() {
                    Some(v) => (v.next().unwrap_or(false), StoreUsed::Redis),
                    None => self.decide_unavailable(shared, these, p.cost, p.now, &mut out)?,
                };
                *p.decision.outcomes_mut() = out.into_iter().collect();
                p.decision.set_store(used);
                p.decision.settle(allowed);
                Ok(p.decision)
            })
            .collect();
        for (request, result) in requests.iter().zip(&results) {
            let now = request.now.unwrap_or_else(|| self.clock.now());
            self.record_decision(request, now, result);
        }
        results
    }

    /// Reports what happened: the in-memory aggregate at the engine's clock (see
    /// [`crate::monitor`]), with the store in use and the stream sink's counters.
    pub fn report(&self) -> Report {
        self.report_at(self.clock.now())
    }

    /// [`report`](Self::report) with the per-minute series ending at `now`'s minute.
    pub fn report_at(&self, now: Timestamp) -> Report {
        let mut report = self.monitor.report(now);
        report.store_kind = Some(self.store_kind.as_str());
        report.store_failure = self.store_failure();
        report
    }

    /// The monitoring counters and the upstreams' state in the Prometheus text format
    /// ([`monitor::prometheus::CONTENT_TYPE`](crate::monitor::prometheus::CONTENT_TYPE)).
    pub fn prometheus(&self) -> String {
        let services: Vec<(String, Vec<UpstreamStatus>)> = self
            .services
            .names()
            .into_iter()
            .filter_map(|name| {
                let upstreams = self.upstreams(&name).ok()?;
                Some((name, upstreams))
            })
            .collect();
        crate::monitor::prometheus::render(&self.report(), &services)
    }

    /// Records how the host answered a request — its status and its end-to-end latency — at
    /// the engine's clock, for the reports' response counts and latency percentiles.
    pub fn record_response(&self, method: &str, path: &str, status: u16, latency: Duration) {
        self.monitor.record(&Event::Response(ResponseEvent {
            at: self.clock.now(),
            method,
            path,
            status,
            latency,
        }));
    }

    /// The engine's monitoring (to record events of a host's own, or read the aggregate).
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// Forgets keys whose state has expired (the memory store also does this by itself as it
    /// inserts); returns how many were dropped.
    pub fn purge_expired(&self) -> usize {
        self.store.purge_expired(self.clock.now())
    }

    /// How many keys the store holds.
    pub fn key_count(&self) -> usize {
        self.store.key_count()
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

/// Refuses, for the Redis store, a `sliding_window_counter` whose `limit × window` (µs) reaches
/// 2^53: the decision script computes in Lua's doubles, exact only below that.
fn check_redis_arithmetic(rules: &[Rule]) -> Result<(), Error> {
    const EXACT: u128 = 1 << 53;
    for (i, rule) in rules.iter().enumerate() {
        for policy in rule.policies() {
            let q = policy.quota();
            if q.algorithm() == Algorithm::SlidingWindowCounter
                && u128::from(q.limit()) * q.period().as_micros() >= EXACT
            {
                return Err(Error::config(
                    format!("rules[{i}]"),
                    format!(
                        "with the redis store, a sliding_window_counter's limit × window must stay below 2^53 µs (about 285 years); {} × {:?}{} is over: use a shorter window, a smaller limit, or fixed_window / token_bucket",
                        q.limit(),
                        q.period(),
                        policy
                            .role()
                            .map(|r| format!(" for role {r:?}"))
                            .unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(())
}
