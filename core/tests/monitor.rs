//! Monitoring: the in-memory aggregate under explicit timestamps (per-minute series and peaks,
//! breaches, bounded top lists, latency percentiles, many threads), and the engine recording
//! its own decisions, refusals, upstream calls and the host's responses under a manual clock,
//! down to the report and the Prometheus text.

use std::time::Duration;

use floodwall::monitor::{
    Aggregator, DecisionEvent, Event, EventOutcome, ResponseEvent, TopEntry, TopK, UpstreamEvent,
    merge,
};
use floodwall::{CallOutcome, Engine, ErrorKind, ManualClock, Request, StoreUsed, Timestamp};

const MINUTE: u64 = 60_000;

fn at(minute: u64, second: u64) -> Timestamp {
    // An arbitrary day, so that minutes are not near zero.
    Timestamp::from_millis(
        1_795_000_000_000 - 1_795_000_000_000 % MINUTE + minute * MINUTE + second * 1000,
    )
}

fn decision(t: Timestamp, outcome: EventOutcome) -> DecisionEvent<'static> {
    DecisionEvent {
        at: t,
        endpoint: Some(("get", "/api/orders?page=2")),
        subject: Some("alice"),
        role: Some("free"),
        outcome,
        rule: None,
        error: None,
        store: Some(StoreUsed::Memory),
        shadow_rule: None,
        allowlisted: false,
        blocked: false,
    }
}

fn keyed(entries: &[TopEntry]) -> Vec<(String, u64)> {
    entries.iter().map(|e| (e.key.clone(), e.count)).collect()
}

fn minutes_of(report: &floodwall::monitor::Report) -> Vec<(u64, u64)> {
    report
        .per_minute
        .iter()
        .map(|m| ((m.start_ms - at(0, 0).as_millis()) / MINUTE, m.requests))
        .collect()
}

#[test]
fn minutes_peaks_and_the_horizon() {
    let monitor = Aggregator::new(10, 8);
    // Minute 0: 3 requests; minute 2: 7 (a surge); minute 5: 1.
    for (minute, n) in [(0, 3), (2, 7), (5, 1)] {
        for i in 0..n {
            monitor.record(&Event::Decision(decision(
                at(minute, i),
                EventOutcome::Admitted,
            )));
        }
    }
    let report = monitor.report(at(9, 59));
    assert_eq!(minutes_of(&report), [(0, 3), (2, 7), (5, 1)]);
    assert_eq!(report.peaks[0].requests, 7, "the surge is the first peak");
    assert_eq!(report.peaks[0].start_ms, at(2, 0).as_millis());
    assert_eq!(report.peaks.len(), 3);
    assert_eq!(report.totals.requests, 11);
    assert_eq!(
        keyed(&report.top_endpoints),
        [("GET /api/orders".into(), 11)],
        "method upper-cased, query dropped"
    );

    // Minute 12 reuses minute 2's slot; minutes 0 and 2 leave the horizon.
    for s in 0..2 {
        monitor.record(&Event::Decision(decision(
            at(12, s),
            EventOutcome::Admitted,
        )));
    }
    let report = monitor.report(at(12, 30));
    assert_eq!(minutes_of(&report), [(5, 1), (12, 2)]);
    assert_eq!(report.totals.requests, 13, "totals keep everything");

    // An event older than the horizon counts in the totals only.
    monitor.record(&Event::Decision(decision(at(1, 0), EventOutcome::Admitted)));
    let report = monitor.report(at(12, 30));
    assert_eq!(report.per_minute.len(), 2);
    assert_eq!(report.totals.requests, 14);
    // A report asked for an earlier time leaves out later minutes.
    assert_eq!(
        minutes_of(&monitor.report(at(6, 0))),
        [(0, 3), (1, 1), (5, 1)]
    );
}

#[test]
fn breaches_rejections_upstreams_responses_and_stores() {
    let monitor = Aggregator::new(60, 8);
    let t = at(3, 0);
    for (subject, role, n) in [
        ("mallory", "free", 5),
        ("bob", "free", 2),
        ("carol", "premium", 1),
    ] {
        for _ in 0..n {
            monitor.record(&Event::Decision(DecisionEvent {
                subject: Some(subject),
                role: Some(role),
                rule: Some("per-user"),
                store: Some(StoreUsed::Redis),
                ..decision(t, EventOutcome::RateLimited)
            }));
        }
    }
    for kind in [
        ErrorKind::Expired,
        ErrorKind::Expired,
        ErrorKind::BadSignature,
    ] {
        monitor.record(&Event::Decision(DecisionEvent {
            endpoint: None,
            subject: None,
            role: None,
            error: Some(kind),
            store: None,
            ..decision(t, EventOutcome::AuthRejected)
        }));
    }
    monitor.record(&Event::Decision(DecisionEvent {
        error: Some(ErrorKind::StoreUnavailable),
        store: None,
        ..decision(t, EventOutcome::Failed)
    }));
    for (outcome, tripped) in [
        (CallOutcome::Failure, false),
        (CallOutcome::Timeout, true),
        (CallOutcome::Success, false),
    ] {
        monitor.record(&Event::Upstream(UpstreamEvent {
            at: t,
            service: "orders",
            upstream: "orders-a",
            outcome,
            latency: Duration::from_millis(3),
            tripped,
        }));
    }
    // Responses: 98 quick ones (about 1 ms) and 2 slow ones (about 2 s).
    for i in 0..100u64 {
        let latency = if i < 98 {
            Duration::from_micros(900 + i)
        } else {
            Duration::from_secs(2)
        };
        monitor.record(&Event::Response(ResponseEvent {
            at: t,
            method: "GET",
            path: "/api/orders",
            status: if i < 90 {
                200
            } else if i < 98 {
                429
            } else {
                502
            },
            latency,
        }));
    }

    let report = monitor.report(t);
    assert_eq!(
        keyed(&report.breaches_by_subject),
        [
            ("mallory".into(), 5),
            ("bob".into(), 2),
            ("carol".into(), 1)
        ]
    );
    assert_eq!(
        keyed(&report.breaches_by_role),
        [("free".into(), 7), ("premium".into(), 1)]
    );
    assert_eq!(
        keyed(&report.breaches_by_endpoint),
        [("GET /api/orders".into(), 8)]
    );
    assert_eq!(keyed(&report.breaches_by_rule), [("per-user".into(), 8)]);
    assert_eq!(report.auth_rejections.get("expired"), Some(&2));
    assert_eq!(report.auth_rejections.get("bad_signature"), Some(&1));
    assert_eq!(report.errors.get("store_unavailable"), Some(&1));
    assert_eq!(
        keyed(&report.upstream_failures),
        [("orders/orders-a".into(), 2)]
    );
    assert_eq!(
        keyed(&report.breaker_trips),
        [("orders/orders-a".into(), 1)]
    );
    assert_eq!(report.stores.get("redis"), Some(&8));
    assert_eq!(
        report.stores.get("memory"),
        None,
        "refusals consult no store"
    );
    let totals = &report.totals;
    assert_eq!(totals.requests, 12, "8 breaches, 3 refusals, 1 failure");
    assert_eq!(
        (totals.rate_limited, totals.auth_rejected, totals.failed),
        (8, 3, 1)
    );
    assert_eq!((totals.upstream_calls, totals.upstream_failures), (3, 2));
    assert_eq!(totals.breaker_trips, 1);
    assert_eq!(
        (totals.responses, totals.client_errors, totals.server_errors),
        (100, 8, 2)
    );
    // The median lies in the 500 µs – 1 ms bucket, the 99th percentile in the slow calls'.
    assert!(
        (500..=1_000).contains(&totals.latency_p50_us),
        "{}",
        totals.latency_p50_us
    );
    assert!(
        (1_000_000..=2_000_000).contains(&totals.latency_p99_us),
        "{}",
        totals.latency_p99_us
    );
    assert_eq!(totals.max_latency_us, 2_000_000);
    assert_eq!(report.per_minute[0].responses, 100);
    assert_eq!(report.status_classes.get("2xx"), Some(&90));
    assert_eq!(report.status_classes.get("4xx"), Some(&8));
    assert_eq!(report.status_classes.get("5xx"), Some(&2));
    assert_eq!(report.response_latency.count, 100);
    assert_eq!(report.response_latency.counts.iter().sum::<u64>(), 100);
    // The refusals without an endpoint do not count as requests of any endpoint.
    assert_eq!(report.top_endpoints[0].count, 9);

    let json = serde_json::to_value(&report).expect("a report is JSON");
    for field in [
        "generated_at_ms",
        "horizon_minutes",
        "source",
        "per_minute",
        "peaks",
        "totals",
        "top_endpoints",
        "top_subjects",
        "breaches_by_subject",
        "breaches_by_role",
        "breaches_by_endpoint",
        "breaches_by_rule",
        "auth_rejections",
        "errors",
        "upstream_failures",
        "breaker_trips",
        "stores",
        "status_classes",
        "response_latency",
        "sink",
    ] {
        assert!(json.get(field).is_some(), "{field} in {json}");
    }
    assert_eq!(json["source"], "memory");
    assert_eq!(json["totals"]["latency_p50_us"], totals.latency_p50_us);
}

#[test]
fn top_lists_are_bounded_and_keep_the_heavy_hitters() {
    let mut top = TopK::new(8);
    // Two heavy hitters among 10,000 keys seen once each. Of 17,500 counts, a sketch of 8
    // is sure to hold every key seen more than 17,500 / 8 = 2,187 times.
    for i in 0..10_000u64 {
        top.add(&format!("light-{i}"), 1);
        if i % 2 == 0 {
            top.add("heavy-a", 1);
        }
        if i % 4 == 0 {
            top.add("heavy-b", 1);
        }
    }
    assert_eq!(top.len(), 8, "never more than its capacity");
    let entries = top.top(2);
    assert_eq!(entries[0].key, "heavy-a");
    assert_eq!(entries[1].key, "heavy-b");
    // Counts are upper bounds whose error is reported: true counts are 5,000 and 2,500.
    assert!(entries[0].count >= 5000 && entries[0].count - entries[0].error <= 5000);
    assert!(entries[1].count >= 2500 && entries[1].count - entries[1].error <= 2500);

    // Exact while nothing is replaced.
    let mut small = TopK::new(4);
    for key in ["a", "b", "a", "c", "a", "b"] {
        small.add(key, 1);
    }
    let exact: Vec<(String, u64, u64)> = small
        .top(10)
        .into_iter()
        .map(|e| (e.key, e.count, e.error))
        .collect();
    assert_eq!(
        exact,
        [("a".into(), 3, 0), ("b".into(), 2, 0), ("c".into(), 1, 0)]
    );
}

#[test]
fn merged_sketches_keep_upper_bounds() {
    // Two shards: "x" is heavy in both; "y" only in the first, which the second (full) may
    // have dropped, so its count there is bounded by the second's smallest count.
    let mut one = TopK::new(2);
    let mut two = TopK::new(2);
    for _ in 0..10 {
        one.add("x", 1);
        two.add("x", 1);
    }
    for _ in 0..4 {
        one.add("y", 1);
    }
    two.add("z", 3);
    let merged = merge(&[&one, &two], 3);
    assert_eq!(merged[0].key, "x");
    assert_eq!((merged[0].count, merged[0].error), (20, 0));
    let y = merged.iter().find(|e| e.key == "y").expect("y is held");
    // True count 4; the second sketch is full with smallest count 3.
    assert_eq!((y.count, y.error), (7, 3));
    assert!(y.count - y.error <= 4);
}

#[test]
fn recording_from_many_threads_loses_nothing() {
    // 6,000 decisions in all: even should the four threads share one shard, its minute stays
    // within EXACT_PER_MINUTE, so the top lists are exact too.
    let monitor = std::sync::Arc::new(Aggregator::new(5, 4));
    let t = at(1, 0);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let monitor = std::sync::Arc::clone(&monitor);
            std::thread::spawn(move || {
                for _ in 0..1_500 {
                    let outcome = if i == 0 {
                        EventOutcome::RateLimited
                    } else {
                        EventOutcome::Admitted
                    };
                    monitor.record(&Event::Decision(decision(t, outcome)));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a recording thread");
    }
    let report = monitor.report(t);
    assert_eq!(report.totals.requests, 6_000);
    assert_eq!(report.per_minute[0].requests, 6_000);
    assert_eq!(report.per_minute[0].rate_limited, 1_500);
    assert_eq!(
        keyed(&report.top_endpoints),
        [("GET /api/orders".into(), 6_000)]
    );
    assert_eq!(
        keyed(&report.breaches_by_subject),
        [("alice".into(), 1_500)]
    );
}

const SECRET: &str = "an-hmac-secret-of-at-least-thirty-two-bytes";

fn engine_at(toml: &str, start: Timestamp) -> (Engine, ManualClock) {
    let clock = ManualClock::new(start);
    let engine = Engine::from_toml(toml)
        .expect("a valid configuration")
        .with_clock(clock.clone());
    (engine, clock)
}

#[test]
fn the_engine_records_its_decisions_calls_and_the_hosts_responses() {
    let start = at(0, 0);
    let (engine, clock) = engine_at(
        &format!(
            r#"
            [auth]
            algorithms = ["HS256"]
            keys = [{{ secret = "{SECRET}" }}]
            role_claim = "role"
            default_role = "free"

            [[rules]]
            name = "per-user"
            key = "subject"
            algorithm = "fixed_window"
            limit = 2
            window = "1m"
            roles.premium = {{ limit = 5 }}

            [services.orders]
            upstreams = [{{ url = "http://127.0.0.1:9001", name = "a" }}]
            breaker = {{ min_calls = 2, failure_rate = 0.5, window = "10s", open_for = "5s" }}

            [monitor]
            horizon = "10m"
            top = 3
            "#
        ),
        start,
    );
    let exp = start.as_millis() / 1000 + 3600;
    let free = jwt(&format!(r#"{{"sub":"bob","exp":{exp}}}"#));
    let premium = jwt(&format!(r#"{{"sub":"pat","role":"premium","exp":{exp}}}"#));
    let request = Request::new("GET", "/api/orders/7?x=1");
    // Minute 0: bob passes twice and is limited once; pat passes three times.
    let allowed: Vec<bool> = (0..3)
        .map(|_| {
            engine
                .authorize(&free, &request)
                .expect("bob")
                .decision
                .allowed()
        })
        .collect();
    assert_eq!(allowed, [true, true, false]);
    for _ in 0..3 {
        let authorized = engine.authorize(&premium, &request).expect("pat");
        assert!(authorized.decision.allowed(), "premium has a higher limit");
    }
    // A malformed token through authorize (with its endpoint) and through authenticate.
    assert!(engine.authorize("Bearer nope", &request).is_err());
    assert!(engine.authenticate("Bearer nope").is_err());
    // A plain check with no subject in minute 1.
    clock.advance(Duration::from_secs(60));
    engine
        .check(&Request::new("POST", "/api/orders").ip("192.0.2.1"))
        .expect("a check");
    // Two failing calls trip the breaker.
    for _ in 0..2 {
        let lease = engine.pick("orders").expect("an upstream");
        lease.finish(CallOutcome::Failure, Duration::from_millis(20));
    }
    engine.record_response("GET", "/api/orders/7", 502, Duration::from_millis(25));
    engine.record_response("GET", "/api/orders/7", 200, Duration::from_millis(2));

    let report = engine.report();
    assert_eq!(report.store_kind, Some("memory"));
    assert_eq!(report.horizon_minutes, 10);
    assert_eq!(report.generated_at_ms, clock_now_ms(&engine));
    let series: Vec<(u64, u64, u64, u64)> = report
        .per_minute
        .iter()
        .map(|m| {
            (
                (m.start_ms - start.as_millis()) / MINUTE,
                m.requests,
                m.rate_limited,
                m.auth_rejected,
            )
        })
        .collect();
    // Minute 0: 6 authorizations and 2 refusals; minute 1: one check (the subject-keyed
    // rule does not match a request without a subject, so it is admitted).
    assert_eq!(series, [(0, 8, 1, 2), (1, 1, 0, 0)]);
    assert_eq!(report.totals.admitted, 6);
    assert_eq!(keyed(&report.breaches_by_subject), [("bob".into(), 1)]);
    assert_eq!(
        keyed(&report.top_subjects),
        [("bob".into(), 3), ("pat".into(), 3)],
        "callers by decisions, refusals (no subject) and the anonymous check left out"
    );
    assert_eq!(keyed(&report.breaches_by_role), [("free".into(), 1)]);
    assert_eq!(keyed(&report.breaches_by_rule), [("per-user".into(), 1)]);
    assert_eq!(
        keyed(&report.top_endpoints),
        [
            ("GET /api/orders/7".into(), 7),
            ("POST /api/orders".into(), 1)
        ]
    );
    assert_eq!(report.auth_rejections.get("malformed_token"), Some(&2));
    assert_eq!(report.stores.get("memory"), Some(&7));
    assert_eq!(report.totals.upstream_calls, 2);
    assert_eq!(keyed(&report.upstream_failures), [("orders/a".into(), 2)]);
    assert_eq!(keyed(&report.breaker_trips), [("orders/a".into(), 1)]);
    assert_eq!(report.per_minute[1].breaker_trips, 1);
    assert_eq!(report.totals.responses, 2);
    assert_eq!(report.totals.server_errors, 1);
    assert_eq!(report.totals.max_latency_us, 25_000);
    assert!(report.sink.is_none());

    let text = engine.prometheus();
    for line in [
        "# TYPE floodwall_decisions_total counter",
        "floodwall_decisions_total{outcome=\"admitted\"} 6",
        "floodwall_decisions_total{outcome=\"rate_limited\"} 1",
        "floodwall_decisions_total{outcome=\"auth_rejected\"} 2",
        "floodwall_rate_limited_total{rule=\"per-user\"} 1",
        "floodwall_auth_rejections_total{reason=\"malformed_token\"} 2",
        "floodwall_store_decisions_total{store=\"memory\"} 7",
        "# TYPE floodwall_store_state gauge",
        "floodwall_store_state{store=\"memory\"} 0",
        "floodwall_responses_total{class=\"5xx\"} 1",
        "floodwall_response_duration_seconds_bucket{le=\"0.0025\"} 1",
        "floodwall_response_duration_seconds_bucket{le=\"+Inf\"} 2",
        "floodwall_response_duration_seconds_count 2",
        "floodwall_upstream_calls_total{service=\"orders\",upstream=\"a\",outcome=\"failure\"} 2",
        "floodwall_upstream_up{service=\"orders\",upstream=\"a\"} 0",
        "floodwall_upstream_in_flight{service=\"orders\",upstream=\"a\"} 0",
        "floodwall_breaker_trips_total{upstream=\"orders/a\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
    }
    // Every sample follows its family's TYPE line.
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split(' ').next().unwrap_or("").to_owned());
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| typed.contains(*f))
                .unwrap_or(name);
            assert!(typed.contains(family), "{line:?} before its TYPE");
        }
    }
}

fn clock_now_ms(engine: &Engine) -> u64 {
    engine.now().as_millis()
}

fn jwt(claims: &str) -> String {
    let claims: serde_json::Value = serde_json::from_str(claims).expect("claims");
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("a token");
    format!("Bearer {token}")
}

#[test]
fn prometheus_escapes_label_values() {
    let (engine, _) = engine_at(
        r#"
        [services.orders]
        upstreams = [{ url = "http://127.0.0.1:9001", name = "we\"ird\\one" }]
        "#,
        at(0, 0),
    );
    engine
        .pick("orders")
        .expect("an upstream")
        .finish(CallOutcome::Success, Duration::from_millis(1));
    let text = engine.prometheus();
    let line = r#"floodwall_upstream_up{service="orders",upstream="we\"ird\\one"} 1"#;
    assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
}

#[test]
fn busy_minutes_sample_the_top_lists_and_count_the_rest_exactly() {
    use floodwall::monitor::{EXACT_PER_MINUTE, SAMPLE};
    let monitor = Aggregator::new(5, 4);
    let t = at(1, 0);
    // One thread (one shard): 100,000 decisions in a minute, a tenth of them limited, 90 %
    // from "heavy" and the rest from 10,000 one-off callers.
    let n = 100_000u64;
    let callers: Vec<String> = (0..n).map(|i| format!("caller-{i}")).collect();
    for i in 0..n {
        let outcome = if i % 10 == 0 {
            EventOutcome::RateLimited
        } else {
            EventOutcome::Admitted
        };
        let subject = if i % 10 < 9 {
            "heavy"
        } else {
            &callers[i as usize]
        };
        monitor.record(&Event::Decision(DecisionEvent {
            subject: Some(subject),
            rule: Some("per-user"),
            ..decision(t, outcome)
        }));
    }
    let report = monitor.report(t);
    // The counters are exact.
    assert_eq!(report.per_minute[0].requests, n);
    assert_eq!(report.totals.rate_limited, n / 10);
    assert_eq!(
        keyed(&report.breaches_by_rule),
        [("per-user".into(), n / 10)]
    );
    assert_eq!(keyed(&report.breaches_by_role), [("free".into(), n / 10)]);
    // The top lists: exact for the first EXACT_PER_MINUTE, then a sample in SAMPLE weighted
    // SAMPLE times; the heavy hitters come out first, within a few percent.
    let near = |estimate: u64, truth: u64| estimate.abs_diff(truth) * 20 <= truth;
    let endpoint = &report.top_endpoints[0];
    assert_eq!(endpoint.key, "GET /api/orders");
    assert!(near(endpoint.count, n), "{endpoint:?}");
    assert_eq!(endpoint.count % SAMPLE, EXACT_PER_MINUTE % SAMPLE);
    let heavy = &report.top_subjects[0];
    assert_eq!(heavy.key, "heavy");
    assert!(near(heavy.count, n * 9 / 10), "{heavy:?}");
    assert_eq!(report.breaches_by_subject[0].key, "heavy");
    assert!(
        near(report.breaches_by_subject[0].count, n / 10),
        "{report:?}"
    );
}

#[test]
fn paths_are_recorded_in_normal_form_whether_or_not_a_rule_reads_them() {
    // No rule reads the path here, so `check` leaves it as given: the monitor normalises it.
    let one_rule = r#"
        [[rules]]
        name = "per-user"
        key = "subject"
        algorithm = "fixed_window"
        limit = 100
        window = "1m"
    "#;
    for (http, expected) in [
        ("", "GET /api/orders"),
        ("[http]\ncase_sensitive = true\n", "GET /API/orders"),
    ] {
        let (engine, _clock) = engine_at(&format!("{http}{one_rule}"), at(0, 0));
        for target in [
            "/API/orders",
            "/API//orders/?page=2",
            "http://host/API/./orders#top",
        ] {
            engine
                .check(&Request::new("GET", target).subject("alice"))
                .expect("checked");
        }
        engine.record_response("GET", "/API/orders/", 200, Duration::from_millis(1));
        let report = engine.report();
        assert_eq!(
            keyed(&report.top_endpoints),
            [(expected.into(), 3)],
            "{http:?}"
        );
        assert_eq!(report.totals.responses, 1);
    }

    // On its own, an aggregate puts paths in normal form and keeps their case.
    let aggregate = Aggregator::new(10, 8);
    for path in ["/Api/x/", "/Api//x?q", "/Api/%78"] {
        aggregate.record(&Event::Decision(DecisionEvent {
            endpoint: Some(("GET", path)),
            ..decision(at(0, 0), EventOutcome::Admitted)
        }));
    }
    assert_eq!(
        keyed(&aggregate.report(at(0, 1)).top_endpoints),
        [("GET /Api/x".into(), 3)]
    );
}

#[test]
fn busy_threads_count_exactly_while_reports_are_taken() {
    // Past EXACT_PER_MINUTE a thread counts most admissions in its own lane, without a lock;
    // every count must still come out exact, whenever a report is taken, across minutes and
    // across threads that exit and are replaced.
    use floodwall::monitor::EXACT_PER_MINUTE;
    let monitor = Aggregator::new(10, 4);
    let per_minute = 3 * EXACT_PER_MINUTE;
    let record = |minute: u64, outcome: EventOutcome| {
        let store = Some(if minute == 1 {
            StoreUsed::Fallback
        } else {
            StoreUsed::Memory
        });
        let event = DecisionEvent {
            store,
            ..decision(at(minute, 0), outcome)
        };
        monitor.record(&Event::Decision(event));
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Reports taken while the threads record: never more than was recorded, never less
        // than an earlier report.
        let reader = scope.spawn(|| {
            let mut last = 0;
            let mut reports = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) && reports < 10_000 {
                let report = monitor.report(at(2, 0));
                let total = report.totals.requests;
                assert!(total >= last, "{total} after {last}");
                assert!(total <= 2 * 4 * 3 * per_minute);
                assert_eq!(
                    report.per_minute.iter().map(|m| m.requests).sum::<u64>(),
                    total
                );
                last = total;
                reports += 1;
            }
        });
        // Two generations of four threads (the second reuses the first's lanes), each
        // recording three minutes, every tenth decision rate limited.
        for _generation in 0..2 {
            let writers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        for minute in 0..3 {
                            for i in 0..per_minute {
                                let outcome = if i % 10 == 0 {
                                    EventOutcome::RateLimited
                                } else {
                                    EventOutcome::Admitted
                                };
                                record(minute, outcome);
                            }
                        }
                    })
                })
                .collect();
            for writer in writers {
                writer.join().expect("writer");
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().expect("reader");
    });
    let report = monitor.report(at(2, 0));
    let threads = 2 * 4;
    assert_eq!(report.totals.requests, threads * 3 * per_minute);
    assert_eq!(report.totals.rate_limited, threads * 3 * per_minute / 10);
    assert_eq!(report.totals.admitted, threads * 3 * per_minute * 9 / 10);
    assert_eq!(
        minutes_of(&report),
        [
            (0, threads * per_minute),
            (1, threads * per_minute),
            (2, threads * per_minute)
        ]
    );
    let stores = &report.stores;
    assert_eq!(stores["memory"], threads * 2 * per_minute);
    assert_eq!(stores["fallback"], threads * per_minute);
    assert_eq!(
        keyed(&report.breaches_by_rule),
        [("(unknown)".into(), threads * 3 * per_minute / 10)]
    );
}

#[test]
fn threads_beyond_the_lanes_count_exactly_too() {
    // More threads alive at once than there are lanes: those past them record under their
    // shard's lock alone, the others mostly in their lanes; together the counts are exact.
    use floodwall::monitor::EXACT_PER_MINUTE;
    let threads = 300u64;
    let each = EXACT_PER_MINUTE + 100;
    let monitor = Aggregator::new(5, 4);
    let t = at(1, 0);
    let all_alive = std::sync::Barrier::new(threads as usize);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                // Every thread holds its index before any records, so some are past the lanes.
                all_alive.wait();
                for _ in 0..each {
                    monitor.record(&Event::Decision(decision(t, EventOutcome::Admitted)));
                }
            });
        }
    });
    let report = monitor.report(t);
    assert_eq!(report.totals.requests, threads * each);
    assert_eq!(report.totals.admitted, threads * each);
    assert_eq!(minutes_of(&report), [(1, threads * each)]);
    assert_eq!(report.stores["memory"], threads * each);
}

#[test]
fn the_engine_counts_requests_denied_by_a_block() {
    let engine = Engine::from_toml(
        "[[rules]]\nname = \"per-user\"\nkey = \"subject\"\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"1s\"\nblock_for = \"1m\"\nblock_after = 2",
    )
    .unwrap();
    let alice = Request::new("GET", "/api").subject("alice").at(at(0, 1));
    // Admitted, denied (the window), denied (the second denial: the block), denied (blocked).
    let blocked: Vec<bool> = (0..4)
        .map(|_| engine.check(&alice).unwrap().blocked())
        .collect();
    assert_eq!(blocked, [false, false, true, true]);
    let report = engine.report_at(at(0, 2));
    assert_eq!((report.totals.rate_limited, report.totals.blocked), (3, 2));
    assert!(
        engine
            .prometheus()
            .contains("\nfloodwall_blocked_total 2\n"),
        "{}",
        engine.prometheus()
    );
}
