//! `monitor::Aggregator::record` per decision event: what the engine adds to every decision
//! (it records each one). `benches/check.rs` measures whole decisions, recording included.
//!
//! Admitted requests of one subject, and of 100,000 subjects with 2 % of them rate limited
//! (the breach lists churn), on one and two threads.
//!
//! Run: `cargo bench -p floodwall-benches --bench monitor` (add `-- --quick --noplot` for a
//! fast pass).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use floodwall::monitor::{Aggregator, DecisionEvent, Event, EventOutcome};
use floodwall::{StoreUsed, Timestamp};
use floodwall_benches::on_threads;

const KEYS: u64 = 100_000;

fn record(c: &mut Criterion) {
    let subjects: Vec<String> = (0..KEYS).map(|i| format!("user-{i}")).collect();
    let at = Timestamp::from_millis(1_795_000_000_000);
    let mut group = c.benchmark_group("monitor_record");
    for (name, keys) in [("1key", 1), ("100k_subjects", KEYS)] {
        for threads in [1u64, 2] {
            let monitor = Aggregator::new(60, 20);
            let call = |i: u64| {
                let subject = &subjects[(i % keys) as usize];
                monitor.record(black_box(&Event::Decision(DecisionEvent {
                    at,
                    endpoint: Some(("GET", "/api/orders")),
                    subject: Some(subject),
                    role: Some("free"),
                    outcome: if i.is_multiple_of(50) {
                        EventOutcome::RateLimited
                    } else {
                        EventOutcome::Admitted
                    },
                    rule: Some("per-user"),
                    error: None,
                    store: Some(StoreUsed::Memory),
                })));
            };
            group.bench_function(BenchmarkId::new(name, format!("{threads}thread")), |b| {
                b.iter_custom(|iters| on_threads(threads, iters, &call))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
