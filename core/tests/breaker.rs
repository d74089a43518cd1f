//! The breaker's state machine under a manual clock: count and time windows, minimum calls,
//! slow calls, growing open times, half-open probes, late outcomes.

use std::time::Duration;

use floodwall::Timestamp;
use floodwall::breaker::{Breaker, BreakerSettings, BreakerState, CallOutcome, Permit, WindowKind};

const T0: u64 = 1_700_000_000_000;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

fn settings() -> BreakerSettings {
    BreakerSettings {
        window: WindowKind::Count(10),
        min_calls: 4,
        failure_rate: 0.5,
        slow_call_duration: None,
        slow_call_rate: 1.0,
        open_for: Duration::from_secs(5),
        backoff: 1.0,
        max_open_for: Duration::from_secs(60),
        half_open_calls: 2,
    }
}

fn permit(b: &mut Breaker, now: Timestamp) -> Permit {
    b.try_acquire(now).0.expect("admitted")
}

fn call(b: &mut Breaker, now: Timestamp, outcome: CallOutcome) -> Option<BreakerState> {
    let p = permit(b, now);
    b.record(p, outcome, Duration::from_millis(10), now)
        .map(|t| t.to)
}

#[test]
fn opens_only_after_min_calls_at_the_failure_rate() {
    let mut b = Breaker::new(settings()).expect("valid");
    // Three failures: below min_calls, still closed.
    for _ in 0..3 {
        assert_eq!(call(&mut b, at(0), CallOutcome::Failure), None);
    }
    assert_eq!(b.state(at(0)), BreakerState::Closed);
    // The fourth call makes min_calls with 4/4 failing.
    assert_eq!(
        call(&mut b, at(0), CallOutcome::Timeout),
        Some(BreakerState::Open { until: at(5_000) })
    );
    assert!(b.try_acquire(at(4_999)).0.is_none());
    assert_eq!(b.reopens_at(), Some(at(5_000)));
}

#[test]
fn a_rate_below_the_threshold_keeps_it_closed_and_the_count_window_rolls() {
    let mut b = Breaker::new(settings()).expect("valid");
    // 10 calls, 4 failures (40%), never 50% once min_calls (4) is reached.
    let outcomes = "FSSSSSSFFF";
    for (i, o) in outcomes.chars().enumerate() {
        let outcome = if o == 'F' {
            CallOutcome::Failure
        } else {
            CallOutcome::Success
        };
        assert_eq!(call(&mut b, at(0), outcome), None, "call {i}");
    }
    assert_eq!(b.rates(at(0)).0, 0.4);
    // The window holds the last 10: a failure that pushes the oldest (a failure) out keeps 4/10 …
    assert_eq!(call(&mut b, at(0), CallOutcome::Failure), None);
    assert_eq!(b.rates(at(0)).0, 0.4);
    // … one that pushes a success out makes 5/10.
    assert_eq!(
        call(&mut b, at(0), CallOutcome::Failure),
        Some(BreakerState::Open { until: at(5_000) })
    );
}

#[test]
fn a_time_window_forgets_old_calls() {
    let time_window = || {
        Breaker::new(BreakerSettings {
            window: WindowKind::Time(Duration::from_secs(10)),
            min_calls: 8,
            ..settings()
        })
        .expect("valid")
    };
    let mut b = time_window();
    for _ in 0..3 {
        call(&mut b, at(0), CallOutcome::Failure);
    }
    assert_eq!(b.rates(at(0)).0, 1.0);
    // 10 s later those three have left the window (buckets of 1 s).
    assert_eq!(b.rates(at(9_999)).0, 1.0);
    assert_eq!(
        b.rates(at(10_000)),
        (0.0, 0.0),
        "the report forgets them too"
    );
    assert_eq!(call(&mut b, at(10_000), CallOutcome::Success), None);
    assert_eq!(b.rates(at(10_000)), (0.0, 0.0));

    // Within the window they count: 3 failures, 4 successes, then a failure: 4/8.
    let mut b = time_window();
    for _ in 0..3 {
        call(&mut b, at(0), CallOutcome::Failure);
    }
    for _ in 0..4 {
        assert_eq!(call(&mut b, at(8_999), CallOutcome::Success), None);
    }
    assert!(matches!(
        call(&mut b, at(9_000), CallOutcome::Failure),
        Some(BreakerState::Open { .. })
    ));
}

#[test]
fn slow_calls_trip_it_when_configured() {
    let mut b = Breaker::new(BreakerSettings {
        slow_call_duration: Some(Duration::from_millis(500)),
        slow_call_rate: 0.75,
        ..settings()
    })
    .expect("valid");
    let slow = |b: &mut Breaker, ms: u64| {
        let p = permit(b, at(0));
        b.record(p, CallOutcome::Success, Duration::from_millis(ms), at(0))
    };
    assert!(slow(&mut b, 600).is_none());
    assert!(slow(&mut b, 100).is_none());
    assert!(slow(&mut b, 500).is_none());
    let t = slow(&mut b, 900).expect("3 of 4 slow: 75%");
    assert_eq!(t.to, BreakerState::Open { until: at(5_000) });
    assert_eq!((t.failure_rate, t.slow_call_rate), (0.0, 0.75));
}

#[test]
fn half_open_admits_exactly_the_probes_and_closes_when_all_succeed() {
    let mut b = Breaker::new(settings()).expect("valid");
    for _ in 0..4 {
        call(&mut b, at(0), CallOutcome::Failure);
    }
    let (first, t) = b.try_acquire(at(5_000));
    let first = first.expect("first probe");
    assert_eq!(t.map(|t| t.to), Some(BreakerState::HalfOpen));
    assert!(first.is_probe());
    let second = permit(&mut b, at(5_000));
    assert!(b.try_acquire(at(5_001)).0.is_none(), "only two probes");
    assert!(!b.available(at(5_001)));
    assert_eq!(
        b.record(first, CallOutcome::Success, Duration::ZERO, at(5_010)),
        None
    );
    assert!(
        b.try_acquire(at(5_011)).0.is_none(),
        "a finished probe frees no slot"
    );
    let closed = b.record(second, CallOutcome::Success, Duration::ZERO, at(5_020));
    assert_eq!(closed.map(|t| t.to), Some(BreakerState::Closed));
    assert_eq!(b.rates(at(5_020)), (0.0, 0.0), "a fresh window");
    let normal = permit(&mut b, at(5_021));
    assert!(!normal.is_probe());
}

#[test]
fn a_failed_probe_reopens_with_a_growing_capped_open_time() {
    let mut b = Breaker::new(BreakerSettings {
        backoff: 2.0,
        max_open_for: Duration::from_secs(15),
        ..settings()
    })
    .expect("valid");
    for _ in 0..4 {
        call(&mut b, at(0), CallOutcome::Failure);
    }
    assert_eq!(b.reopens_at(), Some(at(5_000)));
    // Probe fails: open 10 s, then 15 s (capped, not 20), and stays capped.
    let mut now = 5_000;
    for expected in [10_000, 15_000, 15_000] {
        let p = permit(&mut b, at(now));
        let t = b.record(p, CallOutcome::Failure, Duration::ZERO, at(now));
        assert_eq!(
            t.map(|t| t.to),
            Some(BreakerState::Open {
                until: at(now + expected)
            })
        );
        now += expected;
    }
    // A recovery resets the backoff: the next trip opens for 5 s again.
    for _ in 0..2 {
        let p = permit(&mut b, at(now));
        b.record(p, CallOutcome::Success, Duration::ZERO, at(now));
    }
    assert_eq!(b.state(at(now)), BreakerState::Closed);
    for _ in 0..4 {
        call(&mut b, at(now), CallOutcome::Failure);
    }
    assert_eq!(b.reopens_at(), Some(at(now + 5_000)));
}

#[test]
fn outcomes_of_calls_admitted_before_a_transition_do_not_count_as_probes() {
    let tripped = |early: usize| {
        let mut b = Breaker::new(settings()).expect("valid");
        let early: Vec<Permit> = (0..early).map(|_| permit(&mut b, at(0))).collect();
        for _ in 0..4 {
            call(&mut b, at(0), CallOutcome::Failure);
        }
        (b, early)
    };
    // A call admitted while closed ends during half-open, successfully: not a probe.
    let (mut b, mut early) = tripped(1);
    let probe = b.try_acquire(at(5_000)).0.expect("probe");
    let late = early.pop().expect("one");
    assert_eq!(
        b.record(late, CallOutcome::Success, Duration::ZERO, at(5_001)),
        None
    );
    assert_eq!(b.state(at(5_001)), BreakerState::HalfOpen);
    // A released probe gives its slot back.
    b.release(probe);
    assert!(b.try_acquire(at(5_002)).0.is_some());

    // Nor does a late failure reopen it.
    let (mut b, mut early) = tripped(1);
    let _probe = b.try_acquire(at(5_000)).0.expect("probe");
    let late = early.pop().expect("one");
    assert_eq!(
        b.record(late, CallOutcome::Failure, Duration::ZERO, at(5_001)),
        None
    );
    assert_eq!(b.state(at(5_001)), BreakerState::HalfOpen);
}

#[test]
fn probes_that_never_answer_reopen_the_breaker_after_open_for() {
    let mut b = Breaker::new(settings()).expect("valid");
    for _ in 0..4 {
        call(&mut b, at(0), CallOutcome::Failure);
    }
    let _hung = [permit(&mut b, at(5_000)), permit(&mut b, at(6_000))];
    assert_eq!(b.probe_deadline(), Some(at(11_000)));
    assert!(!b.available(at(10_999)));
    assert!(
        b.available(at(11_000)),
        "worth asking: it gives up on the probes"
    );
    let (none, t) = b.try_acquire(at(11_000));
    assert!(none.is_none());
    assert_eq!(
        t.map(|t| t.to),
        Some(BreakerState::Open { until: at(16_000) })
    );
}

#[test]
fn a_slow_probe_reopens_the_breaker() {
    let mut b = Breaker::new(BreakerSettings {
        slow_call_duration: Some(Duration::from_millis(500)),
        ..settings()
    })
    .expect("valid");
    for _ in 0..4 {
        call(&mut b, at(0), CallOutcome::Failure);
    }
    let probe = permit(&mut b, at(5_000));
    let t = b.record(
        probe,
        CallOutcome::Success,
        Duration::from_millis(700),
        at(5_700),
    );
    assert!(matches!(t.map(|t| t.to), Some(BreakerState::Open { .. })));
}

#[test]
fn settings_are_validated() {
    for (bad, field) in [
        (
            BreakerSettings {
                backoff: -2.0,
                ..settings()
            },
            "breaker.backoff",
        ),
        (
            BreakerSettings {
                half_open_calls: 0,
                ..settings()
            },
            "breaker.half_open_calls",
        ),
        (
            BreakerSettings {
                failure_rate: f64::NAN,
                ..settings()
            },
            "breaker.failure_rate",
        ),
        (
            BreakerSettings {
                min_calls: 11,
                ..settings()
            },
            "breaker.min_calls",
        ),
        (
            BreakerSettings {
                max_open_for: Duration::from_secs(1),
                ..settings()
            },
            "breaker.max_open_for",
        ),
    ] {
        let e = Breaker::new(bad).expect_err(field);
        assert_eq!(e.field(), Some(field), "{e}");
    }
}

#[test]
fn the_open_time_saturates_at_its_cap_whatever_the_trips() {
    let mut b = Breaker::new(BreakerSettings {
        backoff: 10.0,
        max_open_for: Duration::from_secs(3600),
        ..settings()
    })
    .expect("valid");
    for _ in 0..4 {
        call(&mut b, at(0), CallOutcome::Failure);
    }
    let mut now = 0;
    for _ in 0..400 {
        now = b.reopens_at().expect("open").as_millis() - T0;
        let p = permit(&mut b, at(now));
        b.record(p, CallOutcome::Failure, Duration::ZERO, at(now));
    }
    assert_eq!(b.reopens_at(), Some(at(now + 3_600_000)));
}

#[test]
fn reset_closes_at_once() {
    let mut b = Breaker::new(settings()).expect("valid");
    for _ in 0..4 {
        call(&mut b, at(0), CallOutcome::Failure);
    }
    assert_eq!(b.reset(at(1)).map(|t| t.to), Some(BreakerState::Closed));
    assert!(b.try_acquire(at(1)).0.is_some());
    assert_eq!(b.reset(at(2)), None, "already closed");
}
