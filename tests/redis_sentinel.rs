//! The Redis store through Redis Sentinel (`kind = "redis_sentinel"`) against real processes:
//! a primary, its replica and three sentinels on loopback. The primary is killed; decisions go
//! to the fallback while the sentinels promote the replica, then back to Redis, with the
//! counts the replica holds.

use std::time::{Duration, Instant};

use floodwall::{Engine, Request, StoreUsed};
use floodwall_tests::redis_server::{RedisSentinels, SENTINEL_MASTER};

fn engine(group: &RedisSentinels) -> Engine {
    let sentinels: Vec<String> = group.urls().iter().map(|u| format!("{u:?}")).collect();
    Engine::from_toml(&format!(
        r#"
[store]
kind = "redis_sentinel"
sentinels = [{}]
master = "{SENTINEL_MASTER}"
prefix = "sentinel:"
timeout = "200ms"
fallback_share = 0.1

[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 100
window = "1h"
"#,
        sentinels.join(", ")
    ))
    .expect("config")
}

#[test]
fn a_killed_primary_is_replaced_and_decisions_go_back_to_redis_within_a_second() {
    let mut group = RedisSentinels::start();
    let engine = engine(&group);
    let request = Request::new("GET", "/orders").subject("alice");
    for _ in 0..50 {
        let d = engine.check(&request).expect("a decision");
        assert!(d.allowed());
        assert_eq!(d.store(), StoreUsed::Redis, "{:?}", engine.store_failure());
    }
    // What the primary admitted is on the replica before the primary dies.
    assert!(group.primary.command("WAIT 1 5000").starts_with(":1"));
    let replica = group.replica.port();
    let killed = Instant::now();
    group.primary.kill();

    // Every check answers (no error) while the sentinels fail over, for at most 30 s.
    let mut promoted = None;
    let mut back = None;
    let mut on_fallback = 0;
    let mut admitted_on_fallback = 0;
    while killed.elapsed() < Duration::from_secs(30) {
        if promoted.is_none() && group.named_primary() == Some(replica) {
            promoted = Some(killed.elapsed());
        }
        let d = engine.check(&request).expect("a decision, not an error");
        match d.store() {
            StoreUsed::Redis => {
                back = Some(killed.elapsed());
                assert!(d.allowed());
                break;
            }
            StoreUsed::Fallback => {
                on_fallback += 1;
                admitted_on_fallback += usize::from(d.allowed());
            }
            other => panic!("decided by {other}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let promoted = promoted.expect("the sentinels promoted the replica within 30 s");
    let back = back.expect("decisions went back to Redis within 30 s");
    eprintln!(
        "failover: replica named primary {promoted:?} after the kill, decisions on Redis again \
         after {back:?}; {on_fallback} decisions on the fallback, {admitted_on_fallback} admitted"
    );
    assert!(on_fallback > 0, "the outage was seen");
    assert!(
        back <= promoted + Duration::from_secs(1),
        "back on Redis {back:?} after the kill, the replica promoted after {promoted:?}"
    );
    // The fallback grants its share of the limit (10 of 100) while Redis is away.
    assert!(admitted_on_fallback <= 10, "{admitted_on_fallback}");
    // The promoted replica holds the 50 admitted before the kill and the one just admitted:
    // the limit ends exactly at 100 on Redis.
    let mut more = 0;
    for _ in 0..100 {
        let d = engine.check(&request).expect("a decision");
        assert!(matches!(d.store(), StoreUsed::Redis | StoreUsed::DenyCache));
        if !d.allowed() {
            break;
        }
        more += 1;
    }
    assert_eq!(50 + 1 + more, 100);
}

#[test]
fn sentinels_that_do_not_answer_leave_the_engine_built_and_deciding_on_the_fallback() {
    let port = floodwall_tests::redis_server::free_port();
    let engine = Engine::from_toml(&format!(
        r#"
[store]
kind = "redis_sentinel"
sentinels = ["redis://127.0.0.1:{port}"]
master = "{SENTINEL_MASTER}"
connect_timeout = "200ms"

[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 1
window = "1h"
"#
    ))
    .expect("built without Redis");
    assert_eq!(engine.store_kind().as_str(), "redis_sentinel");
    let request = Request::new("GET", "/").subject("bob");
    let first = engine.check(&request).expect("a decision");
    assert_eq!(first.store(), StoreUsed::Fallback);
    assert!(first.allowed());
    assert!(!engine.check(&request).expect("a decision").allowed());
    assert!(engine.store_failure().is_some());
}
