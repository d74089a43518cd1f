//! The Node addon under the npm package `floodwall` (`bindings-node/`).
//!
//! Each file mirrors a core module and is thin: convert the arguments, call the core, convert
//! the result. The native surface is positional and compact — `index.js` gives it the
//! idiomatic shape (`check({ subject, role, ... })`), turns native errors into
//! `FloodwallError`s, and `index.d.ts` types it. Calls that may wait on Redis run on the
//! addon's worker threads ([`pool`]) and settle a Promise; the JS thread never waits.

mod balance;
mod decision;
mod dispatch;
mod engine;
mod error;
mod fastpath;
mod http;
mod keys;
mod monitor;
mod pool;
mod services;
mod timers;

use floodwall::Clock as _;
use napi_derive::napi;

// The hot-path functions are module-level (see `Engine::handle`); exported so that they are
// reachable in every build of the crate, test builds included.
pub use engine::{Handle, IdentityFields, claims_json};
pub use keys::KeyStatusFields;

/// The core's version.
#[napi]
pub fn version() -> &'static str {
    floodwall::VERSION
}

/// The Content-Type of the Prometheus text format `Engine.prometheus` renders.
#[napi]
pub fn prometheus_content_type() -> &'static str {
    floodwall::monitor::prometheus::CONTENT_TYPE
}

/// How many numbers a decision row takes at most (the most layers one decision may have).
#[napi]
pub fn max_decision_len() -> u32 {
    decision::decision_len(floodwall::config::MAX_RULES) as u32
}

/// Every error kind's stable name, in the core's order.
#[napi]
pub fn error_codes() -> Vec<&'static str> {
    floodwall::ErrorKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect()
}

/// Where a decision's row starts in the HTTP layer's `out` array (see `http.rs`).
#[napi]
pub fn http_row() -> u32 {
    http::ROW as u32
}

/// The media type of every body floodwall answers with.
#[napi]
pub fn problem_content_type() -> &'static str {
    floodwall::http::PROBLEM_CONTENT_TYPE
}

/// The answer a proxy gives itself, as `[status, body, name, value, ...]`: `bad_gateway`,
/// `upstream_timeout` (`value`: the timeout in ms) or `no_upstream_available` (`value`: when a
/// breaker lets calls through again, ms since the epoch, or absent). Texts from the core.
#[napi]
pub fn gateway_answer(kind: String, value: Option<f64>) -> napi::Result<Vec<String>> {
    use floodwall::http::answer;
    let response = match kind.as_str() {
        "bad_gateway" => answer::bad_gateway(),
        "upstream_timeout" => answer::upstream_timeout(value.unwrap_or(0.0).max(0.0) as u64),
        "no_upstream_available" => answer::no_upstream_available(
            value.map(|ms| floodwall::Timestamp::from_millis(ms.max(0.0) as u64)),
            floodwall::SystemClock.now(),
        ),
        other => {
            return Err(error::invalid_arg(format!(
                "no gateway answer named {other:?}"
            )));
        }
    };
    let mut out = vec![response.status.to_string(), response.body];
    for (name, value) in response.headers {
        out.push(name.to_owned());
        out.push(value);
    }
    Ok(out)
}
