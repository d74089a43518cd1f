//! What the HTTP layer costs a request: the path's normal form, the client address's key, and
//! `Engine::http` beside the engine calls it wraps (`check`, `authorize`) on the same rule.
//!
//! Run: `cargo bench -p floodwall-benches --bench http` (add `-- --quick --noplot` for a fast
//! pass). The engine runs on a manual clock standing still and a bucket that never empties.
//!
//! - `normalize/*`: `normalize_path` on a path already in normal form (borrowed, the usual
//!   case), on one it must rewrite, and on an absolute-form target with an escape.
//! - `address/*`: reading an address and writing its key (dotted, IPv4-mapped, IPv6 by /56).
//! - `layer/check` vs `layer/http-rate-limit`: one per-address rule, by `Engine::check` with a
//!   host-given address and by the HTTP layer from the socket peer.
//! - `layer/authorize` vs `layer/http-guard`: a cached token and one per-user rule.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use floodwall::http::{
    HttpRequest, HttpStage, HttpVerdict, PathBuffer, address_key, normalize_path, parse_address,
};
use floodwall::{Engine, ManualClock, Request, Timestamp};

const NOW: Timestamp = Timestamp::from_millis(1_700_000_000_000);

fn normalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize");
    for (name, target) in [
        ("normal", "/api/orders/7?page=2"),
        ("rewritten", "/API//orders/./7/"),
        ("absolute-escaped", "HTTP://gateway.example/api/%6Frders/7"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut buffer = PathBuffer::new();
                let path = normalize_path(black_box(target), true, &mut buffer);
                black_box(path.as_str().len())
            })
        });
    }
    group.finish();
}

fn address(c: &mut Criterion) {
    let mut group = c.benchmark_group("address");
    for (name, text) in [
        ("ipv4", "192.0.2.1"),
        ("mapped", "::ffff:192.0.2.1"),
        ("ipv6-subnet", "[2001:db8:0:1ff::7]:443"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut key = String::with_capacity(48);
                let parsed = parse_address(black_box(text)).expect("an address");
                address_key(parsed, 56, &mut key).expect("written");
                black_box(key.len())
            })
        });
    }
    group.finish();
}

/// The suite's `[auth]` and its token for alice (tests/http/tokens.json).
fn suite_auth() -> (serde_json::Value, String) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/http/tokens.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("tokens.json")).expect("JSON");
    let token = doc["tokens"]["alice"].as_str().expect("alice").to_owned();
    (doc["auth"].clone(), format!("Bearer {token}"))
}

fn layer(c: &mut Criterion) {
    let mut group = c.benchmark_group("layer");
    let rule = |key: &str| {
        serde_json::json!({
            "name": "r", "key": key, "algorithm": "token_bucket",
            "capacity": 1_000_000_000u64, "refill_rate": 1_000_000
        })
    };
    let engine = |config: serde_json::Value| {
        Engine::from_json(&config.to_string())
            .expect("bench config")
            .with_clock(ManualClock::new(NOW))
    };
    let no_headers: &[(&str, &str)] = &[];

    let by_address = engine(serde_json::json!({ "rules": [rule("ip")] }));
    group.bench_function("check", |b| {
        b.iter(|| {
            let request = Request::new("GET", "/api/orders/7").ip("192.0.2.1");
            assert!(black_box(
                by_address.check(&request).expect("check").allowed()
            ));
        })
    });
    group.bench_function("http-rate-limit", |b| {
        b.iter(|| {
            let request = HttpRequest::new("GET", "/api/orders/7?page=2", &no_headers)
                .peer("192.0.2.1")
                .stage(HttpStage::RateLimit);
            let HttpVerdict::Pass(admission) = black_box(by_address.http(&request)) else {
                panic!("admitted")
            };
            by_address.http_finish(admission.exchange, 200, &());
        })
    });

    let (mut auth, authorization) = suite_auth();
    auth["cache"] = serde_json::json!({ "max_entries": 1000, "ttl": "5m" });
    let by_user = engine(serde_json::json!({ "auth": auth, "rules": [rule("subject")] }));
    group.bench_function("authorize", |b| {
        b.iter(|| {
            let request = Request::new("GET", "/api/orders/7");
            let authorized = by_user
                .authorize(&authorization, &request)
                .expect("authorized");
            assert!(black_box(authorized.decision.allowed()));
        })
    });
    let headers: &[(&str, &str)] = &[("authorization", &authorization)];
    group.bench_function("http-guard", |b| {
        b.iter(|| {
            let request =
                HttpRequest::new("GET", "/api/orders/7?page=2", &headers).peer("192.0.2.1");
            let HttpVerdict::Pass(admission) = black_box(by_user.http(&request)) else {
                panic!("admitted")
            };
            black_box(admission.headers());
            by_user.http_finish(admission.exchange, 200, &());
        })
    });
    group.finish();
}

criterion_group!(benches, normalize, address, layer);
criterion_main!(benches);
