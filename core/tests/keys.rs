//! Per-key administration on the memory store: inspect, reset, block, penalize, reward, and
//! the errors that name what is wrong.

use std::time::Duration;

use floodwall::{Engine, ErrorKind, KeyRef, Request};

const RULES: &str = r#"
[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 5
window = "1h"
block_for = "10m"
block_after = 3
roles.premium = { limit = 50 }

[[rules]]
name = "log"
match = { paths = ["/log"] }
key = "ip"
algorithm = "sliding_window"
limit = 3
window = "1h"

[[rules]]
name = "plain"
match = { paths = ["/plain"] }
key = "global"
algorithm = "token_bucket"
capacity = 4
refill_rate = 0.001
"#;

#[test]
fn inspect_penalize_reward_and_reset_a_key() {
    let engine = Engine::from_toml(RULES).unwrap();
    let alice = KeyRef::new("per-user", "alice");
    let status = engine.inspect(&alice).unwrap();
    assert_eq!(
        (status.limit, status.remaining, status.blocked_for),
        (5, 5, None)
    );
    for _ in 0..2 {
        assert!(
            engine
                .check(&Request::new("GET", "/").subject("alice"))
                .unwrap()
                .allowed()
        );
    }
    assert_eq!(engine.inspect(&alice).unwrap().remaining, 3);
    engine.penalize(&alice, 2).unwrap();
    assert_eq!(engine.inspect(&alice).unwrap().remaining, 1);
    engine.penalize(&alice, 100).unwrap();
    assert_eq!(
        engine.inspect(&alice).unwrap().remaining,
        0,
        "never beyond exhausted"
    );
    engine.reward(&alice, 4).unwrap();
    assert_eq!(engine.inspect(&alice).unwrap().remaining, 4);
    engine.reset_key(&alice).unwrap();
    assert_eq!(engine.inspect(&alice).unwrap().remaining, 5);
    // A role's override counts apart.
    let premium = alice.role("premium");
    engine.penalize(&premium, 10).unwrap();
    let status = engine.inspect(&premium).unwrap();
    assert_eq!((status.limit, status.remaining), (50, 40));
    assert_eq!(status.store, floodwall::StoreUsed::Memory);
    assert_eq!(engine.inspect(&alice).unwrap().remaining, 5);
}

#[test]
fn a_blocked_key_is_denied_until_the_block_ends_or_it_is_reset() {
    let engine = Engine::from_toml(RULES).unwrap();
    let bob = KeyRef::new("per-user", "bob");
    engine.block_key(&bob, Duration::from_secs(90)).unwrap();
    let status = engine.inspect(&bob).unwrap();
    let left = status.blocked_for.expect("blocked");
    assert!(left > Duration::from_secs(80) && left <= Duration::from_secs(90));
    assert_eq!(status.remaining, 0);
    let denied = engine
        .check(&Request::new("GET", "/").subject("bob"))
        .unwrap();
    assert!(!denied.allowed() && denied.blocked());
    engine.reset_key(&bob).unwrap();
    assert!(
        engine
            .check(&Request::new("GET", "/").subject("bob"))
            .unwrap()
            .allowed()
    );
}

#[test]
fn a_log_is_rewarded_from_its_newest_entries_and_addresses_any_spelling() {
    let engine = Engine::from_toml(RULES).unwrap();
    let log = Request::new("GET", "/log").ip("2001:db8::1");
    for _ in 0..3 {
        assert!(engine.check(&log).unwrap().allowed());
    }
    assert!(!engine.check(&log).unwrap().allowed());
    // The same /56 subnet, spelled otherwise.
    let key = KeyRef::new("log", "2001:0db8:0000:0000:00ff::2");
    assert_eq!(engine.inspect(&key).unwrap().remaining, 0);
    engine.reward(&key, 2).unwrap();
    assert_eq!(engine.inspect(&key).unwrap().remaining, 2);
    assert!(engine.check(&log).unwrap().allowed());
    // A global rule's key is ignored.
    let bucket = KeyRef {
        rule: "plain",
        key: None,
        role: None,
        now: None,
    };
    engine.penalize(&bucket, 3).unwrap();
    assert_eq!(
        engine
            .inspect(&KeyRef::new("plain", "anything"))
            .unwrap()
            .remaining,
        1
    );
}

#[test]
fn errors_name_what_is_wrong() {
    let engine = Engine::from_toml(RULES).unwrap();
    let e = engine.inspect(&KeyRef::new("nope", "x")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownRule);
    assert!(
        e.to_string().contains("\"nope\"") && e.to_string().contains("per-user"),
        "{e}"
    );
    let e = engine
        .block_key(&KeyRef::new("log", "10.0.0.1"), Duration::from_secs(1))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert!(e.to_string().contains("block_for"), "{e}");
}
