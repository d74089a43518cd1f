//! `Lease`: one call on a picked upstream, finished exactly once.

use floodwall::CallOutcome;
use floodwall::clock::duration_from_millis;
use napi_derive::napi;
use parking_lot::Mutex;

use crate::error::invalid_arg;

/// One call in progress on the upstream `Engine.pick` chose. Finish it with the outcome; a
/// lease collected unfinished counts as a failure.
#[napi]
pub struct Lease {
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
}

#[napi]
impl Lease {
    /// The service's name.
    #[napi(getter)]
    pub fn service(&self) -> String {
        self.service.clone()
    }

    /// The upstream's name.
    #[napi(getter)]
    pub fn upstream(&self) -> String {
        self.upstream.clone()
    }

    /// The upstream's URL.
    #[napi(getter)]
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Whether this call is one of a half-open breaker's probes.
    #[napi(getter)]
    pub fn is_probe(&self) -> bool {
        self.is_probe
    }

    /// Whether the lease is finished.
    #[napi(getter)]
    pub fn finished(&self) -> bool {
        self.inner.lock().is_none()
    }

    /// Records how the call ended (`success`, `failure` or `timeout`) and how long it took
    /// in milliseconds (by default, the time since the pick). Exactly once.
    #[napi]
    pub fn finish(&self, outcome: String, latency_ms: Option<f64>) -> napi::Result<()> {
        let Some(outcome) = CallOutcome::parse(&outcome) else {
            return Err(invalid_arg(format!(
                "outcome must be 'success', 'failure' or 'timeout', not '{outcome}'"
            )));
        };
        let latency = match latency_ms {
            None => None,
            Some(ms) => Some(duration_from_millis(ms).ok_or_else(|| {
                invalid_arg(format!("latencyMs must be a finite number >= 0, not {ms}"))
            })?),
        };
        match self.inner.lock().take() {
            Some(lease) => {
                match latency {
                    Some(latency) => lease.finish(outcome, latency),
                    None => lease.finish_now(outcome),
                }
                Ok(())
            }
            None => Err(invalid_arg(format!(
                "the lease on upstream '{}' of service '{}' is already finished",
                self.upstream, self.service
            ))),
        }
    }
}
