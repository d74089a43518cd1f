//! Hot reload: what carries over, what starts afresh, what is refused, and reloads while
//! requests flow (no failed request, no over-admission).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use floodwall::http::{HttpRequest, HttpStage, HttpVerdict};
use floodwall::{CallOutcome, Engine, ErrorKind, Request, RuleChange, Timestamp};

const PER_USER: &str = r#"
[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 3
window = "1m"
"#;

const PER_IP: &str = r#"
[[rules]]
name = "per-ip"
key = "ip"
algorithm = "sliding_window"
limit = 100
window = "1m"
"#;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn bob(ms: u64) -> Request<'static> {
    Request::new("GET", "/api")
        .subject("bob")
        .ip("192.0.2.1")
        .at(at(ms))
}

fn remaining(engine: &Engine, rule: &str, request: &Request<'_>) -> Option<u64> {
    let decision = engine.check(request).unwrap();
    decision
        .layers()
        .find(|l| l.rule() == rule)
        .map(|l| l.remaining())
}

#[test]
fn an_unchanged_rule_keeps_its_count_when_rules_move_around_it() {
    let engine = Engine::from_toml(PER_USER).unwrap();
    assert_eq!(remaining(&engine, "per-user", &bob(60_000)), Some(2));
    // A rule in front of it now: it is second, its state is its own.
    let summary = engine.reload_toml(&format!("{PER_IP}{PER_USER}")).unwrap();
    assert_eq!(
        summary.rules,
        [
            ("per-ip".to_owned(), RuleChange::Added),
            ("per-user".to_owned(), RuleChange::Unchanged)
        ]
    );
    assert_eq!(remaining(&engine, "per-user", &bob(60_001)), Some(1));
    assert_eq!(remaining(&engine, "per-ip", &bob(60_002)), Some(98));
    assert_eq!(engine.rules()[1].name(), "per-user");
    // Matching differently keeps it too.
    let narrowed = PER_USER.replace(
        "key = \"subject\"",
        "key = \"subject\"\nmatch = { paths = [\"/api\"] }",
    );
    let summary = engine.reload_toml(&narrowed).unwrap();
    assert_eq!(summary.rules[0], ("per-user".to_owned(), RuleChange::Kept));
    assert_eq!(summary.count(RuleChange::Removed), 1);
    let denied = engine.check(&bob(60_003)).unwrap();
    assert!(!denied.allowed(), "the fourth request of the window");
    assert_eq!(denied.rule(), Some("per-user"));
}

#[test]
fn a_changed_rule_starts_afresh_and_a_removed_one_is_forgotten() {
    let engine = Engine::from_toml(&format!("{PER_USER}{PER_IP}")).unwrap();
    for i in 0..3 {
        engine.check(&bob(60_000 + i)).unwrap();
    }
    assert!(!engine.check(&bob(60_010)).unwrap().allowed());
    assert_eq!(engine.key_count(), 2);
    let summary = engine
        .reload_toml(&PER_USER.replace("limit = 3", "limit = 5"))
        .unwrap();
    assert_eq!(
        summary.rules,
        [
            ("per-user".to_owned(), RuleChange::Restarted),
            ("per-ip".to_owned(), RuleChange::Removed)
        ]
    );
    assert_eq!(engine.key_count(), 0, "both rules' states are gone");
    assert_eq!(remaining(&engine, "per-user", &bob(60_020)), Some(4));
    assert_eq!(engine.generations(), 2);
}

#[test]
fn a_reload_that_changes_nothing_makes_no_generation() {
    let engine = Engine::from_toml(PER_USER).unwrap();
    for _ in 0..5 {
        let summary = engine.reload_toml(PER_USER).unwrap();
        assert_eq!(summary.count(RuleChange::Unchanged), 1);
        assert!(!summary.auth_changed);
    }
    assert_eq!(engine.generations(), 1);
    let json: serde_json::Value =
        serde_json::from_str(&engine.reload_toml(PER_USER).unwrap().to_json()).unwrap();
    assert_eq!(json["rules"][0]["change"], "unchanged");
    assert_eq!(json["generations"], 1);
}

#[test]
fn an_invalid_configuration_changes_nothing_and_says_why() {
    let engine = Engine::from_toml(PER_USER).unwrap();
    engine.check(&bob(60_000)).unwrap();
    let cases = [
        (PER_USER.replace("limit = 3", "limit = 0"), "rules[0].limit"),
        (
            format!("[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n{PER_USER}"),
            "store",
        ),
        (
            format!("[monitor]\nhorizon = \"5m\"\n{PER_USER}"),
            "monitor.horizon",
        ),
        (
            format!("{PER_USER}\n[http]\ntrusted_proxies = [\"nonsense\"]\n"),
            "http.trusted_proxies[0]",
        ),
        (
            format!("{PER_USER}\n[services.orders]\nupstreams = []\n"),
            "services.orders.upstreams",
        ),
        (
            format!(
                "[auth]\nalgorithms = [\"HS256\"]\nkeys = [{{ secret = \"short\" }}]\n{PER_USER}"
            ),
            "auth.keys[0]",
        ),
    ];
    for (config, field) in cases {
        let error = engine.reload_toml(&config).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidConfig, "{config}");
        assert_eq!(error.field(), Some(field), "{error}");
    }
    let error = engine.reload_toml("[[rules]]\nname = ").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidConfig);
    assert_eq!(remaining(&engine, "per-user", &bob(60_001)), Some(1));
    assert_eq!(engine.generations(), 1);
}

#[test]
fn permits_and_exchanges_from_before_a_reload_are_given_back_to_their_rules() {
    let concurrency = r#"
        [[rules]]
        name = "in-flight"
        key = "subject"
        algorithm = "concurrency"
        limit = 1
    "#;
    let engine = Engine::from_toml(concurrency).unwrap();
    let mut held = engine.check(&bob(60_000)).unwrap();
    let permit = held.take_permit().expect("a permit");
    drop(held);
    assert!(!engine.check(&bob(60_001)).unwrap().allowed());
    // The rule moves behind another one: its permit is still its own.
    engine
        .reload_toml(&format!("{PER_IP}{concurrency}"))
        .unwrap();
    assert!(!engine.check(&bob(60_002)).unwrap().allowed());
    assert!(engine.release(permit));
    assert!(engine.check(&bob(60_003)).unwrap().allowed());

    // A response-counting rule: an exchange decided before the reload refunds after it.
    let failures = r#"
        [[rules]]
        name = "failures"
        key = "ip"
        algorithm = "fixed_window"
        limit = 1
        window = "1m"
        count_responses = "failed"
    "#;
    let engine = Engine::from_toml(failures).unwrap();
    let headers: &[(&str, &str)] = &[];
    let ask = |ms| {
        engine.http(
            &HttpRequest::new("GET", "/", &headers)
                .peer("192.0.2.9")
                .stage(HttpStage::RateLimit)
                .at(at(ms)),
        )
    };
    let HttpVerdict::Pass(admitted) = ask(60_000) else {
        panic!("admitted")
    };
    let exchange = admitted.exchange;
    engine
        .reload_toml(&format!("{PER_USER}{failures}"))
        .unwrap();
    assert!(matches!(ask(60_001), HttpVerdict::Refuse(_)));
    engine.http_finish_at(exchange, 200, &headers, at(60_002));
    assert!(
        matches!(ask(60_003), HttpVerdict::Pass(_)),
        "the 200 was refunded"
    );
}

#[test]
fn a_detached_decision_attaches_after_a_reload() {
    let engine = Engine::from_toml(PER_USER).unwrap();
    let detached = engine.check(&bob(60_000)).unwrap().detach();
    engine
        .reload_toml(&PER_USER.replace("limit = 3", "limit = 4"))
        .unwrap();
    let again = engine.attach(&detached).expect("its rules are kept");
    assert_eq!(again.limit(), Some(3), "the limit it was decided by");
    let other = Engine::from_toml(PER_USER).unwrap();
    assert!(other.attach(&detached).is_none());
}

#[test]
fn unchanged_upstreams_keep_their_breakers_and_calls_in_flight() {
    let services = |weight: u32| {
        format!(
            r#"
            [services.orders]
            upstreams = [{{ url = "http://10.0.0.1:8080", name = "a" }}, {{ url = "http://10.0.0.2:8080", name = "b", weight = {weight} }}]
            breaker = {{ failure_rate = 0.5, min_calls = 2, open_for = "30s" }}
            "#
        )
    };
    let engine = Engine::from_toml(&services(1)).unwrap();
    engine.reset_breaker("orders", "a").unwrap();
    let mut leases = Vec::new();
    for _ in 0..4 {
        leases.push(engine.pick("orders").unwrap());
    }
    let in_flight = |name: &str| {
        engine
            .upstreams("orders")
            .unwrap()
            .into_iter()
            .find(|u| u.name == name)
            .map(|u| u.in_flight)
    };
    assert_eq!(in_flight("a"), Some(2));
    let summary = engine.reload_toml(&services(3)).unwrap();
    assert_eq!((summary.upstreams.kept, summary.upstreams.started), (1, 1));
    assert_eq!(summary.upstreams.removed, 1, "b at weight 1 went");
    assert_eq!(in_flight("a"), Some(2), "a kept its calls");
    assert_eq!(in_flight("b"), Some(0), "b at weight 3 starts afresh");
    for lease in leases {
        lease.finish(CallOutcome::Success, Duration::from_millis(1));
    }
    assert_eq!(in_flight("a"), Some(0));
    engine.reload_toml("").unwrap();
    assert_eq!(
        engine.pick("orders").unwrap_err().kind(),
        ErrorKind::UnknownService
    );
}

#[test]
fn a_new_auth_section_is_in_force_for_the_next_request() {
    let auth = |secret: &str| {
        format!(
            "[auth]\nalgorithms = [\"HS256\"]\nkeys = [{{ secret = \"{secret}\" }}]\n{PER_USER}"
        )
    };
    let old = "the first secret, at least 32 bytes long";
    let new = "the second secret, at least 32 bytes long";
    let token = |secret: &str| {
        let claims = serde_json::json!({ "sub": "bob", "exp": 4_102_444_800u64 });
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
        format!(
            "Bearer {}",
            jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
        )
    };
    let engine = Engine::from_toml(&auth(old)).unwrap();
    assert!(engine.authenticate(&token(old)).is_ok());
    let summary = engine.reload_toml(&auth(new)).unwrap();
    assert!(summary.auth_changed);
    assert_eq!(engine.generations(), 1, "the rules did not change");
    assert_eq!(
        engine.authenticate(&token(old)).unwrap_err().kind(),
        ErrorKind::BadSignature
    );
    assert!(engine.authenticate(&token(new)).is_ok());
}

/// Threads decide on one key of an unchanged rule while another reloads between two
/// configurations that both keep it (adding and removing a rule before it, changing its
/// matching): every request is answered, and exactly the limit is admitted.
#[test]
fn reloads_under_load_fail_no_request_and_admit_no_more_than_the_limit() {
    const LIMIT: u64 = 500;
    let rule = PER_USER.replace("limit = 3", &format!("limit = {LIMIT}"));
    let configs = [
        rule.clone(),
        format!(
            "{PER_IP}{}",
            rule.replace("key = \"subject\"", "key = \"subject\"\nshadow = false")
        ),
    ];
    let engine = Arc::new(Engine::from_toml(&configs[0]).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let admitted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(20);
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (engine, admitted, failed) = (
                Arc::clone(&engine),
                Arc::clone(&admitted),
                Arc::clone(&failed),
            );
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    if Instant::now() > deadline {
                        break;
                    }
                    // Every request in the same window, a second or so apart at most.
                    let request = bob(60_000 + (t * 20_000 + i) % 50_000);
                    match engine.check(&request) {
                        Ok(d) if d.allowed() => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let reloader = {
        let (engine, done) = (Arc::clone(&engine), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut reloads = 0;
            while !done.load(Ordering::Relaxed) && reloads < 2_000 && Instant::now() < deadline {
                let summary = engine.reload_toml(&configs[reloads % 2]).expect("reload");
                assert!(
                    summary.rules.iter().any(|(name, c)| name == "per-user"
                        && matches!(c, RuleChange::Unchanged | RuleChange::Kept)),
                    "{summary:?}"
                );
                reloads += 1;
            }
            reloads
        })
    };
    for worker in workers {
        worker.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let reloads = reloader.join().unwrap();
    eprintln!("{reloads} reloads while 80,000 requests were decided");
    assert!(reloads > 0);
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert_eq!(
        admitted.load(Ordering::Relaxed),
        LIMIT,
        "after {reloads} reloads"
    );
}
