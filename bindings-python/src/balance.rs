//! `Lease`, `UpstreamStatus` and `BreakerEvent`: the balancer and breakers from Python.
//!
//! A lease is finished exactly once — by `finish`, or by leaving its `with` block (success on
//! a normal exit, `timeout` for a `TimeoutError`, failure for any other exception, the latency
//! measured from the pick). A lease dropped unfinished counts as a failure, as in the core.

use std::time::Duration;

use floodwall::balance::BreakerEvent as CoreEvent;
use floodwall::clock::duration_from_millis;
use floodwall::{BreakerState, CallOutcome};
use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::decision::{py_bool, py_opt, py_str};

/// One call in progress on the upstream `Engine.pick` chose.
#[pyclass(module = "floodwall._floodwall", frozen)]
pub(crate) struct Lease {
    inner: Mutex<Option<floodwall::Lease>>,
    service: String,
    upstream: String,
    url: String,
    is_probe: bool,
}

impl Lease {
    pub(crate) fn new(lease: floodwall::Lease) -> Self {
        Lease {
            service: lease.service().to_owned(),
            upstream: lease.upstream().to_owned(),
            url: lease.url().to_owned(),
            is_probe: lease.is_probe(),
            inner: Mutex::new(Some(lease)),
        }
    }

    /// Finishes the lease with `latency`, or with the time since the pick when `None`.
    fn complete(&self, outcome: CallOutcome, latency: Option<Duration>) -> PyResult<()> {
        match self.inner.lock().take() {
            Some(lease) => {
                match latency {
                    Some(latency) => lease.finish(outcome, latency),
                    None => lease.finish_now(outcome),
                }
                Ok(())
            }
            None => Err(PyRuntimeError::new_err(format!(
                "the lease on upstream '{}' of service '{}' is already finished",
                self.upstream, self.service
            ))),
        }
    }
}

fn parse_outcome(outcome: &str) -> PyResult<CallOutcome> {
    CallOutcome::parse(outcome).ok_or_else(|| {
        PyValueError::new_err(format!(
            "outcome must be 'success', 'failure' or 'timeout', not {}",
            py_str(outcome)
        ))
    })
}

#[pymethods]
impl Lease {
    /// The service's name.
    #[getter]
    fn service(&self) -> &str {
        &self.service
    }

    /// The upstream's name.
    #[getter]
    fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The upstream's URL.
    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    /// Whether this call is one of a half-open breaker's probes.
    #[getter]
    fn is_probe(&self) -> bool {
        self.is_probe
    }

    /// Whether the lease is finished.
    #[getter]
    fn finished(&self) -> bool {
        self.inner.lock().is_none()
    }

    /// Records how the call ended (`success`, `failure` or `timeout`) and how long it took,
    /// in milliseconds (by default, the time since the pick). Exactly once: a second call
    /// raises `RuntimeError`.
    #[pyo3(signature = (outcome, latency_ms = None))]
    fn finish(&self, outcome: &str, latency_ms: Option<f64>) -> PyResult<()> {
        let outcome = parse_outcome(outcome)?;
        let latency = match latency_ms {
            None => None,
            Some(ms) => Some(duration_from_millis(ms).ok_or_else(|| {
                PyValueError::new_err(format!("latency_ms must be a finite number >= 0, not {ms}"))
            })?),
        };
        self.complete(outcome, latency)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Finishes the lease unless it is already finished: success on a normal exit, `timeout`
    /// for a `TimeoutError` (also asyncio's), failure for any other exception. Never
    /// suppresses the exception.
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyType>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if self.inner.lock().is_none() {
            return Ok(false);
        }
        let outcome = match exc_type {
            None => CallOutcome::Success,
            Some(t) if t.is_subclass_of::<PyTimeoutError>()? || is_asyncio_timeout(py, t)? => {
                CallOutcome::Timeout
            }
            Some(_) => CallOutcome::Failure,
        };
        // Finished meanwhile by another thread: nothing left to record.
        let _ = self.complete(outcome, None);
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "Lease(service={}, upstream={}, url={}, is_probe={}, finished={})",
            py_str(&self.service),
            py_str(&self.upstream),
            py_str(&self.url),
            py_bool(self.is_probe),
            py_bool(self.finished())
        )
    }
}

/// `asyncio.TimeoutError` is `TimeoutError` from Python 3.11; before, a class of its own.
fn is_asyncio_timeout(py: Python<'_>, t: &Bound<'_, PyType>) -> PyResult<bool> {
    let class = py.import("asyncio")?.getattr("TimeoutError")?;
    t.is_subclass(&class)
}

/// One upstream of a service: breaker state, load and call statistics at the time asked.
#[pyclass(module = "floodwall._floodwall", frozen, get_all)]
pub(crate) struct UpstreamStatus {
    /// The upstream's name.
    name: String,
    /// The upstream's URL.
    url: String,
    /// Its weight.
    weight: u32,
    /// Whether it is marked down.
    down: bool,
    /// The breaker's state: `closed`, `open` or `half_open`.
    state: &'static str,
    /// When open, when it turns half-open (ms since the Unix epoch).
    open_until_ms: Option<u64>,
    /// Calls in flight.
    in_flight: u64,
    /// The breaker window's failure rate (0 to 1).
    failure_rate: f64,
    /// The breaker window's slow-call rate (0 to 1).
    slow_call_rate: f64,
    /// Calls finished.
    calls: u64,
    /// Calls that succeeded.
    successes: u64,
    /// Calls that failed (timeouts are counted apart, in `timeouts`).
    failures: u64,
    /// Calls that timed out.
    timeouts: u64,
    /// Mean latency of the finished calls, in milliseconds.
    mean_latency_ms: f64,
    /// Largest latency of the finished calls, in milliseconds.
    max_latency_ms: f64,
}

impl From<floodwall::UpstreamStatus> for UpstreamStatus {
    fn from(s: floodwall::UpstreamStatus) -> Self {
        let open_until_ms = match s.state {
            BreakerState::Open { until } => Some(until.as_millis()),
            _ => None,
        };
        UpstreamStatus {
            state: s.state.as_str(),
            open_until_ms,
            in_flight: s.in_flight,
            failure_rate: s.window_rates.0,
            slow_call_rate: s.window_rates.1,
            calls: s.stats.calls,
            successes: s.stats.successes,
            failures: s.stats.failures,
            timeouts: s.stats.timeouts,
            mean_latency_ms: s.stats.mean_latency.as_secs_f64() * 1_000.0,
            max_latency_ms: s.stats.max_latency.as_secs_f64() * 1_000.0,
            name: s.name,
            url: s.url,
            weight: s.weight,
            down: s.down,
        }
    }
}

#[pymethods]
impl UpstreamStatus {
    fn __repr__(&self) -> String {
        format!(
            "UpstreamStatus(name={}, url={}, state='{}', down={}, in_flight={}, calls={}, failures={}, open_until_ms={})",
            py_str(&self.name),
            py_str(&self.url),
            self.state,
            py_bool(self.down),
            self.in_flight,
            self.calls,
            self.failures,
            py_opt(self.open_until_ms)
        )
    }
}

/// A breaker's change of state.
#[pyclass(module = "floodwall._floodwall", frozen, get_all)]
pub(crate) struct BreakerEvent {
    /// Its place in the engine's sequence (1, 2, …), to read on from.
    seq: u64,
    /// The service.
    service: String,
    /// The upstream.
    upstream: String,
    /// The state before: `closed`, `open` or `half_open`.
    from_state: &'static str,
    /// The state after.
    to_state: &'static str,
    /// When, in milliseconds since the Unix epoch.
    at_ms: u64,
    /// The window's failure rate when the breaker opened from closed (else 0).
    failure_rate: f64,
    /// The window's slow-call rate when the breaker opened from closed (else 0).
    slow_call_rate: f64,
}

impl From<CoreEvent> for BreakerEvent {
    fn from(e: CoreEvent) -> Self {
        BreakerEvent {
            seq: e.seq,
            from_state: e.transition.from.as_str(),
            to_state: e.transition.to.as_str(),
            at_ms: e.transition.at.as_millis(),
            failure_rate: e.transition.failure_rate,
            slow_call_rate: e.transition.slow_call_rate,
            service: e.service,
            upstream: e.upstream,
        }
    }
}

#[pymethods]
impl BreakerEvent {
    fn __repr__(&self) -> String {
        format!(
            "BreakerEvent(seq={}, service={}, upstream={}, from_state='{}', to_state='{}', at_ms={})",
            self.seq,
            py_str(&self.service),
            py_str(&self.upstream),
            self.from_state,
            self.to_state,
            self.at_ms
        )
    }
}
