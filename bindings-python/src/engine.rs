//! `Engine`: the core engine as a Python class (subclassed by `floodwall.Engine`, which adds
//! the constructors' friendly signatures and the async variants).
//!
//! When a call releases the interpreter: a `check` or an `http` on a Redis store (it may wait
//! up to `store.timeout` on the network), every `authenticate` and `authorize` and an `http`
//! that verifies a token (signature verification takes microseconds to tens of
//! microseconds), building an engine (files, key sets). A `check` on the memory store keeps
//! it: the decision takes less time than releasing and re-acquiring the interpreter would. So
//! does `record_response` (one short lock); a `report` or the Prometheus text, which merge the
//! monitoring aggregate's shards, release it.

use std::time::Duration;

use floodwall::clock::duration_from_millis;
use floodwall::config::StoreKind;
use floodwall::http::AccessLists;
use floodwall::{Config, Request, Timestamp};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyMapping, PyTuple};

use crate::auth::{Authorized, Identity};
use crate::balance::{BreakerEvent, Lease, UpstreamStatus};
use crate::decision::Decision;
use crate::error::{IntoPyResult, exception};
use crate::http::{HttpArgs, HttpExchange};
use crate::text::{borrow_opt, borrow_str};

/// The traffic-control engine: rules, a store, keys, services.
#[pyclass(module = "floodwall._floodwall", subclass, frozen)]
pub(crate) struct Engine {
    core: floodwall::Engine,
    /// Whether `check` may wait on the network (the store is Redis).
    may_wait: bool,
}

impl Engine {
    pub(crate) fn core(&self) -> &floodwall::Engine {
        &self.core
    }

    /// Whether a call on the store may wait on the network (the store is Redis).
    pub(crate) fn store_may_wait(&self) -> bool {
        self.may_wait
    }
}

/// A request's parts, borrowed from the caller's Python strings for the length of one call.
#[derive(Default)]
struct Parts<'a> {
    subject: Option<&'a str>,
    role: Option<&'a str>,
    method: Option<&'a str>,
    path: Option<&'a str>,
    ip: Option<&'a str>,
    headers: Vec<(&'a str, &'a str)>,
    cost: u64,
    now_ms: Option<u64>,
}

impl Parts<'_> {
    fn request(&self) -> Request<'_> {
        Request {
            method: self.method.unwrap_or("GET"),
            path: self.path.unwrap_or("/"),
            subject: self.subject,
            role: self.role,
            ip: self.ip,
            headers: &self.headers,
            cost: self.cost,
            now: self.now_ms.map(Timestamp::from_millis),
        }
    }
}

/// The items of `headers=` (a mapping of header name to value), held while they are borrowed.
pub(crate) fn header_items<'py>(
    headers: Option<&Bound<'py, PyAny>>,
    what: &str,
) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    let Some(headers) = headers else {
        return Ok(Vec::new());
    };
    if headers.is_none() {
        return Ok(Vec::new());
    }
    let mapping = headers.cast::<PyMapping>().map_err(|_| {
        PyTypeError::new_err(format!("{what} must be a mapping of header name to value"))
    })?;
    let mut out = Vec::new();
    for item in mapping.items()?.iter() {
        let (name, value) = item.extract()?;
        out.push((name, value));
    }
    Ok(out)
}

pub(crate) fn borrow_headers<'a>(
    items: &'a [(Bound<'_, PyAny>, Bound<'_, PyAny>)],
    what: &str,
) -> PyResult<Vec<(&'a str, &'a str)>> {
    items
        .iter()
        .map(|(n, v)| Ok((borrow_str(n, what)?, borrow_str(v, what)?)))
        .collect()
}

const REQUEST_FIELDS: &str = "subject, role, method, path, ip, cost, headers, now_ms";

/// One request of `check_many` (a dict with the keyword arguments of `check`), its values held
/// while they are borrowed.
#[derive(Default)]
struct Held<'py> {
    text: [Option<Bound<'py, PyAny>>; 5],
    headers: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
    cost: u64,
    now_ms: Option<u64>,
}

const TEXT_FIELDS: [&str; 5] = ["subject", "role", "method", "path", "ip"];

fn hold_request<'py>(request: &Bound<'py, PyAny>, index: usize) -> PyResult<Held<'py>> {
    let dict = request.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!(
            "requests[{index}] must be a dict with the keys of check() ({REQUEST_FIELDS})"
        ))
    })?;
    let mut held = Held {
        cost: 1,
        ..Held::default()
    };
    for (key, value) in dict.iter() {
        let key = borrow_str(&key, &format!("requests[{index}]'s keys"))?.to_owned();
        let what = format!("requests[{index}].{key}");
        if let Some(slot) = TEXT_FIELDS.iter().position(|f| *f == key) {
            held.text[slot] = Some(value);
            continue;
        }
        match key.as_str() {
            "cost" => held.cost = number(Some(&value), &what)?.unwrap_or(1),
            "now_ms" => held.now_ms = number(Some(&value), &what)?,
            "headers" => held.headers = header_items(Some(&value), &what)?,
            other => {
                return Err(PyValueError::new_err(format!(
                    "requests[{index}] has an unknown key '{other}' (known: {REQUEST_FIELDS})"
                )));
            }
        }
    }
    Ok(held)
}

impl<'py> Held<'py> {
    fn parts(&self, index: usize) -> PyResult<Parts<'_>> {
        let text = |slot: usize| {
            borrow_opt(
                self.text[slot].as_ref(),
                &format!("requests[{index}].{}", TEXT_FIELDS[slot]),
            )
        };
        Ok(Parts {
            subject: text(0)?,
            role: text(1)?,
            method: text(2)?,
            path: text(3)?,
            ip: text(4)?,
            headers: borrow_headers(&self.headers, &format!("requests[{index}].headers"))?,
            cost: self.cost,
            now_ms: self.now_ms,
        })
    }
}

/// The arguments of `Engine.check`, as the caller passed them (`None` when absent).
#[derive(Default)]
pub(crate) struct CheckArgs<'a, 'py> {
    pub(crate) subject: Option<&'a Bound<'py, PyAny>>,
    pub(crate) role: Option<&'a Bound<'py, PyAny>>,
    pub(crate) method: Option<&'a Bound<'py, PyAny>>,
    pub(crate) path: Option<&'a Bound<'py, PyAny>>,
    pub(crate) ip: Option<&'a Bound<'py, PyAny>>,
    pub(crate) cost: Option<&'a Bound<'py, PyAny>>,
    pub(crate) headers: Option<&'a Bound<'py, PyAny>>,
    pub(crate) now_ms: Option<&'a Bound<'py, PyAny>>,
}

/// An optional count argument (`cost`, `now_ms`): `None` when absent or `None`.
fn number(value: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<u64>> {
    match value {
        Some(v) if !v.is_none() => v.extract::<u64>().map(Some).map_err(|_| {
            let shown = v
                .repr()
                .map_or_else(|_| "that".to_owned(), |r| r.to_string());
            PyTypeError::new_err(format!("{what} must be an int >= 0, not {shown}"))
        }),
        _ => Ok(None),
    }
}

static JSON_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A response's status: an `int` (not a `bool`) from 100 to 999.
pub(crate) fn http_status(value: &Bound<'_, PyAny>) -> PyResult<u16> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "status must be an int, not {}",
            type_name(value)
        )));
    }
    value
        .extract::<u16>()
        .ok()
        .filter(|s| floodwall::monitor::HTTP_STATUSES.contains(s))
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "status must be an HTTP status from 100 to 999, not {value}"
            ))
        })
}

/// A latency in milliseconds: an `int` or a `float`, finite and >= 0.
fn latency_of(value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    if value.is_instance_of::<PyBool>()
        || !(value.is_instance_of::<PyFloat>() || value.is_instance_of::<PyInt>())
    {
        return Err(PyTypeError::new_err(format!(
            "latency_ms must be a number of milliseconds, not {}",
            type_name(value)
        )));
    }
    let ms: f64 = value.extract()?;
    duration_from_millis(ms).ok_or_else(|| {
        PyValueError::new_err(format!("latency_ms must be a finite number >= 0, not {ms}"))
    })
}

pub(crate) fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "an object".to_owned(), |n| n.to_string())
}

/// `Engine.check`: decides whether a request may pass, consuming `cost` from every matching
/// limit when all of them admit it (all or nothing); `now_ms` replaces the clock.
pub(crate) fn check(slf: &Bound<'_, Engine>, args: &CheckArgs<'_, '_>) -> PyResult<Decision> {
    let items = header_items(args.headers, "headers")?;
    let parts = Parts {
        subject: borrow_opt(args.subject, "subject")?,
        role: borrow_opt(args.role, "role")?,
        method: borrow_opt(args.method, "method")?,
        path: borrow_opt(args.path, "path")?,
        ip: borrow_opt(args.ip, "ip")?,
        headers: borrow_headers(&items, "headers")?,
        cost: number(args.cost, "cost")?.unwrap_or(1),
        now_ms: number(args.now_ms, "now_ms")?,
    };
    let engine = slf.get();
    let decide = || engine.core.check(&parts.request()).map(Decision::parts);
    let (detached, permit) = if engine.may_wait {
        slf.py().detach(decide)
    } else {
        decide()
    }
    .py_err()?;
    Ok(Decision::new(slf.clone().unbind(), detached, permit))
}

/// Logs a transition of the store's health on the `floodwall.store` logger: a warning when
/// Redis fails (degraded or failing), an info record when it is back; the record's `extra`
/// holds `store_state`, `since_ms` and `reason_kind`. Called from the deciding thread or the
/// store's probe thread; nothing is logged once the interpreter is shutting down.
fn log_store_health(health: &floodwall::StoreHealth) {
    let _ = Python::try_attach(|py| -> PyResult<()> {
        let logger = py
            .import("logging")?
            .call_method1("getLogger", ("floodwall.store",))?;
        let extra = PyDict::new(py);
        extra.set_item("store_state", health.state.as_str())?;
        extra.set_item("since_ms", health.since_ms)?;
        extra.set_item("reason_kind", health.reason_kind)?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("extra", extra)?;
        let level = if health.state == floodwall::StoreState::Ok {
            "info"
        } else {
            "warning"
        };
        if let Err(e) = logger.call_method(level, (health.message(),), Some(&kwargs)) {
            e.write_unraisable(py, Some(&logger));
        }
        Ok(())
    });
}

#[pymethods]
impl Engine {
    /// Builds an engine from `source`, read as `format`: `toml` or `json` text, or a `file`
    /// path (JSON if it ends in `.json`, TOML otherwise). `floodwall.Engine`'s constructors
    /// are the friendly way in.
    #[new]
    fn new(py: Python<'_>, source: PyBackedStr, format: &str) -> PyResult<Self> {
        let read: fn(&str) -> Result<Config, floodwall::Error> = match format {
            "toml" => Config::from_toml,
            "json" => Config::from_json,
            "file" => |path| Config::from_file(path),
            other => {
                return Err(PyValueError::new_err(format!(
                    "format must be 'toml', 'json' or 'file', not '{other}'"
                )));
            }
        };
        let core = py
            .detach(|| read(&source).and_then(floodwall::Engine::from_config))
            .py_err()?;
        let may_wait = core.store_kind() != StoreKind::Memory;
        if may_wait {
            core.on_store_health(log_store_health);
        }
        Ok(Engine { core, may_wait })
    }

    /// Decides like `check` and, while the request is denied with a wait that fits in
    /// `max_wait_ms`, waits for capacity (first come, first served among this process's
    /// waiters for the same limits) and asks again: the admission, or the last denial. The
    /// interpreter is released while it waits; it decides on the engine's clock.
    #[pyo3(signature = (*, max_wait_ms, subject=None, role=None, method=None, path=None, ip=None, cost=None, headers=None))]
    #[allow(clippy::too_many_arguments)]
    fn acquire<'py>(
        slf: &Bound<'py, Self>,
        max_wait_ms: &Bound<'py, PyAny>,
        subject: Option<&Bound<'py, PyAny>>,
        role: Option<&Bound<'py, PyAny>>,
        method: Option<&Bound<'py, PyAny>>,
        path: Option<&Bound<'py, PyAny>>,
        ip: Option<&Bound<'py, PyAny>>,
        cost: Option<&Bound<'py, PyAny>>,
        headers: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Decision> {
        let wait = number(Some(max_wait_ms), "max_wait_ms")?.unwrap_or(0);
        let items = header_items(headers, "headers")?;
        let parts = Parts {
            subject: borrow_opt(subject, "subject")?,
            role: borrow_opt(role, "role")?,
            method: borrow_opt(method, "method")?,
            path: borrow_opt(path, "path")?,
            ip: borrow_opt(ip, "ip")?,
            headers: borrow_headers(&items, "headers")?,
            cost: number(cost, "cost")?.unwrap_or(1),
            now_ms: None,
        };
        let engine = slf.get();
        let (detached, permit) = slf
            .py()
            .detach(|| {
                engine
                    .core
                    .acquire(&parts.request(), std::time::Duration::from_millis(wait))
                    .map(Decision::parts)
            })
            .py_err()?;
        Ok(Decision::new(slf.clone().unbind(), detached, permit))
    }

    /// Decides a batch (on Redis, in one pipelined round trip): each request is a dict with
    /// the keyword arguments of `check`. Answers one entry per request, in order: a
    /// `Decision`, or the exception instance (not raised) for a request that failed.
    fn check_many<'py>(
        slf: &Bound<'py, Self>,
        requests: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let py = slf.py();
        let mut held = Vec::new();
        for (index, request) in requests.try_iter()?.enumerate() {
            held.push(hold_request(&request?, index)?);
        }
        let parts = held
            .iter()
            .enumerate()
            .map(|(index, h)| h.parts(index))
            .collect::<PyResult<Vec<_>>>()?;
        let engine = slf.get();
        let decide = || {
            let requests: Vec<Request<'_>> = parts.iter().map(Parts::request).collect();
            engine
                .core
                .check_many(&requests)
                .into_iter()
                .map(|r| r.map(Decision::parts))
                .collect::<Vec<_>>()
        };
        let results = if engine.may_wait {
            py.detach(decide)
        } else {
            decide()
        };
        let out = PyList::empty(py);
        for result in results {
            match result {
                Ok((detached, permit)) => {
                    out.append(Decision::new(slf.clone().unbind(), detached, permit))?;
                }
                Err(error) => out.append(exception(py, &error)?)?,
            }
        }
        Ok(out)
    }

    /// Verifies a bearer token: an `Authorization` header value (`Bearer <token>`), or a bare
    /// token when `auth.bare_token` is set. Raises `AuthError` (`.code`, `.status`,
    /// `.www_authenticate`) when the token is refused; `now_ms` replaces the clock.
    #[pyo3(signature = (authorization, *, now_ms = None))]
    fn authenticate(
        &self,
        authorization: &Bound<'_, PyAny>,
        now_ms: Option<u64>,
    ) -> PyResult<Identity> {
        let token = borrow_str(authorization, "authorization")?;
        let identity = authorization
            .py()
            .detach(|| match now_ms {
                Some(ms) => self.core.authenticate_at(token, Timestamp::from_millis(ms)),
                None => self.core.authenticate(token),
            })
            .py_err()?;
        Ok(Identity::new(identity))
    }

    /// Authenticates, then checks the request under the identity's subject and role: one
    /// call per request for a server. `now_ms` dates the rate-limit decision only; the token
    /// is always judged at the engine's clock.
    #[pyo3(
        signature = (authorization, *, method = None, path = None, ip = None, cost = None, headers = None, now_ms = None),
        text_signature = "($self, authorization, *, method=None, path=None, ip=None, cost=1, headers=None, now_ms=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn authorize<'py>(
        slf: &Bound<'py, Self>,
        authorization: &Bound<'py, PyAny>,
        method: Option<&Bound<'py, PyAny>>,
        path: Option<&Bound<'py, PyAny>>,
        ip: Option<&Bound<'py, PyAny>>,
        cost: Option<&Bound<'py, PyAny>>,
        headers: Option<&Bound<'py, PyAny>>,
        now_ms: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Authorized> {
        let py = slf.py();
        let authorization = borrow_str(authorization, "authorization")?;
        let items = header_items(headers, "headers")?;
        let parts = Parts {
            method: borrow_opt(method, "method")?,
            path: borrow_opt(path, "path")?,
            ip: borrow_opt(ip, "ip")?,
            headers: borrow_headers(&items, "headers")?,
            cost: number(cost, "cost")?.unwrap_or(1),
            now_ms: number(now_ms, "now_ms")?,
            ..Parts::default()
        };
        let engine = slf.get();
        let (identity, detached) = py
            .detach(|| {
                engine
                    .core
                    .authorize(authorization, &parts.request())
                    .map(|a| (a.identity, Decision::parts(a.decision)))
            })
            .py_err()?;
        let (detached, permit) = detached;
        let decision = Py::new(py, Decision::new(slf.clone().unbind(), detached, permit))?;
        let identity = Py::new(py, Identity::new(identity))?;
        Ok(Authorized::new(identity, decision))
    }

    /// The HTTP layer's verdict on one request (see `floodwall::http`): `method` and
    /// `target` as received (the request line's target: `/api/orders?page=2`, or the absolute
    /// form), the socket `peer`'s address (`None` when unknown), and `headers`, a mapping of
    /// lower-case name to value holding at least those of `http_headers` (a header of several
    /// lines is one value, its lines joined by `,`). `cost` is the request's cost (an int or a
    /// float; anything but an integer from 0 to 2^53 is answered 400); `stage` is `guard`
    /// (the token, the lists and every rule), `authenticate` or `rate_limit`, the latter with
    /// the `caller` (subject, role) an earlier stage verified and `after_authenticate`.
    /// `max_wait_ms` is how long the host may still wait for capacity: a 429 within it is not
    /// recorded and says in `retry_in_ms` when to ask again.
    #[pyo3(
        signature = (method, target, peer, headers, *, cost = None, stage = "guard", caller = None, after_authenticate = false, max_wait_ms = None),
        text_signature = "($self, method, target, peer, headers, *, cost=1, stage='guard', caller=None, after_authenticate=False, max_wait_ms=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn http<'py>(
        slf: &Bound<'py, Self>,
        method: &Bound<'py, PyAny>,
        target: &Bound<'py, PyAny>,
        peer: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        cost: Option<&Bound<'py, PyAny>>,
        stage: &str,
        caller: Option<(PyBackedStr, Option<PyBackedStr>)>,
        after_authenticate: bool,
        max_wait_ms: Option<f64>,
    ) -> PyResult<HttpExchange> {
        crate::http::http(
            slf,
            &HttpArgs {
                method,
                target,
                peer,
                headers,
                cost,
                stage,
                caller,
                after_authenticate,
                max_wait_ms,
            },
        )
    }

    /// The request headers `http` reads, lower-cased: hand over these (or all). The allow and
    /// deny lists' headers are among them, so read it again after `set_access_lists`.
    #[getter]
    fn http_headers(&self) -> Vec<String> {
        self.core.http_headers()
    }

    /// The response headers `HttpExchange.finish` reads (the rules' `cost_header`s),
    /// lower-cased.
    #[getter]
    fn http_response_headers(&self) -> Vec<String> {
        self.core.http_response_headers()
    }

    /// The allow and deny lists in force: `{"allow": {...}, "deny": {...}}`, each with
    /// `addresses`, `subjects`, `roles` and `headers` (see `floodwall.AccessLists`).
    fn access_lists<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let text = self.core.access_lists().to_json();
        JSON_LOADS.import(py, "json", "loads")?.call1((text,))
    }

    /// Replaces the allow and deny lists (`lists_json`, their JSON) while the engine serves.
    /// On error (`ConfigError` naming the entry) the lists in force are kept.
    fn _set_access_lists_json(&self, lists_json: PyBackedStr) -> PyResult<()> {
        AccessLists::from_json(&lists_json)
            .and_then(|lists| self.core.set_access_lists(&lists))
            .py_err()
    }

    /// Puts a whole new configuration in force while the engine serves (`source` read as
    /// `format`, as for the constructor; a `file`'s relative names resolve against it), and
    /// answers what it did as JSON (`ReloadSummary::to_json`). On error (`ConfigError` naming
    /// the field) nothing changes.
    fn _reload(&self, py: Python<'_>, source: PyBackedStr, format: &str) -> PyResult<String> {
        let summary = match format {
            "toml" => py.detach(|| self.core.reload_toml(&source)),
            "json" => py.detach(|| self.core.reload_json(&source)),
            "file" => py.detach(|| self.core.reload_file(&*source)),
            other => {
                return Err(PyValueError::new_err(format!(
                    "format must be 'toml', 'json' or 'file', not '{other}'"
                )));
            }
        };
        Ok(summary.py_err()?.to_json())
    }

    /// Replaces the `[auth]` section while the engine serves (key rotation): `auth_json` is
    /// the section as JSON, or `None` to remove it. On error the running keys are kept.
    fn _reload_auth_json(&self, py: Python<'_>, auth_json: Option<PyBackedStr>) -> PyResult<()> {
        py.detach(|| {
            let auth = match &auth_json {
                Some(text) => Config::from_json(&format!("{{\"auth\": {}}}", &**text))?.auth,
                None => None,
            };
            self.core.reload_auth(auth.as_ref())
        })
        .py_err()
    }

    /// Picks an upstream of `service` for one call (by the service's strategy, among those
    /// not down whose breaker admits a call). Raises `NoUpstreamError` (with
    /// `.available_at_ms`) when none can take it, `UnknownServiceError` for an unknown name.
    fn pick(&self, service: &str) -> PyResult<Lease> {
        Ok(Lease::new(self.core.pick(service).py_err()?))
    }

    /// Every upstream of `service`: breaker state, in-flight calls, call statistics.
    fn upstreams(&self, service: &str) -> PyResult<Vec<UpstreamStatus>> {
        Ok(self
            .core
            .upstreams(service)
            .py_err()?
            .into_iter()
            .map(UpstreamStatus::from)
            .collect())
    }

    /// Breaker state changes after sequence number `after` (0: all that are kept).
    #[pyo3(signature = (after = 0))]
    fn breaker_events(&self, after: u64) -> Vec<BreakerEvent> {
        self.core
            .breaker_events(after)
            .into_iter()
            .map(BreakerEvent::from)
            .collect()
    }

    /// Marks an upstream down (never picked, whatever its breaker says) or up again.
    #[pyo3(signature = (service, upstream, down = true))]
    fn set_upstream_down(&self, service: &str, upstream: &str, down: bool) -> PyResult<()> {
        self.core
            .set_upstream_down(service, upstream, down)
            .py_err()
    }

    /// Closes an upstream's breaker and clears its window.
    fn reset_breaker(&self, service: &str, upstream: &str) -> PyResult<()> {
        self.core.reset_breaker(service, upstream).py_err()
    }

    /// Adds an upstream to a service while it serves.
    #[pyo3(signature = (service, url, *, name = None, weight = 1))]
    fn add_upstream(
        &self,
        service: &str,
        url: &str,
        name: Option<String>,
        weight: u32,
    ) -> PyResult<()> {
        let mut upstream = floodwall::balance::UpstreamConfig::new(url);
        upstream.name = name;
        upstream.weight = weight;
        self.core.add_upstream(service, &upstream).py_err()
    }

    /// Removes an upstream from a service; calls in flight on it finish normally.
    fn remove_upstream(&self, service: &str, upstream: &str) -> PyResult<()> {
        self.core.remove_upstream(service, upstream).py_err()
    }

    /// The monitoring report: a dict with the JSON shape every binding shares (see
    /// `floodwall.Report`), its keys in the document's order. `now_ms` (ms since the Unix
    /// epoch) is when the per-minute series ends; by default the engine's clock. Made for a
    /// dashboard or a scrape, not per request: it merges the aggregate's shards (with the
    /// interpreter released).
    #[pyo3(signature = (now_ms = None))]
    fn report<'py>(
        &self,
        py: Python<'py>,
        now_ms: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let now = number(now_ms, "now_ms")?;
        let text = py.detach(|| match now {
            Some(ms) => self.core.report_at(Timestamp::from_millis(ms)).to_json(),
            None => self.core.report().to_json(),
        });
        // `json.loads` keeps the document's key order (a `serde_json::Value` would sort them).
        JSON_LOADS.import(py, "json", "loads")?.call1((text,))
    }

    /// The monitoring counters and the upstreams' state in the Prometheus text format (serve
    /// it with `PROMETHEUS_CONTENT_TYPE`).
    fn prometheus(&self, py: Python<'_>) -> String {
        py.detach(|| self.core.prometheus())
    }

    /// Records how the server answered a request: its `status` (an int from 100 to 999) and
    /// `latency_ms`, the time from the request's arrival to its answer (a number >= 0). The
    /// path's query string is ignored. `HttpExchange.finish` records the responses of the
    /// requests `http` saw (the ASGI and WSGI middlewares finish every one); call this for
    /// the others.
    fn record_response(
        &self,
        method: &Bound<'_, PyAny>,
        path: &Bound<'_, PyAny>,
        status: &Bound<'_, PyAny>,
        latency_ms: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let method = borrow_str(method, "method")?;
        let path = borrow_str(path, "path")?;
        let status = http_status(status)?;
        let latency = latency_of(latency_ms)?;
        self.core.record_response(method, path, status, latency);
        Ok(())
    }

    /// The configured store: `memory`, `redis`, `redis_cluster` or `redis_sentinel`.
    #[getter]
    fn store_kind(&self) -> &'static str {
        self.core.store_kind().as_str()
    }

    /// Whether `check` may wait on the network (the store is Redis): the async variants then
    /// run it on a worker thread.
    #[getter]
    fn may_wait(&self) -> bool {
        self.may_wait
    }

    /// The request headers some rule is keyed on (`key = "header:NAME"`), lower-cased: all a
    /// server needs to pass as `headers=`.
    #[getter]
    fn key_headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.core.key_headers())
    }

    /// Whether some rule is keyed on the client address (`key = "ip"`).
    #[getter]
    fn keys_ip(&self) -> bool {
        self.core.keys_ip()
    }

    /// Whether the engine has an `[auth]` section (it can authenticate).
    #[getter]
    fn has_auth(&self) -> bool {
        self.core.authenticator().is_some()
    }

    /// The shared store's last failure while it is failing (`None` when healthy or memory).
    #[getter]
    fn store_failure(&self) -> Option<String> {
        self.core.store_failure()
    }

    /// Where the store stands: `{"state", "since_ms", "reason", "reason_kind"}`.
    #[getter]
    fn store_health<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let h = self.core.store_health();
        let dict = PyDict::new(py);
        dict.set_item("state", h.state.as_str())?;
        dict.set_item("since_ms", h.since_ms)?;
        dict.set_item("reason", h.reason)?;
        dict.set_item("reason_kind", h.reason_kind)?;
        Ok(dict)
    }

    /// The rules' names, in configuration order.
    #[getter]
    fn rules<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.core.rules().iter().map(|r| r.name()))
    }

    /// Keys the memory store holds now.
    #[getter]
    fn key_count(&self) -> usize {
        self.core.key_count()
    }

    /// Drops the memory store's expired keys now (it also does so on its own); answers how many.
    fn purge_expired(&self) -> usize {
        self.core.purge_expired()
    }

    fn __repr__(&self) -> String {
        format!(
            "Engine(store_kind='{}', rules={})",
            self.store_kind(),
            self.core.rules().len()
        )
    }
}
