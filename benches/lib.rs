//! Shared set-up of the benches: the keys and the configurations that floodwall and its peers
//! are measured with, so every bench compares like with like.

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

/// How many distinct keys the "many keys" benches cycle through.
pub const MANY_KEYS: usize = 100_000;

/// Bucket capacity for the benches: large enough that nothing is denied during a run, so the
/// admission path is what gets measured, for floodwall and its peers alike.
pub const CAPACITY: u32 = 1_000_000_000;

/// Refill rate (per second) matching [`CAPACITY`].
pub const REFILL_PER_SECOND: u32 = 1_000_000;

/// `n` distinct subject names, `user-0` …
pub fn subjects(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i}")).collect()
}

/// The bench's token bucket as a floodwall quota.
pub fn quota() -> floodwall::limit::Quota {
    floodwall::limit::Quota::token_bucket(
        NonZeroU64::new(u64::from(CAPACITY)).expect("non-zero"),
        f64::from(REFILL_PER_SECOND),
    )
    .expect("valid quota")
}

/// One layer: a per-subject token bucket on every request.
pub const ONE_LAYER: &str = r#"
[store]
max_keys = 1000000

[[rules]]
name = "per-user"
key = "subject"
algorithm = "token_bucket"
capacity = 1000000000
refill_rate = 1000000
roles.premium = { capacity = 1000000000, refill_rate = 1000000 }
"#;

/// Three layers as a gateway would have them: per subject by role, per endpoint, global.
pub const THREE_LAYERS: &str = r#"
[store]
max_keys = 1000000

[[rules]]
name = "per-user"
match = { methods = ["GET", "POST"], paths = ["/api/**"] }
key = "subject"
algorithm = "token_bucket"
capacity = 1000000000
refill_rate = 1000000
roles.premium = { capacity = 1000000000, refill_rate = 1000000 }

[[rules]]
name = "per-endpoint"
match = { paths = ["/api/orders/*", "/api/orders"] }
key = "endpoint"
algorithm = "sliding_window_counter"
limit = 1000000000
window = "1m"

[[rules]]
name = "global"
key = "global"
algorithm = "fixed_window"
limit = 1000000000
window = "1m"
"#;

/// Runs `op(i)` `iters` times spread over `threads` threads; returns the wall time (criterion's
/// `iter_custom`), so that on two threads the figure is wall time per operation.
pub fn on_threads(threads: u64, iters: u64, op: &(impl Fn(u64) + Sync)) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in 0..iters / threads {
                    op(i * threads + t);
                }
            });
        }
    });
    start.elapsed()
}
