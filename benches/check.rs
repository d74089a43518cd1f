//! `check` on the memory store, with governor's keyed limiter measured in the same groups.
//!
//! Run: `cargo bench -p floodwall-benches --bench check` (add `-- --quick --noplot` for a
//! fast pass). Both sides run on a manual clock standing still and a bucket that never empties,
//! so the admission path is what is measured, not the clock.
//!
//! - `store/*`: one layer through `MemoryStore::acquire` vs `governor` `check_key`, on one key
//!   and cycling over 100,000 keys, on one and two threads.
//! - `store/floodwall-3-layers-atomic/*`: three layers decided together, all-or-nothing, as
//!   `Engine::check` asks of the store for a three-layer request;
//! - `store/floodwall-3-separate-keys/*`: three one-layer decisions in a row (separate, not
//!   atomic together): the floor under any three-layer decision on this store.
//! - `engine/*`: the full `Engine::check` (rule matching, role policy, key building, store)
//!   with one and three layers.
//! - `key_limits/*`: one layer whose rule takes key limits (`key_limits = true`), with and
//!   without the key's own limit set, beside the same rule without.

use std::hint::black_box;
use std::num::NonZeroU32;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use floodwall::store::{Layer, MemoryStore};
use floodwall::{Engine, ManualClock, Request, Timestamp};
use floodwall_benches::{
    CAPACITY, MANY_KEYS, ONE_LAYER, REFILL_PER_SECOND, THREE_LAYERS, on_threads, quota, subjects,
};
use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota as GovernorQuota, RateLimiter};

type Governor = RateLimiter<
    String,
    DefaultKeyedStateStore<String>,
    FakeRelativeClock,
    NoOpMiddleware<<FakeRelativeClock as governor::clock::Clock>::Instant>,
>;

fn governor() -> Governor {
    let quota = GovernorQuota::per_second(NonZeroU32::new(REFILL_PER_SECOND).expect("non-zero"))
        .allow_burst(NonZeroU32::new(CAPACITY).expect("non-zero"));
    RateLimiter::new(
        quota,
        DefaultKeyedStateStore::default(),
        FakeRelativeClock::default(),
    )
}

const NOW: Timestamp = Timestamp::from_millis(1_700_000_000_000);

fn store(c: &mut Criterion) {
    let quota = quota();
    let keys = subjects(MANY_KEYS);
    let key_bytes: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| std::iter::once(1).chain(k.bytes()).collect())
        .collect();
    let mut group = c.benchmark_group("store");
    for (label, nkeys) in [("1key", 1usize), ("100k_keys", MANY_KEYS)] {
        for threads in [1u64, 2] {
            let id = format!("{label}/{threads}thread");
            let memory = MemoryStore::new(1_000_000);
            // One one-layer decision on key `i` in counter namespace `slot`.
            let acquire_in = |slot: u64, i: u64| {
                let layer = Layer {
                    rule: "per-user",
                    slot,
                    quota: &quota,
                    key: &key_bytes[i as usize % nkeys],
                    shadow: false,
                };
                let mut out = [Default::default()];
                let allowed = memory
                    .acquire(&[layer], 1, NOW, &mut out)
                    .expect("memory store");
                assert!(black_box(allowed));
            };
            let acquire = |i: u64| acquire_in(0, i);
            (0..nkeys as u64).for_each(acquire);
            group.bench_function(BenchmarkId::new("floodwall", &id), |b| {
                b.iter_custom(|iters| on_threads(threads, iters, &acquire))
            });

            // The floor of any three-layer decision on this store: three independent one-layer
            // decisions (not atomic together, no rule matching), to set against the target of
            // "three layers under 2x governor's one keyed check".
            // The same three layers decided together, all-or-nothing (what `Engine::check`
            // asks of the store for a three-layer request).
            let together = |i: u64| {
                let key = &key_bytes[i as usize % nkeys];
                let layer = |slot| Layer {
                    rule: "per-user",
                    slot,
                    quota: &quota,
                    key,
                    shadow: false,
                };
                let layers = [layer(0), layer(1), layer(2)];
                let mut out = [Default::default(); 3];
                let allowed = memory
                    .acquire(&layers, 1, NOW, &mut out)
                    .expect("memory store");
                assert!(black_box(allowed));
            };
            (0..nkeys as u64).for_each(together);
            group.bench_function(BenchmarkId::new("floodwall-3-layers-atomic", &id), |b| {
                b.iter_custom(|iters| on_threads(threads, iters, &together))
            });

            let three = |i: u64| (0..3).for_each(|slot| acquire_in(slot, i));
            (0..nkeys as u64).for_each(three);
            group.bench_function(BenchmarkId::new("floodwall-3-separate-keys", &id), |b| {
                b.iter_custom(|iters| on_threads(threads, iters, &three))
            });

            let limiter = governor();
            let check = |i: u64| {
                assert!(black_box(limiter.check_key(&keys[i as usize % nkeys])).is_ok());
            };
            (0..nkeys as u64).for_each(check);
            group.bench_function(BenchmarkId::new("governor", &id), |b| {
                b.iter_custom(|iters| on_threads(threads, iters, &check))
            });
        }
    }
    group.finish();
}

fn engine(c: &mut Criterion) {
    let keys = subjects(MANY_KEYS);
    let mut group = c.benchmark_group("engine");
    for (layers, config) in [("1layer", ONE_LAYER), ("3layers", THREE_LAYERS)] {
        for (label, nkeys) in [("1key", 1usize), ("100k_keys", MANY_KEYS)] {
            for threads in [1u64, 2] {
                let engine = Engine::from_toml(config)
                    .expect("bench config")
                    .with_clock(ManualClock::new(NOW));
                let check = |i: u64| {
                    let request = Request::new("GET", "/api/orders/7")
                        .subject(&keys[i as usize % nkeys])
                        .role(if i.is_multiple_of(2) {
                            "free"
                        } else {
                            "premium"
                        })
                        .ip("192.0.2.1");
                    let decision = engine.check(&request).expect("check");
                    assert!(black_box(decision.allowed()));
                };
                (0..2 * nkeys as u64).for_each(check);
                let id = format!("{layers}/{label}/{threads}thread");
                group.bench_function(BenchmarkId::new("floodwall", id), |b| {
                    b.iter_custom(|iters| on_threads(threads, iters, &check))
                });
            }
        }
    }
    group.finish();
}

/// One layer on one key, its rule without `key_limits`, with `key_limits` and no limit set,
/// and with the key's own limit in force: what a rule that takes key limits costs.
fn key_limits(c: &mut Criterion) {
    let mut group = c.benchmark_group("key_limits");
    let with_limits = ONE_LAYER.replace(
        "refill_rate = 1000000\n",
        "refill_rate = 1000000\nkey_limits = true\n",
    );
    for (label, config, own) in [
        ("plain", ONE_LAYER, false),
        ("key_limits-none-set", with_limits.as_str(), false),
        ("key_limits-set", with_limits.as_str(), true),
    ] {
        let engine = Engine::from_toml(config)
            .expect("bench config")
            .with_clock(ManualClock::new(NOW));
        if own {
            engine
                .set_key_limit(
                    &floodwall::KeyRef::new("per-user", "alice"),
                    CAPACITY_OWN,
                    std::time::Duration::from_secs(3600),
                )
                .expect("a key limit");
        }
        let request = Request::new("GET", "/api/orders/7").subject("alice");
        group.bench_function(BenchmarkId::new("floodwall", label), |b| {
            b.iter(|| assert!(black_box(engine.check(&request).expect("check").allowed())))
        });
    }
    group.finish();
}

/// The own limit the bench gives its key: the bucket's capacity (its refill time in µs).
const CAPACITY_OWN: u64 = 1_000_000_000;

criterion_group!(benches, store, engine, key_limits);
criterion_main!(benches);
