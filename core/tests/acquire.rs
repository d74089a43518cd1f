//! Waiting for capacity: `Engine::acquire` and `acquire_async` on the memory store, on the
//! engine's (system) clock. Every wait is bounded by its `max_wait`; the assertions are about
//! what is admitted, never about how long it took.

use std::sync::Arc;
use std::time::Duration;

use floodwall::{Engine, Request};

fn engine(rules: &str) -> Arc<Engine> {
    Arc::new(Engine::from_toml(rules).unwrap())
}

const WINDOW: &str = r#"
[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 1
window = "100ms"
"#;

#[test]
fn a_denied_request_waits_for_the_next_window() {
    let engine = engine(WINDOW);
    let alice = Request::new("GET", "/").subject("alice");
    assert!(engine.check(&alice).unwrap().allowed());
    let waited = engine.acquire(&alice, Duration::from_secs(2)).unwrap();
    assert!(waited.allowed(), "{waited:?}");
    // The window it was admitted in is spent.
    assert!(!engine.check(&alice).unwrap().allowed());
}

#[test]
fn a_wait_longer_than_max_wait_answers_the_denial_at_once() {
    let engine = engine(
        &WINDOW
            .replace("100ms", "1h")
            .replace("fixed_window", "sliding_window"),
    );
    let alice = Request::new("GET", "/").subject("alice");
    assert!(engine.check(&alice).unwrap().allowed());
    let denied = engine.acquire(&alice, Duration::from_millis(50)).unwrap();
    assert!(!denied.allowed());
    assert!(denied.retry_after() > Duration::from_secs(3000));
}

#[test]
fn waiters_are_admitted_one_per_window_and_none_is_lost() {
    let engine = engine(WINDOW);
    let alice = Request::new("GET", "/").subject("alice");
    assert!(engine.check(&alice).unwrap().allowed());
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                let d = engine
                    .acquire(
                        &Request::new("GET", "/").subject("alice"),
                        Duration::from_secs(5),
                    )
                    .unwrap();
                (d.allowed(), std::time::SystemTime::now())
            })
        })
        .collect();
    let mut admitted: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(admitted.iter().all(|(allowed, _)| *allowed));
    // One per window: no two admissions in the same 100 ms window.
    admitted.sort_by_key(|(_, at)| *at);
    let windows: std::collections::BTreeSet<u128> = admitted
        .iter()
        .map(|(_, at)| {
            at.duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                / 100
        })
        .collect();
    assert_eq!(windows.len(), 4, "{admitted:?}");
}

const IN_FLIGHT: &str = r#"
[[rules]]
name = "in-flight"
key = "subject"
algorithm = "concurrency"
limit = 1
"#;

#[test]
fn a_waiter_for_a_concurrency_place_is_admitted_when_it_is_released() {
    let engine = engine(IN_FLIGHT);
    let alice = Request::new("GET", "/").subject("alice");
    let mut held = engine.check(&alice).unwrap();
    assert!(held.allowed());
    let permit = held.take_permit().unwrap();
    let releaser = {
        let engine = Arc::clone(&engine);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            engine.release(permit)
        })
    };
    // The denial's retry_after is max_hold (a minute); the release comes long before.
    let waited = engine.acquire(&alice, Duration::from_secs(5)).unwrap();
    assert!(waited.allowed() && waited.holds(), "{waited:?}");
    assert!(releaser.join().unwrap());
    drop(waited);
    assert!(engine.check(&alice).unwrap().allowed());
}

#[test]
fn acquire_async_waits_without_a_thread() {
    let engine = engine(WINDOW);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let alice = Request::new("GET", "/").subject("alice");
        assert!(engine.check(&alice).unwrap().allowed());
        let (first, second) = tokio::join!(
            engine.acquire_async(&alice, Duration::from_secs(5)),
            engine.acquire_async(&alice, Duration::from_secs(5)),
        );
        assert!(first.unwrap().allowed() && second.unwrap().allowed());
        let short = engine
            .acquire_async(&alice.subject("bob"), Duration::from_millis(1))
            .await
            .unwrap();
        assert!(short.allowed());
    });
}
