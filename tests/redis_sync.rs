//! Rules that count locally between syncs (`sync`), against a real `redis-server`: several
//! engines (each one process to Redis) sharing a key admit within the documented bound,
//! every admission reaches Redis exactly once — across reconnects and after the engines
//! are dropped — a key first seen is read before it is decided, a request denied by an exact
//! layer gives back what its local layer took, a response's refund reaches Redis, and Redis
//! going away sends the synced rule to the fallback until it is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use floodwall::{Engine, Request, StoreState, StoreUsed, Timestamp};
use floodwall_tests::http::rate_limited;
use floodwall_tests::redis_server::{RedisServer, try_command_on};

/// Every request is decided at this time, so that no window ends during a test.
const AT: Timestamp = Timestamp::from_millis(2_000_000_000_000);

/// `sync` every `sync`, `limit` per hour on one global key under `/synced`; an exact
/// fixed window of `exact` per hour on `/mixed` beside a synced one of 1000.
fn config(url: &str, prefix: &str, sync: &str, limit: u64, exact: u64) -> String {
    format!(
        r#"
[store]
kind = "redis"
url = "{url}"
prefix = "{prefix}"
on_error = "fallback"
timeout = "200ms"

[[rules]]
name = "synced"
match = {{ paths = ["/synced"] }}
key = "global"
algorithm = "fixed_window"
limit = {limit}
window = "1h"
sync = "{sync}"

[[rules]]
name = "counter"
match = {{ paths = ["/counter"] }}
key = "subject"
algorithm = "sliding_window_counter"
limit = {limit}
window = "1h"
sync = "{sync}"

[[rules]]
name = "mixed-local"
match = {{ paths = ["/mixed"] }}
key = "global"
algorithm = "fixed_window"
limit = 1000
window = "1h"
sync = "{sync}"

[[rules]]
name = "mixed-exact"
match = {{ paths = ["/mixed"] }}
key = "global"
algorithm = "fixed_window"
limit = {exact}
window = "1h"
"#
    )
}

fn engine(server: &RedisServer, prefix: &str, sync: &str, limit: u64) -> Engine {
    Engine::from_toml(&config(&server.url(), prefix, sync, limit, 5)).expect("config")
}

/// The count Redis holds for a synced fixed-window rule's global key at [`AT`], every
/// process's together, and the sum of the processes' counts (not their sync numbers, `ID#`).
fn redis_count(
    server: &RedisServer,
    prefix: &str,
    rule: &str,
    code: char,
    window_us: u64,
) -> (u64, u64) {
    let index = AT.as_micros() / window_us;
    // The rule's key carries its fingerprint (`rule@XXXXXXXX`): found by pattern.
    let pattern = format!("{prefix}{{{rule}@*/0/=}}{code}#{index}");
    let keys = server.command(&format!("KEYS {pattern}"));
    let Some(key) = keys.lines().find(|l| l.starts_with(prefix)) else {
        return (0, 0);
    };
    let reply = server.command(&format!("HGETALL {key}"));
    let values: Vec<&str> = reply
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .collect();
    let mut total = 0;
    let mut fields = 0;
    for pair in values.chunks(2) {
        if let [field, value] = pair {
            let value: u64 = value.parse().expect("a count");
            if *field == "=" {
                total = value;
            } else if !field.ends_with('#') {
                fields += value;
            }
        }
    }
    (total, fields)
}

const HOUR_US: u64 = 3_600_000_000;

/// Admitted on `path`, out of `n` requests at [`AT`]; every decision made with Redis's
/// counts (not the fallback).
fn admitted(engine: &Engine, path: &str, subject: &str, n: usize) -> usize {
    let request = Request::new("GET", path).subject(subject).at(AT);
    (0..n)
        .filter(|_| {
            let d = engine.check(&request).expect("decision");
            assert_eq!(
                d.store(),
                StoreUsed::Redis,
                "{}",
                engine.store_failure().unwrap_or_default()
            );
            d.allowed()
        })
        .count()
}

const ENGINES: usize = 4;
const LIMIT: usize = 1000;
/// Each engine is offered requests at about this many a second.
const RATE: usize = 4000;

/// [`ENGINES`] engines syncing every 20 ms (deadline 200 ms), each offered [`RATE`] requests a second on one
/// global key for 1.5 s, with every client connection cut every 50 ms if `cut`: the engines,
/// and how many they admitted, all and with Redis's counts.
fn offered(server: &RedisServer, prefix: &str, cut: bool) -> (Vec<Arc<Engine>>, usize, usize) {
    let engines: Vec<Arc<Engine>> = (0..ENGINES)
        .map(|_| Arc::new(engine(server, prefix, "20ms", LIMIT as u64)))
        .collect();
    let admitted_redis = Arc::new(AtomicUsize::new(0));
    let admitted_all = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let killer = cut.then(|| {
        let stop = Arc::clone(&stop);
        let port = server.port();
        std::thread::spawn(move || {
            let mut kills = 0;
            while !stop.load(Ordering::Relaxed) && kills < 40 {
                std::thread::sleep(Duration::from_millis(50));
                try_command_on(port, "CLIENT KILL TYPE normal SKIPME yes");
                kills += 1;
            }
        })
    });
    let handles: Vec<_> = engines
        .iter()
        .map(|engine| {
            let engine = Arc::clone(engine);
            let (redis, all) = (Arc::clone(&admitted_redis), Arc::clone(&admitted_all));
            std::thread::spawn(move || {
                let request = Request::new("GET", "/synced").at(AT);
                let started = Instant::now();
                let mut sent = 0;
                while started.elapsed() < Duration::from_millis(1500) && sent < 2 * RATE {
                    for _ in 0..RATE / 1000 {
                        let d = engine.check(&request).expect("decision");
                        if d.allowed() {
                            all.fetch_add(1, Ordering::Relaxed);
                            if d.store() == StoreUsed::Redis {
                                redis.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        sent += 1;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a caller");
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(killer) = killer {
        killer.join().expect("the killer");
    }
    let all = admitted_all.load(Ordering::Relaxed);
    let with_redis = admitted_redis.load(Ordering::Relaxed);
    (engines, all, with_redis)
}

/// Waits for every engine's store to be well, then drops them: their last rounds send what
/// is unsent.
fn heal_and_drop(engines: Vec<Arc<Engine>>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while engines
        .iter()
        .any(|e| e.store_health().state != StoreState::Ok)
    {
        assert!(Instant::now() < deadline, "the store did not heal");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(engines);
}

#[test]
fn engines_sharing_a_key_admit_within_the_documented_bound() {
    let server = RedisServer::start();
    let (engines, all, with_redis) = offered(&server, "bound:", false);
    // limit + (N − 1) × r × (2 × sync + 2 × timeout), r at most RATE.
    let (sync, timeout) = (0.020, 0.200);
    let bound = LIMIT as f64 + (ENGINES - 1) as f64 * RATE as f64 * (2.0 * sync + 2.0 * timeout);
    println!(
        "{ENGINES} engines, limit {LIMIT}, sync 20ms, {RATE}/s each: admitted {all} ({with_redis} with Redis's counts), bound {bound}"
    );
    assert_eq!(all, with_redis, "nothing went to the fallback");
    assert!(all >= LIMIT, "admitted {all}, fewer than the limit {LIMIT}");
    assert!(
        (all as f64) <= bound,
        "admitted {all}, over the bound {bound}"
    );
    heal_and_drop(engines);
    let (total, fields) = redis_count(&server, "bound:", "synced", 'f', HOUR_US);
    assert_eq!(
        total, all as u64,
        "Redis counts {total}; the engines admitted {all}"
    );
    assert_eq!(fields, total, "the processes' fields add up to the total");
}

#[test]
fn connections_cut_under_load_lose_no_admission_and_count_none_twice() {
    let server = RedisServer::start();
    let (engines, all, with_redis) = offered(&server, "cut:", true);
    println!("connections cut every 50 ms: admitted {all}, {with_redis} with Redis's counts");
    heal_and_drop(engines);
    let (total, fields) = redis_count(&server, "cut:", "synced", 'f', HOUR_US);
    assert_eq!(
        total, with_redis as u64,
        "Redis counts {total}; the engines admitted {with_redis} with its counts"
    );
    assert_eq!(fields, total, "the processes' fields add up to the total");
}

#[test]
fn a_key_first_seen_is_read_from_redis_before_it_is_decided() {
    let server = RedisServer::start();
    let first = engine(&server, "first:", "1s", 50);
    assert_eq!(admitted(&first, "/synced", "a", 30), 30);
    assert_eq!(admitted(&first, "/counter", "alice", 20), 20);
    // Sent on drop, well before its next round.
    drop(first);
    let second = engine(&server, "first:", "1s", 50);
    assert_eq!(
        admitted(&second, "/synced", "a", 40),
        20,
        "the fixed window's other 20"
    );
    assert_eq!(
        admitted(&second, "/counter", "alice", 40),
        30,
        "the counter's other 30"
    );
    assert_eq!(
        admitted(&second, "/counter", "bob", 60),
        50,
        "another key, its own limit"
    );
    drop(second);
    assert_eq!(
        redis_count(&server, "first:", "synced", 'f', HOUR_US),
        (50, 50)
    );
}

#[test]
fn a_request_an_exact_layer_denies_gives_back_what_its_local_layer_took() {
    let server = RedisServer::start();
    let engine = engine(&server, "mixed:", "10ms", 50);
    // The exact layer admits 5 of the 12; the local one counts only those.
    assert_eq!(admitted(&engine, "/mixed", "a", 12), 5);
    drop(engine);
    assert_eq!(
        redis_count(&server, "mixed:", "mixed-local", 'f', HOUR_US),
        (5, 5)
    );
}

#[test]
fn while_redis_is_away_the_synced_rule_is_decided_by_the_fallback_and_then_locally_again() {
    let mut server = RedisServer::start();
    let engine = engine(&server, "away:", "20ms", 1_000_000);
    assert_eq!(admitted(&engine, "/synced", "a", 10), 10);
    server.kill();
    let request = Request::new("GET", "/synced").at(AT);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let d = engine.check(&request).expect("decision");
        if d.store() == StoreUsed::Fallback {
            break;
        }
        assert!(Instant::now() < deadline, "never on the fallback");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = engine.check(&request).expect("decision");
        if d.store() == StoreUsed::Redis {
            break;
        }
        assert!(Instant::now() < deadline, "never back on Redis");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A synced rule that counts only failures (`count_responses = "failed"`): what a success's
/// request took locally is given back, and Redis ends up holding the failures alone.
#[test]
fn a_synced_rule_s_refunds_reach_redis() {
    let server = RedisServer::start();
    let engine = Engine::from_toml(&format!(
        r#"
[store]
kind = "redis"
url = "{}"
prefix = "refund:"
timeout = "200ms"

[[rules]]
name = "failures"
key = "global"
algorithm = "fixed_window"
limit = 3
window = "1h"
sync = "10ms"
count_responses = "failed"
"#,
        server.url()
    ))
    .expect("config");
    let send = |status: u16| rate_limited(&engine, "/api", status, Some(AT));
    for i in 0..10 {
        assert!(send(200), "success {i}: given back");
        // A round may send the count while it holds the request; it is sent again lower.
        std::thread::sleep(Duration::from_millis(2));
    }
    for _ in 0..3 {
        assert!(send(500));
    }
    assert!(!send(500), "three failures are the limit");
    drop(engine);
    assert_eq!(
        redis_count(&server, "refund:", "failures", 'f', HOUR_US),
        (3, 3)
    );
}
