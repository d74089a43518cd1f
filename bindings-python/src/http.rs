//! `Engine.http` and `HttpExchange`: the core's HTTP layer ([`floodwall::http`]) for the ASGI
//! and WSGI middlewares, which build the request from their framework and write the answer
//! this module hands back — every rule, text and header value is the core's.
//!
//! `Engine.http` releases the interpreter when the engine may wait: on a Redis store (each
//! step may wait up to `store.timeout`) and in a stage that verifies a bearer token (as
//! `authorize` does). `HttpExchange.finish` releases it when the exchange writes to the
//! shared store (`touches_store`); otherwise it is one short lock and keeps it.

use std::sync::Arc;

use floodwall::DetachedDecision;
use floodwall::http::{Exchange, HttpRequest, HttpStage, HttpVerdict, answer};
use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyList, PyTuple};

use crate::auth::Identity;
use crate::decision::{Decision, py_opt_str, py_str};
use crate::engine::{Engine, borrow_headers, header_items, http_status, type_name};
use crate::text::{borrow_opt, borrow_str};

/// The largest cost the core admits, 2^53: larger integers pass as infinity, so that the
/// core answers them 400 rather than a rounded neighbour being counted.
const MAX_COST: u64 = 1 << 53;

/// The arguments of `Engine.http`, as the caller passed them.
pub(crate) struct HttpArgs<'a, 'py> {
    pub(crate) method: &'a Bound<'py, PyAny>,
    pub(crate) target: &'a Bound<'py, PyAny>,
    pub(crate) peer: &'a Bound<'py, PyAny>,
    pub(crate) headers: &'a Bound<'py, PyAny>,
    pub(crate) cost: Option<&'a Bound<'py, PyAny>>,
    pub(crate) stage: &'a str,
    pub(crate) caller: Option<(PyBackedStr, Option<PyBackedStr>)>,
    pub(crate) after_authenticate: bool,
    pub(crate) max_wait_ms: Option<f64>,
}

/// `max_wait_ms=`: a number of milliseconds, 0 or more; 0 when absent.
fn wait_of(value: Option<f64>) -> PyResult<std::time::Duration> {
    match value {
        None => Ok(std::time::Duration::ZERO),
        Some(ms) if ms.is_finite() && ms >= 0.0 => {
            Ok(std::time::Duration::from_secs_f64(ms.min(1e12) / 1000.0))
        }
        Some(ms) => Err(PyValueError::new_err(format!(
            "max_wait_ms must be a number of milliseconds, 0 or more, not {ms}"
        ))),
    }
}

/// `cost=`: an `int` or a `float` (not a `bool`), as the core's `f64`; 1 when absent or `None`.
fn cost_of(value: Option<&Bound<'_, PyAny>>) -> PyResult<f64> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(1.0);
    };
    if value.is_instance_of::<PyInt>() && !value.is_instance_of::<PyBool>() {
        return Ok(match value.extract::<i64>() {
            Ok(n) if n.unsigned_abs() <= MAX_COST => n as f64,
            Ok(n) if n < 0 => f64::NEG_INFINITY,
            Ok(_) => f64::INFINITY,
            Err(_) if value.lt(0)? => f64::NEG_INFINITY,
            Err(_) => f64::INFINITY,
        });
    }
    if value.is_instance_of::<PyFloat>() {
        return value.extract();
    }
    Err(PyTypeError::new_err(format!(
        "cost must be a number (an int or a float), not {}",
        type_name(value)
    )))
}

fn stage_of(stage: &str) -> PyResult<HttpStage> {
    match stage {
        "guard" => Ok(HttpStage::Guard),
        "authenticate" => Ok(HttpStage::Authenticate),
        "rate_limit" => Ok(HttpStage::RateLimit),
        other => Err(PyValueError::new_err(format!(
            "stage must be 'guard', 'authenticate' or 'rate_limit', not {}",
            py_str(other)
        ))),
    }
}

/// What the core said, as owned data that crosses back from a released interpreter.
struct Verdict {
    kind: &'static str,
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    identity: Option<Arc<floodwall::Identity>>,
    decision: Option<DetachedDecision>,
    exchange: Option<Exchange>,
    retry_in: Option<std::time::Duration>,
}

impl From<HttpVerdict<'_>> for Verdict {
    fn from(verdict: HttpVerdict<'_>) -> Self {
        match verdict {
            HttpVerdict::Skip => Verdict {
                kind: "skip",
                status: 0,
                headers: Vec::new(),
                body: String::new(),
                identity: None,
                decision: None,
                exchange: None,
                retry_in: None,
            },
            HttpVerdict::Pass(admission) => Verdict {
                kind: "pass",
                status: 0,
                headers: admission.headers(),
                body: String::new(),
                identity: admission.identity,
                decision: Some(admission.decision.detach()),
                exchange: Some(admission.exchange),
                retry_in: None,
            },
            HttpVerdict::Refuse(refusal) => Verdict {
                kind: "refuse",
                status: refusal.response.status,
                headers: refusal.response.headers,
                body: refusal.response.body,
                identity: None,
                decision: None,
                exchange: Some(refusal.exchange),
                retry_in: refusal.retry_in,
            },
        }
    }
}

/// `Engine.http`: the HTTP layer's verdict on one request.
pub(crate) fn http(slf: &Bound<'_, Engine>, args: &HttpArgs<'_, '_>) -> PyResult<HttpExchange> {
    let py = slf.py();
    let method = borrow_str(args.method, "method")?;
    let target = borrow_str(args.target, "target")?;
    let peer = borrow_opt(Some(args.peer), "peer")?;
    let items = header_items(Some(args.headers), "headers")?;
    let pairs = borrow_headers(&items, "headers")?;
    let cost = cost_of(args.cost)?;
    let stage = stage_of(args.stage)?;
    let caller = args.caller.as_ref().map(|(s, r)| (&**s, r.as_deref()));
    let after_authenticate = args.after_authenticate;
    let may_wait = wait_of(args.max_wait_ms)?;
    let engine = slf.get();
    let decide = || {
        let headers: &[(&str, &str)] = &pairs;
        let mut request = HttpRequest::new(method, target, &headers)
            .cost(cost)
            .stage(stage)
            .may_wait(may_wait);
        if let Some(peer) = peer {
            request = request.peer(peer);
        }
        if let Some((subject, role)) = caller {
            request = request.caller(subject, role);
        }
        if after_authenticate {
            request = request.after_authenticate();
        }
        Verdict::from(engine.core().http(&request))
    };
    let verdict = if engine.store_may_wait() || stage != HttpStage::RateLimit {
        py.detach(decide)
    } else {
        decide()
    };
    let identity = match verdict.identity {
        Some(identity) => Some(Py::new(py, Identity::new(identity))?),
        None => None,
    };
    let decision = match verdict.decision {
        Some(detached) => Some(Py::new(
            py,
            Decision::new(slf.clone().unbind(), detached, None),
        )?),
        None => None,
    };
    let exchange = verdict.exchange;
    Ok(HttpExchange {
        engine: slf.clone().unbind(),
        verdict: verdict.kind,
        status: verdict.status,
        headers: verdict.headers,
        body: verdict.body,
        identity,
        decision,
        touches_store: exchange
            .as_ref()
            .is_some_and(Exchange::touches_shared_store),
        path: exchange.as_ref().map(|e| e.path().to_owned()),
        retry_in_ms: verdict.retry_in.map(|d| d.as_secs_f64() * 1000.0),
        exchange: Mutex::new(exchange),
    })
}

/// One request between the engine's verdict and its response: what to do with it, and
/// `finish` once the response is finished.
#[pyclass(module = "floodwall._floodwall", frozen)]
pub(crate) struct HttpExchange {
    engine: Py<Engine>,
    verdict: &'static str,
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    identity: Option<Py<Identity>>,
    decision: Option<Py<Decision>>,
    touches_store: bool,
    path: Option<String>,
    retry_in_ms: Option<f64>,
    exchange: Mutex<Option<Exchange>>,
}

#[pymethods]
impl HttpExchange {
    /// `skip` (hand the request on untouched; nothing to finish), `pass` (let it through,
    /// adding `headers` to the response) or `refuse` (answer `status`, `headers`, `body`).
    #[getter]
    fn verdict(&self) -> &'static str {
        self.verdict
    }

    /// For a 429 within the request's `max_wait_ms`: the milliseconds to wait before asking
    /// again (the refusal was not recorded; drop the exchange rather than answer it). `None`
    /// for every other verdict.
    #[getter]
    fn retry_in_ms(&self) -> Option<f64> {
        self.retry_in_ms
    }

    /// The refusal's status; 0 unless refused.
    #[getter]
    fn status(&self) -> u16 {
        self.status
    }

    /// The refusal's reason phrase (RFC 9110: `Too Many Requests` …); empty unless refused.
    #[getter]
    fn reason(&self) -> &'static str {
        if self.status == 0 {
            ""
        } else {
            answer::reason(self.status)
        }
    }

    /// The refusal's headers (with `Content-Type` and `Content-Length`), or for a pass the
    /// rate-limit headers to add to the response: (name, value) pairs, names as the RFCs
    /// spell them (a new list on every read).
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for (name, value) in &self.headers {
            list.append(PyTuple::new(py, [*name, value.as_str()])?)?;
        }
        Ok(list)
    }

    /// The refusal's body (`application/problem+json`); empty unless refused.
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.body.as_bytes())
    }

    /// The verified caller of a pass; `None` when no token was verified (a public path, the
    /// `rate_limit` stage) and unless passed.
    #[getter]
    fn identity(&self, py: Python<'_>) -> Option<Py<Identity>> {
        self.identity.as_ref().map(|i| i.clone_ref(py))
    }

    /// The rate-limit decision of a pass (every layer decided; none when no rule matched or
    /// an allow list let the caller skip the limits); `None` unless passed.
    #[getter]
    fn decision(&self, py: Python<'_>) -> Option<Py<Decision>> {
        self.decision.as_ref().map(|d| d.clone_ref(py))
    }

    /// Whether `finish` writes to the shared store (Redis) and so may wait: finish it off an
    /// event loop then (`Engine.afinish`).
    #[getter]
    fn touches_store(&self) -> bool {
        self.touches_store
    }

    /// The request's path in normal form, as rules matched it and monitoring records it;
    /// `None` for a skipped request.
    #[getter]
    fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// Whether the exchange is finished (a skipped request has nothing to finish).
    #[getter]
    fn finished(&self) -> bool {
        self.exchange.lock().is_none()
    }

    /// Finishes the exchange once the response is finished: records the response (its
    /// `status`, an int from 100 to 999, and the time since `Engine.http`) and settles the
    /// rules that count by response (refunds, `cost_header` charges, read from `headers`, a
    /// mapping of the response's headers by lower-case name; only `Engine.http_response_headers`
    /// are read). Exactly once: a second call, or a call on a skipped request, raises
    /// `RuntimeError`.
    #[pyo3(signature = (status, headers = None))]
    fn finish(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let status = http_status(status)?;
        let items = header_items(headers, "headers")?;
        let pairs = borrow_headers(&items, "headers")?;
        let Some(exchange) = self.exchange.lock().take() else {
            return Err(PyRuntimeError::new_err(if self.verdict == "skip" {
                "a skipped request has nothing to finish"
            } else {
                "this exchange is already finished"
            }));
        };
        let engine = self.engine.get();
        let finish = || {
            let headers: &[(&str, &str)] = &pairs;
            engine.core().http_finish(exchange, status, &headers);
        };
        if self.touches_store {
            py.detach(finish);
        } else {
            finish();
        }
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!(
            "HttpExchange(verdict='{}', status={}, path={})",
            self.verdict,
            self.status,
            py_opt_str(self.path.as_deref())
        )
    }
}
