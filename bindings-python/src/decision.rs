//! `Decision` and `Layer`: a rate-limit answer as small immutable Python objects.
//!
//! A `Decision` keeps the core's [`DetachedDecision`] (plain data, no allocation) and a
//! reference to its engine; its header map and layers are rendered only when read, so a
//! caller that only looks at `.allowed` pays for nothing else. A decision admitted by
//! `concurrency` rules keeps their [`Permit`] and gives it back on `release()`, at the end of
//! a `with` block, or when it is freed.

use floodwall::{DetachedDecision, LayerStatus, Permit};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::engine::Engine;

/// Whether a request may pass, which rule decided, and the headers to send.
#[pyclass(module = "floodwall._floodwall", frozen)]
pub(crate) struct Decision {
    engine: Py<Engine>,
    inner: DetachedDecision,
    permit: std::sync::Mutex<Option<Permit>>,
}

impl Drop for Decision {
    fn drop(&mut self) {
        let permit = self.permit.get_mut().map(Option::take).unwrap_or(None);
        if let Some(permit) = permit {
            self.engine.get().core().release(permit);
        }
    }
}

impl Decision {
    /// A decision of `engine`, holding `permit` (what `concurrency` rules admitted).
    pub(crate) fn new(engine: Py<Engine>, inner: DetachedDecision, permit: Option<Permit>) -> Self {
        Decision {
            engine,
            inner,
            permit: std::sync::Mutex::new(permit.filter(|p| !p.is_empty())),
        }
    }

    /// A core decision's detached form and permit.
    pub(crate) fn parts(
        mut decision: floodwall::Decision<'_>,
    ) -> (DetachedDecision, Option<Permit>) {
        (decision.detach(), decision.take_permit())
    }

    pub(crate) fn allowed_flag(&self) -> bool {
        self.inner.allowed()
    }

    fn with<R>(&self, f: impl FnOnce(&floodwall::Decision<'_>) -> R) -> R {
        let engine = self.engine.get();
        let decision = engine
            .core()
            .attach(&self.inner)
            .expect("a decision is attached to the engine that made it");
        f(&decision)
    }
}

#[pymethods]
impl Decision {
    /// Whether the request may pass.
    #[getter]
    fn allowed(&self) -> bool {
        self.inner.allowed()
    }

    /// The deciding rule's name; `None` when no rule matched.
    #[getter]
    fn rule(&self) -> Option<String> {
        self.with(|d| d.rule().map(str::to_owned))
    }

    /// The deciding layer's limit (or bucket capacity); `None` when no rule matched.
    #[getter]
    fn limit(&self) -> Option<u64> {
        self.with(|d| d.limit())
    }

    /// The largest cost the deciding layer would admit now; `None` when no rule matched.
    #[getter]
    fn remaining(&self) -> Option<u64> {
        self.with(|d| d.remaining())
    }

    /// Milliseconds until the deciding layer is back at its full quota (rounded up).
    #[getter]
    fn reset_after_ms(&self) -> u64 {
        self.with(|d| d.reset_after_ms())
    }

    /// When denied, milliseconds after which the same request passes (rounded up); 0 when
    /// admitted.
    #[getter]
    fn retry_after_ms(&self) -> u64 {
        self.with(|d| d.retry_after_ms())
    }

    /// Whether the request is denied because its key is blocked (`block_for`); then
    /// `retry_after_ms` is the block's end.
    #[getter]
    fn blocked(&self) -> bool {
        self.with(|d| d.blocked())
    }

    /// Which store decided: `memory`, `redis`, `fallback` or `unavailable`.
    #[getter]
    fn store(&self) -> &'static str {
        self.inner.store().as_str()
    }

    /// The response headers the configuration asks for (a new dict on every read).
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, value) in self.with(|d| d.headers()) {
            dict.set_item(name, value)?;
        }
        Ok(dict)
    }

    /// Every matched rule's part in the decision, in configuration order.
    #[getter]
    fn layers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let layers: Vec<Layer> = self.with(|d| d.layers().map(Layer::from).collect());
        PyTuple::new(py, layers)
    }

    /// Whether the decision holds places of `concurrency` rules (until `release()`).
    #[getter]
    fn holds(&self) -> bool {
        self.permit.lock().is_ok_and(|p| p.is_some())
    }

    /// Gives back the places the decision holds of `concurrency` rules (once the request is
    /// done); nothing when it holds none. The GIL is released during the store round trip.
    fn release(&self, py: Python<'_>) {
        let permit = self.permit.lock().map(|mut p| p.take()).unwrap_or(None);
        if let Some(permit) = permit {
            let engine = self.engine.get();
            py.detach(|| engine.core().release(permit));
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Releases what the decision holds when the `with` block ends.
    #[pyo3(signature = (kind, value, traceback))]
    fn __exit__(
        &self,
        py: Python<'_>,
        kind: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        traceback: &Bound<'_, PyAny>,
    ) -> bool {
        let _ = (kind, value, traceback);
        self.release(py);
        false
    }

    fn __bool__(&self) -> bool {
        self.inner.allowed()
    }

    fn __repr__(&self) -> String {
        self.with(|d| {
            format!(
                "Decision(allowed={}, rule={}, limit={}, remaining={}, reset_after_ms={}, retry_after_ms={}, store='{}')",
                py_bool(d.allowed()),
                py_opt_str(d.rule()),
                py_opt(d.limit()),
                py_opt(d.remaining()),
                d.reset_after_ms(),
                d.retry_after_ms(),
                d.store()
            )
        })
    }
}

/// One matched rule's part in a decision.
#[pyclass(module = "floodwall._floodwall", frozen, get_all)]
pub(crate) struct Layer {
    /// The rule's name.
    rule: String,
    /// Whether this layer alone would admit the request.
    allowed: bool,
    /// The layer's limit (or bucket capacity) for the caller's role.
    limit: u64,
    /// The largest cost this layer would admit now.
    remaining: u64,
    /// Milliseconds until this layer is back at its full quota.
    reset_after_ms: u64,
    /// When this layer denies, milliseconds until it would admit; else 0.
    retry_after_ms: u64,
}

impl From<LayerStatus<'_>> for Layer {
    fn from(layer: LayerStatus<'_>) -> Self {
        Layer {
            rule: layer.rule().to_owned(),
            allowed: layer.allowed(),
            limit: layer.limit(),
            remaining: layer.remaining(),
            reset_after_ms: ceil_millis(layer.reset_after()),
            retry_after_ms: ceil_millis(layer.retry_after()),
        }
    }
}

#[pymethods]
impl Layer {
    fn __repr__(&self) -> String {
        format!(
            "Layer(rule='{}', allowed={}, limit={}, remaining={}, reset_after_ms={}, retry_after_ms={})",
            self.rule,
            py_bool(self.allowed),
            self.limit,
            self.remaining,
            self.reset_after_ms,
            self.retry_after_ms
        )
    }
}

fn ceil_millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(1_000)).unwrap_or(u64::MAX)
}

pub(crate) fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

pub(crate) fn py_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "None".to_owned(), |v| v.to_string())
}

pub(crate) fn py_opt_str(v: Option<&str>) -> String {
    v.map_or_else(|| "None".to_owned(), py_str)
}

/// A Python string literal for `v`, as `repr` writes it.
pub(crate) fn py_str(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}
