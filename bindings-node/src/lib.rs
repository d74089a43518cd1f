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
mod pool;

use napi_derive::napi;

// The hot-path functions are module-level (see `Engine::handle`); exported so that they are
// reachable in every build of the crate, test builds included.
pub use engine::{Handle, IdentityFields, claims_json};

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
