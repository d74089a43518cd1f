//! Monitoring: what happened to each request, kept so that an operator can see a surge coming
//! and who hit the limits.
//!
//! # What is recorded
//!
//! Three kinds of [`Event`], all recorded by the engine itself, so that every binding and host
//! gets them without code of its own:
//!
//! - a [`DecisionEvent`] per decision: every [`check`](crate::Engine::check) (and each request
//!   of [`check_many`](crate::Engine::check_many)) and [`authorize`](crate::Engine::authorize)
//!   — admitted, rate limited (with the deciding rule, the subject and the role), refused for
//!   its token (with why), or failed — and every refused
//!   [`authenticate`](crate::Engine::authenticate), which has no endpoint;
//! - an [`UpstreamEvent`] per finished [`Lease`](crate::Lease): outcome, latency, and whether
//!   it tripped the breaker;
//! - a [`ResponseEvent`] when the host reports how it answered
//!   ([`Engine::record_response`](crate::Engine::record_response)): status and end-to-end
//!   latency. The Express, ASGI and WSGI middlewares report every response.
//!
//! # Where it goes
//!
//! The [`Aggregator`] is always on and bounded: per-minute counters over a configurable horizon
//! (`[monitor] horizon`, an hour by default), exact counters by outcome, error kind, store and
//! status class, and space-saving top lists ([`TopK`]) of the most requested endpoints and callers, of
//! rate-limit breaches by subject, role, endpoint and rule, and of failing upstreams and
//! breaker trips. The counters are exact; the top lists of endpoints, callers and breaches by
//! subject or endpoint count every decision while a thread's minute has seen at most
//! [`EXACT_PER_MINUTE`], then a random one in [`SAMPLE`] (weighted). Recording takes one short
//! lock on one of several shards (a thread keeps its shard) and allocates only for a key a top
//! list takes in; past [`EXACT_PER_MINUTE`], an admission the draw leaves out of the top lists
//! takes no lock at all: its thread counts it in a lane of its own, which the shards take over
//! when the minute ends and a report reads as it is. So a busy engine's recording costs a few
//! plain stores a decision — measured by `benches/monitor.rs` against `Engine::check` in
//! `benches/check.rs`. A [`Report`] (JSON-serialisable, the same shape in every
//! binding) is computed from it at any time, and [`prometheus`] renders its counters in the
//! Prometheus text format.
//!
//! With `[monitor] stream`, every event is also written to a Redis Stream ([`stream`]): copied
//! onto a bounded queue that drops and counts rather than waits, and written by a background
//! thread in batches of one round trip each (`XADD … MAXLEN ~`). A [`StreamReader`] builds the
//! same [`Report`] from that stream (`source = "stream"`), so that a separate analytics
//! process — the `floodwall-stats` command — can report on what several gateways wrote.

mod aggregate;
mod config;
mod event;
pub mod prometheus;
pub mod stream;
mod topk;

pub use aggregate::{
    Aggregator, EXACT_PER_MINUTE, LATENCY_BOUNDS_US, LatencyHistogram, MAX_HORIZON_MINUTES,
    MAX_TOP, MinuteCounts, PEAKS, Report, SAMPLE, SinkStats, Warning,
};
pub use event::{DecisionEvent, Event, EventOutcome, ResponseEvent, UpstreamEvent};
pub use stream::{
    GroupStart, MalformedEntry, ReaderOptions, ReaderStats, StreamEntry, StreamLocation,
    StreamReader, entry_fields, parse_entry,
};
pub use topk::{TopEntry, TopK, merge};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::clock::Timestamp;
use crate::error::Error;
use crate::store::StoreConfig;
pub use config::MonitorConfig;
use stream::StreamSink;

/// The statuses [`Engine::record_response`](crate::Engine::record_response) is meant for: any
/// HTTP status, 100 to 999. The bindings refuse others before recording.
pub const HTTP_STATUSES: std::ops::RangeInclusive<u16> = 100..=999;

/// An engine's monitoring: the aggregate, and the stream sink when configured. Dropping it
/// flushes the sink (for at most [`stream::SHUTDOWN_GRACE`]) and stops its thread.
#[derive(Debug)]
pub struct Monitor {
    aggregator: Aggregator,
    /// Replaced by a reload ([`Monitor::reload`]); the one it replaces writes what it holds
    /// (within its grace) once the last event offered to it is.
    sink: arc_swap::ArcSwapOption<StreamSink>,
    /// Whether there is a sink: one load for every event when there is none.
    streams: AtomicBool,
    /// Whether recorded paths are lower-cased as they are put in normal form.
    fold_case: AtomicBool,
    /// The settings in force (what a reload compares).
    config: parking_lot::Mutex<MonitorConfig>,
}

impl Monitor {
    /// Monitoring as `config` asks; `store` is where a stream goes by default. With
    /// `monitor.stream`, starts the sink's writer thread (it connects on its first batch).
    pub fn new(config: &MonitorConfig, store: &StoreConfig) -> Result<Self, Error> {
        config.validate(store)?;
        let sink = StreamSink::start(config, store)?;
        Ok(Monitor {
            aggregator: Aggregator::new(config.horizon_minutes()?, config.top),
            streams: AtomicBool::new(sink.is_some()),
            sink: arc_swap::ArcSwapOption::from_pointee(sink),
            fold_case: AtomicBool::new(false),
            config: parking_lot::Mutex::new(config.clone()),
        })
    }

    /// The same monitoring, lower-casing the paths it records as it puts them in normal form
    /// (as an engine does unless `http.case_sensitive`). Without it, paths keep their case.
    pub fn with_case_folding(self, fold_case: bool) -> Self {
        self.set_case_folding(fold_case);
        self
    }

    pub(crate) fn set_case_folding(&self, fold_case: bool) {
        self.fold_case.store(fold_case, Ordering::Relaxed);
    }

    /// Checks `config` for a reload: the same `horizon` and `top` (the aggregate's shape; its
    /// history would be lost), a stream sink that can start. Returns the sink to put in force
    /// with [`reload`](Self::reload) — `Ok(None)` when the stream settings are unchanged.
    pub(crate) fn prepare(
        &self,
        config: &MonitorConfig,
        store: &StoreConfig,
    ) -> Result<Option<Option<StreamSink>>, Error> {
        config.validate(store)?;
        let now = self.config.lock().clone();
        for (field, same) in [
            ("monitor.horizon", now.horizon == config.horizon),
            ("monitor.top", now.top == config.top),
        ] {
            if !same {
                return Err(Error::config(
                    field,
                    "a reload cannot change the shape of the monitoring aggregate (it would lose its history): restart the engine to change it",
                ));
            }
        }
        if now == *config {
            return Ok(None);
        }
        Ok(Some(StreamSink::start(config, store)?))
    }

    /// Puts in force what [`prepare`](Self::prepare) returned.
    pub(crate) fn reload(&self, config: &MonitorConfig, sink: Option<Option<StreamSink>>) {
        if let Some(sink) = sink {
            self.streams.store(sink.is_some(), Ordering::Release);
            self.sink.store(sink.map(Arc::new));
            *self.config.lock() = config.clone();
        }
    }

    /// Records one event: into the aggregate, and onto the stream's queue (never waiting: a
    /// full queue drops the event and counts it). Its path is recorded in normal form
    /// ([`crate::http::normalize_path`]), put so only where it is used.
    pub fn record(&self, event: &Event<'_>) {
        let fold_case = self.fold_case.load(Ordering::Relaxed);
        self.aggregator.record_folded(event, fold_case);
        if self.streams.load(Ordering::Acquire)
            && let Some(sink) = &*self.sink.load()
        {
            sink.offer(event, fold_case);
        }
    }

    /// The report at `now`, with the sink's counters when there is a sink.
    pub fn report(&self, now: Timestamp) -> Report {
        let mut report = self.aggregator.report(now);
        report.sink = self.sink_stats();
        report
    }

    /// The stream sink's counters, when there is a sink.
    pub fn sink_stats(&self) -> Option<SinkStats> {
        self.sink.load().as_deref().map(StreamSink::stats)
    }

    /// Asks the sink to write what it holds now, and waits at most `timeout` until every event
    /// recorded before the call has been written or dropped. Returns whether they all have
    /// (always `true` without a sink).
    pub fn flush(&self, timeout: Duration) -> bool {
        self.sink
            .load()
            .as_deref()
            .is_none_or(|sink| sink.flush(timeout))
    }

    /// The aggregate.
    pub fn aggregator(&self) -> &Aggregator {
        &self.aggregator
    }
}

impl Default for Monitor {
    fn default() -> Self {
        let config = MonitorConfig::default();
        Monitor {
            aggregator: Aggregator::new(60, config.top),
            sink: arc_swap::ArcSwapOption::empty(),
            streams: AtomicBool::new(false),
            fold_case: AtomicBool::new(false),
            config: parking_lot::Mutex::new(config),
        }
    }
}
