//! Many decisions in one script call.
//!
//! Redis's CPU per decision is what every gateway sharing it pays for, and most of what one
//! `EVALSHA` costs it is the call itself (reading the command, starting the script, writing the
//! reply), not the decision. So decisions that wait at the same time go to Redis together:
//!
//! - **Batches** ([`RedisStore::run_batched`]): decisions sent together are one script call
//!   per hash slot on a cluster, one call on a single node — at most [`PER_CALL`] decisions
//!   each, so that no call holds Redis for long — decided in order, each all-or-nothing
//!   across its layers, each with its own reply.
//! - **Combining** ([`RedisStore::decide_combined`]): concurrent callers — of
//!   [`decide`](RedisStore::decide) (Rust threads, Python threads) and of
//!   [`decide_many`](RedisStore::decide_many) (`check_many`, the Node dispatcher's threads) —
//!   queue their encoded decisions. A caller that finds fewer than [`IN_FLIGHT`] calls on
//!   their way leads: it takes everything queued, its own decisions last, sends it as one
//!   batch and hands each waiter its replies; if callers queued meanwhile, the first of them
//!   leads next. Nobody waits for a batch to fill: a batch is whatever queued while the
//!   connection was busy, and a caller alone goes straight through (one call, as without
//!   combining).
//!
//! A queued caller's wait counts against its deadline (`store.timeout`): a batch is given what
//! is left of its oldest member's, and a caller still queued when its own passes leaves the
//! queue with a timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::slots::hash_slot;
use super::{Failed, RedisStore, StoreFailure, no_reply};

/// The most decisions one script call takes (at a few µs each, a call holds Redis well under a
/// millisecond).
pub(super) const PER_CALL: usize = 128;

/// Combined calls on their way to Redis at once; while they are, the next batch gathers. One:
/// measured from Node at 64 decisions in flight against a local Redis on two cores, one call
/// on its way gave 68–72 k decisions/s at 7.4–7.6 µs of Redis CPU each, two gave 50–52 k/s at
/// 8.8–9.2 µs (batches of about 30 either way); a call carries everything queued, split into
/// calls of [`PER_CALL`] pipelined in one round trip, so one in flight does not cap the rate.
pub(super) const IN_FLIGHT: usize = 1;

/// One decision's part of a script call (see `decide.lua`): its keys; its shape (mode and
/// layers' policies, which decisions of the same rules share and a call sends once); its
/// cost; its time, when it carries one; how many layers it has, and how many of them take
/// key limits (its reply is `2 + 4 × layers + owns` numbers).
#[derive(Debug, Clone)]
pub(super) struct Encoded {
    pub(super) keys: Vec<Vec<u8>>,
    pub(super) shape: Vec<String>,
    pub(super) cost: String,
    pub(super) time: Option<String>,
    pub(super) layers: usize,
    pub(super) owns: usize,
}

impl Encoded {
    fn reply_len(&self) -> usize {
        2 + 4 * self.layers + self.owns
    }

    /// The hash slot its keys live in (one: a decision whose layers span several slots is not
    /// batched).
    fn slot(&self) -> u16 {
        self.keys.first().map_or(0, |k| hash_slot(k))
    }
}

/// The callers waiting to be sent, and how many combined calls are on their way.
#[derive(Debug, Default)]
pub(super) struct Combiner {
    state: Mutex<Combining>,
}

#[derive(Debug, Default)]
struct Combining {
    queue: Vec<Arc<Waiter>>,
    in_flight: usize,
}

#[derive(Debug)]
struct Waiter {
    decisions: Vec<Encoded>,
    queued: Instant,
    state: Mutex<Turn>,
    wake: Condvar,
}

#[derive(Debug)]
enum Turn {
    Waiting,
    /// Lead the next batch: everything queued.
    Lead,
    Done(Vec<Result<Vec<i64>, Failed>>),
}

impl RedisStore {
    /// Decides `decisions` (each within one slot), in script calls shared with whatever other
    /// callers' decisions are waiting (see the module docs); answers each one's reply, in
    /// order. `queued`: when they began waiting, if before this call.
    pub(super) fn decide_combined(
        &self,
        decisions: Vec<Encoded>,
        queued: Option<Instant>,
    ) -> Vec<Result<Vec<i64>, Failed>> {
        let count = decisions.len();
        let me = Arc::new(Waiter {
            decisions,
            queued: queued.unwrap_or_else(Instant::now),
            state: Mutex::new(Turn::Waiting),
            wake: Condvar::new(),
        });
        let batch = {
            let mut state = self.combiner.state.lock();
            if state.in_flight < IN_FLIGHT {
                state.in_flight += 1;
                let mut batch = std::mem::take(&mut state.queue);
                batch.push(Arc::clone(&me));
                Some(batch)
            } else {
                state.queue.push(Arc::clone(&me));
                None
            }
        };
        if let Some(batch) = batch {
            self.lead(batch);
        } else {
            self.wait_turn(&me);
        }
        match std::mem::replace(&mut *me.state.lock(), Turn::Waiting) {
            Turn::Done(replies) => replies,
            Turn::Waiting | Turn::Lead => {
                let lost =
                    StoreFailure::Redis("a combined decision was left without a reply".into());
                vec![Err(lost.into()); count]
            }
        }
    }

    /// Waits until `me` is decided or must lead; leads when it must.
    fn wait_turn(&self, me: &Arc<Waiter>) {
        let deadline = me.queued + self.timeout;
        let mut turn = me.state.lock();
        loop {
            match *turn {
                Turn::Done(_) => return,
                Turn::Lead => {
                    drop(turn);
                    let batch = std::mem::take(&mut self.combiner.state.lock().queue);
                    self.lead(batch);
                    return;
                }
                Turn::Waiting => {}
            }
            if me.wake.wait_until(&mut turn, deadline).timed_out() {
                // Still queued past its deadline, and not chosen to lead: it leaves the queue.
                // Taken into a batch already: that batch answers within its own deadline.
                drop(turn);
                let mut state = self.combiner.state.lock();
                turn = me.state.lock();
                if matches!(*turn, Turn::Waiting) {
                    let before = state.queue.len();
                    state.queue.retain(|w| !Arc::ptr_eq(w, me));
                    if state.queue.len() < before {
                        let late = Err(StoreFailure::Timeout.into());
                        *turn = Turn::Done(vec![late; me.decisions.len()]);
                        return;
                    }
                }
                drop(state);
                while matches!(*turn, Turn::Waiting) {
                    me.wake.wait(&mut turn);
                }
            }
        }
    }

    /// Sends `batch` (this caller's decisions among them); gives the lead to the first caller
    /// that queued meanwhile (or gives its place in flight back) before it hands out the
    /// replies, so that the next call is on its way while the waiters wake.
    fn lead(&self, batch: Vec<Arc<Waiter>>) {
        let replies = if batch.is_empty() {
            Vec::new()
        } else {
            let oldest = batch
                .iter()
                .map(|w| w.queued)
                .min()
                .unwrap_or_else(Instant::now);
            let budget = self.timeout.saturating_sub(oldest.elapsed());
            let decisions: Vec<&Encoded> = batch.iter().flat_map(|w| &w.decisions).collect();
            self.run_batched(&decisions, budget)
        };
        {
            let mut state = self.combiner.state.lock();
            match state.queue.first() {
                Some(next) => {
                    *next.state.lock() = Turn::Lead;
                    next.wake.notify_one();
                }
                None => state.in_flight -= 1,
            }
        }
        let mut replies = replies.into_iter();
        for waiter in &batch {
            let own = replies.by_ref().take(waiter.decisions.len()).collect();
            *waiter.state.lock() = Turn::Done(own);
            waiter.wake.notify_one();
        }
    }

    /// Decides `decisions` (each within one slot) in as few script calls as the cluster allows
    /// — one per slot, at most [`PER_CALL`] decisions each — all in one round trip within
    /// `budget`; answers each decision's own reply, in order.
    pub(super) fn run_batched(
        &self,
        decisions: &[&Encoded],
        budget: Duration,
    ) -> Vec<Result<Vec<i64>, Failed>> {
        // The calls: each a list of decision indexes, in order.
        let mut calls: Vec<(u16, Vec<usize>)> = Vec::new();
        let cluster = self.is_cluster();
        for (i, d) in decisions.iter().enumerate() {
            let slot = if cluster { d.slot() } else { 0 };
            match calls
                .iter_mut()
                .rev()
                .find(|(s, members)| *s == slot && members.len() < PER_CALL)
            {
                Some((_, members)) => members.push(i),
                None => calls.push((slot, vec![i])),
            }
        }
        let commands: Vec<redis::Cmd> = calls
            .iter()
            .map(|(_, members)| self.call_of(members.iter().map(|&i| decisions[i])))
            .collect();
        let mut out: Vec<Option<Result<Vec<i64>, Failed>>> = vec![None; decisions.len()];
        for ((_, members), reply) in calls.iter().zip(self.run_each_within(&commands, budget)) {
            match reply.and_then(|r| split(&r, members.iter().map(|&i| decisions[i]))) {
                Ok(parts) => {
                    for (&i, part) in members.iter().zip(parts) {
                        out[i] = Some(Ok(part));
                    }
                }
                Err(f) => {
                    for &i in members {
                        out[i] = Some(Err(f.clone()));
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(no_reply())))
            .collect()
    }
}

/// One call's reply cut into its decisions' replies.
fn split<'e>(
    reply: &[i64],
    decisions: impl Iterator<Item = &'e Encoded> + Clone,
) -> Result<Vec<Vec<i64>>, Failed> {
    let expected: usize = decisions.clone().map(Encoded::reply_len).sum();
    if reply.len() != expected {
        return Err(StoreFailure::Redis(format!(
            "the decision script answered {} values where {expected} were due",
            reply.len()
        ))
        .into());
    }
    let mut at = 0;
    Ok(decisions
        .map(|d| {
            let part = reply[at..at + d.reply_len()].to_vec();
            at += d.reply_len();
            part
        })
        .collect())
}
