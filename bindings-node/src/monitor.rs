//! `Engine`'s monitoring: the report, the Prometheus text, and recording a host's responses.

use std::sync::Arc;

use floodwall::Timestamp;
use napi::Env;
use napi_derive::napi;

use crate::engine::{Engine, count};

#[napi]
impl Engine {
    /// The monitoring report as JSON text (`index.js` parses it): the document every binding
    /// shares, keys in snake_case. `nowMs` ends the per-minute series (default: the clock).
    #[napi]
    pub fn report_json(&self, now_ms: Option<f64>) -> napi::Result<String> {
        let report = match count(now_ms, "nowMs")? {
            Some(ms) => self.core.report_at(Timestamp::from_millis(ms)),
            None => self.core.report(),
        };
        Ok(report.to_json())
    }

    /// The monitoring counters and the upstreams' state in the Prometheus text format.
    #[napi]
    pub fn prometheus(&self) -> String {
        self.core.prometheus()
    }

    /// A function `(method, path, status, latencyMs) => void` recording a response on this
    /// engine (see `fastpath.rs`): the call the Express middlewares make on every response.
    #[napi(
        ts_return_type = "(method: string, path: string, status: number, latencyMs: number) => void"
    )]
    pub fn record_response_function<'env>(
        &self,
        env: &'env Env,
    ) -> napi::Result<napi::bindgen_prelude::Unknown<'env>> {
        crate::fastpath::record_response_function(env, Arc::clone(&self.core))
    }
}
