//! `concurrency` rules: requests in progress per key, held by a decision (or its permit) or
//! an HTTP exchange until released, and at the longest for `max_hold`.

use floodwall::http::{HttpRequest, HttpStage, HttpVerdict};
use floodwall::{Engine, ErrorKind, Request, Timestamp};

const RULES: &str = r#"
[[rules]]
name = "in-flight"
key = "subject"
algorithm = "concurrency"
limit = 2
max_hold = "30s"
roles.premium = { limit = 3 }
"#;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(1_000_000 + ms)
}

#[test]
fn a_decision_holds_its_place_until_it_is_dropped() {
    let engine = Engine::from_toml(RULES).unwrap();
    let alice = Request::new("GET", "/").subject("alice").at(at(0));
    let first = engine.check(&alice).unwrap();
    let second = engine.check(&alice).unwrap();
    assert!(first.allowed() && second.allowed() && first.holds());
    assert_eq!(second.remaining(), Some(0));
    let third = engine.check(&alice).unwrap();
    assert!(!third.allowed() && !third.holds());
    // The wait is the longest: until the oldest hold expires.
    assert_eq!(third.retry_after_ms(), 30_000);
    drop(third);
    // Others have places of their own; a premium caller has three.
    assert!(engine.check(&alice.subject("bob")).unwrap().allowed());
    drop(first);
    let again = engine.check(&alice).unwrap();
    assert!(again.allowed());
    assert_eq!(again.remaining(), Some(0));
    let premium = alice.subject("carol").role("premium");
    let held: Vec<_> = (0..3).map(|_| engine.check(&premium).unwrap()).collect();
    assert!(held.iter().all(|d| d.allowed()));
    assert!(!engine.check(&premium).unwrap().allowed());
}

#[test]
fn a_permit_taken_out_is_released_by_its_engine_once() {
    let engine = Engine::from_toml(RULES).unwrap();
    let other = Engine::from_toml(RULES).unwrap();
    let alice = Request::new("GET", "/").subject("alice").at(at(0));
    let permits: Vec<_> = (0..2)
        .map(|_| {
            let mut d = engine.check(&alice).unwrap();
            assert!(d.allowed());
            d.take_permit().expect("an admitted decision holds")
        })
        .collect();
    // The decisions are gone; the permits still hold.
    assert!(!engine.check(&alice).unwrap().allowed());
    let mut permits = permits.into_iter();
    let first = permits.next().unwrap();
    assert!(!first.is_empty());
    assert!(
        !other.release(first),
        "another engine's permit releases nothing"
    );
    assert!(!engine.check(&alice).unwrap().allowed());
    assert!(engine.release(permits.next().unwrap()));
    assert!(engine.check(&alice).unwrap().allowed());
}

#[test]
fn an_unreleased_hold_ends_after_max_hold() {
    let engine = Engine::from_toml(RULES).unwrap();
    let alice = Request::new("GET", "/").subject("alice");
    let mut lost: Vec<_> = (0..2)
        .map(|_| engine.check(&alice.at(at(0))).unwrap().take_permit())
        .collect();
    assert!(!engine.check(&alice.at(at(29_999))).unwrap().allowed());
    let later = engine.check(&alice.at(at(30_000))).unwrap();
    assert!(later.allowed());
    assert_eq!(later.remaining(), Some(1));
    drop(later);
    // Releasing a hold that has already ended gives back nothing twice.
    let held = engine.check(&alice.at(at(30_001))).unwrap();
    assert!(engine.release(lost.pop().flatten().unwrap()));
    assert_eq!(
        engine.check(&alice.at(at(30_002))).unwrap().remaining(),
        Some(0),
        "the two holds at 30 s are still there: {held:?}"
    );
}

#[test]
fn an_http_exchange_holds_until_it_finishes() {
    let engine = Engine::from_toml(RULES).unwrap();
    let none: &[(&str, &str)] = &[];
    let ask = |ms: u64| {
        engine.http(
            &HttpRequest::new("GET", "/", &none)
                .caller("alice", None)
                .stage(HttpStage::RateLimit)
                .at(at(ms)),
        )
    };
    let (HttpVerdict::Pass(a), HttpVerdict::Pass(b)) = (ask(0), ask(1)) else {
        panic!("two in flight pass")
    };
    let HttpVerdict::Refuse(refusal) = ask(2) else {
        panic!("a third is refused")
    };
    assert_eq!(refusal.response.status, 429);
    // A failed response gives back as a successful one does.
    engine.http_finish_at(a.exchange, 500, &(), at(3));
    let HttpVerdict::Pass(c) = ask(4) else {
        panic!("a place was given back")
    };
    engine.http_finish_at(b.exchange, 200, &(), at(5));
    engine.http_finish_at(c.exchange, 200, &(), at(6));
    for ms in [7, 8] {
        assert!(matches!(ask(ms), HttpVerdict::Pass(_)));
    }
}

#[test]
fn concurrency_takes_a_limit_and_counts_no_responses() {
    let rule = "[[rules]]\nname = \"c\"\nkey = \"ip\"\nalgorithm = \"concurrency\"\n";
    let err = |extra: &str| {
        let e = Engine::from_toml(&format!("{rule}{extra}")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        (e.field().unwrap_or_default().to_owned(), e.to_string())
    };
    Engine::from_toml(&format!("{rule}limit = 10")).unwrap();
    assert_eq!(err("").0, "rules[0].limit");
    assert_eq!(err("limit = 1\nwindow = \"1s\"").0, "rules[0].window");
    assert_eq!(err("limit = 1\nmax_hold = \"0s\"").0, "rules[0].max_hold");
    let (field, message) = err("limit = 1\ncount_responses = \"failed\"");
    assert_eq!(field, "rules[0].count_responses");
    assert!(message.contains("gives back every request"), "{message}");
    let (field, _) = err("limit = 1\nsync = \"10ms\"");
    assert_eq!(field, "rules[0].sync");
    let (field, message) = Engine::from_toml(
        "[[rules]]\nname = \"w\"\nkey = \"ip\"\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"1s\"\nmax_hold = \"1s\"",
    )
    .map(|_| ())
    .map_err(|e| (e.field().unwrap_or_default().to_owned(), e.to_string()))
    .unwrap_err();
    assert_eq!(field, "rules[0].max_hold");
    assert!(message.contains("max_hold is for concurrency"), "{message}");
}
