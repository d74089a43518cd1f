//! The strategies a service chooses an upstream by: smooth weighted round-robin, least
//! connections and power of two choices.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use smallvec::SmallVec;

use super::{Service, Strategy, Upstream};
use crate::clock::Timestamp;

/// One smooth round-robin step: who took part and the weight they shared.
pub(super) struct RoundRobinStep {
    took_part: SmallVec<[usize; 16]>,
    total: i64,
}

impl RoundRobinStep {
    /// Takes the step back (the chosen upstream's permit was refused).
    pub(super) fn undo(&self, upstreams: &[Arc<Upstream>], chosen: usize) {
        for &i in &self.took_part {
            upstreams[i]
                .score
                .fetch_sub(i64::from(upstreams[i].weight), Ordering::Relaxed);
        }
        upstreams[chosen]
            .score
            .fetch_add(self.total, Ordering::Relaxed);
    }
}

impl Service {
    /// The index of the upstream the strategy chooses among the eligible ones not left out
    /// (and, for round-robin, the step taken: the caller holds `rr`).
    pub(super) fn choose(
        &self,
        upstreams: &[Arc<Upstream>],
        left_out: &[bool],
        now: Timestamp,
    ) -> Option<(usize, Option<RoundRobinStep>)> {
        let eligible = |i: usize| !left_out[i] && upstreams[i].eligible(now);
        match self.strategy {
            Strategy::RoundRobin => {
                let mut step = RoundRobinStep {
                    took_part: SmallVec::new(),
                    total: 0,
                };
                let mut best: Option<(usize, i64)> = None;
                for (i, u) in upstreams.iter().enumerate() {
                    if !eligible(i) {
                        continue;
                    }
                    let weight = i64::from(u.weight);
                    let score = u.score.load(Ordering::Relaxed) + weight;
                    u.score.store(score, Ordering::Relaxed);
                    step.total += weight;
                    step.took_part.push(i);
                    if best.is_none_or(|(_, s)| score > s) {
                        best = Some((i, score));
                    }
                }
                let (i, score) = best?;
                upstreams[i]
                    .score
                    .store(score - step.total, Ordering::Relaxed);
                Some((i, Some(step)))
            }
            Strategy::LeastConnections => {
                let n = upstreams.len();
                let start = (self.turn.fetch_add(1, Ordering::Relaxed) % n as u64) as usize;
                let mut best: Option<usize> = None;
                for i in (start..n).chain(0..start) {
                    if eligible(i) && best.is_none_or(|b| upstreams[i].lighter_than(&upstreams[b]))
                    {
                        best = Some(i);
                    }
                }
                best.map(|i| (i, None))
            }
            Strategy::P2c => {
                let candidates: SmallVec<[usize; 16]> =
                    (0..upstreams.len()).filter(|&i| eligible(i)).collect();
                let chosen = match candidates.len() {
                    0 => None,
                    1 => Some(candidates[0]),
                    n => {
                        let r = self.random();
                        let a = (r % n as u64) as usize;
                        let b = (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n;
                        let (a, b) = (candidates[a], candidates[b]);
                        Some(if upstreams[b].lighter_than(&upstreams[a]) {
                            b
                        } else {
                            a
                        })
                    }
                };
                chosen.map(|i| (i, None))
            }
        }
    }

    /// A uniformly distributed 64-bit number (wyrand).
    fn random(&self) -> u64 {
        let s = self
            .rng
            .fetch_add(0xa076_1d64_78bd_642f, Ordering::Relaxed)
            .wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        (t as u64) ^ ((t >> 64) as u64)
    }
}

pub(super) fn foldhash_seed() -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::RandomState::default().hash_one(0x5eed_u64)
}
