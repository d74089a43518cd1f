//! The in-memory monitoring aggregate: per-minute series and peaks, breaches, bounded top
//! lists, under explicit timestamps.

use std::time::Duration;

use floodwall::monitor::{Aggregator, Event, EventOutcome, TopK};
use floodwall::{CallOutcome, ErrorKind, StoreUsed, Timestamp};

const MINUTE: u64 = 60_000;

fn at(minute: u64, second: u64) -> Timestamp {
    // An arbitrary day, so that minutes are not near zero.
    Timestamp::from_millis(
        1_795_000_000_000 - 1_795_000_000_000 % MINUTE + minute * MINUTE + second * 1000,
    )
}

fn event(t: Timestamp, outcome: EventOutcome) -> Event<'static> {
    Event {
        at: t,
        method: "get",
        path: "/api/orders?page=2",
        subject: Some("alice"),
        role: Some("free"),
        outcome,
        rule: None,
        error: None,
        store: Some(StoreUsed::Memory),
        upstream: None,
        latency: Some(Duration::from_micros(250)),
    }
}

#[test]
fn minutes_peaks_and_the_horizon() {
    let monitor = Aggregator::new(10, 8);
    // Minute 0: 3 requests; minute 2: 7 (a surge); minute 5: 1; minute 20: 2 (ten minutes on).
    for (minute, n) in [(0, 3), (2, 7), (5, 1)] {
        for i in 0..n {
            monitor.record(&event(at(minute, i), EventOutcome::Admitted));
        }
    }
    let report = monitor.report(at(9, 59));
    let series: Vec<(u64, u64)> = report
        .per_minute
        .iter()
        .map(|m| ((m.start_ms - at(0, 0).as_millis()) / MINUTE, m.requests))
        .collect();
    assert_eq!(series, [(0, 3), (2, 7), (5, 1)]);
    assert_eq!(report.peaks[0].requests, 7, "the surge is the first peak");
    assert_eq!(report.peaks.len(), 3);
    assert_eq!(report.per_minute[1].mean_latency_us, 250);
    assert_eq!(report.totals.requests, 11);

    // Minute 12 reuses minute 2's slot; minutes 0 and 2 leave the horizon.
    monitor.record(&event(at(12, 0), EventOutcome::Admitted));
    monitor.record(&event(at(12, 1), EventOutcome::Admitted));
    let report = monitor.report(at(12, 30));
    let series: Vec<(u64, u64)> = report
        .per_minute
        .iter()
        .map(|m| ((m.start_ms - at(0, 0).as_millis()) / MINUTE, m.requests))
        .collect();
    assert_eq!(series, [(5, 1), (12, 2)]);
    assert_eq!(report.totals.requests, 13, "totals keep everything");

    // An event older than the horizon counts in the totals only.
    monitor.record(&event(at(1, 0), EventOutcome::Admitted));
    let report = monitor.report(at(12, 30));
    assert_eq!(report.per_minute.len(), 2);
    assert_eq!(report.totals.requests, 14);
}

#[test]
fn breaches_rejections_upstreams_and_stores() {
    let monitor = Aggregator::new(60, 8);
    let t = at(3, 0);
    for (subject, role, n) in [
        ("mallory", "free", 5),
        ("bob", "free", 2),
        ("carol", "premium", 1),
    ] {
        for _ in 0..n {
            monitor.record(&Event {
                subject: Some(subject),
                role: Some(role),
                rule: Some("per-user"),
                store: Some(StoreUsed::Redis),
                ..event(t, EventOutcome::RateLimited)
            });
        }
    }
    for kind in [
        ErrorKind::Expired,
        ErrorKind::Expired,
        ErrorKind::BadSignature,
    ] {
        monitor.record(&Event {
            subject: None,
            role: None,
            error: Some(kind),
            store: None,
            ..event(t, EventOutcome::AuthRejected)
        });
    }
    for outcome in [
        CallOutcome::Failure,
        CallOutcome::Timeout,
        CallOutcome::Success,
    ] {
        monitor.record(&Event {
            upstream: Some(("orders", "orders-a", outcome)),
            store: Some(StoreUsed::Fallback),
            ..event(t, EventOutcome::Admitted)
        });
    }
    let report = monitor.report(t);
    let keyed = |entries: &[floodwall::monitor::TopEntry]| -> Vec<(String, u64)> {
        entries.iter().map(|e| (e.key.clone(), e.count)).collect()
    };
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
    assert_eq!(
        keyed(&report.upstream_failures),
        [("orders/orders-a".into(), 2)]
    );
    assert_eq!(report.stores.get("redis"), Some(&8));
    assert_eq!(report.stores.get("fallback"), Some(&3));
    assert_eq!(report.totals.rate_limited, 8);
    assert_eq!(report.totals.auth_rejected, 3);
    assert_eq!(report.totals.upstream_failures, 2);
    assert_eq!(report.top_endpoints[0].count, 14);

    let json = serde_json::to_value(&report).expect("a report is JSON");
    for field in [
        "per_minute",
        "peaks",
        "totals",
        "top_endpoints",
        "breaches_by_subject",
        "stores",
    ] {
        assert!(json.get(field).is_some(), "{field} in {json}");
    }
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
}

#[test]
fn recording_from_many_threads_loses_nothing() {
    let monitor = std::sync::Arc::new(Aggregator::new(5, 4));
    let t = at(1, 0);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let monitor = std::sync::Arc::clone(&monitor);
            std::thread::spawn(move || {
                for _ in 0..5_000 {
                    monitor.record(&event(t, EventOutcome::Admitted));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a recording thread");
    }
    let report = monitor.report(t);
    assert_eq!(report.totals.requests, 20_000);
    assert_eq!(report.per_minute[0].requests, 20_000);
}
