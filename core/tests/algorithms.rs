//! One unit test per algorithm through the `Quota` API, with values worked out by hand (µs).

use std::num::NonZeroU64;
use std::time::Duration;

use floodwall::Timestamp;
use floodwall::limit::{Outcome, Quota};

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn nz(n: u64) -> NonZeroU64 {
    NonZeroU64::new(n).unwrap()
}

/// (allowed, remaining, reset_after ms, retry_after ms) of an outcome.
fn summary(o: Outcome) -> (bool, u64, u128, u128) {
    (
        o.allowed,
        o.remaining,
        o.reset_after().as_millis(),
        o.retry_after().as_millis(),
    )
}

#[test]
fn fixed_window_counts_per_aligned_window() {
    let q = Quota::fixed_window(nz(3), Duration::from_secs(1)).unwrap();
    let mut s = q.new_state(at(10_200));
    assert_eq!(summary(q.acquire(&mut s, at(10_200), 2)), (true, 1, 800, 0));
    assert_eq!(
        summary(q.acquire(&mut s, at(10_500), 2)),
        (false, 1, 500, 500)
    );
    assert_eq!(summary(q.acquire(&mut s, at(10_999), 1)), (true, 0, 1, 0));
    // The window edge: a new count at exactly 11 000.
    assert_eq!(
        summary(q.acquire(&mut s, at(11_000), 3)),
        (true, 0, 1000, 0)
    );
}

#[test]
fn sliding_window_expires_entries_exactly() {
    let q = Quota::sliding_window(nz(3), Duration::from_secs(1)).unwrap();
    let mut s = q.new_state(at(0));
    assert!(q.acquire(&mut s, at(0), 1).allowed);
    assert!(q.acquire(&mut s, at(400), 2).allowed);
    // Full: the entry at 0 frees one unit at 1000, the entry at 400 two more at 1400.
    assert_eq!(summary(q.acquire(&mut s, at(900), 1)), (false, 0, 500, 100));
    assert_eq!(summary(q.acquire(&mut s, at(900), 2)), (false, 0, 500, 500));
    assert_eq!(summary(q.acquire(&mut s, at(1000), 1)), (true, 0, 1000, 0));
    assert_eq!(q.expires_at(&s), at(2000));
}

#[test]
fn sliding_window_counter_weights_the_previous_window() {
    let q = Quota::sliding_window_counter(nz(10), Duration::from_secs(1)).unwrap();
    let mut s = q.new_state(at(0));
    assert!(q.acquire(&mut s, at(500), 10).allowed);
    // 250 ms into the next window the previous 10 weigh 7.5: room for 2.
    assert_eq!(summary(q.acquire(&mut s, at(1250), 3)), (false, 2, 750, 50));
    assert_eq!(summary(q.acquire(&mut s, at(1300), 3)), (true, 0, 1700, 0));
    // Previous 10 weigh 3 at 1700 and current holds 3: 4 left.
    assert_eq!(summary(q.acquire(&mut s, at(1700), 0)), (true, 4, 1300, 0));
}

#[test]
fn token_bucket_refills_continuously_up_to_capacity() {
    let q = Quota::token_bucket(nz(4), 2.0).unwrap();
    assert_eq!(q.emission_interval(), Some(Duration::from_millis(500)));
    let mut s = q.new_state(at(0));
    assert_eq!(summary(q.acquire(&mut s, at(0), 4)), (true, 0, 2000, 0));
    assert_eq!(
        summary(q.acquire(&mut s, at(200), 1)),
        (false, 0, 1800, 300)
    );
    assert_eq!(summary(q.acquire(&mut s, at(500), 1)), (true, 0, 2000, 0));
    // After a long idle the bucket is full, not more.
    assert_eq!(summary(q.acquire(&mut s, at(60_000), 0)), (true, 4, 0, 0));
    assert_eq!(
        summary(q.acquire(&mut s, at(60_000), 5)),
        (false, 4, 0, 500)
    );
}

#[test]
fn invalid_quotas_are_refused() {
    assert!(Quota::fixed_window(nz(1), Duration::ZERO).is_err());
    assert!(Quota::sliding_window(nz(1), Duration::from_secs(400 * 86_400)).is_err());
    assert!(Quota::token_bucket(nz(1), 0.0).is_err());
    assert!(Quota::token_bucket(nz(1), f64::NAN).is_err());
    assert!(Quota::token_bucket(nz(u64::MAX / 2), 1.0).is_err());
    // 3 per second: the interval rounds up to whole µs, never exceeding the rate.
    let q = Quota::token_bucket(nz(1), 3.0).unwrap();
    assert_eq!(q.emission_interval(), Some(Duration::from_micros(333_334)));
}

#[test]
fn a_share_of_a_quota_scales_its_limit_and_a_buckets_rate() {
    let window =
        Quota::fixed_window(NonZeroU64::new(200).unwrap(), Duration::from_secs(60)).unwrap();
    let quarter = window.shared_by(0.25);
    assert_eq!(
        (quarter.limit(), quarter.period()),
        (50, Duration::from_secs(60))
    );
    // Never below one, and a whole share is the quota itself.
    assert_eq!(window.shared_by(0.001).limit(), 1);
    assert_eq!(window.shared_by(1.0), window);
    // A bucket of 100 refilled at 10/s: 25 refilled at 2.5/s (one token every 400 ms).
    let bucket = Quota::token_bucket(NonZeroU64::new(100).unwrap(), 10.0).unwrap();
    let quarter = bucket.shared_by(0.25);
    assert_eq!(quarter.limit(), 25);
    assert_eq!(
        quarter.emission_interval(),
        Some(Duration::from_millis(400))
    );
    // The scaled bucket still admits its burst, then refills at its share of the rate.
    let mut s = quarter.new_state(at(0));
    for _ in 0..25 {
        assert!(quarter.acquire(&mut s, at(0), 1).allowed);
    }
    assert!(!quarter.acquire(&mut s, at(399), 1).allowed);
    assert!(quarter.acquire(&mut s, at(400), 1).allowed);
}
