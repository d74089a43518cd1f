//! The rate-limit algorithms, as pure state transitions, and the rule matcher.
//!
//! A [`Quota`] is one algorithm with its parameters; a [`State`] is what one key remembers.
//! [`Quota::evaluate`] answers "would a request of this cost pass now?" without consuming
//! anything, and [`Quota::consume`] then takes the cost; [`Quota::acquire`] does both. Stores
//! call them under their own locking (or port them to Lua), so the semantics live here once.
//!
//! Time is a [`Timestamp`] in microseconds and all arithmetic is exact integer arithmetic, so
//! two stores given the same times make the same decisions. The semantics, with worked
//! numbers, are in `tests/vectors/README.md`; in short:
//!
//! - `fixed_window { limit, window }`: a count per window `floor(now / window)`.
//! - `sliding_window { limit, window }`: exact; a log of admitted (time, cost) that counts an
//!   entry while `now < time + window`. Memory is O(limit) per key.
//! - `sliding_window_counter { limit, window }`: approximate, O(1); the previous window's count
//!   weighted by its remaining overlap plus the current window's count.
//! - `token_bucket { capacity, refill_rate }`: GCRA with emission interval
//!   `T = ceil(1e6 / refill_rate)` µs and burst `capacity`; one timestamp per key.
//! - `concurrency { limit, max_hold }`: at most `limit` requests in progress per key. An
//!   admitted request holds its cost until it is released (its response ends, its permit is
//!   dropped) or, at the latest, for `max_hold`: the state is `sliding_window`'s log with
//!   `max_hold` as its window, and a release is a refund at the time of admission. A denial's
//!   `retry_after` is when the oldest hold expires — the longest wait, since any release
//!   makes room sooner.
//!
//! Every outcome reports `remaining` — the largest cost that would be admitted right now —
//! `reset_after` — time until the key is back at its full quota if nothing else arrives — and,
//! on denial, `retry_after` — the least wait after which the same request is admitted if nothing
//! else consumes meanwhile. A clock that steps backwards never admits more: a limiter treats a
//! time earlier than what it has already recorded as that recorded time.

mod block;
mod calendar;
mod fixed_window;
mod rules;
mod sliding_window;
mod sliding_window_counter;
mod token_bucket;

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};
use std::time::Duration;

pub use block::Block;
pub use calendar::{Calendar, CalendarUnit};
pub(crate) use rules::is_token;
pub use rules::{
    CountResponses, KeyKind, PathPattern, Policy, RequestPath, ResponseCounting, Rule, RuleMatcher,
    StatusSet,
};

use crate::clock::{Timestamp, duration_micros};
use crate::error::{Error, ErrorKind};

use block::Blocking;
use fixed_window::{Every, FixedWindow, Windows};
use sliding_window::SlidingLog;
use sliding_window_counter::WindowCounter;
use token_bucket::Gcra;

/// The longest window or full-refill time a quota may have: 366 days.
pub const MAX_PERIOD: Duration = Duration::from_secs(366 * 24 * 3600);

/// The highest `refill_rate` of a token bucket: one token per microsecond.
pub const MAX_REFILL_RATE: f64 = 1_000_000.0;

/// The four algorithms, by their configuration names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// `fixed_window`
    FixedWindow,
    /// `sliding_window` (exact log)
    SlidingWindow,
    /// `sliding_window_counter` (approximate, O(1))
    SlidingWindowCounter,
    /// `token_bucket` (GCRA)
    TokenBucket,
    /// `concurrency` (requests in progress)
    Concurrency,
}

impl Algorithm {
    /// The configuration name, e.g. `token_bucket`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::FixedWindow => "fixed_window",
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::SlidingWindowCounter => "sliding_window_counter",
            Algorithm::TokenBucket => "token_bucket",
            Algorithm::Concurrency => "concurrency",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One algorithm with its parameters. Construct with [`Quota::fixed_window`] and friends, which
/// reject parameters that cannot work (zero or over-long windows, rates out of range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    algorithm: Algorithm,
    /// `limit` or `capacity`.
    limit: u64,
    /// The window, or for a token bucket the emission interval `T`, in µs; never zero.
    period: u64,
    /// Blocking after denials (`block_for`, `block_after`).
    block: Option<Block>,
    /// For a fixed window aligned to the calendar, its windows (`period` is then their
    /// nominal length).
    calendar: Option<Calendar>,
    /// Whether its keys may be given limits of their own ([`Quota::with_key_limits`]).
    key_limits: bool,
}

/// Runs `$body` with `$w` bound to the quota's fixed windows: of its period, or of its
/// calendar.
macro_rules! windows {
    ($quota:expr, |$w:ident| $body:expr) => {
        match &$quota.calendar {
            None => {
                let $w = Every($quota.period);
                $body
            }
            Some(calendar) => {
                let $w = calendar;
                $body
            }
        }
    };
}

impl Quota {
    fn windowed(algorithm: Algorithm, limit: NonZeroU64, window: Duration) -> Result<Self, Error> {
        let period = duration_micros(window);
        if period == 0 {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "window must be at least 1µs",
            ));
        }
        if window > MAX_PERIOD {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "window must be at most 366 days",
            ));
        }
        Ok(Quota {
            algorithm,
            limit: limit.get(),
            period,
            block: None,
            calendar: None,
            key_limits: false,
        })
    }

    /// At most `limit` per window `floor(now / window)`.
    pub fn fixed_window(limit: NonZeroU64, window: Duration) -> Result<Self, Error> {
        Self::windowed(Algorithm::FixedWindow, limit, window)
    }

    /// At most `limit` in any interval of length `window` (exact log).
    pub fn sliding_window(limit: NonZeroU64, window: Duration) -> Result<Self, Error> {
        Self::windowed(Algorithm::SlidingWindow, limit, window)
    }

    /// At most `limit` requests in progress, each held until released or for `max_hold` at
    /// the longest.
    pub fn concurrency(limit: NonZeroU64, max_hold: Duration) -> Result<Self, Error> {
        Self::windowed(Algorithm::Concurrency, limit, max_hold)
    }

    /// About `limit` per sliding `window`, estimated from two counters.
    pub fn sliding_window_counter(limit: NonZeroU64, window: Duration) -> Result<Self, Error> {
        Self::windowed(Algorithm::SlidingWindowCounter, limit, window)
    }

    /// Bursts of up to `capacity`, refilled continuously at `refill_rate` tokens per second.
    pub fn token_bucket(capacity: NonZeroU64, refill_rate: f64) -> Result<Self, Error> {
        if !(refill_rate.is_finite() && refill_rate > 0.0) {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "refill_rate must be a positive number of tokens per second, got {refill_rate}"
                ),
            ));
        }
        if refill_rate > MAX_REFILL_RATE {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "refill_rate must be at most {MAX_REFILL_RATE} tokens per second, got {refill_rate}"
                ),
            ));
        }
        let exact = 1_000_000.0 / refill_rate;
        // Ceil, but forgive floating-point noise so that 0.1/s gives exactly 10 s.
        let nearest = exact.round();
        let interval = if (exact - nearest).abs() <= exact * 1e-12 {
            nearest
        } else {
            exact.ceil()
        };
        let full = interval * capacity.get() as f64;
        if full > MAX_PERIOD.as_micros() as f64 {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "capacity / refill_rate must be at most 366 days (the time to refill an empty bucket)",
            ));
        }
        Ok(Quota {
            algorithm: Algorithm::TokenBucket,
            limit: capacity.get(),
            // In range: 1 <= interval <= full <= MAX_PERIOD in µs.
            period: interval as u64,
            block: None,
            calendar: None,
            key_limits: false,
        })
    }

    /// The algorithm.
    pub const fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The limit per window, or the bucket's capacity: the largest cost that can ever pass.
    pub const fn limit(&self) -> u64 {
        self.limit
    }

    /// The window; for a token bucket, the time to refill an empty bucket.
    pub const fn period(&self) -> Duration {
        match self.algorithm {
            Algorithm::TokenBucket => Duration::from_micros(self.limit * self.period),
            _ => Duration::from_micros(self.period),
        }
    }

    /// This quota's `share` (`0 < share <= 1`) for one of several deciders that each hold a
    /// part of it: the limit (or capacity) becomes `max(1, floor(limit × share))`, the window
    /// stays, and a token bucket refills at `share` of its rate (its emission interval grows
    /// by `1 / share`, within the longest period).
    pub fn shared_by(&self, share: f64) -> Quota {
        if !(share > 0.0 && share < 1.0) {
            return *self;
        }
        let limit = ((self.limit as f64 * share).floor() as u64).max(1);
        let period = match self.algorithm {
            Algorithm::TokenBucket => {
                let longest = MAX_PERIOD.as_micros() as f64 / limit as f64;
                (self.period as f64 / share).min(longest).ceil().max(1.0) as u64
            }
            _ => self.period,
        };
        Quota {
            algorithm: self.algorithm,
            limit,
            period,
            block: self.block,
            calendar: self.calendar,
            key_limits: self.key_limits,
        }
    }

    /// At most `limit` per window of `calendar` (a day, a week or a month of a time zone).
    pub fn calendar_window(limit: NonZeroU64, calendar: Calendar) -> Quota {
        Quota {
            algorithm: Algorithm::FixedWindow,
            limit: limit.get(),
            period: calendar.unit().nominal_micros(),
            block: None,
            calendar: Some(calendar),
            key_limits: false,
        }
    }

    /// The calendar a fixed window is aligned to, if it is.
    pub const fn calendar(&self) -> Option<&Calendar> {
        self.calendar.as_ref()
    }

    /// The same quota, blocking a key for `duration` once it has been denied `after` times
    /// within one window (see [`Block`]); `duration` is at least a millisecond and at most
    /// [`MAX_PERIOD`].
    pub fn blocking(mut self, duration: Duration, after: NonZeroU32) -> Result<Quota, Error> {
        if duration < Duration::from_millis(1) || duration > MAX_PERIOD {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("block_for must be from 1ms to 366 days, got {duration:?}"),
            ));
        }
        self.block = Some(Block {
            duration: duration_micros(duration),
            after: after.get(),
        });
        Ok(self)
    }

    /// The quota's blocking, if it blocks keys after denials.
    pub const fn block(&self) -> Option<&Block> {
        self.block.as_ref()
    }

    /// The same quota, whose keys may (or may not) be given limits of their own for a while
    /// ([`Quota::own`]): a store deciding one of its keys first looks for the key's limit.
    pub const fn with_key_limits(mut self, key_limits: bool) -> Quota {
        self.key_limits = key_limits;
        self
    }

    /// Whether its keys may be given limits of their own.
    pub const fn key_limits(&self) -> bool {
        self.key_limits
    }

    /// The parameters of a key's own limit `limit` under this quota, `(limit, period)` in
    /// the units of [`Quota::with_own`]: the limit (a bucket's capacity) replaced, the window
    /// kept, and a token bucket's refill rate scaled with its capacity, so that an empty
    /// bucket still refills in the same time (its emission interval `floor(T × C / limit)`,
    /// at least 1 µs, so a capacity beyond the refill time in µs is refused). For the other
    /// algorithms `limit × window` must stay below 2^53 µs, where the Redis script's
    /// arithmetic is exact.
    pub fn own(&self, limit: NonZeroU64) -> Result<(u64, u64), Error> {
        let limit = limit.get();
        match self.algorithm {
            Algorithm::TokenBucket => {
                let full = self.limit * self.period;
                if limit > full {
                    return Err(Error::new(
                        ErrorKind::InvalidConfig,
                        format!(
                            "limit {limit} is more than this token bucket can refill: at most {full} (its refill time in µs)"
                        ),
                    ));
                }
                Ok((limit, full / limit))
            }
            _ => {
                if u128::from(limit) * u128::from(self.period) >= 1 << 53 {
                    return Err(Error::new(
                        ErrorKind::InvalidConfig,
                        format!(
                            "limit {limit} is too large for a window of {} µs: limit × window must stay below 2^53",
                            self.period
                        ),
                    ));
                }
                Ok((limit, self.period))
            }
        }
    }

    /// This quota with a key's own `limit` and `period` (from [`Quota::own`]) in force.
    pub const fn with_own(mut self, limit: u64, period: u64) -> Quota {
        self.limit = limit;
        self.period = period;
        self
    }

    /// The state of a key's own limit, in force until `until`; kept by a store beside the
    /// key's state, like a blocking.
    pub(crate) const fn own_state(limit: u64, period: u64, until: Timestamp) -> State {
        State(Inner::Own(OwnLimit {
            limit,
            period,
            until: until.as_micros(),
        }))
    }

    /// The key's own limit `(limit, period, until)` that `state` (an [own
    /// state](Quota::own_state)) holds, if it is still in force at `now`.
    pub(crate) fn own_in_force(state: &State, now: Timestamp) -> Option<(u64, u64, Timestamp)> {
        match &state.0 {
            Inner::Own(o) if o.until > now.as_micros() => {
                Some((o.limit, o.period, Timestamp::from_micros(o.until)))
            }
            _ => None,
        }
    }

    /// The denial window of the quota's blocking, in µs: the window, or the time an empty
    /// bucket takes to refill.
    pub(crate) fn block_window(&self) -> u64 {
        duration_micros(self.period()).max(1)
    }

    /// The blocking state of a key never denied.
    pub(crate) const fn unblocked() -> State {
        State(Inner::Block(Blocking {
            until: 0,
            index: 0,
            denials: 0,
        }))
    }

    /// The time left at `now` of the block that `state` (a [blocking
    /// state](Quota::unblocked)) holds, if any.
    pub(crate) fn blocked_for(&self, state: &State, now: Timestamp) -> Option<u64> {
        match &state.0 {
            Inner::Block(b) => b.left(now.as_micros()),
            _ => None,
        }
    }

    /// Counts a denial at `now` in `state` (a [blocking state](Quota::unblocked)); answers the
    /// length of the block it starts, if it starts one.
    pub(crate) fn deny(&self, state: &mut State, now: Timestamp) -> Option<u64> {
        let block = self.block.as_ref()?;
        if !matches!(state.0, Inner::Block(_)) {
            *state = Self::unblocked();
        }
        let Inner::Block(b) = &mut state.0 else {
            unreachable!("a blocking state was just made")
        };
        b.deny(block, self.block_window(), now.as_micros())
    }

    /// For a token bucket, the time one token takes to refill (`T`).
    pub const fn emission_interval(&self) -> Option<Duration> {
        match self.algorithm {
            Algorithm::TokenBucket => Some(Duration::from_micros(self.period)),
            _ => None,
        }
    }

    /// The state of a key never seen before (a full quota) at `now`.
    #[inline]
    pub fn new_state(&self, now: Timestamp) -> State {
        let now = now.as_micros();
        State(match self.algorithm {
            Algorithm::FixedWindow => Inner::Fixed(windows!(self, |w| FixedWindow::new(w, now))),
            Algorithm::SlidingWindow | Algorithm::Concurrency => Inner::Log(Box::default()),
            Algorithm::SlidingWindowCounter => Inner::Counter(WindowCounter::new(self.period, now)),
            Algorithm::TokenBucket => Inner::Bucket(Gcra::new(now)),
        })
    }

    /// For a counting algorithm (`fixed_window`, `sliding_window_counter`), the state of a key
    /// that has counted `previous` in window `index - 1` and `current` in window `index`,
    /// each taken as at most the limit; `None` for the others.
    pub(crate) fn counted(&self, index: u64, previous: u64, current: u64) -> Option<State> {
        let (previous, current) = (previous.min(self.limit), current.min(self.limit));
        match self.algorithm {
            Algorithm::FixedWindow => {
                Some(State(Inner::Fixed(FixedWindow::counted(index, current))))
            }
            Algorithm::SlidingWindowCounter => Some(State(Inner::Counter(WindowCounter::counted(
                index, previous, current,
            )))),
            Algorithm::SlidingWindow | Algorithm::TokenBucket | Algorithm::Concurrency => None,
        }
    }

    /// The window `now` falls in, for the window algorithms: `floor(now / window)`.
    pub(crate) fn window_index(&self, now: Timestamp) -> u64 {
        windows!(self, |w| w.index(now.as_micros()))
    }

    /// Would a request of `cost` be admitted at `now`? Consumes nothing; may tidy the state
    /// (roll a window, drop expired log entries) without changing what it means.
    ///
    /// A `cost` above [`limit`](Quota::limit) is simply denied here with the wait it would need
    /// were it to fit; callers that must tell "never" from "later" check the limit first.
    #[inline]
    pub fn evaluate(&self, state: &mut State, now: Timestamp, cost: u64) -> Outcome {
        self.ensure_kind(state, now);
        let (l, p, now) = (self.limit, self.period, now.as_micros());
        match &mut state.0 {
            Inner::Fixed(s) => windows!(self, |w| s.evaluate(l, w, now, cost)),
            Inner::Log(s) => s.evaluate(l, p, now, cost),
            Inner::Counter(s) => s.evaluate(l, p, now, cost),
            Inner::Bucket(s) => s.evaluate(l, p, now, cost),
            Inner::Block(_) | Inner::Own(_) => unreachable!("ensure_kind leaves a quota's state"),
        }
    }

    /// Takes `cost` from `state` at `now` and returns the outcome after it. The caller has
    /// established, with [`evaluate`](Quota::evaluate) at the same `now` and nothing in
    /// between, that the request is admitted.
    #[inline]
    pub fn consume(&self, state: &mut State, now: Timestamp, cost: u64) -> Outcome {
        self.ensure_kind(state, now);
        let (l, p, now) = (self.limit, self.period, now.as_micros());
        match &mut state.0 {
            Inner::Fixed(s) => windows!(self, |w| s.consume(l, w, now, cost)),
            Inner::Log(s) => s.consume(l, p, now, cost),
            Inner::Counter(s) => s.consume(l, p, now, cost),
            Inner::Bucket(s) => s.consume(l, p, now, cost),
            Inner::Block(_) | Inner::Own(_) => unreachable!("ensure_kind leaves a quota's state"),
        }
    }

    /// Evaluates and, when admitted, consumes: one whole decision for one key.
    #[inline]
    pub fn acquire(&self, state: &mut State, now: Timestamp, cost: u64) -> Outcome {
        let outcome = self.evaluate(state, now, cost);
        if outcome.allowed {
            self.consume(state, now, cost)
        } else {
            outcome
        }
    }

    /// [`acquire`](Quota::acquire) in one dispatch; when admitted, also writes
    /// [`expires_at`](Quota::expires_at) of the state after (in µs) to `expires_at`.
    #[inline]
    pub(crate) fn acquire_expiring(
        &self,
        state: &mut State,
        now: Timestamp,
        cost: u64,
        expires_at: &mut u64,
    ) -> Outcome {
        self.ensure_kind(state, now);
        let (l, p, now) = (self.limit, self.period, now.as_micros());
        macro_rules! step {
            ($s:expr, $expiry:expr) => {
                step!($s, p, $expiry)
            };
            ($s:expr, $p:expr, $expiry:expr) => {{
                let outcome = $s.evaluate(l, $p, now, cost);
                if !outcome.allowed {
                    return outcome;
                }
                let outcome = $s.consume(l, $p, now, cost);
                *expires_at = $expiry;
                outcome
            }};
        }
        match &mut state.0 {
            Inner::Fixed(s) => windows!(self, |w| step!(s, w, s.expires_at(w))),
            Inner::Log(s) => step!(s, s.expires_at(p)),
            Inner::Counter(s) => step!(s, s.expires_at(p)),
            Inner::Bucket(s) => step!(s, s.expires_at()),
            Inner::Block(_) | Inner::Own(_) => unreachable!("ensure_kind leaves a quota's state"),
        }
    }

    /// Gives back `cost` that a decision at `at` consumed (its response asked for that; see
    /// [`crate::http`]), as far as the state still holds it: a window that has moved on keeps
    /// nothing to give back, and a token bucket is never filled beyond full. The Redis store's
    /// script does the same, step for step.
    pub fn refund(&self, state: &mut State, at: Timestamp, cost: u64) {
        let (p, at) = (self.period, at.as_micros());
        match &mut state.0 {
            Inner::Fixed(s) => windows!(self, |w| s.refund(w, at, cost)),
            Inner::Log(s) => s.refund(at, cost),
            Inner::Counter(s) => s.refund(p, at, cost),
            Inner::Bucket(s) => s.refund(p, cost),
            Inner::Block(_) | Inner::Own(_) => {}
        }
    }

    /// Gives back `cost` at `now` (an administrator's reward): what a refund of a request
    /// decided now gives back, and for the logs (`sliding_window`, `concurrency`) `cost` from
    /// the newest entries, whenever they were logged. Never beyond a fresh state.
    pub fn reward(&self, state: &mut State, now: Timestamp, cost: u64) {
        self.ensure_kind(state, now);
        if let Inner::Log(s) = &mut state.0 {
            s.reward(cost);
        } else {
            self.refund(state, now, cost);
        }
    }

    /// Sets `state` (a [blocking state](Quota::unblocked)) blocked until `until`.
    pub(crate) fn block_until(&self, state: &mut State, until: Timestamp) {
        if !matches!(state.0, Inner::Block(_)) {
            *state = Self::unblocked();
        }
        if let Inner::Block(b) = &mut state.0 {
            b.until = until.as_micros();
            b.denials = 0;
        }
    }

    /// Takes `cost` at `now` without asking whether it fits (a response reported what a
    /// request really cost): the state may end up exhausted, never beyond.
    pub fn charge(&self, state: &mut State, now: Timestamp, cost: u64) {
        self.ensure_kind(state, now);
        let (l, p, now) = (self.limit, self.period, now.as_micros());
        match &mut state.0 {
            Inner::Fixed(s) => windows!(self, |w| s.charge(l, w, now, cost)),
            Inner::Log(s) => s.charge(l, p, now, cost),
            Inner::Counter(s) => s.charge(l, p, now, cost),
            Inner::Bucket(s) => s.charge(l, p, now, cost),
            Inner::Block(_) | Inner::Own(_) => unreachable!("ensure_kind leaves a quota's state"),
        }
    }

    /// The time from which `state` means the same as a [new state](Quota::new_state): a store
    /// may forget the key from then on.
    #[inline]
    pub fn expires_at(&self, state: &State) -> Timestamp {
        let p = self.period;
        Timestamp::from_micros(match &state.0 {
            Inner::Fixed(s) => windows!(self, |w| s.expires_at(w)),
            Inner::Log(s) => s.expires_at(p),
            Inner::Counter(s) => s.expires_at(p),
            Inner::Bucket(s) => s.expires_at(),
            Inner::Block(s) => s.expires_at(self.block_window()),
            Inner::Own(o) => o.until,
        })
    }

    #[inline(always)]
    fn ensure_kind(&self, state: &mut State, now: Timestamp) {
        let matches = matches!(
            (&state.0, self.algorithm),
            (Inner::Fixed(_), Algorithm::FixedWindow)
                | (
                    Inner::Log(_),
                    Algorithm::SlidingWindow | Algorithm::Concurrency
                )
                | (Inner::Counter(_), Algorithm::SlidingWindowCounter)
                | (Inner::Bucket(_), Algorithm::TokenBucket)
        );
        if !matches {
            self.reset(state, now);
        }
    }

    #[cold]
    #[inline(never)]
    fn reset(&self, state: &mut State, now: Timestamp) {
        *state = self.new_state(now);
    }
}

/// What one key remembers between requests. Small and fixed-size except for the exact sliding
/// log, which holds at most `limit` entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State(Inner);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Inner {
    Fixed(FixedWindow),
    // Boxed so that the fixed-size states stay small.
    Log(Box<SlidingLog>),
    Counter(WindowCounter),
    Bucket(Gcra),
    /// Not a quota's state: a key's blocking, kept beside it ([`Quota::unblocked`]).
    Block(Blocking),
    /// Not a quota's state: a key's own limit, kept beside it ([`Quota::own_state`]).
    Own(OwnLimit),
}

/// A key's own limit: its limit and period (µs) until `until` (µs since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OwnLimit {
    limit: u64,
    period: u64,
    until: u64,
}

/// One limiter's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Whether the request passes this limiter.
    pub allowed: bool,
    /// The largest cost that would be admitted right now (after this request, if admitted).
    pub remaining: u64,
    reset_after: u64,
    retry_after: u64,
    blocked: bool,
    /// The key's own limit when one was in force (see [`Quota::own`]); 0 otherwise.
    own_limit: u64,
}

impl Outcome {
    /// `reset_after` in µs.
    pub(crate) const fn reset_after_us(&self) -> u64 {
        self.reset_after
    }

    /// `retry_after` in µs.
    pub(crate) const fn retry_after_us(&self) -> u64 {
        self.retry_after
    }

    pub(crate) const fn new(
        allowed: bool,
        remaining: u64,
        reset_after: u64,
        retry_after: u64,
    ) -> Self {
        Outcome {
            allowed,
            remaining,
            reset_after,
            retry_after,
            blocked: false,
            own_limit: 0,
        }
    }

    /// This outcome of a key blocked for `left` µs more: denied, nothing remaining, to be
    /// retried when the block ends.
    pub(crate) const fn block(self, left: u64) -> Self {
        Outcome {
            allowed: false,
            remaining: 0,
            reset_after: if self.reset_after > left {
                self.reset_after
            } else {
                left
            },
            retry_after: left,
            blocked: true,
            ..self
        }
    }

    /// This outcome, decided under the key's own limit `limit`.
    pub(crate) const fn under_own(self, limit: u64) -> Self {
        Outcome {
            own_limit: limit,
            ..self
        }
    }

    /// The key's own limit, when one was in force for this outcome (the limit to report in
    /// its place of the policy's).
    pub const fn own_limit(&self) -> Option<u64> {
        if self.own_limit == 0 {
            None
        } else {
            Some(self.own_limit)
        }
    }

    /// This outcome `us` µs later, with nothing else happening: the waits run down.
    pub(crate) const fn aged(self, us: u64) -> Self {
        Outcome {
            reset_after: self.reset_after.saturating_sub(us),
            retry_after: self.retry_after.saturating_sub(us),
            ..self
        }
    }

    /// Whether the key is blocked (`block_for`): the denial is the block's, and `retry_after`
    /// is its end.
    pub const fn blocked(&self) -> bool {
        self.blocked
    }

    /// Time until the key is back at its full quota if nothing else arrives.
    pub const fn reset_after(&self) -> Duration {
        Duration::from_micros(self.reset_after)
    }

    /// On denial, the least wait after which the same request is admitted if nothing else
    /// consumes meanwhile; zero when admitted.
    pub const fn retry_after(&self) -> Duration {
        Duration::from_micros(self.retry_after)
    }
}
