//! The facade the bindings call: build an [`Engine`] from a configuration, then ask it about
//! each [`Request`] ([`Engine::check`]) or, for an HTTP host, each HTTP request
//! ([`Engine::http`], see [`crate::http`]).
//!
//! The decision path is in `decide.rs`; `store.rs` builds the store and asks it the rest.

mod decide;
mod http;
mod keys;
mod live;
mod permit;
mod reload;
mod request;
mod store;
mod wait;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{AuthConfig, Authenticator, Identity};
use crate::balance::{BreakerEvent, Lease, Services, UpstreamConfig, UpstreamStatus};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::config::{Config, HeadersConfig, StoreKind};
use crate::decision::{Decision, DetachedDecision};
use crate::error::{Error, ErrorKind};
use crate::http::{AccessLists, CompiledAccess, HttpSettings, HttpState};
use crate::limit::{KeyKind, Rule};
use crate::monitor::{DecisionEvent, Event, EventOutcome, Monitor, Report, ResponseEvent, Warning};
use crate::store::Store;

pub(crate) use decide::{AddressText, Asked, Stage};
pub use keys::{KeyRef, KeyStatus};
pub use permit::Permit;
pub use reload::{ReloadSummary, RuleChange};
pub use request::Request;
pub use wait::ACQUIRE_MAX_ATTEMPTS;

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
    /// The rules and what is compiled beside them; replaced by [`Engine::reload`].
    pub(crate) gens: live::Generations,
    /// The current generation's id, authenticator and access lists, swapped together.
    pub(crate) snapshot: live::Snapshots,
    /// Serialises reloads and the partial replacements ([`Engine::set_access_lists`],
    /// [`Engine::reload_auth`]).
    pub(crate) reloading: parking_lot::Mutex<reload::Applied>,
    /// The store: memory, or Redis behind its failover policy.
    pub(crate) store: Box<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Permits kept for hosts that hold them by number.
    pub(crate) kept: permit::Kept,
    /// Requests waiting for capacity ([`Engine::acquire`]).
    pub(crate) lines: wait::Lines,
    /// What the HTTP layer counts as it reads requests.
    pub(crate) http_state: HttpState,
    pub(crate) base_dir: Option<PathBuf>,
    pub(crate) services: Services,
    pub(crate) store_kind: StoreKind,
    /// Every decision, upstream call and reported response is recorded here.
    pub(crate) monitor: Arc<Monitor>,
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
        config.store.check()?;
        let http = HttpSettings::compile(&config.http)?;
        let monitor = Arc::new(
            Monitor::new(&config.monitor, &config.store)?.with_case_folding(http.fold_case),
        );
        let access = compile_access(&config)?;
        let rules: Vec<Rule> = config
            .compile_rules()?
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.placed(i as u32))
            .collect();
        let base_dir = config.base_dir.clone();
        let auth = build_auth(config.auth.as_ref(), base_dir.as_deref())?;
        let services = Services::compile(&config.services, Arc::clone(&monitor))?;
        let store = store::build(&config.store, &rules)?;
        let live = live::Live::new(rules, config.headers, http);
        let snapshot = live::Snapshot {
            live: live.id,
            auth,
            access: Arc::new(access),
        };
        Ok(Engine {
            gens: live::Generations::new(live),
            snapshot: arc_swap::ArcSwap::from_pointee(snapshot),
            reloading: parking_lot::Mutex::new(reload::Applied::of(&config)),
            store,
            clock: Arc::new(SystemClock),
            kept: permit::Kept::default(),
            lines: wait::Lines::default(),
            http_state: HttpState::default(),
            base_dir,
            services,
            store_kind: config.store.kind(),
            monitor,
        })
    }

    /// The current generation of rules and compiled settings.
    #[inline(always)]
    pub(crate) fn live(&self) -> &live::Live {
        self.gens.current()
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
        self.store.set_clock(Arc::clone(&self.clock));
        self
    }

    /// A [`Decision::detach`]ed decision back as a [`Decision`], for the engine that made it;
    /// `None` when another engine made it.
    pub fn attach(&self, decision: &DetachedDecision) -> Option<Decision<'_>> {
        self.gens
            .find_rules(decision.rules_id())
            .and_then(|live| decision.attach(&live.rules))
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
        for rule in self.live().rules.iter() {
            if let KeyKind::Header(name) = rule.key()
                && !names.contains(&&**name)
            {
                names.push(name);
            }
        }
        names
    }

    /// Whether some rule is keyed on the client address (`key = "ip"`).
    pub fn keys_ip(&self) -> bool {
        self.live().keys_ip
    }

    /// Which response headers decisions render (the `[headers]` section).
    pub fn headers_config(&self) -> HeadersConfig {
        self.live().headers
    }

    /// The compiled rules, in configuration order.
    pub fn rules(&self) -> &[Rule] {
        &self.live().rules
    }

    /// The engine's current time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The allow and deny lists in force (the `[http]` section's, or the last
    /// [`set_access_lists`](Self::set_access_lists)).
    pub fn access_lists(&self) -> AccessLists {
        self.snapshot.load().access.source.clone()
    }

    /// Replaces the allow and deny lists while the engine serves; requests decided from then
    /// on see the new lists. On error (an entry that is not an address, a network or a header
    /// name) the lists in force are kept, and the error names the entry (`deny.addresses[2]`).
    ///
    /// ```
    /// use floodwall::{Engine, http::AccessLists};
    /// let engine = Engine::from_toml("")?;
    /// let mut lists = engine.access_lists();
    /// lists.deny.addresses.push("203.0.113.0/24".into());
    /// engine.set_access_lists(&lists)?;
    /// assert_eq!(engine.access_lists().deny.addresses, ["203.0.113.0/24"]);
    /// lists.allow.addresses.push("not an address".into());
    /// assert_eq!(engine.set_access_lists(&lists).unwrap_err().field(), Some("allow.addresses[0]"));
    /// # Ok::<(), floodwall::Error>(())
    /// ```
    pub fn set_access_lists(&self, lists: &AccessLists) -> Result<(), Error> {
        let compiled = CompiledAccess::compile(lists, "")?;
        let _reloading = self.reloading.lock();
        let now = self.snapshot.load();
        self.snapshot.store(Arc::new(live::Snapshot {
            live: now.live,
            auth: now.auth.clone(),
            access: Arc::new(compiled),
        }));
        Ok(())
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
            shadow_rule: None,
            allowlisted: false,
            blocked: false,
        }));
    }

    fn verify(&self, authorization: &str, now: Timestamp) -> Result<Arc<Identity>, Error> {
        // The lock is not held while verifying: a reload never waits for an RSA check.
        let auth = self.snapshot.load().auth.clone();
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
                let mut buffer = crate::http::PathBuffer::new();
                let path = crate::http::normalize_path(
                    request.path,
                    self.live().http.fold_case,
                    &mut buffer,
                );
                self.record_refusal(Some((request.method, path.as_str())), &e, now);
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
        let next = build_auth(auth, self.base_dir.as_deref())?;
        let _reloading = self.reloading.lock();
        let now = self.snapshot.load();
        self.snapshot.store(Arc::new(live::Snapshot {
            live: now.live,
            auth: next,
            access: Arc::clone(&now.access),
        }));
        Ok(())
    }

    /// The current authenticator, if the engine has an `[auth]` section. It is a snapshot: after
    /// [`reload_auth`](Self::reload_auth) it keeps the old keys and cache, so ask again rather
    /// than hold on to it.
    pub fn authenticator(&self) -> Option<Arc<Authenticator>> {
        self.snapshot.load().auth.clone()
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
        let (untrusted, first) = self.untrusted_forwarded();
        if untrusted > 0 {
            report.warnings.push(Warning {
                code: "untrusted_forwarded_header",
                message: "requests carry X-Forwarded-For or Forwarded, but http.trusted_proxies \
                          is empty: if a proxy fronts this server, every client is limited as \
                          that proxy's address; list the proxy in http.trusted_proxies"
                    .to_owned(),
                count: untrusted,
                first_seen_ms: first,
            });
        }
        report
    }

    /// The monitoring counters, the store's state (`floodwall_store_state`: 0 ok, 1 degraded,
    /// 2 failing) and the upstreams' state in the Prometheus text format
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
        let health = self.store_health();
        crate::monitor::prometheus::render(
            &self.report(),
            Some((self.store_kind.as_str(), &health)),
            &services,
        )
    }

    /// Records how the host answered a request — its status and its end-to-end latency — at
    /// the engine's clock, for the reports' response counts and latency percentiles. The path
    /// is recorded in normal form, as decisions record it. (The HTTP layer records its own
    /// requests' responses in [`http_finish`](Self::http_finish).)
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

/// The `[http]` section's allow and deny lists, compiled.
fn compile_access(config: &Config) -> Result<CompiledAccess, Error> {
    CompiledAccess::compile(
        &AccessLists {
            allow: config.http.allow.clone(),
            deny: config.http.deny.clone(),
        },
        "http",
    )
}

/// The authenticator of an `[auth]` section (files relative to `base_dir`).
fn build_auth(
    auth: Option<&AuthConfig>,
    base_dir: Option<&Path>,
) -> Result<Option<Arc<Authenticator>>, Error> {
    auth.map(|auth| {
        Authenticator::build(auth, base_dir, &|name| std::env::var(name).ok()).map(Arc::new)
    })
    .transpose()
}
