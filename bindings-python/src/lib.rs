//! The native module `floodwall._floodwall`, under the pure-Python package `floodwall`.
//!
//! Each file mirrors a core module and is thin: convert the arguments, call the core (with the
//! interpreter released whenever the call may wait on the network or verify a signature),
//! convert the result. The Python layer (`python/floodwall/`) adds the async variants, the
//! exception classes and the ASGI/WSGI middlewares (adapters over `Engine.http`, see
//! `http.rs`); `floodwall/_floodwall.pyi` types this module and `mypy.stubtest` checks it
//! against the build.

mod auth;
mod balance;
mod decision;
mod engine;
mod error;
mod fastcall;
mod http;
mod keys;
mod text;

use pyo3::prelude::*;

/// The native module.
#[pymodule]
mod _floodwall {
    use pyo3::prelude::*;

    #[pymodule_export]
    use crate::auth::{Authorized, Identity};
    #[pymodule_export]
    use crate::balance::{BreakerEvent, Lease, UpstreamStatus};
    #[pymodule_export]
    use crate::decision::{Decision, Layer};
    #[pymodule_export]
    use crate::engine::Engine;
    #[pymodule_export]
    use crate::http::HttpExchange;
    #[pymodule_export]
    use crate::keys::KeyStatus;

    #[pymodule_init]
    fn init(module: &Bound<'_, PyModule>) -> PyResult<()> {
        module.add("__version__", floodwall::VERSION)?;
        module.add(
            "PROMETHEUS_CONTENT_TYPE",
            floodwall::monitor::prometheus::CONTENT_TYPE,
        )?;
        let py = module.py();
        module.add("ERROR_CODES", crate::error::codes(py)?)?;
        module.add("_error_classes", crate::error::classes(py)?)?;
        crate::fastcall::install(py)?;
        Ok(())
    }
}
