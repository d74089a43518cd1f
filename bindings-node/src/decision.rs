//! A decision as a row of numbers, which `index.js` turns into its `Decision` object.
//!
//! Creating a Node-API class instance per decision cost more than the decision itself
//! (≈ 1.3 µs of ≈ 1.8 µs), so the addon writes a decision into a `Float64Array` instead — the
//! caller's, reused, on the synchronous path — and the JS layer reads it. Layout
//! ([`decision_len`] numbers):
//!
//! | index | value |
//! |---|---|
//! | 0 | allowed: 1, or 0 when denied, 2 when denied because the key is blocked |
//! | 1 | store: 0 memory, 1 redis, 2 fallback, 3 unavailable |
//! | 2 | number of layers `n` |
//! | 3 | the deciding layer's position, -1 when no rule matched |
//! | 4 | the decision's `retryAfterMs` |
//! | 5 | the number the engine keeps its permit under (`concurrency` rules), 0 when it holds none |
//! | 6 + 7i … | layer i: rule index, allowed, limit, remaining, resetAfterMs, retryAfterMs, window in seconds (the `w` of `RateLimit-Policy`) |
//!
//! The headers are rendered from these numbers in `index.js` (`renderHeaders`), by the rules
//! of `floodwall::decision`; the conformance vectors check both renderings.

use floodwall::{Decision, StoreUsed};

/// Numbers before the first layer.
pub(crate) const HEAD: usize = 6;
/// Numbers per layer.
pub(crate) const PER_LAYER: usize = 7;

/// How many numbers a decision of `layers` layers takes.
pub(crate) const fn decision_len(layers: usize) -> usize {
    HEAD + PER_LAYER * layers
}

fn store_code(store: StoreUsed) -> f64 {
    match store {
        StoreUsed::Memory => 0.0,
        StoreUsed::Redis => 1.0,
        StoreUsed::Fallback => 2.0,
        StoreUsed::Unavailable => 3.0,
        StoreUsed::DenyCache => 4.0,
    }
}

/// µs of a duration as u64 (saturating): converting a u128 to f64 is a slow library call.
fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn ms(d: std::time::Duration) -> f64 {
    micros(d).div_ceil(1_000) as f64
}

fn secs(d: std::time::Duration) -> f64 {
    micros(d).div_ceil(1_000_000) as f64
}

/// Writes `decision` into `out`, which holds at least [`decision_len`] of its layers; the
/// engine keeps its permit, if it holds one, under the number written.
pub(crate) fn write(decision: &mut Decision<'_>, out: &mut [f64]) {
    out[5] = decision.keep_permit() as f64;
    write_figures(decision, out);
}

/// [`write`] of a decision that holds no permit of its own (`permit`: the number its permit
/// is kept under, or 0).
pub(crate) fn write_held(decision: &Decision<'_>, permit: u64, out: &mut [f64]) {
    out[5] = permit as f64;
    write_figures(decision, out);
}

fn write_figures(decision: &Decision<'_>, out: &mut [f64]) {
    let n = decision.layers().len();
    out[0] = if decision.allowed() {
        1.0
    } else if decision.blocked() {
        2.0
    } else {
        0.0
    };
    out[1] = store_code(decision.store());
    out[2] = n as f64;
    out[3] = decision.deciding_layer().map_or(-1.0, |i| i as f64);
    out[4] = decision.retry_after_ms() as f64;
    for (i, layer) in decision.layers().enumerate() {
        let at = HEAD + PER_LAYER * i;
        out[at] = layer.rule_index() as f64;
        out[at + 1] = if layer.allowed() { 1.0 } else { 0.0 };
        out[at + 2] = layer.limit() as f64;
        out[at + 3] = layer.remaining() as f64;
        out[at + 4] = ms(layer.reset_after());
        out[at + 5] = ms(layer.retry_after());
        out[at + 6] = secs(layer.policy().quota().period());
    }
}

/// `decision` as a new row of exactly its length.
pub(crate) fn to_vec(decision: &mut Decision<'_>) -> Vec<f64> {
    let mut out = vec![0.0; decision_len(decision.layers().len())];
    write(decision, &mut out);
    out
}
