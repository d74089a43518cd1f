//! The Redis store against real `redis-server` processes: exact admission from many threads
//! and from separate processes, NOSCRIPT recovery, Redis killed and restarted under each
//! `on_error` policy, and a TTL on every key written.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use floodwall::{Engine, Request, StoreUsed};
use floodwall_tests::redis_server::RedisServer;
use floodwall_tests::stored_name;

/// One rule per exact algorithm, each allowing 100 per hour on one global key, plus a
/// three-layer rule set on `/layered`.
fn config(url: &str, prefix: &str, on_error: &str) -> String {
    format!(
        r#"
[store]
kind = "redis"
url = "{url}"
prefix = "{prefix}"
on_error = "{on_error}"
timeout = "300ms"

[[rules]]
name = "fixed"
match = {{ paths = ["/fixed"] }}
key = "global"
algorithm = "fixed_window"
limit = 100
window = "1h"

[[rules]]
name = "log"
match = {{ paths = ["/log"] }}
key = "global"
algorithm = "sliding_window"
limit = 100
window = "1h"

[[rules]]
name = "bucket"
match = {{ paths = ["/bucket"] }}
key = "global"
algorithm = "token_bucket"
capacity = 100
refill_rate = 0.0001

[[rules]]
name = "per-user"
match = {{ paths = ["/layered"] }}
key = "subject"
algorithm = "sliding_window_counter"
limit = 1000
window = "1h"

[[rules]]
name = "layered-global"
match = {{ paths = ["/layered"] }}
key = "global"
algorithm = "fixed_window"
limit = 100
window = "1h"
"#
    )
}

fn engine(server: &RedisServer, prefix: &str, on_error: &str) -> Engine {
    Engine::from_toml(&config(&server.url(), prefix, on_error)).expect("config")
}

/// Admitted requests out of `n` on `path`, from Redis only.
fn admitted(engine: &Engine, path: &str, subject: &str, n: usize) -> usize {
    let request = Request::new("GET", path).subject(subject);
    (0..n)
        .filter(|_| {
            let d = engine.check(&request).expect("decision");
            // A repeated denial may be the deny cache's; nothing else but Redis.
            let from_redis = d.store() == StoreUsed::Redis
                || (d.store() == StoreUsed::DenyCache && !d.allowed());
            assert!(
                from_redis,
                "{} decided: {}",
                d.store(),
                engine.store_failure().unwrap_or_default()
            );
            d.allowed()
        })
        .count()
}

/// Admitted requests out of `each` from each of `threads` threads (subjects `user-0`, …) on
/// `path`, from Redis only.
fn admitted_from_threads(
    engine: &Arc<Engine>,
    path: &'static str,
    threads: usize,
    each: usize,
) -> usize {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let engine = Arc::clone(engine);
            std::thread::spawn(move || admitted(&engine, path, &format!("user-{t}"), each))
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("thread")).sum()
}

#[test]
fn eight_threads_on_one_key_admit_exactly_the_limit() {
    let server = RedisServer::start();
    let engine = Arc::new(engine(&server, "threads:", "deny"));
    for path in ["/fixed", "/log", "/bucket", "/layered"] {
        let total = admitted_from_threads(&engine, path, 8, 40);
        assert_eq!(total, 100, "{path}: 320 requests from 8 threads");
    }
}

#[test]
fn concurrent_callers_share_script_calls_and_admit_exactly_the_limit() {
    let server = RedisServer::start();
    let engine = Arc::new(engine(&server, "combined:", "deny"));
    // The script is loaded and the connection made before counting.
    admitted(&engine, "/bucket", "warm", 1);
    for path in ["/fixed", "/layered"] {
        server.command("CONFIG RESETSTAT");
        let total = admitted_from_threads(&engine, path, 32, 10);
        assert_eq!(total, 100, "{path}: 320 requests from 32 threads");
        // Callers that waited while calls were on their way went to Redis together.
        let calls = server.evalsha_calls();
        assert!(
            (1..320).contains(&calls),
            "{path}: {calls} script calls for 320 decisions"
        );
    }
}

/// Run by `four_processes_on_one_key_admit_exactly_the_limit` in child processes.
#[test]
#[ignore = "a worker of the multi-process test; runs only when it sets FLOODWALL_TEST_REDIS_URL"]
fn process_worker() {
    let Ok(url) = std::env::var("FLOODWALL_TEST_REDIS_URL") else {
        return;
    };
    let engine = Engine::from_toml(&config(&url, "processes:", "deny")).expect("config");
    let mut counts = Vec::new();
    for path in ["/fixed", "/log", "/bucket", "/layered"] {
        counts.push(format!("{path}={}", admitted(&engine, path, "worker", 60)));
    }
    println!("ADMITTED {}", counts.join(" "));
}

#[test]
fn four_processes_on_one_key_admit_exactly_the_limit() {
    let server = RedisServer::start();
    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", "process_worker", "--ignored", "--nocapture"])
                .env("FLOODWALL_TEST_REDIS_URL", server.url())
                .output()
        })
        .collect();
    let mut totals = std::collections::BTreeMap::<String, usize>::new();
    for child in children {
        let out = child.expect("worker process");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with("ADMITTED"))
            .unwrap_or_else(|| panic!("no ADMITTED line in {stdout}"));
        for part in line.split_whitespace().skip(1) {
            let (path, n) = part.split_once('=').expect("path=n");
            *totals.entry(path.to_owned()).or_default() += n.parse::<usize>().expect("count");
        }
    }
    for path in ["/fixed", "/log", "/bucket", "/layered"] {
        assert_eq!(totals[path], 100, "{path}: 240 requests from 4 processes");
    }
}

#[test]
fn scripts_flushed_from_redis_are_loaded_again() {
    let server = RedisServer::start();
    let engine = engine(&server, "flush:", "deny");
    assert_eq!(admitted(&engine, "/fixed", "a", 3), 3);
    assert!(server.command("SCRIPT FLUSH").starts_with("+OK"));
    assert_eq!(admitted(&engine, "/fixed", "a", 3), 3, "after SCRIPT FLUSH");
    assert_eq!(engine.store_failure(), None);
}

#[test]
fn every_key_written_has_a_ttl() {
    let server = RedisServer::start();
    let engine = engine(&server, "ttl:", "deny");
    for path in ["/fixed", "/log", "/bucket", "/layered"] {
        for subject in ["a", "b", "c"] {
            admitted(&engine, path, subject, 50);
        }
    }
    let keys = server.command("KEYS ttl:*");
    let names: Vec<&str> = keys
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .collect();
    assert!(names.len() >= 7, "{keys}");
    for name in names {
        let ttl = server.command(&format!("PTTL \"{name}\""));
        let ms: i64 = ttl
            .trim()
            .trim_start_matches(':')
            .parse()
            .expect("PTTL reply");
        assert!(ms > 0, "{name} has PTTL {ms}");
    }
}

/// Decisions while Redis is killed and after it is back, under `policy`.
fn survive_restart(policy: &str, while_down: impl Fn(&floodwall::Decision<'_>)) {
    let mut server = RedisServer::start();
    let port = server.port();
    let engine = engine(&server, "restart:", policy);
    assert_eq!(admitted(&engine, "/layered", "u", 5), 5);
    server.kill();
    let request = Request::new("GET", "/layered").subject("u");
    let started = Instant::now();
    for _ in 0..50 {
        let d = engine.check(&request).expect("a decision, never an error");
        while_down(&d);
    }
    // The breaker spares callers the deadline: 50 decisions take far less than 50 × 300 ms.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(engine.store_failure().is_some());

    let _restarted = RedisServer::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = engine.check(&request).expect("decision");
        if d.store() == StoreUsed::Redis {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis not used again within 20 s of its restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A health check reading the failure sees Redis healthy again.
    assert_eq!(engine.store_failure(), None);
}

#[test]
fn redis_killed_and_restarted_under_fallback() {
    survive_restart("fallback", |d| {
        assert_eq!(d.store(), StoreUsed::Fallback);
        assert!(d.allowed());
    });
}

#[test]
fn redis_killed_and_restarted_under_allow() {
    survive_restart("allow", |d| {
        assert_eq!(d.store(), StoreUsed::Unavailable);
        assert!(d.allowed());
    });
}

#[test]
fn redis_killed_and_restarted_under_deny() {
    survive_restart("deny", |d| {
        assert_eq!(d.store(), StoreUsed::Unavailable);
        assert!(!d.allowed());
        assert_eq!(d.retry_after_ms(), 1000);
    });
}

#[test]
fn check_many_decides_a_batch_in_one_round_trip_with_the_same_meaning() {
    let mut server = RedisServer::start();
    let engine = engine(&server, "batch:", "fallback");
    let requests: Vec<Request<'_>> = (0..250)
        .map(|i| Request::new("GET", if i % 2 == 0 { "/fixed" } else { "/log" }).subject("batch"))
        .collect();
    // The script is loaded and the connection made before counting.
    assert!(engine.check(&Request::new("GET", "/bucket")).is_ok());
    server.command("CONFIG RESETSTAT");
    let decisions = engine.check_many(&requests);
    assert_eq!(decisions.len(), 250);
    // One script call a batch of at most 128 decisions.
    assert_eq!(server.evalsha_calls(), 2);
    let mut admitted = std::collections::BTreeMap::<&str, usize>::new();
    for (request, d) in requests.iter().zip(&decisions) {
        let d = d.as_ref().expect("decision");
        assert_eq!(d.store(), StoreUsed::Redis);
        *admitted.entry(request.path).or_default() += usize::from(d.allowed());
    }
    assert_eq!(admitted["/fixed"], 100);
    assert_eq!(admitted["/log"], 100);
    // A request whose cost exceeds its limit is an error in its own slot only.
    let mixed = [
        Request::new("GET", "/bucket").subject("batch"),
        Request::new("GET", "/bucket").subject("batch").cost(101),
        Request::new("GET", "/nothing-matches"),
    ];
    let out = engine.check_many(&mixed);
    assert!(out[0].as_ref().expect("ok").allowed());
    assert_eq!(
        out[1].as_ref().unwrap_err().kind(),
        floodwall::ErrorKind::CostExceedsLimit
    );
    assert!(out[2].as_ref().expect("ok").allowed());

    // With Redis gone, each request of the batch gets the policy (here: fallback).
    server.kill();
    for d in engine.check_many(&mixed[..1]) {
        assert_eq!(d.expect("decision").store(), StoreUsed::Fallback);
    }
}

/// Dropping an engine closes its connections at once, though the Redis I/O runtime is shared
/// by every engine of the process and nothing else may wait on Redis afterwards.
#[test]
fn a_dropped_engine_closes_its_connection() {
    let server = RedisServer::start();
    let clients = || {
        server
            .command("CLIENT LIST")
            .lines()
            .filter(|l| l.contains("addr="))
            .count()
    };
    let baseline = clients();
    let engines: Vec<Engine> = (0..3)
        .map(|i| {
            let engine = engine(&server, &format!("drop{i}:"), "deny");
            let d = engine.check(&Request::new("GET", "/fixed").subject("d"));
            assert_eq!(d.expect("decision").store(), StoreUsed::Redis);
            engine
        })
        .collect();
    assert!(clients() >= baseline + 3, "each engine holds a connection");
    drop(engines);
    let deadline = Instant::now() + Duration::from_secs(2);
    while clients() > baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        clients(),
        baseline,
        "connections of dropped engines still open"
    );
}

#[test]
fn a_batch_that_waited_out_the_deadline_in_a_queue_is_answered_without_redis() {
    let server = RedisServer::start();
    let engine = engine(&server, "queued:", "deny");
    let requests = [Request::new("GET", "/fixed").subject("queued")];
    let calls = server.evalsha_calls();
    // Queued just now: the deadline has room, Redis decides.
    let fresh = engine.check_many_since(&requests, std::time::Instant::now());
    assert_eq!(
        fresh[0].as_ref().expect("decision").store(),
        StoreUsed::Redis
    );
    assert_eq!(server.evalsha_calls(), calls + 1);
    // Queued longer ago than the store's timeout: on_error answers at once, Redis is not
    // asked, and the store's health does not count it against Redis.
    let waited = std::time::Instant::now() - std::time::Duration::from_secs(5);
    for _ in 0..10 {
        let late = engine.check_many_since(&requests, waited);
        let d = late[0].as_ref().expect("decision");
        assert_eq!(d.store(), StoreUsed::Unavailable);
        assert!(!d.allowed());
    }
    assert_eq!(server.evalsha_calls(), calls + 1);
    assert_eq!(engine.store_health().state, floodwall::StoreState::Ok);
    assert_eq!(engine.store_failure(), None);
}

#[test]
fn a_flood_from_one_caller_costs_redis_nothing_after_the_first_denial() {
    let server = RedisServer::start();
    let engine = engine(&server, "flood:", "deny");
    assert_eq!(admitted(&engine, "/fixed", "x", 100), 100);
    let before = server.evalsha_calls();
    let request = Request::new("GET", "/fixed").subject("x");
    for i in 0..1000 {
        let d = engine.check(&request).expect("decision");
        assert!(!d.allowed());
        assert!(d.retry_after_ms() > 0);
        assert_eq!(d.remaining(), Some(0));
        let answered_by = if i == 0 {
            StoreUsed::Redis
        } else {
            StoreUsed::DenyCache
        };
        assert_eq!(d.store(), answered_by, "repeat {i}");
    }
    assert_eq!(
        server.evalsha_calls() - before,
        1,
        "only the first denial asked Redis"
    );
    // The same flood in batches (what Node's `check()` sends): no more calls, and a batch
    // mixing the flood with other requests asks Redis only about the others.
    let other = Request::new("GET", "/bucket").subject("y");
    for _ in 0..20 {
        let batch = [request, request, other, request];
        let results = engine.check_many(&batch);
        let stores: Vec<StoreUsed> = results
            .iter()
            .map(|r| r.as_ref().expect("decision").store())
            .collect();
        assert_eq!(
            stores,
            [
                StoreUsed::DenyCache,
                StoreUsed::DenyCache,
                StoreUsed::Redis,
                StoreUsed::DenyCache
            ]
        );
        assert!(
            results
                .iter()
                .enumerate()
                .all(|(i, r)| r.as_ref().expect("decision").allowed() == (i == 2))
        );
    }
    assert_eq!(
        server.evalsha_calls() - before,
        1 + 20,
        "check_many asked Redis about the cached denials"
    );
    // A batch of nothing but cached denials makes no call at all.
    let results = engine.check_many(&[request, request]);
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().expect("decision").store() == StoreUsed::DenyCache)
    );
    assert_eq!(server.evalsha_calls() - before, 21);
    // A first denial through check_many is remembered for check.
    assert_eq!(admitted(&engine, "/log", "z", 100), 100);
    let before = server.evalsha_calls() - 21;
    let z = Request::new("GET", "/log").subject("z");
    let first = engine.check_many(std::slice::from_ref(&z));
    assert_eq!(
        first[0].as_ref().expect("decision").store(),
        StoreUsed::Redis
    );
    assert_eq!(
        engine.check(&z).expect("decision").store(),
        StoreUsed::DenyCache
    );
    assert_eq!(server.evalsha_calls() - before, 22);

    // Off by configuration: every request asks.
    let toml = config(&server.url(), "flood-off:", "deny").replace(
        "timeout = \"300ms\"",
        "timeout = \"300ms\"\ndeny_cache = false",
    );
    let engine = Engine::from_toml(&toml).expect("config");
    assert_eq!(admitted(&engine, "/fixed", "x", 110), 100);
    let before = server.evalsha_calls();
    admitted(&engine, "/fixed", "x", 10);
    assert_eq!(server.evalsha_calls() - before, 10);
}

#[test]
fn redis_killed_and_restarted_under_error() {
    let mut server = RedisServer::start();
    let port = server.port();
    let engine = engine(&server, "error-policy:", "error");
    assert_eq!(admitted(&engine, "/layered", "u", 5), 5);
    server.kill();
    let request = Request::new("GET", "/layered").subject("u");
    for _ in 0..20 {
        let err = engine
            .check(&request)
            .expect_err("the failure, not a decision");
        assert_eq!(err.kind(), floodwall::ErrorKind::StoreUnavailable, "{err}");
        assert_eq!(err.http_status(), 503);
        assert!(err.message().contains("unavailable"), "{err}");
    }
    let batch = engine.check_many(&[request, Request::new("GET", "/nothing-matches")]);
    assert_eq!(
        batch[0].as_ref().map_err(|e| e.kind()).err(),
        Some(floodwall::ErrorKind::StoreUnavailable)
    );
    assert!(
        batch[1].as_ref().is_ok_and(|d| d.allowed()),
        "no layer, no store call"
    );

    let _restarted = RedisServer::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.check(&request).is_err() {
        assert!(
            Instant::now() < deadline,
            "Redis not used again within 20 s of its restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        engine.check(&request).expect("decision").store(),
        StoreUsed::Redis
    );
}

/// The Redis store on its own, through the one `Store` trait: decisions on a live server,
/// and a failure as the call's `store_unavailable` error (nothing decides in its place).
#[test]
fn the_redis_store_alone_decides_through_the_store_trait() {
    use floodwall::Timestamp;
    use floodwall::config::StoreConfig;
    use floodwall::limit::Quota;
    use floodwall::store::{Layer, RedisStore, Store};

    let mut server = RedisServer::start();
    let mut config = StoreConfig::redis(server.url());
    if let Some(shared) = config.shared_mut() {
        shared.prefix = "alone:".to_owned();
    }
    let store: Box<dyn Store> = Box::new(RedisStore::new(&config).expect("config"));
    let quota = Quota::fixed_window(2.try_into().unwrap(), Duration::from_secs(60)).unwrap();
    let layer = Layer {
        rule: "r",
        slot: 0,
        quota: &quota,
        key: b"k",
        shadow: false,
    };
    let now = Timestamp::from_millis(1_000);
    let verdicts: Vec<bool> = (0..3)
        .map(|_| {
            store
                .decide_one(&layer, 1, now)
                .expect("a decision")
                .1
                .allowed
        })
        .collect();
    assert_eq!(verdicts, [true, true, false]);
    assert_eq!(store.used(), StoreUsed::Redis);
    server.kill();
    let e = store.decide_one(&layer, 1, now).expect_err("Redis is gone");
    assert_eq!(e.kind(), floodwall::ErrorKind::StoreUnavailable, "{e}");
}

/// Bytes of Redis memory a key of each algorithm takes (`MEMORY USAGE`, key and value with
/// Redis's overhead), one active key each, as docs/REDIS.md states them.
#[test]
fn each_algorithm_keeps_a_small_state_per_key() {
    let server = RedisServer::start();
    let engine = engine(&server, "mem:", "deny");
    let subject = "user-0123456789";
    for path in ["/fixed", "/log", "/bucket", "/layered"] {
        for _ in 0..3 {
            assert!(
                engine
                    .check(&Request::new("GET", path).subject(subject))
                    .expect("decision")
                    .allowed()
            );
        }
    }
    let keys = server.command("KEYS mem:*");
    let mut usage: Vec<(String, u64)> = keys
        .lines()
        .filter(|l| l.starts_with("mem:"))
        .map(|key| {
            let reply = server.command(&format!("MEMORY USAGE {key} SAMPLES 0"));
            let bytes = reply
                .trim()
                .trim_start_matches(':')
                .parse()
                .expect("a size");
            (key.to_owned(), bytes)
        })
        .collect();
    usage.sort();
    eprintln!("{usage:?}");
    // Per key, beyond its name: at most 80 bytes (fixed window 72, token bucket 55, sliding
    // counter 69, the log's `:total` 52 on Redis 7.0); the sliding log's list, here three
    // entries (one per distinct time), at most 240.
    for (key, bytes) in &usage {
        let most = if key.ends_with("}s") { 240 } else { 80 };
        let state = bytes - key.len() as u64;
        assert!(state <= most, "{key}: {bytes} bytes");
    }
    assert_eq!(usage.len(), 6, "{usage:?}");
}

/// A Redis at `maxmemory` with `noeviction` refuses writes: that is a store failure of its own
/// kind (`out_of_memory`), the fallback decides meanwhile, and nothing is written.
#[test]
fn a_redis_out_of_memory_is_a_failure_of_its_own_kind() {
    let server = RedisServer::start();
    let engine = engine(&server, "oom:", "fallback");
    let request = Request::new("GET", "/fixed").subject("oom");
    assert_eq!(
        engine.check(&request).expect("decision").store(),
        StoreUsed::Redis
    );
    server.command("CONFIG SET maxmemory-policy noeviction");
    server.command("CONFIG SET maxmemory 1");
    // Each refused call is decided by the fallback; a few of them and the store is degraded.
    for _ in 0..20 {
        let d = engine.check(&request).expect("a decision");
        assert_eq!(d.store(), StoreUsed::Fallback);
        if engine.store_health().reason_kind.is_some() {
            break;
        }
    }
    let health = engine.store_health();
    assert_eq!(health.reason_kind, Some("out_of_memory"), "{health:?}");
    assert!(
        health.reason.as_deref().unwrap_or("").contains("OOM"),
        "{health:?}"
    );
    server.command("CONFIG SET maxmemory 0");
    // One admission on Redis (before): the refused call wrote nothing. (A fixed window of
    // whole milliseconds on Redis's clock keeps a bare count.)
    let state = server.command(&format!(
        "GET oom:{{{}/0/=}}f",
        stored_name(&engine, "fixed")
    ));
    assert_eq!(state.lines().nth(1), Some("1"), "{state:?}");
}

/// A fixed window on Redis's clock keeps a bare count: a successful response's refund (under
/// `count_responses = "failed"`) gives back what its request took, a failed one's stays
/// counted, and a new window starts from nothing.
#[test]
fn a_fixed_window_on_redis_s_clock_refunds_and_rolls_over_exactly() {
    use floodwall_tests::http::rate_limited;
    let server = RedisServer::start();
    let engine = Engine::from_toml(&format!(
        r#"
[store]
kind = "redis"
url = "{}"
prefix = "bare:"
on_error = "deny"
timeout = "1s"

[[rules]]
name = "failures"
match = {{ paths = ["/api"] }}
key = "global"
algorithm = "fixed_window"
limit = 3
window = "1h"
count_responses = "failed"

[[rules]]
name = "short"
match = {{ paths = ["/short"] }}
key = "global"
algorithm = "fixed_window"
limit = 5
window = "300ms"
"#,
        server.url()
    ))
    .expect("config");
    let send = |path: &str, status: u16| rate_limited(&engine, path, status, None);
    // Ten successes, each given back: the count stays at nothing.
    for i in 0..10 {
        assert!(send("/api", 200), "success {i}");
    }
    let failures = stored_name(&engine, "failures");
    let state = server.command(&format!("GET bare:{{{failures}/0/=}}f"));
    assert!(state.starts_with("$-1"), "nothing counted: {state:?}");
    // Three failures stay counted; the fourth request is denied.
    for _ in 0..3 {
        assert!(send("/api", 500));
    }
    assert_eq!(
        server
            .command(&format!("GET bare:{{{failures}/0/=}}f"))
            .lines()
            .nth(1),
        Some("3")
    );
    assert!(!send("/api", 500), "the limit of failures is reached");
    // The short window: each window admits exactly 5 of a steady stream, and its key goes
    // with it. Sent within a window (at least 100 ms left), 5 pass and the sixth is denied.
    let pttl = || -> i64 {
        server
            .command(&format!(
                "PTTL bare:{{{}/0/=}}f",
                stored_name(&engine, "short")
            ))
            .trim()
            .trim_start_matches(':')
            .parse()
            .expect("a PTTL")
    };
    let mut windows = 0;
    let started = Instant::now();
    while windows < 3 && started.elapsed() < Duration::from_secs(10) {
        let ttl = pttl();
        if ttl > 0 {
            std::thread::sleep(Duration::from_millis(ttl as u64 + 5));
            continue;
        }
        let admitted = (0..6).filter(|_| send("/short", 200)).count();
        let ttl = pttl();
        if ttl >= 100 {
            assert_eq!(admitted, 5, "window {windows}");
            assert!(
                ttl <= 300,
                "the key lives no longer than its window: {ttl} ms"
            );
            windows += 1;
        }
    }
    assert_eq!(windows, 3, "three whole windows seen");
}

/// A `[store]` section on `server` under `prefix`, denying while Redis fails, with `extra`
/// lines.
fn store_section(server: &RedisServer, prefix: &str, extra: &str) -> String {
    format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\nprefix = \"{prefix}\"\non_error = \"deny\"\ntimeout = \"2s\"\n{extra}\n",
        server.url()
    )
}

#[test]
fn a_block_is_shared_by_every_engine_and_its_key_expires_with_it() {
    let server = RedisServer::start();
    let config = format!(
        r#"
{}
[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 3
window = "1h"
block_for = "90s"
block_after = 2
"#,
        store_section(&server, "blk:", "deny_cache = false")
    );
    let (first, second) = (
        Engine::from_toml(&config).unwrap(),
        Engine::from_toml(&config).unwrap(),
    );
    let alice = Request::new("GET", "/").subject("alice");
    let decide = |engine: &Engine| {
        let d = engine.check(&alice).unwrap();
        assert_eq!(d.store(), StoreUsed::Redis);
        (d.allowed(), d.blocked(), d.retry_after())
    };
    for engine in [&first, &second, &first] {
        assert!(decide(engine).0);
    }
    // The first denial only waits for the window; the second (on the other engine) blocks.
    let (allowed, blocked, _) = decide(&second);
    assert!(!allowed && !blocked);
    assert_eq!(
        server
            .command(&format!(
                "EXISTS \"blk:{{{}/0/=alice}}!\"",
                stored_name(&second, "per-user")
            ))
            .trim(),
        ":1"
    );
    let (allowed, blocked, wait) = decide(&first);
    assert!(!allowed && blocked);
    assert_eq!(wait, Duration::from_secs(90));
    let (allowed, blocked, wait) = decide(&second);
    assert!(!allowed && blocked);
    assert!(wait <= Duration::from_secs(90) && wait > Duration::from_secs(80));
    // Bob shares nothing with alice.
    assert!(second.check(&alice.subject("bob")).unwrap().allowed());
    // The block key lives until the block ends (the denial window is the hour: it lives that
    // long while it counts, and from the block on only as long as the block).
    let ttl = server.pttl(&format!(
        "blk:{{{}/0/=alice}}!",
        stored_name(&second, "per-user")
    ));
    assert!((80_000..=90_000).contains(&ttl), "PTTL {ttl}");
}

#[test]
fn a_calendar_day_on_redis_s_clock_ends_at_midnight_in_its_zone() {
    let server = RedisServer::start();
    let engine = Engine::from_toml(&format!(
        r#"
{}
[[rules]]
name = "daily"
key = "subject"
algorithm = "fixed_window"
limit = 2
window = "1d"
align = "calendar"
timezone = "Asia/Kolkata"
"#,
        store_section(&server, "cal:", "")
    ))
    .unwrap();
    let alice = Request::new("GET", "/").subject("alice");
    let decisions: Vec<bool> = (0..3)
        .map(|_| engine.check(&alice).unwrap().allowed())
        .collect();
    assert_eq!(decisions, [true, true, false]);
    // Midnight in Kolkata (UTC+05:30) is 18:30 UTC.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let day = 86_400_000;
    let midnight = (now_ms + 19_800_000) / day * day + day - 19_800_000;
    let denied = engine.check(&alice).unwrap();
    assert_eq!(denied.store(), StoreUsed::DenyCache);
    let wait = denied.retry_after_ms();
    assert!(
        wait.abs_diff(midnight - now_ms) < 5_000,
        "{wait} ms until midnight in Kolkata, expected about {}",
        midnight - now_ms
    );
    let key = format!("cal:{{{}/0/=alice}}k", stored_name(&engine, "daily"));
    assert!(server.command(&format!("GET \"{key}\"")).contains(":2"));
    let ttl = u64::try_from(server.pttl(&key)).expect("the key expires");
    assert!(
        ttl.abs_diff(midnight - now_ms) < 5_000 || ttl == 1000,
        "PTTL {ttl}"
    );
}

#[test]
fn permits_are_shared_by_every_engine_and_a_lost_one_ends_after_max_hold() {
    let server = RedisServer::start();
    let config = format!(
        r#"
{}
[[rules]]
name = "in-flight"
key = "subject"
algorithm = "concurrency"
limit = 2
max_hold = "400ms"
"#,
        store_section(&server, "conc:", "")
    );
    let (first, second) = (
        Engine::from_toml(&config).unwrap(),
        Engine::from_toml(&config).unwrap(),
    );
    let alice = Request::new("GET", "/").subject("alice");
    let held = first.check(&alice).unwrap();
    // A permit whose holder goes away without releasing it (a process that died).
    let lost = second.check(&alice).unwrap().take_permit().unwrap();
    assert!(held.allowed() && held.holds());
    assert_eq!(held.store(), StoreUsed::Redis);
    let denied = second.check(&alice).unwrap();
    assert!(!denied.allowed() && !denied.holds());
    assert_eq!(
        denied.store(),
        StoreUsed::Redis,
        "concurrency denials are not cached"
    );
    drop(held);
    assert!(
        second.check(&alice).unwrap().allowed(),
        "the release reached Redis"
    );
    let keys = server.command("KEYS conc:*");
    assert!(
        keys.contains(&format!(
            "conc:{{{}/0/=alice}}q",
            stored_name(&first, "in-flight")
        )),
        "{keys}"
    );
    // The lost permit still holds one place until max_hold passes.
    let now = first.check(&alice).unwrap();
    assert!(now.allowed());
    assert!(!second.check(&alice).unwrap().allowed());
    drop(now);
    std::thread::sleep(Duration::from_millis(450));
    let both: Vec<_> = (0..2).map(|_| first.check(&alice).unwrap()).collect();
    assert!(both.iter().all(|d| d.allowed()), "the lost hold has ended");
    drop(lost);
}

#[test]
fn acquire_on_redis_waits_for_the_next_window_and_for_a_release() {
    let server = RedisServer::start();
    let engine = Arc::new(
        Engine::from_toml(&format!(
            r#"{}
[[rules]]
name = "window"
match = {{ paths = ["/window"] }}
key = "subject"
algorithm = "fixed_window"
limit = 1
window = "100ms"

[[rules]]
name = "in-flight"
match = {{ paths = ["/held"] }}
key = "subject"
algorithm = "concurrency"
limit = 1
"#,
            store_section(&server, "acq:", "")
        ))
        .unwrap(),
    );
    let window = Request::new("GET", "/window").subject("alice");
    assert!(engine.check(&window).unwrap().allowed());
    let waited = engine.acquire(&window, Duration::from_secs(5)).unwrap();
    assert!(waited.allowed() && waited.store() == StoreUsed::Redis);

    let held = Request::new("GET", "/held").subject("alice");
    let mut first = engine.check(&held).unwrap();
    let permit = first.take_permit().unwrap();
    let releaser = {
        let engine = Arc::clone(&engine);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            engine.release(permit)
        })
    };
    let second = engine.acquire(&held, Duration::from_secs(5)).unwrap();
    assert!(second.allowed() && second.holds());
    assert!(releaser.join().unwrap());
}

#[test]
fn keys_administered_on_one_engine_are_so_for_every_engine() {
    use floodwall::KeyRef;
    let server = RedisServer::start();
    let config = format!(
        r#"{}
[[rules]]
name = "per-user"
match = {{ paths = ["/fixed"] }}
key = "subject"
algorithm = "fixed_window"
limit = 5
window = "1h"
block_for = "1m"

[[rules]]
name = "log"
match = {{ paths = ["/log"] }}
key = "subject"
algorithm = "sliding_window"
limit = 3
window = "1h"
"#,
        // Another process's deny cache sees a reset within a second; this test looks at once.
        store_section(&server, "adm:", "deny_cache = false")
    );
    let (admin, gateway) = (
        Engine::from_toml(&config).unwrap(),
        Engine::from_toml(&config).unwrap(),
    );
    let fixed = Request::new("GET", "/fixed").subject("alice");
    for _ in 0..2 {
        assert!(gateway.check(&fixed).unwrap().allowed());
    }
    let alice = KeyRef::new("per-user", "alice");
    let status = admin.inspect(&alice).unwrap();
    assert_eq!((status.remaining, status.store), (3, StoreUsed::Redis));
    admin.penalize(&alice, 3).unwrap();
    assert_eq!(gateway.inspect(&alice).unwrap().remaining, 0);
    admin.reward(&alice, 1).unwrap();
    assert!(gateway.check(&fixed).unwrap().allowed());
    admin.reset_key(&alice).unwrap();
    assert_eq!(gateway.inspect(&alice).unwrap().remaining, 5);
    assert_eq!(
        server
            .command(&format!(
                "EXISTS \"adm:{{{}/0/=alice}}f\"",
                stored_name(&admin, "per-user")
            ))
            .trim(),
        ":0"
    );
    admin.block_key(&alice, Duration::from_secs(30)).unwrap();
    let denied = gateway.check(&fixed).unwrap();
    assert!(!denied.allowed() && denied.blocked());
    assert!(denied.retry_after() <= Duration::from_secs(30));
    let ttl = server.pttl(&format!(
        "adm:{{{}/0/=alice}}!",
        stored_name(&admin, "per-user")
    ));
    assert!((25_000..=30_000).contains(&ttl), "PTTL {ttl}");
    admin.reset_key(&alice).unwrap();
    assert!(gateway.check(&fixed).unwrap().allowed());

    let log = Request::new("GET", "/log").subject("bob");
    for _ in 0..3 {
        assert!(gateway.check(&log).unwrap().allowed());
    }
    let bob = KeyRef::new("log", "bob");
    assert_eq!(admin.inspect(&bob).unwrap().remaining, 0);
    admin.reward(&bob, 2).unwrap();
    assert_eq!(admin.inspect(&bob).unwrap().remaining, 2);
    assert_eq!(
        server
            .command(&format!(
                "GET \"adm:{{{}/0/=bob}}s:total\"",
                stored_name(&admin, "log")
            ))
            .lines()
            .nth(1),
        Some("1")
    );
}
