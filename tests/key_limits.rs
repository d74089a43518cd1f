//! A key's own limit for a while (`key_limits`, `Engine::set_key_limit`), the same on the
//! memory store and on a real `redis-server`: every algorithm decides by it while it is in
//! force — with the decisions, headers and `inspect` reporting it — and by its policy again
//! once it is cleared or its lifetime ends; `reset_key` keeps it; several layers take theirs
//! in one decision; and bad input is an error that names what is wrong.

use std::time::Duration;

use floodwall::{Engine, ErrorKind, KeyRef, Request};
use floodwall_tests::redis_server::RedisServer;

/// One rule per algorithm on its own path, each 3 per hour (a bucket of 3 refilling one token
/// per 1000 s), and `all` on every path: 100 per hour per subject.
fn rules() -> &'static str {
    r#"
[[rules]]
name = "fixed"
match = { paths = ["/fixed"] }
key = "subject"
algorithm = "fixed_window"
limit = 3
window = "1h"
key_limits = true
roles.premium = { limit = 10 }

[[rules]]
name = "log"
match = { paths = ["/log"] }
key = "subject"
algorithm = "sliding_window"
limit = 3
window = "1h"
key_limits = true

[[rules]]
name = "counter"
match = { paths = ["/counter"] }
key = "subject"
algorithm = "sliding_window_counter"
limit = 3
window = "1h"
key_limits = true

[[rules]]
name = "bucket"
match = { paths = ["/bucket"] }
key = "subject"
algorithm = "token_bucket"
capacity = 3
refill_rate = 0.001
key_limits = true

[[rules]]
name = "inflight"
match = { paths = ["/inflight"] }
key = "subject"
algorithm = "concurrency"
limit = 3
max_hold = "1h"
key_limits = true

[[rules]]
name = "daily"
match = { paths = ["/daily"] }
key = "subject"
algorithm = "fixed_window"
limit = 3
window = "1d"
align = "calendar"
timezone = "Europe/Berlin"
key_limits = true
block_for = "1h"
block_after = 5

[[rules]]
name = "all"
key = "subject"
algorithm = "fixed_window"
limit = 100
window = "1h"
key_limits = true

[[rules]]
name = "plain"
match = { paths = ["/plain"] }
key = "subject"
algorithm = "fixed_window"
limit = 3
window = "1h"
"#
}

fn memory() -> Engine {
    Engine::from_toml(rules()).unwrap()
}

fn redis(server: &RedisServer, prefix: &str) -> Engine {
    let store = format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\nprefix = \"{prefix}\"\ntimeout = \"2s\"\non_error = \"error\"\ndeny_cache = false\n",
        server.url()
    );
    Engine::from_toml(&format!("{store}{}", rules())).unwrap()
}

/// Decides `n` requests of `subject` on `path`; answers the limit each reported (or 0 for a
/// denial), keeping every decision (so that concurrency holds stay held).
fn run<'e>(
    engine: &'e Engine,
    path: &str,
    subject: &str,
    n: usize,
) -> (Vec<u64>, Vec<floodwall::Decision<'e>>) {
    let mut limits = Vec::new();
    let mut kept = Vec::new();
    for _ in 0..n {
        let d = engine
            .check(&Request::new("GET", path).subject(subject))
            .unwrap();
        limits.push(if d.allowed() { d.limit().unwrap() } else { 0 });
        kept.push(d);
    }
    (limits, kept)
}

const HOUR: Duration = Duration::from_secs(3600);

fn every_algorithm_decides_by_the_key_s_own_limit(engine: &Engine) {
    for rule in ["fixed", "log", "counter", "inflight", "daily"] {
        let path = format!("/{rule}");
        let alice = KeyRef::new(rule, "alice");
        let (limits, _held) = run(engine, &path, "alice", 4);
        assert_eq!(limits, [3, 3, 3, 0], "{rule}: the policy's 3");

        engine.set_key_limit(&alice, 5, HOUR).unwrap();
        let status = engine.inspect(&alice).unwrap();
        assert_eq!((status.limit, status.remaining), (5, 2), "{rule}");
        let left = status.key_limit_for.expect("its own limit's lifetime");
        assert!(
            left > HOUR - Duration::from_secs(60) && left <= HOUR,
            "{rule}: {left:?}"
        );
        let (limits, held) = run(engine, &path, "alice", 3);
        assert_eq!(
            limits,
            [5, 5, 0],
            "{rule}: what it counted carries on under 5"
        );
        let denied = held.last().unwrap();
        assert_eq!(
            denied.limit(),
            Some(5),
            "{rule}: a denial names the key's limit"
        );
        assert_eq!(
            denied.header("RateLimit-Limit").as_deref(),
            Some("5"),
            "{rule}"
        );

        // Cleared: the policy's limit again, with what was counted.
        engine.clear_key_limit(&alice).unwrap();
        let status = engine.inspect(&alice).unwrap();
        assert_eq!(
            (status.limit, status.remaining, status.key_limit_for),
            (3, 0, None),
            "{rule}"
        );
        let denied = engine
            .check(&Request::new("GET", &path).subject("alice"))
            .unwrap();
        assert!(!denied.allowed(), "{rule}");
        assert_eq!(denied.limit(), Some(3), "{rule}");
        engine.clear_key_limit(&alice).unwrap(); // a key without one: nothing happens
    }
    // A bucket's own capacity comes with a rate scaled to it: empty, it refills in the same
    // time, so a drained bucket stays drained under any capacity; a fresh key gets 5.
    let bob = KeyRef::new("bucket", "bob");
    engine.set_key_limit(&bob, 5, HOUR).unwrap();
    let (limits, _) = run(engine, "/bucket", "bob", 6);
    assert_eq!(limits, [5, 5, 5, 5, 5, 0]);
    let status = engine.inspect(&bob).unwrap();
    assert_eq!((status.limit, status.remaining), (5, 0));
    assert!(
        status.reset_after > Duration::from_secs(2990)
            && status.reset_after <= Duration::from_secs(3000)
    );
}

fn a_lower_limit_roles_and_several_layers(engine: &Engine) {
    // A lower limit than the policy's denies sooner, and a role's policy has its own.
    let carol = KeyRef::new("fixed", "carol");
    engine.set_key_limit(&carol, 1, HOUR).unwrap();
    let (limits, _) = run(engine, "/fixed", "carol", 2);
    assert_eq!(limits, [1, 0]);
    let premium = carol.role("premium");
    assert_eq!(
        engine.inspect(&premium).unwrap().limit,
        10,
        "the premium policy has none"
    );
    engine.set_key_limit(&premium, 12, HOUR).unwrap();
    let status = engine.inspect(&premium).unwrap();
    assert_eq!((status.limit, status.remaining), (12, 12));
    assert_eq!(engine.inspect(&carol).unwrap().limit, 1);

    // Below what a key already counted, on every algorithm: denied, nothing remaining.
    for rule in [
        "fixed", "log", "counter", "bucket", "inflight", "daily", "all",
    ] {
        let path = format!("/{rule}");
        let (limits, _held) = run(engine, &path, "gina", 2);
        assert_eq!(limits.iter().filter(|&&l| l > 0).count(), 2, "{rule}");
        let gina = KeyRef::new(rule, "gina");
        engine.set_key_limit(&gina, 1, HOUR).unwrap();
        let status = engine.inspect(&gina).unwrap();
        assert_eq!((status.limit, status.remaining), (1, 0), "{rule}");
        let d = engine
            .check(&Request::new("GET", &path).subject("gina"))
            .unwrap();
        assert!(!d.allowed(), "{rule}");
        assert_eq!(d.remaining(), Some(0), "{rule}");
        engine.reset_key(&gina).unwrap();
    }

    // reset_key forgets the counts and keeps the limit.
    engine.reset_key(&carol).unwrap();
    let status = engine.inspect(&carol).unwrap();
    assert_eq!((status.limit, status.remaining), (1, 1));
    assert!(status.key_limit_for.is_some());

    // Two layers with limits of their own in one decision: `all` at 2 for dave decides.
    engine
        .set_key_limit(&KeyRef::new("all", "dave"), 2, HOUR)
        .unwrap();
    engine
        .set_key_limit(&KeyRef::new("log", "dave"), 50, HOUR)
        .unwrap();
    let (limits, kept) = run(engine, "/log", "dave", 3);
    assert_eq!(limits, [2, 2, 0]);
    assert_eq!(kept[2].rule(), Some("all"));
    assert_eq!(
        kept[2].header("RateLimit-Policy").as_deref(),
        Some("\"log\";q=50;w=3600, \"all\";q=2;w=3600")
    );
    assert_eq!(
        engine
            .inspect(&KeyRef::new("log", "dave"))
            .unwrap()
            .remaining,
        48
    );
}

fn a_limit_ends_with_its_lifetime(engine: &Engine) {
    let erin = KeyRef::new("fixed", "erin");
    engine
        .set_key_limit(&erin, 6, Duration::from_millis(50))
        .unwrap();
    assert_eq!(engine.inspect(&erin).unwrap().limit, 6);
    std::thread::sleep(Duration::from_millis(200));
    let status = engine.inspect(&erin).unwrap();
    assert_eq!((status.limit, status.key_limit_for), (3, None));
    let (limits, _) = run(engine, "/fixed", "erin", 4);
    assert_eq!(limits, [3, 3, 3, 0]);
}

fn bad_input_is_named(engine: &Engine) {
    let err = engine
        .set_key_limit(&KeyRef::new("plain", "alice"), 5, HOUR)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(
        err.to_string()
            .contains("\"plain\" takes no key limits: give it key_limits = true"),
        "{err}"
    );
    assert_eq!(
        engine
            .clear_key_limit(&KeyRef::new("plain", "alice"))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidConfig
    );
    let err = engine
        .set_key_limit(&KeyRef::new("fixed", "alice"), 0, HOUR)
        .unwrap_err();
    assert!(err.to_string().contains("at least 1, got 0"), "{err}");
    let err = engine
        .set_key_limit(&KeyRef::new("fixed", "alice"), 5, Duration::ZERO)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("lifetime must be from 1ms to 366 days"),
        "{err}"
    );
    let err = engine
        .set_key_limit(&KeyRef::new("bucket", "alice"), 4_000_000_000, HOUR)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("more than this token bucket can refill: at most 3000000000"),
        "{err}"
    );
    let err = engine
        .set_key_limit(&KeyRef::new("nope", "alice"), 5, HOUR)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownRule);
    // Nothing was set by the refusals.
    assert_eq!(
        engine
            .inspect(&KeyRef::new("fixed", "zed"))
            .unwrap()
            .key_limit_for,
        None
    );
}

fn all_of_it(engine: &Engine) {
    every_algorithm_decides_by_the_key_s_own_limit(engine);
    a_lower_limit_roles_and_several_layers(engine);
    a_limit_ends_with_its_lifetime(engine);
    bad_input_is_named(engine);
}

#[test]
fn key_limits_on_the_memory_store() {
    all_of_it(&memory());
}

#[test]
fn key_limits_on_redis_for_every_process_at_once() {
    let server = RedisServer::start();
    let engine = redis(&server, "kl:");
    all_of_it(&engine);
    // Another engine on the same Redis sees the limits this one set.
    let other = redis(&server, "kl:");
    let status = other.inspect(&KeyRef::new("fixed", "carol")).unwrap();
    assert_eq!(status.limit, 1);
    other
        .set_key_limit(&KeyRef::new("fixed", "frank"), 4, HOUR)
        .unwrap();
    let (limits, _) = run(&engine, "/fixed", "frank", 5);
    assert_eq!(limits, [4, 4, 4, 4, 0]);
    // The limit lives in its own key beside the state, with its end; the key expires a
    // second after it.
    let keys = server.command("KEYS kl:{fixed@*/0/=frank}~");
    let key = keys
        .lines()
        .find(|line| line.ends_with('~'))
        .expect("frank's own-limit key")
        .trim()
        .to_owned();
    let pttl = server.pttl(&key);
    assert!(pttl > 3_500_000 && pttl <= 3_601_000, "{key}: {pttl}");
}

#[test]
fn sync_rules_take_no_key_limits() {
    let err = Engine::from_toml(
        "[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n[[rules]]\nname = \"s\"\nkey = \"subject\"\nalgorithm = \"fixed_window\"\nlimit = 3\nwindow = \"1h\"\nsync = \"100ms\"\nkey_limits = true\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("rules[0].key_limits"), "{err}");
}
