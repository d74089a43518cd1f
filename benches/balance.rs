//! `Engine::pick` + `Lease::finish` per call, for each strategy, on one and two threads.
//!
//! Three upstreams (weights 1, 2, 3), every call a success of 1 ms, so the breakers stay
//! closed and the selection path is what is measured.
//!
//! Run: `cargo bench -p floodwall-benches --bench balance` (add `-- --quick --noplot` for a
//! fast pass).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use floodwall::{CallOutcome, Engine};
use floodwall_benches::on_threads;

fn engine() -> Engine {
    let mut toml = String::new();
    for strategy in ["round_robin", "least_connections", "p2c"] {
        toml.push_str(&format!(
            r#"
[services.{strategy}]
strategy = "{strategy}"
upstreams = [
    {{ url = "http://127.0.0.1:9001", weight = 1 }},
    {{ url = "http://127.0.0.1:9002", weight = 2 }},
    {{ url = "http://127.0.0.1:9003", weight = 3 }},
]
"#
        ));
    }
    Engine::from_toml(&toml).expect("bench config")
}

fn pick_finish(c: &mut Criterion) {
    let engine = engine();
    let mut group = c.benchmark_group("pick_finish");
    for strategy in ["round_robin", "least_connections", "p2c"] {
        for threads in [1u64, 2] {
            let call = |_: u64| {
                let lease = engine.pick(black_box(strategy)).expect("an upstream");
                black_box(lease.url());
                lease.finish(CallOutcome::Success, Duration::from_millis(1));
            };
            group.bench_function(
                BenchmarkId::new(strategy, format!("{threads}thread")),
                |b| b.iter_custom(|iters| on_threads(threads, iters, &call)),
            );
        }
    }
    group.finish();
    for strategy in ["round_robin", "least_connections", "p2c"] {
        for u in engine.upstreams(strategy).expect("service") {
            assert_eq!(u.in_flight, 0);
        }
    }
}

criterion_group!(benches, pick_finish);
criterion_main!(benches);
