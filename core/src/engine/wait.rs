//! Waiting for capacity: [`Engine::acquire`] and [`Engine::acquire_async`] (the peers'
//! `RateLimiterQueue`, `until_ready`, `blockUntilReady`).
//!
//! A request denied with a `retry_after` that fits in what is left of `max_wait` joins the
//! line of the limits it is judged by (its layers and keys): first come, first served within
//! the process. Only the head of a line asks again; it waits out its denial's `retry_after`
//! — or less, when a permit of a `concurrency` rule is released in this process — and then
//! decides anew. Admitted, or out of time, it leaves the line and the next waiter becomes the
//! head. A waiter that can no longer make it in time (its denial's wait runs past its
//! deadline) gives up at once with that denial rather than sleeping for nothing. On a shared
//! store, where other processes consume too, the head asks at most [`ACQUIRE_MAX_ATTEMPTS`] times.
//! Nothing spins: waiters sleep on a condition variable (or, async, on a Tokio timer and
//! notification) between attempts.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{Engine, Request};
use crate::config::StoreKind;
use crate::decision::Decision;
use crate::error::{Error, ErrorKind};

/// The most times the head of a line asks a shared store before it gives up with the last
/// denial (other processes may keep taking what frees up).
pub const ACQUIRE_MAX_ATTEMPTS: u32 = 16;

/// The lines of waiting requests, by the limits they wait for.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    next: AtomicU64,
    /// How many permits this engine has released (a head waiting for a `concurrency` place
    /// asks again when it moves).
    released: AtomicU64,
    lines: Mutex<HashMap<Vec<u8>, VecDeque<u64>>>,
    /// Signalled, under the lock, whenever a line moves or a permit is released (sync waiters).
    moved: Condvar,
    /// The same, for async waiters.
    notify: tokio::sync::Notify,
}

impl Lines {
    fn join(&self, key: &[u8]) -> u64 {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        self.lines
            .lock()
            .entry(key.to_vec())
            .or_default()
            .push_back(ticket);
        ticket
    }

    fn leave(&self, key: &[u8], ticket: u64) {
        let mut lines = self.lines.lock();
        if let Some(line) = lines.get_mut(key) {
            line.retain(|&t| t != ticket);
            if line.is_empty() {
                lines.remove(key);
            }
        }
        self.moved.notify_all();
        drop(lines);
        self.notify.notify_waiters();
    }

    fn is_head_in(lines: &HashMap<Vec<u8>, VecDeque<u64>>, key: &[u8], ticket: u64) -> bool {
        lines
            .get(key)
            .and_then(|line| line.front())
            .is_some_and(|&t| t == ticket)
    }

    fn is_head(&self, key: &[u8], ticket: u64) -> bool {
        Self::is_head_in(&self.lines.lock(), key, ticket)
    }

    /// Records a release and wakes every waiter to look again.
    pub(crate) fn released(&self) {
        let lines = self.lines.lock();
        self.released.fetch_add(1, Ordering::Relaxed);
        self.moved.notify_all();
        drop(lines);
        self.notify.notify_waiters();
    }

    fn releases(&self) -> u64 {
        self.released.load(Ordering::Relaxed)
    }

    /// Sleeps until `ticket` heads its line (`true`) or `deadline` passes (`false`).
    fn wait_for_head(&self, key: &[u8], ticket: u64, deadline: Instant) -> bool {
        let mut lines = self.lines.lock();
        loop {
            if Self::is_head_in(&lines, key, ticket) {
                return true;
            }
            if self.moved.wait_until(&mut lines, deadline).timed_out() {
                return Self::is_head_in(&lines, key, ticket);
            }
        }
    }

    /// Sleeps until `until`, or until a permit is released after `seen` releases.
    fn wait_for_release(&self, seen: u64, until: Instant) {
        let mut lines = self.lines.lock();
        while self.releases() == seen {
            if self.moved.wait_until(&mut lines, until).timed_out() {
                return;
            }
        }
    }
}

/// A place in a line, left when dropped (also when an async wait is abandoned).
struct Place<'a> {
    lines: &'a Lines,
    key: Vec<u8>,
    ticket: u64,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.lines.leave(&self.key, self.ticket);
    }
}

/// What one attempt said: the decision to answer, or how long to wait before the next.
enum Next<'e> {
    Answer(Decision<'e>),
    Wait(Decision<'e>, Duration),
}

impl Engine {
    /// Decides `request` and, while it is denied and the wait fits in `max_wait`, waits for
    /// capacity and asks again (see the module docs): the admission, or the last denial once
    /// `max_wait` cannot be met. Blocks the calling thread; decides on the engine's clock (a
    /// request's explicit time is ignored).
    pub fn acquire(
        &self,
        request: &Request<'_>,
        max_wait: Duration,
    ) -> Result<Decision<'_>, Error> {
        let started = Instant::now();
        let deadline = started + max_wait;
        let request = Request {
            now: None,
            ..*request
        };
        let mut attempts = 0;
        let (mut denial, mut wait) = match self.attempt(&request, deadline, &mut attempts)? {
            Next::Answer(decision) => return Ok(decision),
            Next::Wait(denial, wait) => (denial, wait),
        };
        let place = self.place(&request)?;
        loop {
            if !self.lines.wait_for_head(&place.key, place.ticket, deadline) {
                return Ok(denial);
            }
            let seen = self.lines.releases();
            self.lines
                .wait_for_release(seen, (Instant::now() + wait).min(deadline));
            drop(denial);
            match self.attempt(&request, deadline, &mut attempts)? {
                Next::Answer(decision) => return Ok(decision),
                Next::Wait(d, w) => (denial, wait) = (d, w),
            }
        }
    }

    /// [`acquire`](Self::acquire) without blocking the thread: the waits are Tokio timers,
    /// so it must run inside a Tokio runtime. On a shared store each attempt is a
    /// [`check`](Self::check), which waits for Redis as `check` does: from a multi-thread
    /// runtime it lets the runtime move its other tasks meanwhile (`block_in_place`); a
    /// current-thread runtime is refused (`invalid_config`).
    pub async fn acquire_async(
        &self,
        request: &Request<'_>,
        max_wait: Duration,
    ) -> Result<Decision<'_>, Error> {
        let deadline = Instant::now() + max_wait;
        let request = Request {
            now: None,
            ..*request
        };
        let mut attempts = 0;
        let (mut denial, mut wait) = match self.attempt_async(&request, deadline, &mut attempts)? {
            Next::Answer(decision) => return Ok(decision),
            Next::Wait(denial, wait) => (denial, wait),
        };
        let place = self.place(&request)?;
        let deadline = tokio::time::Instant::from_std(deadline);
        loop {
            loop {
                let moved = self.lines.notify.notified();
                tokio::pin!(moved);
                moved.as_mut().enable();
                if self.lines.is_head(&place.key, place.ticket) {
                    break;
                }
                if tokio::time::timeout_at(deadline, moved).await.is_err() {
                    return Ok(denial);
                }
            }
            let until = (tokio::time::Instant::now() + wait).min(deadline);
            let seen = self.lines.releases();
            while self.lines.releases() == seen {
                let woken = self.lines.notify.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                if self.lines.releases() != seen
                    || tokio::time::timeout_at(until, woken).await.is_err()
                {
                    break;
                }
            }
            drop(denial);
            match self.attempt_async(&request, deadline.into_std(), &mut attempts)? {
                Next::Answer(decision) => return Ok(decision),
                Next::Wait(d, w) => (denial, wait) = (d, w),
            }
        }
    }

    fn place(&self, request: &Request<'_>) -> Result<Place<'_>, Error> {
        let key = self.layers_key(request)?;
        let ticket = self.lines.join(&key);
        Ok(Place {
            lines: &self.lines,
            key,
            ticket,
        })
    }

    /// One decision, and whether to wait for another.
    fn attempt(
        &self,
        request: &Request<'_>,
        deadline: Instant,
        attempts: &mut u32,
    ) -> Result<Next<'_>, Error> {
        let decision = self.check(request)?;
        Ok(self.next(decision, deadline, attempts))
    }

    fn attempt_async(
        &self,
        request: &Request<'_>,
        deadline: Instant,
        attempts: &mut u32,
    ) -> Result<Next<'_>, Error> {
        let decision = if self.store_kind == StoreKind::Memory {
            self.check(request)?
        } else {
            match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                    tokio::task::block_in_place(|| self.check(request))?
                }
                Ok(_) => {
                    return Err(Error::new(
                        ErrorKind::InvalidConfig,
                        "acquire_async on a shared store needs a multi-thread Tokio runtime (its checks wait for Redis)",
                    ));
                }
                Err(_) => self.check(request)?,
            }
        };
        Ok(self.next(decision, deadline, attempts))
    }

    fn next<'e>(&self, decision: Decision<'e>, deadline: Instant, attempts: &mut u32) -> Next<'e> {
        *attempts += 1;
        let shared = self.store_kind != StoreKind::Memory;
        if decision.allowed() || (shared && *attempts >= ACQUIRE_MAX_ATTEMPTS) {
            return Next::Answer(decision);
        }
        // A denial whose wait is unknown (zero) is asked again after a millisecond.
        let wait = decision.retry_after().max(Duration::from_millis(1));
        let left = deadline.saturating_duration_since(Instant::now());
        // A concurrency limit's wait is the longest one (any release makes room sooner):
        // such a denial waits as long as it may.
        let holds = decision.deciding_holds();
        if holds && !left.is_zero() {
            return Next::Wait(decision, wait.min(left));
        }
        if wait > left {
            return Next::Answer(decision);
        }
        Next::Wait(decision, wait)
    }
}
