//! `Engine`'s upstream services: picking an upstream for a call (a [`Lease`]), their state and
//! breaker events, and changing them while serving.

use napi_derive::napi;

use crate::balance::Lease;
use crate::engine::{Engine, count};
use crate::error::{IntoNapi, invalid_arg};

#[napi]
impl Engine {
    /// Picks an upstream of `service` for one call.
    #[napi]
    pub fn pick(&self, service: String) -> napi::Result<Lease> {
        Ok(Lease::new(self.core.pick(&service).js()?))
    }

    /// Every upstream of `service` as JSON text (`index.js` parses it).
    #[napi]
    pub fn upstreams_json(&self, service: String) -> napi::Result<String> {
        let all: Vec<serde_json::Value> = self
            .core
            .upstreams(&service)
            .js()?
            .iter()
            .map(floodwall::UpstreamStatus::to_json)
            .collect();
        Ok(serde_json::Value::Array(all).to_string())
    }

    /// Breaker state changes after sequence number `after`, as JSON text.
    #[napi]
    pub fn breaker_events_json(&self, after: Option<f64>) -> napi::Result<String> {
        let after = count(after, "after")?.unwrap_or(0);
        let events: Vec<serde_json::Value> = self
            .core
            .breaker_events(after)
            .into_iter()
            .map(|e| {
                serde_json::json!({
                    "seq": e.seq,
                    "service": e.service,
                    "upstream": e.upstream,
                    "from": e.transition.from.as_str(),
                    "to": e.transition.to.as_str(),
                    "atMs": e.transition.at.as_millis(),
                    "failureRate": e.transition.failure_rate,
                    "slowCallRate": e.transition.slow_call_rate,
                })
            })
            .collect();
        Ok(serde_json::Value::Array(events).to_string())
    }

    /// Marks an upstream down (never picked) or up again.
    #[napi]
    pub fn set_upstream_down(
        &self,
        service: String,
        upstream: String,
        down: bool,
    ) -> napi::Result<()> {
        self.core.set_upstream_down(&service, &upstream, down).js()
    }

    /// Closes an upstream's breaker and clears its window.
    #[napi]
    pub fn reset_breaker(&self, service: String, upstream: String) -> napi::Result<()> {
        self.core.reset_breaker(&service, &upstream).js()
    }

    /// Adds an upstream to a service while it serves.
    #[napi]
    pub fn add_upstream(
        &self,
        service: String,
        url: String,
        name: Option<String>,
        weight: Option<f64>,
    ) -> napi::Result<()> {
        let weight = match weight {
            None => 1,
            Some(w) if w.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&w) => w as u32,
            Some(w) => {
                return Err(invalid_arg(format!(
                    "weight must be a whole number from 0 to 2^32 - 1, not {w}"
                )));
            }
        };
        let mut upstream = floodwall::balance::UpstreamConfig::new(url);
        upstream.name = name;
        upstream.weight = weight;
        self.core.add_upstream(&service, &upstream).js()
    }

    /// Removes an upstream from a service.
    #[napi]
    pub fn remove_upstream(&self, service: String, upstream: String) -> napi::Result<()> {
        self.core.remove_upstream(&service, &upstream).js()
    }
}
