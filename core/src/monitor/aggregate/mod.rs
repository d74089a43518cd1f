//! The in-memory aggregate: per-minute counters over a horizon and bounded top lists.
//!
//! It is split into shards, one short uncontended lock each: a thread always records into the
//! same shard (by its index, see [`lane`]), so two threads recording at once rarely share a
//! lock or a cache line. A busy thread counts most decisions in its own [`lane`] without a
//! lock. A report merges the shards and the lanes.

mod lane;
mod minute;
mod report;
mod shard;

pub use minute::{LATENCY_BOUNDS_US, MinuteCounts};
pub use report::{LatencyHistogram, PEAKS, Report, SinkStats, Warning};
pub use shard::{EXACT_PER_MINUTE, SAMPLE};

use std::sync::OnceLock;

use parking_lot::Mutex;

use super::event::Event;
use crate::breaker::CallOutcome;
use crate::clock::duration_micros;
use crate::decision::StoreUsed;
use crate::error::ErrorKind;
use lane::{LANES, Lane, Route};
use shard::Shard;

const MINUTE_MS: u64 = 60_000;
/// The longest horizon: a day of minutes.
pub const MAX_HORIZON_MINUTES: u64 = 24 * 60;
/// The longest top list a report may ask for.
pub const MAX_TOP: usize = 1000;

const STORES: [StoreUsed; 5] = StoreUsed::ALL;
const KINDS: usize = ErrorKind::ALL.len();

/// Pads a shard to its own cache lines.
#[derive(Debug)]
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// The always-on, bounded in-memory aggregate of [`Event`]s. `Send + Sync`: record from any
/// thread.
#[derive(Debug)]
pub struct Aggregator {
    horizon: u64,
    top: usize,
    shards: Box<[Padded]>,
    /// The lane of each thread index below [`LANES`], made on its first decision.
    lanes: Box<[OnceLock<Box<Lane>>]>,
}

impl Aggregator {
    /// An aggregate keeping `horizon_minutes` minutes of counters (1 to a day's) and `top`
    /// entries in each top list (1 to [`MAX_TOP`]). Each list's sketch holds four times
    /// `top` keys (at least 32), so that the `top` it reports are reliable.
    pub fn new(horizon_minutes: u64, top: usize) -> Self {
        let horizon = horizon_minutes.clamp(1, MAX_HORIZON_MINUTES);
        let top = top.clamp(1, MAX_TOP);
        let capacity = (top * 4).max(32);
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
        let shards = (threads * 2).next_power_of_two().clamp(2, 64);
        let shards = (0..shards)
            .map(|_| Padded(Mutex::new(Shard::new(horizon, capacity))))
            .collect();
        Aggregator {
            horizon,
            top,
            shards,
            lanes: (0..LANES).map(|_| OnceLock::new()).collect(),
        }
    }

    /// How many minutes the per-minute series covers.
    pub fn horizon_minutes(&self) -> u64 {
        self.horizon
    }

    /// How many entries each top list reports.
    pub fn top(&self) -> usize {
        self.top
    }

    /// The lanes made so far.
    fn lanes(&self) -> impl Iterator<Item = &Lane> {
        self.lanes.iter().filter_map(|l| l.get().map(|l| &**l))
    }

    /// Counts one event. An event older than the horizon (or than what its minute's slot
    /// already holds) still counts in the totals and the top lists, not in the series. Its
    /// path is counted in normal form ([`crate::http::normalize_path`]), case kept.
    pub fn record(&self, event: &Event<'_>) {
        self.record_folded(event, false);
    }

    /// [`record`](Self::record), lower-casing the path when `fold_case`.
    pub(crate) fn record_folded(&self, event: &Event<'_>, fold_case: bool) {
        let index = lane::thread_index();
        let shard = index.unwrap_or(0) & (self.shards.len() - 1);
        let horizon = self.horizon;
        match event {
            Event::Decision(e) => {
                let lane = index.and_then(|i| {
                    let lane = self.lanes.get(i)?;
                    Some(lane.get_or_init(|| Box::new(Lane::new(i))))
                });
                let Some(lane) = lane else {
                    self.shards[shard]
                        .0
                        .lock()
                        .decision(horizon, e, fold_case, None);
                    return;
                };
                match lane.route(e) {
                    Route::Counted => {}
                    Route::Shard(weight) => {
                        self.shards[shard]
                            .0
                            .lock()
                            .decision(horizon, e, fold_case, Some(weight));
                    }
                    Route::NewMinute => {
                        let mut s = self.shards[shard].0.lock();
                        lane.hand_over(&mut s, horizon, e.at);
                        s.decision(horizon, e, fold_case, Some(1));
                    }
                }
            }
            Event::Upstream(e) => {
                let mut s = self.shards[shard].0.lock();
                s.minute(horizon, e.at, |m| m.count_upstream(e));
                s.totals.count_upstream(e);
                if e.outcome != CallOutcome::Success || e.tripped {
                    let key = format!("{}/{}", e.service, e.upstream);
                    if e.outcome != CallOutcome::Success {
                        s.upstream_failures.add(&key, 1);
                    }
                    if e.tripped {
                        s.breaker_trips.add(&key, 1);
                    }
                }
            }
            Event::Response(e) => {
                let us = duration_micros(e.latency);
                let mut s = self.shards[shard].0.lock();
                s.minute(horizon, e.at, |m| m.count_response(e, us));
                s.totals.count_response(e, us);
                let class = usize::from(e.status / 100).min(5);
                s.status_classes[class] += 1;
            }
        }
    }
}
