//! `Identity` and `Authorized`: who a verified token says the caller is.

use std::sync::Arc;

use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::Value;

use crate::decision::{Decision, py_opt, py_opt_str, py_str};

/// The caller a verified token names.
#[pyclass(module = "floodwall._floodwall", frozen)]
pub(crate) struct Identity {
    inner: Arc<floodwall::Identity>,
}

impl Identity {
    pub(crate) fn new(inner: Arc<floodwall::Identity>) -> Self {
        Identity { inner }
    }
}

#[pymethods]
impl Identity {
    /// The subject (by default the `sub` claim).
    #[getter]
    fn subject(&self) -> &str {
        &self.inner.subject
    }

    /// The role read from the configured claim, or the default role; `None` when neither.
    #[getter]
    fn role(&self) -> Option<&str> {
        self.inner.role.as_deref()
    }

    /// The `kid` of the key that verified the token, if it had one.
    #[getter]
    fn key_id(&self) -> Option<&str> {
        self.inner.key_id.as_deref()
    }

    /// The algorithm the token was verified with (`HS256`, `RS256` …).
    #[getter]
    fn algorithm(&self) -> &'static str {
        self.inner.algorithm
    }

    /// `exp` in milliseconds since the Unix epoch; `None` when the token has none.
    #[getter]
    fn expires_at_ms(&self) -> Option<u64> {
        self.inner.expires_at.map(|t| t.as_millis())
    }

    /// Every claim of the token, as JSON values (a new dict on every read).
    #[getter]
    fn claims<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, value) in &self.inner.claims {
            dict.set_item(name, json_to_py(py, value)?)?;
        }
        Ok(dict)
    }

    /// One claim by dotted path (`realm_access.roles`), or a top-level claim whose name
    /// contains dots; `None` when absent.
    fn claim<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyAny>> {
        match self.inner.claim(path) {
            Some(value) => json_to_py(py, value),
            None => Ok(py.None().into_bound(py)),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "Identity(subject={}, role={}, algorithm='{}', key_id={}, expires_at_ms={})",
            py_str(&self.inner.subject),
            py_opt_str(self.inner.role.as_deref()),
            self.inner.algorithm,
            py_opt_str(self.inner.key_id.as_deref()),
            py_opt(self.inner.expires_at.map(|t| t.as_millis())),
        )
    }
}

/// What `Engine.authorize` answers: the verified caller and the rate-limit decision for it.
#[pyclass(module = "floodwall._floodwall", frozen, get_all)]
pub(crate) struct Authorized {
    /// The verified caller.
    identity: Py<Identity>,
    /// The decision, taken under the identity's subject and role.
    decision: Py<Decision>,
}

impl Authorized {
    pub(crate) fn new(identity: Py<Identity>, decision: Py<Decision>) -> Self {
        Authorized { identity, decision }
    }
}

#[pymethods]
impl Authorized {
    /// Whether the request may pass (the decision's `allowed`).
    #[getter]
    fn allowed(&self) -> bool {
        self.decision.get().allowed_flag()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Authorized(identity={}, decision={})",
            self.identity.bind(py).repr()?,
            self.decision.bind(py).repr()?
        ))
    }
}

/// A JSON value as the Python value `json.loads` would give.
pub(crate) fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    match value {
        Value::Null => Ok(py.None().into_bound(py)),
        Value::Bool(b) => b.into_bound_py_any(py),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_bound_py_any(py)
            } else if let Some(u) = n.as_u64() {
                u.into_bound_py_any(py)
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_bound_py_any(py)
            }
        }
        Value::String(s) => s.into_bound_py_any(py),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            Ok(list.into_any())
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (name, item) in map {
                dict.set_item(name, json_to_py(py, item)?)?;
            }
            Ok(dict.into_any())
        }
    }
}
