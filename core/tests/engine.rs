//! The engine and the memory store as a user sees them: exact under threads, all-or-nothing
//! layers, bounded memory, errors and headers.

use std::sync::Arc;
use std::time::Duration;

use floodwall::{Engine, ErrorKind, ManualClock, Request, StoreUsed, Timestamp};

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

fn engine(toml: &str) -> (Engine, ManualClock) {
    let clock = ManualClock::new(T0);
    (
        Engine::from_toml(toml).unwrap().with_clock(clock.clone()),
        clock,
    )
}

fn one_rule(algorithm: &str, params: &str) -> String {
    format!("[[rules]]\nname = \"r\"\nkey = \"subject\"\nalgorithm = \"{algorithm}\"\n{params}\n")
}

/// Eight threads hammer one key of every algorithm: exactly the limit is admitted.
#[test]
fn eight_threads_admit_exactly_the_limit() {
    for (algorithm, params) in [
        ("fixed_window", "limit = 1000\nwindow = \"1h\""),
        ("sliding_window", "limit = 1000\nwindow = \"1h\""),
        ("sliding_window_counter", "limit = 1000\nwindow = \"1h\""),
        ("token_bucket", "capacity = 1000\nrefill_rate = 0.001"),
    ] {
        let (engine, _clock) = engine(&one_rule(algorithm, params));
        let engine = Arc::new(engine);
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let engine = &engine;
                    s.spawn(move || {
                        (0..500)
                            .filter(|_| {
                                engine
                                    .check(&Request::new("GET", "/").subject("hot"))
                                    .unwrap()
                                    .allowed()
                            })
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, 1000, "{algorithm}");
    }
}

/// Threads racing on layered rules never let one layer consume for a request another denied:
/// the global limit admits exactly 300 even though per-user budgets add up to more, and each
/// user's count equals what it was admitted.
#[test]
fn layers_stay_all_or_nothing_under_threads() {
    let (engine, _clock) = engine(
        r#"
[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 100
window = "1h"

[[rules]]
name = "global"
key = "global"
algorithm = "fixed_window"
limit = 300
window = "1h"
"#,
    );
    let users = ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7"];
    let admitted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = users
            .iter()
            .map(|user| {
                let engine = &engine;
                s.spawn(move || {
                    (0..200)
                        .filter(|_| {
                            engine
                                .check(&Request::new("GET", "/").subject(user))
                                .unwrap()
                                .allowed()
                        })
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(admitted, 300);
    // After the race: the global budget is spent, and each user's counter holds exactly what it
    // was admitted — checked by peeking (cost 0) at each user's remaining.
    let global = engine
        .check(&Request::new("GET", "/").subject("fresh"))
        .unwrap();
    assert!(!global.allowed());
    assert_eq!(global.rule(), Some("global"));
    assert_eq!(
        global.rule_index().map(|i| engine.rules()[i].name()),
        Some("global"),
        "the index names the same rule"
    );
    let spent: u64 = users
        .iter()
        .map(|user| {
            let peek = engine
                .check(&Request::new("GET", "/").subject(user).cost(0))
                .unwrap();
            let layer = peek.layers().find(|l| l.rule() == "per-user").unwrap();
            100 - layer.remaining()
        })
        .sum();
    assert_eq!(
        spent, 300,
        "per-user counters consumed only for admitted requests"
    );
}

#[test]
fn denied_layers_consume_nothing_and_the_deciding_rule_is_named() {
    let (engine, clock) = engine(
        r#"
[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 2
window = "10s"
roles.premium = { limit = 5 }

[[rules]]
name = "per-endpoint"
key = "endpoint"
algorithm = "token_bucket"
capacity = 4
refill_rate = 1
"#,
    );
    let alice = Request::new("post", "/api/orders/")
        .subject("alice")
        .role("free");
    let d = engine.check(&alice).unwrap();
    assert!(d.allowed());
    assert_eq!((d.rule(), d.remaining()), (Some("per-user"), Some(1)));
    assert!(engine.check(&alice).unwrap().allowed());
    let denied = engine.check(&alice).unwrap();
    assert!(!denied.allowed());
    assert_eq!(denied.rule(), Some("per-user"));
    assert_eq!(denied.retry_after_ms(), 10_000 - T0.as_millis() % 10_000);
    // The endpoint bucket (4) saw two admissions only: premium bob gets exactly two more.
    let bob = Request::new("POST", "/api//orders")
        .subject("bob")
        .role("premium");
    assert!(engine.check(&bob).unwrap().allowed());
    let last = engine.check(&bob).unwrap();
    assert!(last.allowed());
    assert_eq!(
        (last.rule(), last.remaining()),
        (Some("per-endpoint"), Some(0))
    );
    let blocked = engine.check(&bob).unwrap();
    assert!(!blocked.allowed());
    assert_eq!(blocked.rule(), Some("per-endpoint"));
    assert_eq!(blocked.retry_after(), Duration::from_secs(1));
    clock.advance(Duration::from_secs(1));
    assert!(engine.check(&bob).unwrap().allowed());
}

#[test]
fn cost_beyond_the_limit_is_an_error_and_consumes_nothing() {
    let (engine, _clock) = engine(&one_rule(
        "fixed_window",
        "limit = 10\nwindow = \"1m\"\nroles.premium = { limit = 50 }",
    ));
    let err = engine
        .check(&Request::new("GET", "/").subject("a").cost(11))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CostExceedsLimit);
    assert_eq!(err.kind().as_str(), "cost_exceeds_limit");
    assert!(
        err.to_string()
            .contains("cost 11 exceeds the limit 10 of rule \"r\""),
        "{err}"
    );
    assert_eq!(
        engine
            .check(&Request::new("GET", "/").subject("a").cost(10))
            .unwrap()
            .remaining(),
        Some(0)
    );
    // Premium's limit is 50: the same cost fits.
    assert!(
        engine
            .check(
                &Request::new("GET", "/")
                    .subject("p")
                    .role("premium")
                    .cost(11)
            )
            .unwrap()
            .allowed()
    );
}

#[test]
fn unmatched_requests_pass_without_headers() {
    let (engine, _clock) = engine(
        "[[rules]]\nname = \"api\"\nmatch = { paths = [\"/api/**\"], roles = [\"free\"] }\nkey = \"ip\"\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"1m\"\n",
    );
    for request in [
        Request::new("GET", "/health"),
        Request::new("GET", "/api/x").role("premium"),
        Request::new("GET", "/api/x"),
    ] {
        let d = engine.check(&request).unwrap();
        assert!(d.allowed());
        assert_eq!((d.rule(), d.limit(), d.remaining()), (None, None, None));
        assert!(d.headers().is_empty());
        assert_eq!(d.store(), StoreUsed::Memory);
    }
    assert_eq!(engine.key_count(), 0);
}

#[test]
fn headers_on_admission_and_denial() {
    let (engine, _clock) = engine(
        r#"
[[rules]]
name = "per-user"
key = "subject"
algorithm = "token_bucket"
capacity = 2
refill_rate = 0.5

[[rules]]
name = "global"
key = "global"
algorithm = "fixed_window"
limit = 100
window = "1m"
"#,
    );
    let r = Request::new("GET", "/").subject("a");
    let d = engine.check(&r).unwrap();
    let names: Vec<&str> = d.headers().iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "RateLimit-Policy",
            "RateLimit",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset"
        ]
    );
    assert_eq!(
        d.header("ratelimit-policy").unwrap(),
        "\"per-user\";q=2;w=4, \"global\";q=100;w=60"
    );
    let reset_global = (60_000 - T0.as_millis() % 60_000).div_ceil(1000);
    assert_eq!(
        d.header("RateLimit").unwrap(),
        format!("\"per-user\";r=1;t=2, \"global\";r=99;t={reset_global}")
    );
    assert_eq!(d.header("RateLimit-Remaining").unwrap(), "1");
    engine.check(&r).unwrap();
    let denied = engine.check(&r).unwrap();
    assert!(!denied.allowed());
    assert_eq!(denied.header("Retry-After").unwrap(), "2");
    assert_eq!(denied.header("RateLimit-Reset").unwrap(), "4");
}

#[test]
fn check_many_decides_each_in_turn() {
    let (engine, _clock) = engine(&one_rule("fixed_window", "limit = 2\nwindow = \"1m\""));
    let r = Request::new("GET", "/").subject("a");
    let results = engine.check_many(&[r, r, r, r.cost(3)]);
    let allowed: Vec<Option<bool>> = results
        .iter()
        .map(|d| d.as_ref().ok().map(|d| d.allowed()))
        .collect();
    assert_eq!(allowed, [Some(true), Some(true), Some(false), None]);
}

#[test]
fn idle_keys_are_forgotten() {
    let (engine, clock) = engine(&one_rule("sliding_window", "limit = 5\nwindow = \"1s\""));
    for i in 0..1000 {
        let subject = format!("user-{i}");
        engine
            .check(&Request::new("GET", "/").subject(&subject))
            .unwrap();
    }
    assert_eq!(engine.key_count(), 1000);
    clock.advance(Duration::from_millis(999));
    assert_eq!(engine.purge_expired(), 0);
    clock.advance(Duration::from_millis(1));
    assert_eq!(engine.purge_expired(), 1000);
    assert_eq!(engine.key_count(), 0);

    // Without an explicit purge, inserting sweeps expired keys once the sweep interval passed.
    for i in 0..1000 {
        let subject = format!("user-{i}");
        engine
            .check(&Request::new("GET", "/").subject(&subject))
            .unwrap();
    }
    clock.advance(Duration::from_secs(10));
    // Enough new keys that every shard inserts (and so sweeps) with overwhelming probability.
    for i in 0..3000 {
        let subject = format!("other-{i}");
        engine
            .check(&Request::new("GET", "/").subject(&subject))
            .unwrap();
    }
    assert_eq!(engine.key_count(), 3000);
}

#[test]
fn the_key_cap_evicts_instead_of_growing() {
    let (engine, clock) = engine(&format!(
        "[store]\nmax_keys = 1000\n{}",
        one_rule("fixed_window", "limit = 3\nwindow = \"1h\"")
    ));
    for i in 0..20_000 {
        let subject = format!("user-{i}");
        assert!(
            engine
                .check(&Request::new("GET", "/").subject(&subject))
                .unwrap()
                .allowed()
        );
        clock.advance(Duration::from_micros(10));
    }
    let held = engine.key_count();
    assert!(held <= 1000, "{held} keys held");
    assert!(
        held >= 700,
        "the cap evicts an eighth at a time, not everything: {held}"
    );
    // Recent keys survive: the newest user is still counted.
    let newest = engine
        .check(&Request::new("GET", "/").subject("user-19999"))
        .unwrap();
    assert_eq!(newest.remaining(), Some(1));
}

/// The attack a bounded store invites: with `max_keys` reached, a caller who has exhausted
/// its limit floods the store with fresh keys (3,000 junk paths, each a key of a per-endpoint
/// rule) to have its own counter evicted. The fresh keys go first: it stays denied.
#[test]
fn filling_the_store_with_junk_keys_does_not_readmit_a_denied_caller() {
    let (engine, clock) = engine(
        r#"
        [store]
        max_keys = 1000

        [[rules]]
        name = "per-user"
        match = { paths = ["/api/**"] }
        key = "subject"
        algorithm = "fixed_window"
        limit = 5
        window = "1h"

        [[rules]]
        name = "per-endpoint"
        match = { paths = ["/junk/**"] }
        key = "endpoint"
        algorithm = "fixed_window"
        limit = 100
        window = "1h"
        "#,
    );
    let api = Request::new("GET", "/api/orders").subject("mallory");
    for _ in 0..5 {
        assert!(engine.check(&api).unwrap().allowed());
        clock.advance(Duration::from_millis(1));
    }
    assert!(!engine.check(&api).unwrap().allowed());
    let flood = |junk: std::ops::Range<u32>, subject: &str| {
        for i in junk {
            let path = format!("/junk/{i}");
            let request = Request::new("GET", &path).subject(subject);
            assert!(engine.check(&request).unwrap().allowed());
            clock.advance(Duration::from_millis(1));
        }
    };
    flood(0..3000, "mallory");
    assert!(engine.key_count() <= 1000, "{} keys", engine.key_count());
    let again = engine.check(&api).unwrap();
    assert!(
        !again.allowed(),
        "the exhausted counter was evicted: readmitted with {:?} remaining",
        again.remaining()
    );

    // A caller who used its whole limit without being denied yet is as exhausted.
    let other = Request::new("GET", "/api/orders").subject("trudy");
    for _ in 0..5 {
        assert!(engine.check(&other).unwrap().allowed());
    }
    flood(3000..6000, "trudy");
    assert!(!engine.check(&other).unwrap().allowed());
    assert!(!engine.check(&api).unwrap().allowed());

    // The least used go before the more used: a key that used 4 of 5 outlives fresh ones.
    let busy = Request::new("GET", "/api/orders").subject("busy");
    for _ in 0..4 {
        assert!(engine.check(&busy).unwrap().allowed());
    }
    flood(6000..9000, "anyone");
    assert_eq!(engine.check(&busy).unwrap().remaining(), Some(0));
}

#[test]
fn denied_requests_for_new_keys_store_nothing() {
    let (engine, _clock) = engine(
        r#"
[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 5
window = "1m"

[[rules]]
name = "global"
key = "global"
algorithm = "fixed_window"
limit = 1
window = "1m"
"#,
    );
    assert!(
        engine
            .check(&Request::new("GET", "/").subject("first"))
            .unwrap()
            .allowed()
    );
    for i in 0..100 {
        let subject = format!("late-{i}");
        assert!(
            !engine
                .check(&Request::new("GET", "/").subject(&subject))
                .unwrap()
                .allowed()
        );
    }
    assert_eq!(engine.key_count(), 2, "only 'first' and the global counter");
}

#[test]
fn endpoint_keys_count_each_normalised_endpoint() {
    // No rule matches on paths, so the engine must still split them for the endpoint key.
    let (engine, _clock) = engine(
        "[[rules]]\nname = \"per-endpoint\"\nkey = \"endpoint\"\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"1m\"\n",
    );
    assert!(
        engine
            .check(&Request::new("get", "/api/orders/7?x=1"))
            .unwrap()
            .allowed()
    );
    assert!(
        !engine
            .check(&Request::new("GET", "//api/orders/7/"))
            .unwrap()
            .allowed()
    );
    assert!(
        engine
            .check(&Request::new("GET", "/api/orders/8"))
            .unwrap()
            .allowed()
    );
    assert!(
        engine
            .check(&Request::new("POST", "/api/orders/7"))
            .unwrap()
            .allowed()
    );
}

#[test]
fn the_demo_configuration_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/floodwall.toml");
    let engine = Engine::from_file(path).unwrap();
    let names: Vec<&str> = engine.rules().iter().map(|r| r.name()).collect();
    assert_eq!(names, ["per-user", "order-writes", "global"]);
}

#[test]
fn each_role_gets_its_own_override_among_few_and_among_many() {
    // A few overrides are scanned, many are looked up: either way a role gets its own limit,
    // names that share a prefix, a length or all but one byte are told apart, and a role
    // with no override (or none at all) gets the default.
    for overrides in [3usize, 40] {
        let mut roles = String::new();
        for i in 0..overrides {
            roles.push_str(&format!(
                "roles.t-{i:02}-abcdefg = {{ limit = {} }}\n",
                i + 2
            ));
        }
        roles.push_str("roles.a = { limit = 100 }\nroles.ab = { limit = 101 }\n");
        roles.push_str("roles.a-role-name-longer-than-16 = { limit = 102 }\n");
        let (engine, _clock) = engine(&one_rule(
            "fixed_window",
            &format!("limit = 1\nwindow = \"1m\"\n{roles}"),
        ));
        let limit = |role: Option<&str>, subject: &str| {
            let mut request = Request::new("GET", "/").subject(subject);
            if let Some(role) = role {
                request = request.role(role);
            }
            engine.check(&request).unwrap().limit()
        };
        for i in 0..overrides {
            let role = format!("t-{i:02}-abcdefg");
            assert_eq!(limit(Some(&role), &role), Some(i as u64 + 2), "{role}");
        }
        assert_eq!(limit(Some("a"), "a"), Some(100));
        assert_eq!(limit(Some("ab"), "ab"), Some(101));
        assert_eq!(limit(Some("a-role-name-longer-than-16"), "l"), Some(102));
        assert_eq!(limit(Some("a-role-name-longer-than-17"), "m"), Some(1));
        assert_eq!(limit(Some("t-00-abcdefG"), "x"), Some(1));
        assert_eq!(limit(Some("T-00-abcdefg"), "x2"), Some(1));
        assert_eq!(limit(Some("t-00-abcdef"), "y"), Some(1));
        assert_eq!(limit(Some("b"), "z"), Some(1));
        assert_eq!(limit(None, "w"), Some(1));
    }
}
