//! The Redis Streams sink, which writes every recorded [`Event`] to a stream, and the
//! [`StreamReader`], which builds a [`Report`] back from one — so that a separate analytics
//! process (`floodwall-stats`) can report on what many gateways wrote.
//!
//! # The sink
//!
//! With `[monitor] stream = "KEY"`, [`Monitor::record`](super::Monitor::record) also offers
//! every event to the sink. The decision that caused it never waits for Redis:
//!
//! - **Queue.** An offered event is copied — its strings into one buffer, inline up to 64
//!   bytes (a typical decision's method, path, subject, role and rule), else one allocation;
//!   nothing at all when the sink is off — onto an in-process queue holding at most
//!   `monitor.queue` events, counting those the writer has taken and not yet written (give or
//!   take the threads offering at the same instant). Offering costs that copy, an atomic
//!   increment, a read of two counters and a lock-free channel send; it never blocks and
//!   never waits for a lock the writer holds (`benches/monitor.rs`, `monitor_sink`).
//! - **Drop policy.** When the queue is full the event is dropped and counted, not queued:
//!   a slow or dead Redis costs the newest events, never the caller's time, and memory stays
//!   bounded. A batch Redis refuses or does not answer within [`WRITE_TIMEOUT`] is dropped
//!   and counted too (no retry: delivery is at most once), the error kept in
//!   [`SinkStats::last_error`] until a batch succeeds; the writer then waits
//!   ([`BACKOFF_MIN`], doubling up to [`BACKOFF_MAX`]) before it reconnects and tries the
//!   next batch, so a dead Redis costs one connection attempt per backoff, not one per event.
//!   `written + dropped + queued` is always the number of events offered.
//! - **Batching.** One background thread (`fw-stream`, with its own single-threaded tokio
//!   runtime, as the Redis store has) takes the first queued event, then waits at most
//!   `monitor.flush` for up to `monitor.batch` events, and writes them in one round trip: a
//!   pipeline of `XADD KEY MAXLEN ~ <monitor.maxlen> * field value …`. When the queue holds a
//!   full batch it is sent at once. `MAXLEN ~` lets Redis trim in whole macro nodes, so the
//!   stream holds about `maxlen` entries (a little more, never fewer once it has that many).
//! - **Where.** `monitor.url` (one Redis server, not a cluster node), else the store's
//!   `store.url` (`redis`), or the cluster's `store.urls` (`redis_cluster`, through the
//!   cluster client: a stream is one key, so a batch goes to the one node that owns it).
//!   Nothing connects until the first batch: building an engine never waits for Redis.
//! - **Shutdown.** Dropping the [`Monitor`](super::Monitor) (with the engine, once no
//!   [`Lease`](crate::Lease) holds it) stops accepting events, writes what is queued for at
//!   most [`SHUTDOWN_GRACE`] (counting the rest as dropped), and joins the thread: no thread
//!   outlives its monitor, and dropping takes at most the grace plus one write's timeout.
//!   [`Monitor::flush`](super::Monitor::flush) waits for what is queued without stopping.
//!
//! # Wire format (version 1)
//!
//! Every entry is a flat list of string fields. Every entry has `v` (the format version,
//! `1`), `k` (the kind: `d` decision, `u` upstream call, `r` response), `t` (when, in
//! milliseconds since the Unix epoch) and `src` (the writing gateway: `monitor.instance`,
//! by default `hostname:pid`). Then, by kind:
//!
//! | kind | field | meaning |
//! |---|---|---|
//! | `d` | `m`, `p` | method and path (query dropped); both absent when the decision had no endpoint (a refused `authenticate`) |
//! | `d` | `s`, `r` | subject and role, when known |
//! | `d` | `o` | outcome: `admitted`, `rate_limited`, `auth_rejected`, `failed` or `denied` ([`EventOutcome::as_str`]) |
//! | `d` | `rule` | the deciding rule of a rate-limited request |
//! | `d` | `e` | the error kind of a refused or failed decision ([`ErrorKind::as_str`]) |
//! | `d` | `st` | the store that decided: `memory`, `redis`, `fallback`, `unavailable` |
//! | `d` | `sh` | the rule in shadow mode that would have denied an admitted request |
//! | `d` | `al` | `1` when an allow list let the request skip the limits (absent otherwise) |
//! | `u` | `svc`, `up` | service and upstream |
//! | `u` | `co` | call outcome: `success`, `failure` or `timeout` |
//! | `u` | `lat` | latency, µs |
//! | `u` | `trip` | `1` if this call opened the upstream's breaker, else `0` |
//! | `r` | `m`, `p`, `code`, `lat` | method, path, HTTP status, end-to-end latency (µs) |
//!
//! An optional field is absent rather than empty when there is no value (an empty subject is
//! written as an empty `s`). Readers ignore fields they do not know, and take an `e` or `st`
//! value they do not know (from a newer writer) as absent; an entry whose `v` is not `1`, or
//! that lacks a field its kind requires or has one that does not parse, is malformed.
//! A change that old readers would misread gets a new `v`.
//!
//! # The reader
//!
//! A [`StreamReader`] reads through a consumer group (created with `XGROUP CREATE … MKSTREAM`
//! from the stream's beginning or from its end, [`GroupStart`]; an existing group is used as
//! it is), `XREADGROUP … COUNT n [BLOCK ms] STREAMS KEY >`, records each entry into an
//! [`Aggregator`] and `XACK`s it — a malformed entry too, counted in [`ReaderStats`] and
//! skipped. Entries delivered to the same consumer and never acknowledged (a reader that
//! died) are read first. Its [`Report`] has the shape of an engine's, with `source` =
//! `"stream"`; entries from several gateways make one report.

mod location;
mod queue;
mod reader;
mod wire;
mod writer;

pub(crate) use location::host_name;
pub use location::{StreamLocation, default_instance};
pub(crate) use queue::StreamSink;
pub use reader::{
    DEFAULT_GROUP, DEFAULT_READ_COUNT, DEFAULT_READ_TIMEOUT, GroupStart, ReaderOptions,
    ReaderStats, StreamReader,
};
pub use wire::{MalformedEntry, StreamEntry, WIRE_VERSION, entry_fields, parse_entry};
pub use writer::{BACKOFF_MAX, BACKOFF_MIN, SHUTDOWN_GRACE, WRITE_TIMEOUT};

// For the links of the module docs.
#[cfg(doc)]
use super::aggregate::{Aggregator, Report, SinkStats};
#[cfg(doc)]
use super::event::{Event, EventOutcome};
#[cfg(doc)]
use crate::error::ErrorKind;
