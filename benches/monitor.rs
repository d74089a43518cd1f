//! `monitor::Aggregator::record` per decision event: what the engine adds to every decision
//! (it records each one). `benches/check.rs` measures whole decisions, recording included.
//!
//! Admitted requests of one subject, and of 100,000 subjects with 2 % of them rate limited
//! (the breach lists churn), on one and two threads.
//!
//! `monitor_sink`: [`Monitor::record`] with the Redis Streams sink off and on, writing to a
//! `redis-server` the bench starts on a free port (queue 10,000). Events are recorded in
//! chunks of 5,000 with the sink flushed between chunks, outside the timing, so that none is
//! dropped:
//!
//! - `accepted`: batches of 10,000 and a 30 s flush interval, so the writer sends nothing
//!   while a chunk is timed: what recording costs the caller (copying the event, queueing it);
//! - `writing`: batches of 256, written while the chunk is recorded: on a machine with fewer
//!   free cores than the recording threads, the writer thread and `redis-server` and the
//!   caller share them, and this shows what the whole costs at full speed;
//! - `full`: the drop path, a sink whose Redis is unreachable (queue 1).
//!
//! After them it prints how fast the writer empties a queue of 200,000 into Redis (`writer:`
//! line, events per second in pipelines of 256 `XADD`).
//!
//! Run: `cargo bench -p floodwall-benches --bench monitor` (add `-- --quick --noplot` for a
//! fast pass).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use floodwall::config::{MonitorConfig, StoreConfig};
use floodwall::monitor::{Aggregator, DecisionEvent, Event, EventOutcome, Monitor};
use floodwall::{StoreUsed, Timestamp};
use floodwall_benches::on_threads;
use floodwall_tests::redis_server::{RedisServer, free_port};

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
                    shadow_rule: None,
                    allowlisted: false,
                    blocked: false,
                })));
            };
            group.bench_function(BenchmarkId::new(name, format!("{threads}thread")), |b| {
                b.iter_custom(|iters| on_threads(threads, iters, &call))
            });
        }
    }
    group.finish();
}

/// A decision event of one of `subjects`.
fn decision<'a>(subjects: &'a [String], i: u64, at: Timestamp) -> Event<'a> {
    Event::Decision(DecisionEvent {
        at,
        endpoint: Some(("GET", "/api/orders")),
        subject: Some(&subjects[(i % subjects.len() as u64) as usize]),
        role: Some("free"),
        outcome: if i.is_multiple_of(50) {
            EventOutcome::RateLimited
        } else {
            EventOutcome::Admitted
        },
        rule: Some("per-user"),
        error: None,
        store: Some(StoreUsed::Memory),
        shadow_rule: None,
        allowlisted: false,
        blocked: false,
    })
}

fn sink_monitor(url: String, stream: Option<&str>, queue: usize, batch: usize) -> Monitor {
    let config = MonitorConfig {
        stream: stream.map(str::to_owned),
        url: Some(url),
        queue,
        batch,
        flush: floodwall::config::HumanDuration(Duration::from_secs(30)),
        ..MonitorConfig::default()
    };
    Monitor::new(&config, &StoreConfig::default()).expect("monitor")
}

fn record_with_sink(c: &mut Criterion) {
    const CHUNK: u64 = 5_000;
    let server = RedisServer::start();
    let subjects: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let at = Timestamp::from_millis(1_795_000_000_000);
    let mut group = c.benchmark_group("monitor_sink");
    for (name, stream, batch) in [
        ("off", None, 256),
        ("accepted", Some("fw:bench"), 10_000),
        ("writing", Some("fw:bench"), 256),
    ] {
        let monitor = sink_monitor(server.url(), stream, 10_000, batch);
        for threads in [1u64, 2] {
            group.bench_function(BenchmarkId::new(name, format!("{threads}thread")), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    let mut done = 0;
                    while done < iters {
                        let n = (iters - done).min(CHUNK);
                        timed += on_threads(threads, n, &|i| {
                            monitor.record(black_box(&decision(&subjects, done + i, at)))
                        });
                        assert!(monitor.flush(Duration::from_secs(30)), "the sink keeps up");
                        done += n;
                    }
                    timed
                })
            });
        }
        if let Some(stats) = monitor.sink_stats().filter(|s| s.written > 0) {
            assert_eq!(stats.dropped, 0, "{stats:?}");
            eprintln!(
                "monitor_sink/{name}: {} events written, none dropped",
                stats.written
            );
        }
    }
    let unreachable = format!("redis://127.0.0.1:{}", free_port());
    let monitor = sink_monitor(unreachable, Some("fw:bench"), 1, 256);
    for threads in [1u64, 2] {
        group.bench_function(BenchmarkId::new("full", format!("{threads}thread")), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, &|i| {
                    monitor.record(black_box(&decision(&subjects, i, at)))
                })
            })
        });
    }
    group.finish();

    // The writer's pace: 200,000 events queued at once, then written in batches of 256
    // (only when benchmarking: `cargo test --benches` runs each bench once, quickly).
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let events = 200_000u64;
    let monitor = sink_monitor(server.url(), Some("fw:pace"), events as usize, 256);
    let started = Instant::now();
    for i in 0..events {
        monitor.record(&decision(&subjects, i, at));
    }
    assert!(monitor.flush(Duration::from_secs(120)));
    let took = started.elapsed();
    let stats = monitor.sink_stats().expect("a sink");
    eprintln!(
        "writer: {} events written ({} dropped) in {took:.2?}: {:.0} events/s, batches of 256",
        stats.written,
        stats.dropped,
        stats.written as f64 / took.as_secs_f64()
    );
}

criterion_group!(benches, record, record_with_sink);
criterion_main!(benches);
