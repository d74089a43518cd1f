//! Upstream selection through the engine: strategies, breakers skipping and recovering,
//! half-open probes under concurrency, leases finished, dropped and sent across threads,
//! run-time changes, events and configuration errors.

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use floodwall::balance::UpstreamConfig;
use floodwall::{BreakerState, CallOutcome, Engine, ErrorKind, ManualClock, Timestamp};

const T0: u64 = 1_700_000_000_000;

fn engine(toml: &str) -> (Engine, ManualClock) {
    let clock = ManualClock::new(Timestamp::from_millis(T0));
    let engine = Engine::from_toml(toml)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_clock(clock.clone());
    (engine, clock)
}

fn picks(engine: &Engine, service: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let lease = engine.pick(service).expect("an upstream");
            let name = lease.upstream().to_owned();
            lease.finish(CallOutcome::Success, Duration::from_millis(1));
            name
        })
        .collect()
}

fn counts(names: &[String]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for n in names {
        *counts.entry(n.clone()).or_default() += 1;
    }
    counts
}

#[test]
fn smooth_round_robin_is_exact_to_the_weights_over_each_cycle() {
    let (engine, _) = engine(
        r#"
        [services.api]
        upstreams = [
            { name = "a", url = "http://a", weight = 5 },
            { name = "b", url = "http://b", weight = 1 },
            { name = "c", url = "http://c", weight = 1 },
        ]
        "#,
    );
    let seq = picks(&engine, "api", 7 * 20);
    // nginx's smooth sequence: the heavy upstream is spread out, not sent 5 in a row.
    assert_eq!(seq[..7].join(""), "aabacaa");
    for cycle in seq.chunks(7) {
        let c = counts(cycle);
        assert_eq!((c["a"], c["b"], c["c"]), (5, 1, 1), "{cycle:?}");
    }
}

#[test]
fn least_connections_prefers_the_idle_upstream_under_skewed_latency() {
    let (engine, _) = engine(
        r#"
        [services.api]
        strategy = "least_connections"
        upstreams = [{ name = "slow", url = "http://slow" }, { name = "fast", url = "http://fast" }]
        "#,
    );
    // Calls to "slow" stay in flight (it answers late); calls to "fast" finish at once.
    let mut held = Vec::new();
    let mut to = HashMap::<String, usize>::new();
    for _ in 0..1000 {
        let lease = engine.pick("api").expect("an upstream");
        *to.entry(lease.upstream().to_owned()).or_default() += 1;
        if lease.upstream() == "slow" {
            held.push(lease);
        } else {
            lease.finish(CallOutcome::Success, Duration::from_millis(1));
        }
        // "slow" answers one call in fifty.
        if held.len() > 1 && to["fast"].is_multiple_of(50) {
            held.remove(0)
                .finish(CallOutcome::Success, Duration::from_secs(2));
        }
    }
    assert!(to["fast"] >= 950, "{to:?}");
    let status = engine.upstreams("api").expect("service");
    let slow = status.iter().find(|u| u.name == "slow").expect("slow");
    assert_eq!(slow.in_flight, held.len() as u64);
    drop(held);
    let status = engine.upstreams("api").expect("service");
    assert!(status.iter().all(|u| u.in_flight == 0));
}

#[test]
fn p2c_spreads_idle_traffic_and_avoids_the_loaded_upstream() {
    let (engine, _) = engine(
        r#"
        [services.api]
        strategy = "p2c"
        upstreams = [{ url = "http://a" }, { url = "http://b" }, { url = "http://c" }]
        "#,
    );
    let c = counts(&picks(&engine, "api", 3000));
    for url in ["http://a", "http://b", "http://c"] {
        assert!(c[url] > 600, "{c:?}");
    }
    // Sixty calls in flight, then those on "b" and "c" answer: of two candidates, "a" (with
    // its calls still in flight) always loses.
    let leases: Vec<_> = (0..60)
        .map(|_| engine.pick("api").expect("an upstream"))
        .collect();
    let (held, done): (Vec<_>, Vec<_>) = leases.into_iter().partition(|l| l.url() == "http://a");
    assert!(!held.is_empty());
    for lease in done {
        lease.finish(CallOutcome::Success, Duration::from_millis(1));
    }
    let c = counts(&picks(&engine, "api", 1000));
    assert_eq!(c.get("http://a"), None, "{c:?}");
}

const FLAKY: &str = r#"
[services.api]
upstreams = [{ name = "bad", url = "http://bad" }, { name = "good", url = "http://good" }]
breaker = { window = 10, min_calls = 4, failure_rate = 0.5, open_for = "1s", half_open_calls = 2 }
"#;

#[test]
fn a_failing_upstream_stops_receiving_traffic_and_recovers_after_it_heals() {
    let (engine, clock) = engine(FLAKY);
    let healthy = std::cell::Cell::new(false);
    let call = |engine: &Engine| {
        let lease = engine.pick("api").expect("an upstream");
        let name = lease.upstream().to_owned();
        let outcome = if name == "bad" && !healthy.get() {
            CallOutcome::Failure
        } else {
            CallOutcome::Success
        };
        lease.finish(outcome, Duration::from_millis(5));
        name
    };
    let first: Vec<String> = (0..8).map(|_| call(&engine)).collect();
    assert_eq!(
        counts(&first)["bad"],
        4,
        "round-robin until the breaker trips"
    );
    let status = engine.upstreams("api").expect("service");
    assert_eq!(
        status[0].state,
        BreakerState::Open {
            until: Timestamp::from_millis(T0 + 1000)
        }
    );
    // While open, everything goes to "good".
    assert!((0..100).all(|_| call(&engine) == "good"));

    // After open_for, "bad" gets exactly its two probes (it has healed), then closes and
    // takes its share again.
    clock.advance(Duration::from_secs(1));
    healthy.set(true);
    let after: Vec<String> = (0..20).map(|_| call(&engine)).collect();
    let c = counts(&after);
    assert_eq!((c["bad"], c["good"]), (10, 10), "{after:?}");
    assert_eq!(
        engine.upstreams("api").expect("service")[0].state,
        BreakerState::Closed
    );
    let events: Vec<String> = engine
        .breaker_events(0)
        .iter()
        .map(|e| format!("{}:{}->{}", e.upstream, e.transition.from, e.transition.to))
        .collect();
    assert_eq!(
        events,
        [
            "bad:closed->open",
            "bad:open->half_open",
            "bad:half_open->closed"
        ]
    );
    let last = engine.breaker_events(0).last().expect("events").seq;
    assert!(engine.breaker_events(last).is_empty());
}

#[test]
fn concurrent_callers_never_get_more_than_the_configured_probes() {
    for _ in 0..20 {
        let (engine, clock) = engine(
            r#"
            [services.api]
            upstreams = [{ url = "http://only" }]
            breaker = { window = 10, min_calls = 2, open_for = "1s", half_open_calls = 3 }
            "#,
        );
        for _ in 0..2 {
            engine
                .pick("api")
                .expect("closed")
                .finish(CallOutcome::Failure, Duration::ZERO);
        }
        clock.advance(Duration::from_secs(1));
        let engine = Arc::new(engine);
        let threads = 16;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (engine, barrier) = (Arc::clone(&engine), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    match engine.pick("api") {
                        Ok(lease) => {
                            assert!(lease.is_probe());
                            Some(lease)
                        }
                        Err(e) => {
                            assert_eq!(e.kind(), ErrorKind::NoUpstreamAvailable);
                            None
                        }
                    }
                })
            })
            .collect();
        let leases: Vec<_> = handles
            .into_iter()
            .filter_map(|h| h.join().expect("thread"))
            .collect();
        assert_eq!(leases.len(), 3);
        for lease in leases {
            lease.finish(CallOutcome::Success, Duration::ZERO);
        }
        assert_eq!(
            engine.upstreams("api").expect("service")[0].state,
            BreakerState::Closed
        );
    }
}

#[test]
fn no_in_flight_count_leaks_across_thousands_of_leases_and_threads() {
    let (engine, _) = engine(
        r#"
        [services.rr]
        upstreams = [{ url = "http://a" }, { url = "http://b", weight = 3 }]
        breaker = { min_calls = 100000, window = 100000 }

        [services.lc]
        strategy = "least_connections"
        upstreams = [{ url = "http://a" }, { url = "http://b" }, { url = "http://c" }]
        breaker = { min_calls = 100000, window = 100000 }

        [services.p2c]
        strategy = "p2c"
        upstreams = [{ url = "http://a" }, { url = "http://b" }, { url = "http://c" }]
        breaker = { min_calls = 100000, window = 100000 }
        "#,
    );
    let engine = Arc::new(engine);
    let (send, receive) = std::sync::mpsc::channel::<floodwall::Lease>();
    // One thread finishes leases picked by the others.
    let finisher = std::thread::spawn(move || {
        let mut n = 0u64;
        for lease in receive {
            lease.finish(CallOutcome::Timeout, Duration::from_millis(3));
            n += 1;
        }
        n
    });
    let per_thread = 3000u64;
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let engine = Arc::clone(&engine);
            let send = send.clone();
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for i in 0..per_thread {
                    let service = ["rr", "lc", "p2c"][(i % 3) as usize];
                    let lease = engine.pick(service).expect("an upstream");
                    match (i * 7 + t) % 4 {
                        0 => lease.finish(CallOutcome::Success, Duration::from_millis(1)),
                        1 => drop(lease),
                        2 => send.send(lease).expect("finisher alive"),
                        _ => held.push(lease),
                    }
                    if held.len() > 8 {
                        held.clear();
                    }
                }
            })
        })
        .collect();
    drop(send);
    for w in workers {
        w.join().expect("worker");
    }
    let finished_elsewhere = finisher.join().expect("finisher");
    assert!(finished_elsewhere > 0);
    let mut calls = 0;
    for service in ["rr", "lc", "p2c"] {
        for u in engine.upstreams(service).expect("service") {
            assert_eq!(u.in_flight, 0, "{service}/{}", u.name);
            assert_eq!(
                u.stats.calls,
                u.stats.successes + u.stats.failures + u.stats.timeouts
            );
            calls += u.stats.calls;
        }
    }
    assert_eq!(calls, 4 * per_thread, "every lease recorded exactly once");
}

#[test]
fn dropped_leases_count_as_failures_with_their_elapsed_time() {
    let (engine, clock) = engine(FLAKY);
    let lease = engine.pick("api").expect("an upstream");
    let name = lease.upstream().to_owned();
    clock.advance(Duration::from_millis(250));
    drop(lease);
    let status = engine.upstreams("api").expect("service");
    let u = status.iter().find(|u| u.name == name).expect("upstream");
    assert_eq!((u.stats.calls, u.stats.failures), (1, 1));
    assert_eq!(u.stats.max_latency, Duration::from_millis(250));
    assert_eq!(u.stats.mean_latency, Duration::from_millis(250));
    assert_eq!(u.stats.ewma_latency, Duration::from_millis(250));
}

#[test]
fn when_nothing_can_take_the_call_pick_says_when_to_come_back() {
    let (engine, clock) = engine(FLAKY);
    engine
        .set_upstream_down("api", "good", true)
        .expect("known");
    for _ in 0..4 {
        let lease = engine.pick("api").expect("bad is still closed");
        assert_eq!(lease.upstream(), "bad");
        lease.finish(CallOutcome::Failure, Duration::ZERO);
    }
    let e = engine.pick("api").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoUpstreamAvailable);
    assert_eq!(e.http_status(), 503);
    assert_eq!(e.available_at(), Some(Timestamp::from_millis(T0 + 1000)));
    assert!(e.message().contains("good (marked down)"), "{e}");
    assert!(e.message().contains("bad (open for 1000 ms more)"), "{e}");

    engine
        .set_upstream_down("api", "good", false)
        .expect("known");
    assert_eq!(engine.pick("api").expect("good is up").upstream(), "good");
    engine.reset_breaker("api", "bad").expect("known");
    clock.advance(Duration::from_millis(1));
    let c = counts(&picks(&engine, "api", 10));
    assert_eq!((c["bad"], c["good"]), (5, 5));

    assert_eq!(
        engine.pick("nope").unwrap_err().kind(),
        ErrorKind::UnknownService
    );
    assert_eq!(
        engine
            .set_upstream_down("api", "nope", true)
            .unwrap_err()
            .kind(),
        ErrorKind::UnknownUpstream
    );
}

#[test]
fn upstreams_are_added_and_removed_while_serving() {
    let (engine, _) = engine(FLAKY);
    let held = engine.pick("api").expect("an upstream");
    let held_on = held.upstream().to_owned();
    engine.remove_upstream("api", &held_on).expect("known");
    let mut third = UpstreamConfig::new("http://third");
    third.name = Some("third".into());
    third.weight = 2;
    engine.add_upstream("api", &third).expect("added");
    assert_eq!(
        engine.add_upstream("api", &third).unwrap_err().kind(),
        ErrorKind::InvalidConfig
    );
    let c = counts(&picks(&engine, "api", 30));
    assert_eq!(c.get(held_on.as_str()), None);
    assert_eq!(c["third"], 20);
    // The lease on the removed upstream still finishes.
    held.finish(CallOutcome::Success, Duration::ZERO);
}

#[test]
fn invalid_service_configurations_name_the_field() {
    for (body, field, words) in [
        ("upstreams = []", "services.api.upstreams", "at least one"),
        (
            "upstreams = [{ url = \"x\", weight = 0 }]",
            "services.api.upstreams[0].weight",
            "1 to 10000",
        ),
        (
            "upstreams = [{ url = \"x\" }, { url = \"x\" }]",
            "services.api.upstreams[1]",
            "duplicate upstream",
        ),
        (
            "upstreams = [{ url = \"x\" }]\nbreaker = { failure_rate = 0 }",
            "services.api.breaker.failure_rate",
            "(0, 1]",
        ),
        (
            "upstreams = [{ url = \"x\" }]\nbreaker = { failure_rate = 1.5 }",
            "services.api.breaker.failure_rate",
            "(0, 1]",
        ),
        (
            "upstreams = [{ url = \"x\" }]\nbreaker = { window = 0 }",
            "services.api.breaker.window",
            "at least 1",
        ),
        (
            "upstreams = [{ url = \"x\" }]\nbreaker = { window = 5, min_calls = 10 }",
            "services.api.breaker.min_calls",
            "never trip",
        ),
        (
            "upstreams = [{ url = \"x\" }]\nbreaker = { open_for = \"10s\", max_open_for = \"5s\" }",
            "services.api.breaker.max_open_for",
            "shorter than open_for",
        ),
        (
            "upstreams = [{ url = \"x\" }]\nbreaker = { backoff = 0.5 }",
            "services.api.breaker.backoff",
            "at least 1",
        ),
        (
            "upstreams = [{ url = \"x\" }]\nbreaker = { half_open_calls = 0 }",
            "services.api.breaker.half_open_calls",
            "at least 1",
        ),
        (
            "upstreams = [{ url = \"x\" }]\nstrategy = \"random\"",
            "services.api.strategy",
            "unknown variant",
        ),
        (
            "upstreams = [{ url = \"x\" }]\nbreaker = { windw = 5 }",
            "services.api.breaker.windw",
            "unknown field",
        ),
    ] {
        let e = Engine::from_toml(&format!("[services.api]\n{body}\n")).expect_err(body);
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{body}");
        assert_eq!(e.field(), Some(field), "{body}: {e}");
        assert!(e.message().contains(words), "{body}: {e}");
    }
}

#[test]
fn breaker_events_of_an_upstream_form_a_chain_under_concurrency() {
    let clock = ManualClock::new(Timestamp::from_millis(T0));
    let engine = Arc::new(
        Engine::from_toml(
            r#"
            [services.api]
            upstreams = [{ url = "http://only" }]
            breaker = { window = 1, min_calls = 1, open_for = "1ms", half_open_calls = 1 }
            "#,
        )
        .expect("config")
        .with_clock(clock.clone()),
    );
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let (engine, clock) = (Arc::clone(&engine), clock.clone());
            std::thread::spawn(move || {
                for i in 0..2_000u64 {
                    if let Ok(lease) = engine.pick("api") {
                        let outcome = if (i + t) % 3 == 0 {
                            CallOutcome::Failure
                        } else {
                            CallOutcome::Success
                        };
                        lease.finish(outcome, Duration::ZERO);
                    }
                    if i % 16 == 0 {
                        clock.advance(Duration::from_millis(1));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let events = engine.breaker_events(0);
    assert!(events.len() > 10, "{}", events.len());
    for pair in events.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
        assert_eq!(
            pair[1].transition.from.as_str(),
            pair[0].transition.to.as_str(),
            "{:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn a_dropped_probe_reopens_and_a_hung_one_is_given_up_on() {
    let (engine, clock) = engine(
        r#"
        [services.api]
        upstreams = [{ url = "http://only" }]
        breaker = { window = 10, min_calls = 2, open_for = "1s", half_open_calls = 1 }
        "#,
    );
    let fail = |engine: &Engine| {
        engine
            .pick("api")
            .expect("closed")
            .finish(CallOutcome::Failure, Duration::ZERO)
    };
    fail(&engine);
    fail(&engine);
    clock.advance(Duration::from_secs(1));
    drop(engine.pick("api").expect("the probe"));
    assert!(matches!(
        engine.upstreams("api").expect("service")[0].state,
        BreakerState::Open { .. }
    ));
    // A probe that never reports: after open_for the breaker stops waiting and reopens.
    clock.advance(Duration::from_secs(1));
    let hung = engine.pick("api").expect("the next probe");
    let e = engine.pick("api").unwrap_err();
    assert_eq!(
        e.available_at(),
        Some(Timestamp::from_millis(T0 + 3000)),
        "{e}"
    );
    clock.advance(Duration::from_secs(1));
    let e = engine.pick("api").unwrap_err();
    assert!(e.message().contains("open for 1000 ms more"), "{e}");
    std::mem::forget(hung);
}

#[test]
fn round_robin_keeps_exact_shares_among_the_upstreams_left() {
    let (engine, _) = engine(
        r#"
        [services.api]
        upstreams = [
            { name = "a", url = "http://a", weight = 3 },
            { name = "b", url = "http://b", weight = 2 },
            { name = "c", url = "http://c", weight = 1 },
        ]
        "#,
    );
    engine.set_upstream_down("api", "a", true).expect("known");
    let seq = picks(&engine, "api", 30);
    for cycle in seq.chunks(3) {
        let c = counts(cycle);
        assert_eq!((c["b"], c["c"]), (2, 1), "{cycle:?}");
    }
    engine.set_upstream_down("api", "a", false).expect("known");
    let c = counts(&picks(&engine, "api", 60));
    assert_eq!((c["a"], c["b"], c["c"]), (30, 20, 10));
}

#[test]
fn least_connections_and_p2c_skip_upstreams_marked_down() {
    for strategy in ["least_connections", "p2c"] {
        let (engine, _) = engine(&format!(
            r#"
            [services.api]
            strategy = "{strategy}"
            upstreams = [{{ name = "a", url = "http://a" }}, {{ name = "b", url = "http://b" }}]
            "#
        ));
        engine.set_upstream_down("api", "a", true).expect("known");
        assert!(
            picks(&engine, "api", 50).iter().all(|u| u == "b"),
            "{strategy}"
        );
        engine.set_upstream_down("api", "a", false).expect("known");
        let c = counts(&picks(&engine, "api", 50));
        assert!(c["a"] > 0 && c["b"] > 0, "{strategy}: {c:?}");
    }
}

#[test]
fn the_last_upstream_cannot_be_removed() {
    let (engine, _) = engine("[services.api]\nupstreams = [{ url = \"http://only\" }]\n");
    let e = engine.remove_upstream("api", "http://only").unwrap_err();
    assert!(e.message().contains("last upstream"), "{e}");
    assert!(engine.pick("api").is_ok());
}

#[test]
fn finish_now_takes_the_time_since_the_pick_by_the_engines_clock() {
    let (engine, clock) = engine(
        r#"
        [services.api]
        upstreams = [{ url = "http://127.0.0.1:9001", name = "a" }]
        "#,
    );
    let lease = engine.pick("api").expect("an upstream");
    clock.advance(Duration::from_millis(25));
    lease.finish_now(CallOutcome::Timeout);
    let a = &engine.upstreams("api").expect("the service")[0];
    assert_eq!(a.stats.timeouts, 1);
    assert_eq!(a.stats.max_latency, Duration::from_millis(25));
}

#[test]
fn fractional_milliseconds_become_whole_nanoseconds() {
    use floodwall::clock::duration_from_millis;
    assert_eq!(
        duration_from_millis(1.5),
        Some(Duration::from_micros(1_500))
    );
    assert_eq!(duration_from_millis(0.0), Some(Duration::ZERO));
    assert_eq!(duration_from_millis(0.1), Some(Duration::from_micros(100)));
    for bad in [-0.001, f64::NAN, f64::INFINITY] {
        assert_eq!(duration_from_millis(bad), None, "{bad}");
    }
}
