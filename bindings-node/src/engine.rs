//! `Engine`: the core engine as a Node class with a positional, compact native surface
//! (`index.js` gives it the idiomatic one).
//!
//! Synchronous methods run on the JS thread and never wait on the network unless the store is
//! Redis — `index.js` only offers `checkSync`/`authorizeSync` there for memory stores. The
//! Promise-returning methods run on the addon's worker threads ([`crate::pool`]).

use std::collections::HashMap;
use std::sync::Arc;

use floodwall::config::StoreKind;
use floodwall::{Config, Request, Timestamp};
use napi::bindgen_prelude::External;
use napi::bindgen_prelude::{Float64Array, FnArgs, Function, Object, ToNapiValue};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::{Either, Env};
use napi_derive::napi;

use crate::decision;
use crate::error::{IntoNapi, invalid_arg, to_napi};
use crate::pool;

/// The traffic-control engine: rules, a store, keys, services.
#[napi]
pub struct Engine {
    pub(crate) core: Arc<floodwall::Engine>,
    may_wait: bool,
}

/// One request of `checkMany`, as `check` takes it.
#[napi(object)]
pub struct RequestInit {
    pub subject: Option<String>,
    pub role: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub ip: Option<String>,
    pub cost: Option<f64>,
    pub headers: Option<HashMap<String, String>>,
    pub now_ms: Option<f64>,
}

/// A request's parts, owned, so that a worker thread can decide it.
pub(crate) struct Owned {
    pub(crate) subject: Option<String>,
    pub(crate) role: Option<String>,
    pub(crate) method: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) ip: Option<String>,
    pub(crate) cost: u64,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) now_ms: Option<u64>,
}

/// A count argument (`cost`, `nowMs`): an integer from 0 to 2^53.
pub(crate) fn count(value: Option<f64>, what: &str) -> napi::Result<Option<u64>> {
    match value {
        None => Ok(None),
        Some(v)
            if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_992.0 =>
        {
            Ok(Some(v as u64))
        }
        Some(v) => Err(invalid_arg(format!(
            "{what} must be an integer from 0 to 2^53, not {v}"
        ))),
    }
}

impl Owned {
    fn new(init: RequestInit) -> napi::Result<Self> {
        Ok(Owned {
            cost: count(init.cost, "cost")?.unwrap_or(1),
            now_ms: count(init.now_ms, "nowMs")?,
            headers: init
                .headers
                .map(|h| h.into_iter().collect())
                .unwrap_or_default(),
            subject: init.subject,
            role: init.role,
            method: init.method,
            path: init.path,
            ip: init.ip,
        })
    }

    fn with_request<R>(&self, f: impl FnOnce(&Request<'_>) -> R) -> R {
        let headers = self.header_pairs();
        f(&self.request(&headers))
    }

    /// The headers as [`Request::headers`] takes them.
    fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    /// The request, over `headers` (from [`header_pairs`](Self::header_pairs)).
    fn request<'a>(&'a self, headers: &'a [(&'a str, &'a str)]) -> Request<'a> {
        Request {
            method: self.method.as_deref().unwrap_or("GET"),
            path: self.path.as_deref().unwrap_or("/"),
            subject: self.subject.as_deref(),
            role: self.role.as_deref(),
            ip: self.ip.as_deref(),
            headers,
            cost: self.cost,
            now: self.now_ms.map(Timestamp::from_millis),
        }
    }
}

/// What `authorize` answers: the verified caller and the decision for it.
#[napi]
pub struct Authorized {
    identity: Arc<floodwall::Identity>,
    decision: floodwall::DetachedDecision,
    /// The number the engine keeps the decision's permit under (0: none).
    permit: u64,
    engine: Arc<floodwall::Engine>,
}

#[napi]
impl Authorized {
    /// The verified caller.
    #[napi]
    pub fn identity(&self) -> IdentityFields {
        identity_fields(&self.identity)
    }

    /// The decision, taken under the identity's subject and role, as its row of numbers.
    #[napi]
    pub fn decision(&self) -> Float64Array {
        let decision = self
            .engine
            .attach(&self.decision)
            .expect("a decision is attached to the engine that made it");
        let mut row = vec![0.0; decision::decision_len(decision.layers().len())];
        decision::write_held(&decision, self.permit, &mut row);
        Float64Array::new(row)
    }
}

/// Runs `work` on a worker thread; the Promise settles with its result on the JS thread.
pub(crate) fn on_worker<T>(
    env: &Env,
    work: impl FnOnce() -> Result<T, floodwall::Error> + Send + 'static,
) -> napi::Result<Object<'_>>
where
    T: ToNapiValue + Send + 'static,
{
    let (deferred, promise) = env.create_deferred()?;
    pool::spawn(move || match work() {
        Ok(value) => deferred.resolve(move |_| Ok(value)),
        Err(error) => deferred.reject(to_napi(&error)),
    });
    Ok(promise)
}

impl Engine {
    /// The permit kept as `id`, taken back.
    fn kept(&self, id: f64) -> Option<floodwall::Permit> {
        (id >= 1.0 && id.fract() == 0.0)
            .then(|| self.core.take_kept(id as u64))
            .flatten()
    }

    fn build(read: napi::Result<Config>) -> napi::Result<Self> {
        let core = read.and_then(|c| floodwall::Engine::from_config(c).js())?;
        let may_wait = core.store_kind() != StoreKind::Memory;
        Ok(Engine {
            core: Arc::new(core),
            may_wait,
        })
    }
}

fn authorize(
    core: &Arc<floodwall::Engine>,
    authorization: &str,
    request: &Owned,
) -> Result<Authorized, floodwall::Error> {
    let (identity, decision, permit) = request.with_request(|r| {
        core.authorize(authorization, r).map(|a| {
            let mut decision = a.decision;
            (a.identity, decision.detach(), decision.keep_permit())
        })
    })?;
    Ok(Authorized {
        identity,
        decision,
        permit,
        engine: Arc::clone(core),
    })
}

#[napi]
impl Engine {
    /// Releases the permit kept as `id` (a decision's row, index 5), in this thread: for the
    /// memory store. `false` when no permit is kept under `id`.
    #[napi]
    pub fn release_permit(&self, id: f64) -> bool {
        self.kept(id)
            .is_some_and(|permit| self.core.release(permit))
    }

    /// [`release_permit`](Self::release_permit) on a worker thread, for a store that may
    /// wait (Redis): the Promise settles once the release is given back.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn release_permit_async<'env>(
        &self,
        env: &'env Env,
        id: f64,
    ) -> napi::Result<Object<'env>> {
        let permit = self.kept(id);
        let core = Arc::clone(&self.core);
        on_worker(env, move || Ok(permit.is_some_and(|p| core.release(p))))
    }

    /// An engine from TOML configuration text.
    #[napi(factory)]
    pub fn from_toml(text: String) -> napi::Result<Self> {
        Self::build(Config::from_toml(&text).js())
    }

    /// An engine from JSON configuration text (the same structure).
    #[napi(factory)]
    pub fn from_json(text: String) -> napi::Result<Self> {
        Self::build(Config::from_json(&text).js())
    }

    /// An engine from a configuration file: JSON if it ends in `.json`, TOML otherwise.
    #[napi(factory)]
    pub fn from_file(path: String) -> napi::Result<Self> {
        Self::build(Config::from_file(&path).js())
    }

    /// An engine from the JSON text of a configuration object the caller built (errors name
    /// the field's path, never a position in text the caller did not write).
    #[napi(factory)]
    pub fn from_object_json(text: String) -> napi::Result<Self> {
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            crate::error::invalid_arg(format!("the configuration is not JSON: {e}"))
        })?;
        Self::build(Config::from_value(value).js())
    }

    /// Decides like `check` and, while the request is denied with a wait that fits in
    /// `maxWaitMs`, waits for capacity and asks again (the core's `acquire_async`, first come
    /// first served among this engine's waiters): the admission's row, or the last denial's.
    /// The waits are timers of the addon's own runtime: no JS thread, and no worker thread,
    /// waits.
    #[napi(ts_return_type = "Promise<Float64Array>")]
    pub fn acquire<'env>(
        &self,
        env: &'env Env,
        request: RequestInit,
        max_wait_ms: f64,
    ) -> napi::Result<Object<'env>> {
        let owned = Owned::new(request)?;
        let wait =
            std::time::Duration::from_millis(count(Some(max_wait_ms), "maxWaitMs")?.unwrap_or(0));
        let core = Arc::clone(&self.core);
        let (deferred, promise) = env.create_deferred()?;
        crate::timers::spawn(async move {
            let headers = owned.header_pairs();
            // acquire_async decides on the engine's clock.
            match core.acquire_async(&owned.request(&headers), wait).await {
                Ok(mut decision) => {
                    let row = decision::to_vec(&mut decision);
                    deferred.resolve(move |_| Ok(Float64Array::new(row)));
                }
                Err(error) => deferred.reject(to_napi(&error)),
            }
        })?;
        Ok(promise)
    }

    /// A batch, in one Redis round trip: a decision's row, or an error's JSON text, per
    /// request.
    #[napi]
    pub fn check_many_sync(
        &self,
        requests: Vec<RequestInit>,
    ) -> napi::Result<Vec<Either<Float64Array, String>>> {
        let owned = requests
            .into_iter()
            .map(Owned::new)
            .collect::<napi::Result<Vec<_>>>()?;
        Ok(self.decide_many(&owned, None))
    }

    /// [`check_many_sync`](Self::check_many_sync) on a worker thread.
    #[napi(ts_return_type = "Promise<Array<Float64Array | string>>")]
    pub fn check_many<'env>(
        &self,
        env: &'env Env,
        requests: Vec<RequestInit>,
    ) -> napi::Result<Object<'env>> {
        let owned = requests
            .into_iter()
            .map(Owned::new)
            .collect::<napi::Result<Vec<_>>>()?;
        let engine = Engine {
            core: Arc::clone(&self.core),
            may_wait: self.may_wait,
        };
        // The deadline counts from the call, not from when a worker took it.
        let queued = std::time::Instant::now();
        on_worker(env, move || Ok(engine.decide_many(&owned, Some(queued))))
    }

    /// [`authorize_sync`] on a worker thread.
    #[napi(ts_return_type = "Promise<Authorized>")]
    #[allow(clippy::too_many_arguments)]
    pub fn authorize<'env>(
        &self,
        env: &'env Env,
        authorization: String,
        method: Option<String>,
        path: Option<String>,
        ip: Option<String>,
        cost: Option<f64>,
        now_ms: Option<f64>,
        headers: Option<HashMap<String, String>>,
    ) -> napi::Result<Object<'env>> {
        let request = Owned::new(RequestInit {
            subject: None,
            role: None,
            method,
            path,
            ip,
            cost,
            headers,
            now_ms,
        })?;
        let core = Arc::clone(&self.core);
        on_worker(env, move || authorize(&core, &authorization, &request))
    }

    /// Puts a whole new configuration in force while serving: `source` read as `format`
    /// (`toml`, `json`, or a `file` path); answers what it did as JSON
    /// (`ReloadSummary::to_json`). On error nothing changes.
    #[napi]
    pub fn reload(&self, source: String, format: String) -> napi::Result<String> {
        let summary = match format.as_str() {
            "toml" => self.core.reload_toml(&source),
            "json" => self.core.reload_json(&source),
            "file" => self.core.reload_file(&source),
            other => {
                return Err(napi::Error::new(
                    napi::Status::InvalidArg,
                    format!("format must be 'toml', 'json' or 'file', not '{other}'"),
                ));
            }
        };
        Ok(summary.js()?.to_json())
    }

    /// Replaces the `[auth]` section (as JSON text, or null to remove it) while serving.
    #[napi]
    pub fn reload_auth_json(&self, auth_json: Option<String>) -> napi::Result<()> {
        let auth = match auth_json {
            Some(text) => {
                Config::from_json(&format!("{{\"auth\": {text}}}"))
                    .js()?
                    .auth
            }
            None => None,
        };
        self.core.reload_auth(auth.as_ref()).js()
    }

    /// The engine as an external value for the module-level hot-path functions
    /// ([`check_sync`], [`authorize_sync`]): a Node-API class method costs ≈ 200 ns more to
    /// call than a plain function (measured with `bench/compare.js`).
    #[napi(ts_return_type = "ExternalObject<'Engine'>")]
    pub fn handle(&self) -> External<Handle> {
        External::new(Handle {
            core: Arc::clone(&self.core),
        })
    }

    /// A function `(out, subject, role, method, path, ip, cost, nowMs, headers) => void`
    /// deciding on this engine on the JS thread (see `fastpath.rs`).
    #[napi(
        ts_return_type = "(out: Float64Array, subject?: string | null, role?: string | null, method?: string | null, path?: string | null, ip?: string | null, cost?: number | null, nowMs?: number | null, headers?: Record<string, string> | null) => void"
    )]
    pub fn check_function<'env>(
        &self,
        env: &'env Env,
    ) -> napi::Result<napi::bindgen_prelude::Unknown<'env>> {
        crate::fastpath::check_function(env, Arc::clone(&self.core))
    }

    /// A function taking `checkFunction`'s arguments, reading them as it does and deciding
    /// nothing: what crossing into the addon with a request costs, for benchmarks to set
    /// `checkSync` against.
    #[napi(
        ts_return_type = "(out: Float64Array, subject?: string | null, role?: string | null, method?: string | null, path?: string | null, ip?: string | null, cost?: number | null, nowMs?: number | null, headers?: Record<string, string> | null) => void"
    )]
    pub fn crossing_function<'env>(
        &self,
        env: &'env Env,
    ) -> napi::Result<napi::bindgen_prelude::Unknown<'env>> {
        crate::fastpath::crossing_function(env, Arc::clone(&self.core))
    }

    /// A function `(authorization, nowMs) => [subject, role, keyId, algorithm, expiresAtMs]`
    /// verifying tokens on this engine on the JS thread (see `fastpath.rs`).
    #[napi(
        ts_return_type = "(authorization: string, nowMs?: number | null) => [string, string | null, string | null, string, number | null]"
    )]
    pub fn authenticate_function<'env>(
        &self,
        env: &'env Env,
    ) -> napi::Result<napi::bindgen_prelude::Unknown<'env>> {
        crate::fastpath::authenticate_function(env, Arc::clone(&self.core))
    }

    /// `[enqueue, drain, errors]`: `check` on a shared store through the batching dispatcher
    /// (see `dispatch.rs`); `onReady` is called when results wait to be drained.
    #[napi(
        ts_return_type = "[(id: number, subject?: string | null, role?: string | null, method?: string | null, path?: string | null, ip?: string | null, cost?: number | null, nowMs?: number | null, headers?: Record<string, string> | null) => void, (out: Float64Array) => number, () => string[]]"
    )]
    pub fn dispatcher<'env>(
        &self,
        env: &'env Env,
        on_ready: napi::bindgen_prelude::Function<'env, (), ()>,
    ) -> napi::Result<Vec<napi::bindgen_prelude::Unknown<'env>>> {
        Ok(crate::dispatch::functions(env, Arc::clone(&self.core), on_ready)?.into())
    }

    /// A function `(out, authorization, method, path, ip, cost, nowMs, headers) => [subject,
    /// role, keyId, algorithm, expiresAtMs]` authorizing on this engine on the JS thread, the
    /// decision written into `out` (see `fastpath.rs`).
    #[napi(
        ts_return_type = "(out: Float64Array, authorization: string, method?: string | null, path?: string | null, ip?: string | null, cost?: number | null, nowMs?: number | null, headers?: Record<string, string> | null) => [string, string | null, string | null, string, number | null]"
    )]
    pub fn authorize_function<'env>(
        &self,
        env: &'env Env,
    ) -> napi::Result<napi::bindgen_prelude::Unknown<'env>> {
        crate::fastpath::authorize_function(env, Arc::clone(&self.core))
    }

    /// `[names, responseNames, httpSync, httpAsync, finishSync, finishAsync]`: the HTTP
    /// layer over this engine and the header names it reads now (see `http.rs`).
    #[napi(ts_return_type = "[string[], string[], Function, Function, Function, Function]")]
    pub fn http_functions<'env>(
        &self,
        env: &'env Env,
    ) -> napi::Result<Vec<napi::bindgen_prelude::Unknown<'env>>> {
        crate::http::functions(env, Arc::clone(&self.core))
    }

    /// The rate-limit headers of the decision whose row starts at `base` of `row`, as
    /// `[name, value, name, value, ...]`: rendered by the core from the row's figures.
    #[napi]
    pub fn decision_headers(&self, row: Float64Array, base: u32) -> napi::Result<Vec<String>> {
        let row: &[f64] = &row;
        let base = base as usize;
        let rules = self.core.rules();
        let at = |i: usize| row.get(base + i).copied().unwrap_or(0.0);
        let n = at(2) as usize;
        let deciding = at(3);
        if deciding < 0.0 || row.len() < base + decision::decision_len(n) {
            return Ok(Vec::new());
        }
        let layer = |i: usize| -> Option<(bool, floodwall::HeaderLayer<'_>)> {
            let first = decision::HEAD + decision::PER_LAYER * i;
            let rule = rules.get(at(first) as usize)?;
            Some((
                rule.is_shadow(),
                floodwall::HeaderLayer {
                    rule: rule.name(),
                    limit: at(first + 2) as u64,
                    remaining: at(first + 3) as u64,
                    reset_after: std::time::Duration::from_millis(at(first + 4) as u64),
                    window: std::time::Duration::from_secs(at(first + 6) as u64),
                },
            ))
        };
        let Some((_, chosen)) = layer(deciding as usize) else {
            return Ok(Vec::new());
        };
        let layers: Vec<floodwall::HeaderLayer<'_>> = (0..n)
            .filter_map(layer)
            .filter(|(shadow, _)| !shadow)
            .map(|(_, l)| l)
            .collect();
        let retry = (at(0) != 1.0).then(|| std::time::Duration::from_millis(at(4) as u64));
        Ok(
            floodwall::rate_limit_headers(self.core.headers_config(), layers, chosen, retry)
                .into_iter()
                .flat_map(|(name, value)| [name.to_owned(), value])
                .collect(),
        )
    }

    /// The allow and deny lists in force, as JSON text.
    #[napi]
    pub fn access_lists_json(&self) -> String {
        self.core.access_lists().to_json()
    }

    /// Replaces the allow and deny lists (JSON text of `{ allow, deny }`).
    #[napi]
    pub fn set_access_lists_json(&self, text: String) -> napi::Result<()> {
        let lists = floodwall::http::AccessLists::from_json(&text).js()?;
        self.core.set_access_lists(&lists).js()
    }

    /// The configured store: `memory`, `redis`, `redis_cluster` or `redis_sentinel`.
    #[napi(getter)]
    pub fn store_kind(&self) -> &'static str {
        self.core.store_kind().as_str()
    }

    /// Whether a check may wait on the network (the store is Redis).
    #[napi(getter)]
    pub fn may_wait(&self) -> bool {
        self.may_wait
    }

    /// Which header sets decisions render: [IETF draft fields, `RateLimit-Limit` & co,
    /// `Retry-After`].
    #[napi(getter)]
    pub fn headers_config(&self) -> Vec<bool> {
        let h = self.core.headers_config();
        vec![h.ietf, h.legacy, h.retry_after]
    }

    /// The request headers some rule is keyed on, lower-cased: all a server needs to pass.
    #[napi(getter)]
    pub fn key_headers(&self) -> Vec<String> {
        self.core
            .key_headers()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Whether some rule is keyed on the client address.
    #[napi(getter)]
    pub fn keys_ip(&self) -> bool {
        self.core.keys_ip()
    }

    /// Whether the engine has an `[auth]` section.
    #[napi(getter)]
    pub fn has_auth(&self) -> bool {
        self.core.authenticator().is_some()
    }

    /// The shared store's last failure while it is failing.
    #[napi(getter)]
    pub fn store_failure(&self) -> Option<String> {
        self.core.store_failure()
    }

    /// Where the store stands: `ok`, `degraded` or `failing`, since when, and why.
    #[napi(getter)]
    pub fn store_health(&self) -> StoreHealthFields {
        self.core.store_health().into()
    }

    /// Calls `listener(health, message)` on the JS thread at every transition of the store's
    /// health (`index.js` emits it as the `storeHealth` event). The listener does not keep the
    /// process alive.
    #[napi]
    pub fn on_store_health(
        &self,
        listener: Function<'_, FnArgs<(StoreHealthFields, String)>, ()>,
    ) -> napi::Result<()> {
        let tsfn = listener
            .build_threadsafe_function::<FnArgs<(StoreHealthFields, String)>>()
            .callee_handled::<false>()
            .weak::<true>()
            .build()?;
        self.core.on_store_health(move |health| {
            let message = health.message();
            tsfn.call(
                FnArgs::from((health.clone().into(), message)),
                ThreadsafeFunctionCallMode::NonBlocking,
            );
        });
        Ok(())
    }

    /// The rules' names, in configuration order.
    #[napi(getter)]
    pub fn rules(&self) -> Vec<String> {
        self.core
            .rules()
            .iter()
            .map(|r| r.name().to_owned())
            .collect()
    }

    /// Keys the memory store holds now.
    #[napi(getter)]
    pub fn key_count(&self) -> f64 {
        self.core.key_count() as f64
    }

    /// Drops the memory store's expired keys now; answers how many.
    #[napi]
    pub fn purge_expired(&self) -> f64 {
        self.core.purge_expired() as f64
    }
}

impl Engine {
    fn decide_many(
        &self,
        requests: &[Owned],
        queued: Option<std::time::Instant>,
    ) -> Vec<Either<Float64Array, String>> {
        decide_rows(&self.core, requests, queued)
            .into_iter()
            .map(|r| match r {
                Ok(row) => Either::A(Float64Array::new(row)),
                Err(json) => Either::B(json),
            })
            .collect()
    }
}

/// The engine behind [`Engine::handle`].
pub struct Handle {
    core: Arc<floodwall::Engine>,
}

/// [`floodwall::StoreHealth`] for JavaScript.
#[napi(object)]
pub struct StoreHealthFields {
    /// `ok`, `degraded` or `failing`.
    pub state: String,
    /// Since when, in ms since the Unix epoch.
    pub since_ms: f64,
    /// Why it is not `ok`, in words.
    pub reason: Option<String>,
    /// `timeout`, `refused`, `out_of_memory`, `noscript`, `cluster_down` or `error`.
    pub reason_kind: Option<String>,
}

impl From<floodwall::StoreHealth> for StoreHealthFields {
    fn from(h: floodwall::StoreHealth) -> Self {
        StoreHealthFields {
            state: h.state.as_str().to_owned(),
            since_ms: h.since_ms as f64,
            reason: h.reason,
            reason_kind: h.reason_kind.map(str::to_owned),
        }
    }
}

/// A verified caller, as the JS `Identity` is built from it (its claims are asked for apart,
/// with [`claims_json`]: most requests never read them).
#[napi(object)]
pub struct IdentityFields {
    /// The subject (by default the `sub` claim).
    pub subject: String,
    /// The role from the configured claim, or the default role.
    pub role: Option<String>,
    /// The `kid` of the key that verified the token.
    pub key_id: Option<String>,
    /// The algorithm the token was verified with.
    pub algorithm: String,
    /// `exp` in ms since the Unix epoch.
    pub expires_at_ms: Option<f64>,
}

fn identity_fields(identity: &floodwall::Identity) -> IdentityFields {
    IdentityFields {
        subject: identity.subject.clone(),
        role: identity.role.clone(),
        key_id: identity.key_id.clone(),
        algorithm: identity.algorithm.to_owned(),
        expires_at_ms: identity.expires_at.map(|t| t.as_millis() as f64),
    }
}

fn verify(
    engine: &floodwall::Engine,
    authorization: &str,
    now_ms: Option<f64>,
) -> napi::Result<Arc<floodwall::Identity>> {
    match count(now_ms, "nowMs")? {
        Some(ms) => engine.authenticate_at(authorization, Timestamp::from_millis(ms)),
        None => engine.authenticate(authorization),
    }
    .js()
}

/// The claims of a token `authenticate` accepted, as JSON text: verified again (a cache hit
/// when the engine caches tokens), so a token refused since — expired, its key rotated away —
/// gives no claims.
#[napi]
pub fn claims_json(
    engine: &External<Handle>,
    authorization: String,
    now_ms: Option<f64>,
) -> napi::Result<String> {
    let identity = verify(&engine.core, &authorization, now_ms)?;
    Ok(serde_json::Value::Object(identity.claims.clone()).to_string())
}

/// A batch decided with one `check_many` (one Redis round trip): each request's row, or its
/// error's JSON text. `queued`: when the oldest of them was queued (the shared store's deadline
/// counts from then).
pub(crate) fn decide_rows(
    core: &floodwall::Engine,
    requests: &[Owned],
    queued: Option<std::time::Instant>,
) -> Vec<Result<Vec<f64>, String>> {
    let headers: Vec<Vec<(&str, &str)>> = requests
        .iter()
        .map(|o| {
            o.headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect()
        })
        .collect();
    let batch: Vec<Request<'_>> = requests
        .iter()
        .zip(&headers)
        .map(|(o, h)| Request {
            method: o.method.as_deref().unwrap_or("GET"),
            path: o.path.as_deref().unwrap_or("/"),
            subject: o.subject.as_deref(),
            role: o.role.as_deref(),
            ip: o.ip.as_deref(),
            headers: h,
            cost: o.cost,
            now: o.now_ms.map(Timestamp::from_millis),
        })
        .collect();
    match queued {
        Some(at) => core.check_many_since(&batch, at),
        None => core.check_many(&batch),
    }
    .into_iter()
    .map(|r| {
        r.map(|mut d| decision::to_vec(&mut d))
            .map_err(|e| to_napi(&e).reason)
    })
    .collect()
}
