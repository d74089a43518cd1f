//! Core errors as the exceptions of `floodwall._errors`: one class per group of kinds, chosen
//! by a match over every [`ErrorKind`]. The enum is `#[non_exhaustive]`, so the match needs a
//! last arm: it gives the base class, and `tests/test_errors.py` fails when any kind of
//! `ERROR_CODES` lands there (`_error_classes`), so a new kind forces a decision.
//!
//! Every exception carries the kind's name as `.code`, the HTTP status as `.status`, the core's
//! message (with the field path for configuration errors), and where the core has them
//! `.field`, `.www_authenticate` and `.available_at_ms`.

use floodwall::{Error, ErrorKind};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};

/// The Python class (in `floodwall._errors`) that stands for `kind`.
fn class_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidConfig => "ConfigError",
        ErrorKind::CostExceedsLimit => "CostExceedsLimitError",
        ErrorKind::InvalidCost => "InvalidCostError",
        ErrorKind::MissingToken
        | ErrorKind::MalformedToken
        | ErrorKind::TokenTooLarge
        | ErrorKind::AlgorithmNotAllowed
        | ErrorKind::UnknownKey
        | ErrorKind::BadSignature
        | ErrorKind::Expired
        | ErrorKind::NotYetValid
        | ErrorKind::WrongIssuer
        | ErrorKind::WrongAudience
        | ErrorKind::MissingClaim
        | ErrorKind::InvalidClaim => "AuthError",
        ErrorKind::NoUpstreamAvailable => "NoUpstreamError",
        ErrorKind::UnknownRule => "UnknownRuleError",
        ErrorKind::UnknownService => "UnknownServiceError",
        ErrorKind::UnknownUpstream => "UnknownUpstreamError",
        ErrorKind::StoreUnavailable => "StoreError",
        _ => "FloodwallError",
    }
}

/// Every kind's name, in the core's order (`floodwall.ERROR_CODES`).
pub(crate) fn codes<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, ErrorKind::ALL.iter().map(|kind| kind.as_str()))
}

/// Every kind's name with the name of its class, for the test that none is left to the base.
pub(crate) fn classes<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for kind in ErrorKind::ALL {
        dict.set_item(kind.as_str(), class_name(kind))?;
    }
    Ok(dict)
}

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The exception instance for a core error.
pub(crate) fn exception<'py>(py: Python<'py>, error: &Error) -> PyResult<Bound<'py, PyAny>> {
    let module =
        ERRORS.get_or_try_init(py, || py.import("floodwall._errors").map(Bound::unbind))?;
    let class = module.bind(py).getattr(class_name(error.kind()))?;
    let details = PyDict::new(py);
    details.set_item("code", error.kind().as_str())?;
    details.set_item("status", error.http_status())?;
    details.set_item("field", error.field())?;
    details.set_item("www_authenticate", error.www_authenticate())?;
    details.set_item(
        "available_at_ms",
        error.available_at().map(|t| t.as_millis()),
    )?;
    class.call((error.to_string(),), Some(&details))
}

/// A core error as a `PyErr` to raise.
pub(crate) fn to_pyerr(error: Error) -> PyErr {
    Python::attach(|py| match exception(py, &error) {
        Ok(exception) => PyErr::from_value(exception),
        Err(failed) => {
            let err = PyRuntimeError::new_err(format!(
                "floodwall could not build the exception for {error:?}"
            ));
            err.set_cause(py, Some(failed));
            err
        }
    })
}

/// `Result<T, floodwall::Error>` → `PyResult<T>`.
pub(crate) trait IntoPyResult<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Error> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_pyerr)
    }
}
