//! Property tests of the algorithms: whatever the arrival pattern and costs, the exact
//! algorithms never admit more than `limit` in a window, the bucket never more than
//! `capacity + elapsed / T`, `retry_after` is both sufficient and minimal, and `remaining` is
//! exactly the largest cost that would pass.

use std::num::NonZeroU64;
use std::time::Duration;

use floodwall::Timestamp;
use floodwall::limit::{Algorithm, Quota, State};
use proptest::prelude::*;

const START: u64 = 1_000_000_000; // µs

fn quota(algorithm: Algorithm, limit: u64, period_ms: u64) -> Quota {
    let limit = NonZeroU64::new(limit).unwrap();
    let window = Duration::from_millis(period_ms);
    match algorithm {
        Algorithm::FixedWindow => Quota::fixed_window(limit, window),
        Algorithm::SlidingWindow => Quota::sliding_window(limit, window),
        // Unreleased holds: a sliding log with `max_hold` as its window.
        Algorithm::Concurrency => Quota::concurrency(limit, window),
        Algorithm::SlidingWindowCounter => Quota::sliding_window_counter(limit, window),
        // A refill rate with a fractional emission interval in µs now and then.
        Algorithm::TokenBucket => Quota::token_bucket(limit, 1000.0 / period_ms as f64 * 3.0),
    }
    .unwrap()
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        Just(Algorithm::FixedWindow),
        Just(Algorithm::SlidingWindow),
        Just(Algorithm::SlidingWindowCounter),
        Just(Algorithm::TokenBucket),
        Just(Algorithm::Concurrency),
    ]
}

/// A scenario: algorithm, limit, period in ms, and steps of (µs since the previous step, cost).
fn scenario() -> impl Strategy<Value = (Algorithm, u64, u64, Vec<(u64, u64)>)> {
    (algorithm(), 1u64..12, 1u64..400).prop_flat_map(|(a, limit, period)| {
        let steps = prop::collection::vec((0u64..period * 1500, 0u64..=limit), 1..120);
        (Just(a), Just(limit), Just(period), steps)
    })
}

/// Whether a request of `cost` at `t` passes `state`, without touching it.
fn passes(q: &Quota, state: &State, t: u64, cost: u64) -> bool {
    q.evaluate(&mut state.clone(), Timestamp::from_micros(t), cost)
        .allowed
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn limits_hold_and_answers_are_exact((a, limit, period, steps) in scenario()) {
        let q = quota(a, limit, period);
        let mut state = q.new_state(Timestamp::from_micros(START));
        let mut admitted: Vec<(u64, u64)> = Vec::new();
        let mut t = START;
        for (dt, cost) in steps {
            t += dt;
            let now = Timestamp::from_micros(t);
            let before = state.clone();
            let outcome = q.acquire(&mut state, now, cost);

            // `remaining` is the largest cost that passes now (after this request).
            let after = if outcome.allowed { &state } else { &before };
            prop_assert!(passes(&q, after, t, outcome.remaining));
            if outcome.remaining < limit {
                prop_assert!(!passes(&q, after, t, outcome.remaining + 1));
            }

            if outcome.allowed {
                prop_assert_eq!(outcome.retry_after(), Duration::ZERO);
                admitted.push((t, cost));
            } else {
                // Denied: nothing consumed, and retry_after is enough and no more than enough.
                prop_assert!(passes(&q, &before, t, 0));
                let mut replay = before.clone();
                let again = q.evaluate(&mut replay, now, cost);
                prop_assert_eq!(again, outcome);
                let wait = outcome.retry_after().as_micros() as u64;
                prop_assert!(wait > 0);
                prop_assert!(passes(&q, &before, t + wait, cost), "retry_after {} too short", wait);
                prop_assert!(!passes(&q, &before, t + wait - 1, cost), "retry_after {} not minimal", wait);
            }
        }

        let w = period * 1000;
        match a {
            Algorithm::FixedWindow | Algorithm::SlidingWindowCounter => {
                // Never more than `limit` in one aligned window.
                let mut by_window = std::collections::BTreeMap::new();
                for &(t, c) in &admitted {
                    *by_window.entry(t / w).or_insert(0) += c;
                }
                prop_assert!(by_window.values().all(|&n| n <= limit), "{:?}", by_window);
            }
            Algorithm::SlidingWindow | Algorithm::Concurrency => {
                // Never more than `limit` in any interval of length `window` (`max_hold`).
                for &(end, _) in &admitted {
                    let n: u64 = admitted.iter().filter(|&&(t, _)| t + w > end && t <= end).map(|&(_, c)| c).sum();
                    prop_assert!(n <= limit, "{} admitted in the window ending at {}", n, end);
                }
            }
            Algorithm::TokenBucket => {
                // Never more than capacity + elapsed / T over any interval.
                let interval = q.emission_interval().unwrap().as_micros() as u64;
                for (i, &(from, _)) in admitted.iter().enumerate() {
                    let mut n = 0;
                    for &(to, c) in &admitted[i..] {
                        n += c;
                        prop_assert!(n <= limit + (to - from) / interval, "{} admitted in {}µs", n, to - from);
                    }
                }
            }
        }
    }

    #[test]
    fn counter_estimate_never_exceeds_limit((limit, period, steps) in (1u64..12, 1u64..400).prop_flat_map(|(l, p)| {
        (Just(l), Just(p), prop::collection::vec((0u64..p * 1500, 1u64..=l), 1..120))
    })) {
        // The weighted estimate over the window ending at each admission stays within limit:
        // previous-window admissions weighted by their overlap, plus the current window's.
        let q = quota(Algorithm::SlidingWindowCounter, limit, period);
        let w = period * 1000;
        let mut state = q.new_state(Timestamp::from_micros(START));
        let mut admitted: Vec<(u64, u64)> = Vec::new();
        let mut t = START;
        for (dt, cost) in steps {
            t += dt;
            if q.acquire(&mut state, Timestamp::from_micros(t), cost).allowed {
                admitted.push((t, cost));
                let index = t / w;
                let e = t - index * w;
                let p: u64 = admitted.iter().filter(|&&(x, _)| x / w + 1 == index).map(|&(_, c)| c).sum();
                let c: u64 = admitted.iter().filter(|&&(x, _)| x / w == index).map(|&(_, c)| c).sum();
                prop_assert!(u128::from(p) * u128::from(w - e) + u128::from(c) * u128::from(w) <= u128::from(limit) * u128::from(w));
            }
        }
    }
}

#[test]
fn clock_stepping_back_never_admits_more() {
    for a in [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
        Algorithm::SlidingWindowCounter,
        Algorithm::TokenBucket,
    ] {
        let q = quota(a, 3, 1000);
        let t = START + 10_000_000;
        let mut state = q.new_state(Timestamp::from_micros(t));
        for _ in 0..3 {
            assert!(
                q.acquire(&mut state, Timestamp::from_micros(t), 1).allowed,
                "{a}"
            );
        }
        // Earlier than anything recorded: still exhausted.
        for back in [1, 500_000, 5_000_000] {
            assert!(
                !q.acquire(&mut state, Timestamp::from_micros(t - back), 1)
                    .allowed,
                "{a} admitted at {back}µs before"
            );
        }
    }
}
