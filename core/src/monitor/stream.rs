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

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use redis::Value;
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use serde::Serialize;
use smallvec::SmallVec;

use super::aggregate::{Aggregator, Report, SinkStats};
use super::event::{DecisionEvent, Event, EventOutcome, ResponseEvent, UpstreamEvent, bare_path};
use crate::breaker::CallOutcome;
use crate::clock::Timestamp;
use crate::config::{MonitorConfig, StoreConfig, StoreKind};
use crate::decision::StoreUsed;
use crate::error::{Error, ErrorKind};
use crate::http::{PathBuffer, normalize_path};

/// The wire format's version: the `v` field of every entry this build writes and the only one
/// it reads.
pub const WIRE_VERSION: u64 = 1;
/// The deadline of one batch write, connecting included.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a dropped sink keeps writing what is queued before it drops the rest.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// The writer's first wait after a failed batch; it doubles with every failure in a row.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The writer's longest wait after a failed batch.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// The consumer group a reader uses unless told otherwise.
pub const DEFAULT_GROUP: &str = "floodwall-stats";
/// The most entries one `XREADGROUP` asks for, unless told otherwise.
pub const DEFAULT_READ_COUNT: usize = 500;
/// The deadline of one reader call (added to its `BLOCK` time), unless told otherwise.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the writer looks at the queue while a batch fills (it is also woken when the
/// queue holds a full batch, when a flush is asked for, and when the sink is dropped).
const TICK: Duration = Duration::from_millis(20);
/// The longest `BLOCK` of one read while a reader follows a stream.
const FOLLOW_BLOCK: Duration = Duration::from_secs(1);
/// The most writing gateways [`ReaderStats::sources`] names; the rest count as `(other)`.
const MAX_SOURCES: usize = 1000;

// ---------------------------------------------------------------------------------------------
// Where a stream lives

/// Where a stream lives: one Redis server, or a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamLocation {
    /// One server, by URL (`redis://127.0.0.1:6379`).
    Node(String),
    /// A cluster, by seed node URLs.
    Cluster(Vec<String>),
}

impl StreamLocation {
    /// Where `[monitor] stream` goes: `monitor.url`, else the store's `store.url` or, for
    /// `redis_cluster`, `store.urls`. Also returns the configuration field that named it.
    fn of_config(
        monitor: &MonitorConfig,
        store: &StoreConfig,
    ) -> Result<(StreamLocation, &'static str), Error> {
        if let Some(url) = &monitor.url {
            return Ok((StreamLocation::Node(url.clone()), "monitor.url"));
        }
        match store.kind {
            StoreKind::Redis => store
                .url
                .clone()
                .map(|url| (StreamLocation::Node(url), "store.url"))
                .ok_or_else(|| {
                    Error::config(
                        "store.url",
                        "the stream goes to the store's Redis, and the redis store has no url",
                    )
                }),
            StoreKind::RedisCluster if !store.urls.is_empty() => {
                Ok((StreamLocation::Cluster(store.urls.clone()), "store.urls"))
            }
            StoreKind::RedisCluster => Err(Error::config(
                "store.urls",
                "the stream goes to the store's cluster, and the redis_cluster store has no seed nodes",
            )),
            StoreKind::Memory => Err(Error::config(
                "monitor.url",
                "the stream needs a Redis server: set monitor.url, or use a redis store",
            )),
        }
    }

    /// A client for it (nothing connects yet); `field` names what configured it in errors.
    fn client(&self, field: &str, response_timeout: Duration) -> Result<Client, Error> {
        match self {
            StreamLocation::Node(url) => redis::Client::open(url.as_str())
                .map(Client::Node)
                .map_err(|e| Error::config(field, format!("not a Redis URL ({url:?}): {e}"))),
            StreamLocation::Cluster(urls) => {
                if urls.is_empty() {
                    return Err(Error::config(field, "no seed node URLs"));
                }
                ClusterClient::builder(urls.clone())
                    .connection_timeout(response_timeout)
                    .response_timeout(response_timeout)
                    .retries(2)
                    .build()
                    .map(|c| Client::Cluster(Box::new(c)))
                    .map_err(|e| Error::config(field, format!("not Redis URLs ({urls:?}): {e}")))
            }
        }
    }
}

impl fmt::Display for StreamLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamLocation::Node(url) => f.write_str(url),
            StreamLocation::Cluster(urls) => write!(f, "cluster {}", urls.join(",")),
        }
    }
}

enum Client {
    Node(redis::Client),
    Cluster(Box<ClusterClient>),
}

enum Connection {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Client {
    /// Connects; a node connection's replies time out after `response_timeout` (`None`: the
    /// caller's own deadline bounds them).
    async fn connect(
        &self,
        timeout: Duration,
        response_timeout: Option<Duration>,
    ) -> redis::RedisResult<Connection> {
        match self {
            Client::Node(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(response_timeout);
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Connection::Node)
            }
            Client::Cluster(client) => client.get_async_connection().await.map(Connection::Cluster),
        }
    }
}

impl Connection {
    async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Connection::Node(c) => cmd.query_async(c).await,
            Connection::Cluster(c) => cmd.query_async(c).await,
        }
    }

    async fn query_pipeline(&mut self, pipe: &redis::Pipeline) -> redis::RedisResult<()> {
        match self {
            Connection::Node(c) => pipe.query_async(c).await,
            Connection::Cluster(c) => pipe.query_async(c).await,
        }
    }
}

/// `hostname:pid`: the host name from `/proc/sys/kernel/hostname` or `$HOSTNAME`.
pub fn default_instance() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

/// This host's name, or `unknown`.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

// ---------------------------------------------------------------------------------------------
// Wire format

/// One field value of an entry.
#[derive(Debug, Clone, Copy)]
enum FieldValue<'a> {
    Text(&'a str),
    Number(u64),
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Calls `put` with every field of `event`'s entry, in order.
fn visit_fields(
    event: &Event<'_>,
    source: &str,
    mut put: impl FnMut(&'static str, FieldValue<'_>),
) {
    use FieldValue::{Number, Text};
    put("v", Number(WIRE_VERSION));
    let (kind, at) = match event {
        Event::Decision(e) => ("d", e.at),
        Event::Upstream(e) => ("u", e.at),
        Event::Response(e) => ("r", e.at),
    };
    put("k", Text(kind));
    put("t", Number(at.as_millis()));
    put("src", Text(source));
    match event {
        Event::Decision(e) => {
            if let Some((method, path)) = e.endpoint {
                put("m", Text(method));
                put("p", Text(bare_path(path)));
            }
            if let Some(subject) = e.subject {
                put("s", Text(subject));
            }
            if let Some(role) = e.role {
                put("r", Text(role));
            }
            put("o", Text(e.outcome.as_str()));
            if let Some(rule) = e.rule {
                put("rule", Text(rule));
            }
            if let Some(kind) = e.error {
                put("e", Text(kind.as_str()));
            }
            if let Some(store) = e.store {
                put("st", Text(store.as_str()));
            }
            if let Some(rule) = e.shadow_rule {
                put("sh", Text(rule));
            }
            if e.allowlisted {
                put("al", Number(1));
            }
        }
        Event::Upstream(e) => {
            put("svc", Text(e.service));
            put("up", Text(e.upstream));
            put("co", Text(e.outcome.as_str()));
            put("lat", Number(micros(e.latency)));
            put("trip", Number(u64::from(e.tripped)));
        }
        Event::Response(e) => {
            put("m", Text(e.method));
            put("p", Text(bare_path(e.path)));
            put("code", Number(u64::from(e.status)));
            put("lat", Number(micros(e.latency)));
        }
    }
}

/// The fields of `event`'s stream entry as the sink writes them, `source` being the writing
/// gateway (see the [module docs](self) for the format).
///
/// ```
/// use floodwall::monitor::{entry_fields, Event, ResponseEvent};
/// use floodwall::Timestamp;
/// use std::time::Duration;
///
/// let event = Event::Response(ResponseEvent {
///     at: Timestamp::from_millis(1_700_000_000_123),
///     method: "GET",
///     path: "/api/orders?page=2",
///     status: 200,
///     latency: Duration::from_micros(1500),
/// });
/// let fields: Vec<(&str, String)> = entry_fields(&event, "gw-1:42");
/// let text: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
/// assert_eq!(text.join(" "), "v=1 k=r t=1700000000123 src=gw-1:42 m=GET p=/api/orders code=200 lat=1500");
/// ```
pub fn entry_fields(event: &Event<'_>, source: &str) -> Vec<(&'static str, String)> {
    let mut fields = Vec::with_capacity(12);
    visit_fields(event, source, |name, value| {
        fields.push((
            name,
            match value {
                FieldValue::Text(t) => t.to_owned(),
                FieldValue::Number(n) => n.to_string(),
            },
        ));
    });
    fields
}

/// An entry read back: the event and the gateway that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEntry<'a> {
    /// The `src` field, if the entry has one.
    pub source: Option<&'a str>,
    /// The event.
    pub event: Event<'a>,
}

/// Why an entry could not be read as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedEntry(String);

impl MalformedEntry {
    /// What is wrong with it, e.g. `field t is not a number`.
    pub fn reason(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MalformedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MalformedEntry {}

/// The fields of one entry, by name.
#[derive(Default)]
struct RawEntry<'a> {
    v: Option<&'a [u8]>,
    k: Option<&'a [u8]>,
    t: Option<&'a [u8]>,
    src: Option<&'a [u8]>,
    m: Option<&'a [u8]>,
    p: Option<&'a [u8]>,
    s: Option<&'a [u8]>,
    r: Option<&'a [u8]>,
    o: Option<&'a [u8]>,
    rule: Option<&'a [u8]>,
    e: Option<&'a [u8]>,
    st: Option<&'a [u8]>,
    sh: Option<&'a [u8]>,
    al: Option<&'a [u8]>,
    svc: Option<&'a [u8]>,
    up: Option<&'a [u8]>,
    co: Option<&'a [u8]>,
    lat: Option<&'a [u8]>,
    trip: Option<&'a [u8]>,
    code: Option<&'a [u8]>,
}

fn malformed(reason: impl Into<String>) -> MalformedEntry {
    MalformedEntry(reason.into())
}

fn text<'a>(name: &str, value: Option<&'a [u8]>) -> Result<Option<&'a str>, MalformedEntry> {
    value
        .map(|v| {
            std::str::from_utf8(v).map_err(|_| malformed(format!("field {name} is not UTF-8")))
        })
        .transpose()
}

fn required<'a>(name: &str, value: Option<&'a [u8]>) -> Result<&'a str, MalformedEntry> {
    text(name, value)?.ok_or_else(|| malformed(format!("field {name} is missing")))
}

fn number(name: &str, value: Option<&[u8]>) -> Result<u64, MalformedEntry> {
    let text = required(name, value)?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!("field {name} is not a number: {text:?}")));
    }
    text.parse()
        .map_err(|_| malformed(format!("field {name} is out of range: {text:?}")))
}

/// Reads one entry's fields (name, value pairs in any order; see the [module docs](self)).
pub fn parse_entry<'a>(
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<StreamEntry<'a>, MalformedEntry> {
    let mut raw = RawEntry::default();
    for (name, value) in fields {
        let slot = match name {
            b"v" => &mut raw.v,
            b"k" => &mut raw.k,
            b"t" => &mut raw.t,
            b"src" => &mut raw.src,
            b"m" => &mut raw.m,
            b"p" => &mut raw.p,
            b"s" => &mut raw.s,
            b"r" => &mut raw.r,
            b"o" => &mut raw.o,
            b"rule" => &mut raw.rule,
            b"e" => &mut raw.e,
            b"st" => &mut raw.st,
            b"sh" => &mut raw.sh,
            b"al" => &mut raw.al,
            b"svc" => &mut raw.svc,
            b"up" => &mut raw.up,
            b"co" => &mut raw.co,
            b"lat" => &mut raw.lat,
            b"trip" => &mut raw.trip,
            b"code" => &mut raw.code,
            _ => continue,
        };
        *slot = Some(value);
    }
    let version = number("v", raw.v)?;
    if version != WIRE_VERSION {
        return Err(malformed(format!(
            "wire format version {version}; this reader reads {WIRE_VERSION}"
        )));
    }
    let at = Timestamp::from_millis(number("t", raw.t)?);
    let source = text("src", raw.src)?;
    let event = match required("k", raw.k)? {
        "d" => {
            let endpoint = match (text("m", raw.m)?, text("p", raw.p)?) {
                (Some(m), Some(p)) => Some((m, p)),
                (None, None) => None,
                _ => return Err(malformed("a decision has one of m and p without the other")),
            };
            let outcome = required("o", raw.o)?;
            Event::Decision(DecisionEvent {
                at,
                endpoint,
                subject: text("s", raw.s)?,
                role: text("r", raw.r)?,
                outcome: EventOutcome::parse(outcome)
                    .ok_or_else(|| malformed(format!("unknown outcome o={outcome:?}")))?,
                rule: text("rule", raw.rule)?,
                error: text("e", raw.e)?.and_then(ErrorKind::parse),
                store: text("st", raw.st)?.and_then(StoreUsed::parse),
                shadow_rule: text("sh", raw.sh)?,
                allowlisted: match text("al", raw.al)? {
                    None | Some("0") => false,
                    Some("1") => true,
                    Some(other) => {
                        return Err(malformed(format!("field al is not 0 or 1: {other:?}")));
                    }
                },
            })
        }
        "u" => {
            let outcome = required("co", raw.co)?;
            Event::Upstream(UpstreamEvent {
                at,
                service: required("svc", raw.svc)?,
                upstream: required("up", raw.up)?,
                outcome: CallOutcome::parse(outcome)
                    .ok_or_else(|| malformed(format!("unknown call outcome co={outcome:?}")))?,
                latency: Duration::from_micros(number("lat", raw.lat)?),
                tripped: match required("trip", raw.trip)? {
                    "0" => false,
                    "1" => true,
                    other => return Err(malformed(format!("field trip is not 0 or 1: {other:?}"))),
                },
            })
        }
        "r" => Event::Response(ResponseEvent {
            at,
            method: required("m", raw.m)?,
            path: required("p", raw.p)?,
            status: u16::try_from(number("code", raw.code)?)
                .map_err(|_| malformed("field code is not an HTTP status"))?,
            latency: Duration::from_micros(number("lat", raw.lat)?),
        }),
        other => return Err(malformed(format!("unknown kind k={other:?}"))),
    };
    Ok(StreamEntry { source, event })
}

// ---------------------------------------------------------------------------------------------
// The sink

/// A part of a [`QueuedEvent`]'s buffer.
#[derive(Debug, Clone, Copy)]
struct Span(u32, u32);

/// How many bytes of an event's strings a queued copy holds without allocating.
const INLINE_TEXT: usize = 64;

/// An event copied for the writer: its strings in one buffer (inline when they fit in
/// [`INLINE_TEXT`] bytes, else one allocation), the rest as is.
#[derive(Debug)]
struct QueuedEvent {
    text: SmallVec<[u8; INLINE_TEXT]>,
    shape: Shape,
}

#[derive(Debug)]
enum Shape {
    Decision {
        at: Timestamp,
        endpoint: Option<(Span, Span)>,
        subject: Option<Span>,
        role: Option<Span>,
        outcome: EventOutcome,
        rule: Option<Span>,
        error: Option<ErrorKind>,
        store: Option<StoreUsed>,
        shadow_rule: Option<Span>,
        allowlisted: bool,
    },
    Upstream {
        at: Timestamp,
        service: Span,
        upstream: Span,
        outcome: CallOutcome,
        latency: Duration,
        tripped: bool,
    },
    Response {
        at: Timestamp,
        method: Span,
        path: Span,
        status: u16,
        latency: Duration,
    },
}

struct Packer(SmallVec<[u8; INLINE_TEXT]>);

impl Packer {
    fn put(&mut self, s: &str) -> Span {
        let start = self.0.len() as u32;
        self.0.extend_from_slice(s.as_bytes());
        Span(start, self.0.len() as u32)
    }
}

impl QueuedEvent {
    /// A copy of `event`, its path in normal form (lower-cased when `fold_case`); `None` for
    /// one whose strings pass 4 GiB together.
    fn new(event: &Event<'_>, fold_case: bool) -> Option<Self> {
        let mut buffer = PathBuffer::new();
        let path = match event {
            Event::Decision(e) => e.endpoint.map(|(_, p)| p),
            Event::Upstream(_) => None,
            Event::Response(e) => Some(e.path),
        }
        .map_or("", |p| normalize_path(p, fold_case, &mut buffer).as_str());
        let len = |s: Option<&str>| s.map_or(0, str::len);
        let size = match event {
            Event::Decision(e) => {
                e.endpoint.map_or(0, |(m, _)| m.len() + path.len())
                    + len(e.subject)
                    + len(e.role)
                    + len(e.rule)
                    + len(e.shadow_rule)
            }
            Event::Upstream(e) => e.service.len() + e.upstream.len(),
            Event::Response(e) => e.method.len() + path.len(),
        };
        if u32::try_from(size).is_err() {
            return None;
        }
        let mut p = Packer(SmallVec::with_capacity(size));
        let shape = match event {
            Event::Decision(e) => Shape::Decision {
                at: e.at,
                endpoint: e.endpoint.map(|(m, _)| (p.put(m), p.put(path))),
                subject: e.subject.map(|s| p.put(s)),
                role: e.role.map(|s| p.put(s)),
                outcome: e.outcome,
                rule: e.rule.map(|s| p.put(s)),
                error: e.error,
                store: e.store,
                shadow_rule: e.shadow_rule.map(|s| p.put(s)),
                allowlisted: e.allowlisted,
            },
            Event::Upstream(e) => Shape::Upstream {
                at: e.at,
                service: p.put(e.service),
                upstream: p.put(e.upstream),
                outcome: e.outcome,
                latency: e.latency,
                tripped: e.tripped,
            },
            Event::Response(e) => Shape::Response {
                at: e.at,
                method: p.put(e.method),
                path: p.put(path),
                status: e.status,
                latency: e.latency,
            },
        };
        Some(QueuedEvent { text: p.0, shape })
    }

    fn get(&self, span: Span) -> &str {
        // Every span is a whole `&str` copied in: valid UTF-8, checked again on the writer's
        // thread rather than trusted.
        std::str::from_utf8(&self.text[span.0 as usize..span.1 as usize]).unwrap_or_default()
    }

    /// The event again, borrowing from the copy.
    fn event(&self) -> Event<'_> {
        match self.shape {
            Shape::Decision {
                at,
                endpoint,
                subject,
                role,
                outcome,
                rule,
                error,
                store,
                shadow_rule,
                allowlisted,
            } => Event::Decision(DecisionEvent {
                at,
                endpoint: endpoint.map(|(m, p)| (self.get(m), self.get(p))),
                subject: subject.map(|s| self.get(s)),
                role: role.map(|s| self.get(s)),
                outcome,
                rule: rule.map(|s| self.get(s)),
                error,
                store,
                shadow_rule: shadow_rule.map(|s| self.get(s)),
                allowlisted,
            }),
            Shape::Upstream {
                at,
                service,
                upstream,
                outcome,
                latency,
                tripped,
            } => Event::Upstream(UpstreamEvent {
                at,
                service: self.get(service),
                upstream: self.get(upstream),
                outcome,
                latency,
                tripped,
            }),
            Shape::Response {
                at,
                method,
                path,
                status,
                latency,
            } => Event::Response(ResponseEvent {
                at,
                method: self.get(method),
                path: self.get(path),
                status,
                latency,
            }),
        }
    }
}

/// What the sink's handle and its writer thread share.
struct SinkShared {
    stream: String,
    /// Events offered, ever (each reserves a place in the queue, or is dropped at once).
    offered: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    state: Mutex<WriterState>,
    /// The writer waits here while a batch fills and while it backs off.
    wake: Condvar,
    /// [`StreamSink::flush`] waits here; the writer notifies it after every batch.
    settled: Condvar,
}

#[derive(Debug, Default)]
struct WriterState {
    /// Set when the sink is dropped: the writer stops writing at this instant.
    closing: Option<Instant>,
    /// Set by [`StreamSink::flush`]: send what is queued without waiting for a full batch.
    flush_requested: bool,
}

impl SinkShared {
    /// Events whose fate is known: written or dropped.
    fn settled(&self) -> u64 {
        self.written.load(Ordering::Acquire) + self.dropped.load(Ordering::Acquire)
    }

    fn settle(&self, written: u64, dropped: u64) {
        self.written.fetch_add(written, Ordering::AcqRel);
        self.dropped.fetch_add(dropped, Ordering::AcqRel);
        // Taking the lock orders this notification after a waiter's check of the counters.
        let _state = self.state.lock();
        self.settled.notify_all();
    }
}

/// The Redis Streams sink of a [`Monitor`](super::Monitor): a bounded queue and the thread
/// that writes it out (see the [module docs](self)).
pub(crate) struct StreamSink {
    shared: Arc<SinkShared>,
    sender: Option<Sender<QueuedEvent>>,
    worker: Option<JoinHandle<()>>,
    capacity: u64,
    batch: u64,
}

impl fmt::Debug for StreamSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSink")
            .field("stream", &self.shared.stream)
            .field("capacity", &self.capacity)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl StreamSink {
    /// The sink `config` asks for (`None` without `monitor.stream`), its writer started.
    /// Nothing connects until the first batch.
    pub(crate) fn start(
        config: &MonitorConfig,
        store: &StoreConfig,
    ) -> Result<Option<Self>, Error> {
        let Some(stream) = &config.stream else {
            return Ok(None);
        };
        let (location, field) = StreamLocation::of_config(config, store)?;
        let client = location.client(field, WRITE_TIMEOUT)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                Error::config(
                    "monitor.stream",
                    format!("cannot start the stream writer: {e}"),
                )
            })?;
        let shared = Arc::new(SinkShared {
            stream: stream.clone(),
            offered: AtomicU64::new(0),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
            state: Mutex::new(WriterState::default()),
            wake: Condvar::new(),
            settled: Condvar::new(),
        });
        let (sender, receiver) = mpsc::channel();
        let writer = Writer {
            shared: Arc::clone(&shared),
            receiver,
            client,
            connection: None,
            runtime,
            maxlen: config.maxlen,
            batch: config.batch,
            flush: config.flush.0,
            source: config.instance.clone().unwrap_or_else(default_instance),
            backoff: Duration::ZERO,
        };
        let worker = std::thread::Builder::new()
            .name("fw-stream".to_owned())
            .spawn(move || writer.run())
            .map_err(|e| {
                Error::config(
                    "monitor.stream",
                    format!("cannot start the stream writer: {e}"),
                )
            })?;
        Ok(Some(StreamSink {
            shared,
            sender: Some(sender),
            worker: Some(worker),
            capacity: config.queue as u64,
            batch: config.batch as u64,
        }))
    }

    /// Queues a copy of `event`, or drops and counts it when the queue is full. Never blocks.
    pub(crate) fn offer(&self, event: &Event<'_>, fold_case: bool) {
        let shared = &*self.shared;
        let before = shared.offered.fetch_add(1, Ordering::AcqRel);
        // Events offered before this one and not yet written or dropped: queued, or being
        // written. Counting the latter keeps memory bounded by `queue` events.
        let held = before.saturating_sub(shared.settled());
        let sent = held < self.capacity
            && QueuedEvent::new(event, fold_case).is_some_and(|copy| {
                self.sender
                    .as_ref()
                    .is_some_and(|sender| sender.send(copy).is_ok())
            });
        if !sent {
            shared.dropped.fetch_add(1, Ordering::AcqRel);
        } else if held + 1 == self.batch {
            shared.wake.notify_one();
        }
    }

    /// The counters now. `written + dropped + queued` is the number of events offered.
    pub(crate) fn stats(&self) -> SinkStats {
        let shared = &*self.shared;
        let written = shared.written.load(Ordering::Acquire);
        let dropped = shared.dropped.load(Ordering::Acquire);
        let offered = shared.offered.load(Ordering::Acquire);
        SinkStats {
            stream: shared.stream.clone(),
            written,
            dropped,
            queued: offered.saturating_sub(written + dropped),
            errors: shared.errors.load(Ordering::Acquire),
            last_error: shared.last_error.lock().clone(),
        }
    }

    /// Asks the writer to send what is queued now, and waits at most `timeout` until every
    /// event offered before the call is written or dropped; returns whether they all are.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        let shared = &*self.shared;
        let target = shared.offered.load(Ordering::Acquire);
        let deadline = Instant::now() + timeout;
        let mut state = shared.state.lock();
        loop {
            if shared.settled() >= target {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            state.flush_requested = true;
            shared.wake.notify_all();
            shared.settled.wait_until(&mut state, deadline);
        }
    }
}

impl Drop for StreamSink {
    fn drop(&mut self) {
        self.shared.state.lock().closing = Some(Instant::now() + SHUTDOWN_GRACE);
        self.shared.wake.notify_all();
        // Without a sender, the writer's queue ends once it is empty.
        drop(self.sender.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The writer thread's state.
struct Writer {
    shared: Arc<SinkShared>,
    receiver: Receiver<QueuedEvent>,
    client: Client,
    connection: Option<Connection>,
    runtime: tokio::runtime::Runtime,
    maxlen: u64,
    batch: usize,
    flush: Duration,
    source: String,
    backoff: Duration,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(self.batch);
        loop {
            let ended = self.fill(&mut batch);
            if !batch.is_empty() {
                self.write(&mut batch);
            }
            if ended {
                return;
            }
        }
    }

    /// Waits for an event, then for a full batch — at most `flush`, less when a flush is
    /// asked for or the sink is closing. Returns whether the queue has ended (the sink was
    /// dropped and everything it queued has been taken).
    fn fill(&mut self, batch: &mut Vec<QueuedEvent>) -> bool {
        match self.receiver.recv() {
            Ok(event) => batch.push(event),
            Err(_) => return true,
        }
        let deadline = Instant::now() + self.flush;
        loop {
            while batch.len() < self.batch {
                match self.receiver.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return true,
                }
            }
            if batch.len() >= self.batch {
                return false;
            }
            let mut state = self.shared.state.lock();
            if state.closing.is_some() || std::mem::take(&mut state.flush_requested) {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.shared
                .wake
                .wait_for(&mut state, (deadline - now).min(TICK));
        }
    }

    /// Writes `batch` in one round trip (emptying it) and counts the outcome; after a
    /// failure, forgets the connection and backs off.
    fn write(&mut self, batch: &mut Vec<QueuedEvent>) {
        let n = batch.len() as u64;
        let closing = self.shared.state.lock().closing;
        let timeout = match closing {
            Some(deadline) => deadline
                .saturating_duration_since(Instant::now())
                .min(WRITE_TIMEOUT),
            None => WRITE_TIMEOUT,
        };
        if timeout.is_zero() {
            // Past the shutdown grace: what is left is dropped, and counted.
            batch.clear();
            self.shared.settle(0, n);
            return;
        }
        let mut pipe = redis::Pipeline::with_capacity(batch.len());
        for queued in batch.iter() {
            pipe.cmd("XADD")
                .arg(&self.shared.stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.maxlen)
                .arg("*");
            visit_fields(&queued.event(), &self.source, |name, value| {
                pipe.arg(name);
                match value {
                    FieldValue::Text(t) => pipe.arg(t),
                    FieldValue::Number(v) => pipe.arg(v),
                };
            });
            pipe.ignore();
        }
        batch.clear();
        let client = &self.client;
        let connection = &mut self.connection;
        let result = self.runtime.block_on(async {
            tokio::time::timeout(timeout, async {
                if connection.is_none() {
                    *connection = Some(client.connect(timeout, Some(timeout)).await?);
                }
                match connection.as_mut() {
                    Some(c) => c.query_pipeline(&pipe).await,
                    None => unreachable!("connected just above"),
                }
            })
            .await
        });
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("redis: {e}")),
            Err(_) => Some(format!("no answer from Redis within {timeout:?}")),
        };
        match failure {
            None => {
                *self.shared.last_error.lock() = None;
                self.backoff = Duration::ZERO;
                self.shared.settle(n, 0);
            }
            Some(message) => {
                self.connection = None;
                self.shared.errors.fetch_add(1, Ordering::AcqRel);
                *self.shared.last_error.lock() = Some(format!(
                    "writing {n} events to {}: {message}",
                    self.shared.stream
                ));
                self.shared.settle(0, n);
                self.back_off();
            }
        }
    }

    /// Waits before the next attempt: [`BACKOFF_MIN`], doubling to [`BACKOFF_MAX`]; not at
    /// all once the sink is closing.
    fn back_off(&mut self) {
        self.backoff = if self.backoff.is_zero() {
            BACKOFF_MIN
        } else {
            (self.backoff * 2).min(BACKOFF_MAX)
        };
        let until = Instant::now() + self.backoff;
        let mut state = self.shared.state.lock();
        while state.closing.is_none() {
            if self.shared.wake.wait_until(&mut state, until).timed_out() {
                break;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The reader

/// Where a new consumer group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupStart {
    /// From the stream's first entry (`XGROUP CREATE … 0`): a new group reports history.
    #[default]
    Beginning,
    /// From entries added after the group is created (`XGROUP CREATE … $`).
    New,
}

/// How a [`StreamReader`] reads: defaults, with consuming setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderOptions {
    /// The consumer group ([`DEFAULT_GROUP`]). Each group sees every entry once: a second
    /// run with the same group reads only what was added since.
    pub group: String,
    /// This reader's name in the group (the host name by default). Entries it was given and
    /// never acknowledged are read again first.
    pub consumer: String,
    /// Where the group starts when this reader creates it.
    pub start: GroupStart,
    /// The most entries one read asks for ([`DEFAULT_READ_COUNT`]).
    pub count: usize,
    /// The report's horizon in minutes (60).
    pub horizon_minutes: u64,
    /// The length of the report's top lists (10).
    pub top: usize,
    /// The deadline of one call to Redis, added to its `BLOCK` time ([`DEFAULT_READ_TIMEOUT`]).
    pub timeout: Duration,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            group: DEFAULT_GROUP.to_owned(),
            consumer: host_name(),
            start: GroupStart::Beginning,
            count: DEFAULT_READ_COUNT,
            horizon_minutes: 60,
            top: 10,
            timeout: DEFAULT_READ_TIMEOUT,
        }
    }
}

impl ReaderOptions {
    /// Sets [`group`](Self::group).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }
    /// Sets [`consumer`](Self::consumer).
    pub fn consumer(mut self, consumer: impl Into<String>) -> Self {
        self.consumer = consumer.into();
        self
    }
    /// Sets [`start`](Self::start).
    pub fn start(mut self, start: GroupStart) -> Self {
        self.start = start;
        self
    }
    /// Sets [`count`](Self::count) (at least 1).
    pub fn count(mut self, count: usize) -> Self {
        self.count = count.max(1);
        self
    }
    /// Sets [`horizon_minutes`](Self::horizon_minutes).
    pub fn horizon_minutes(mut self, minutes: u64) -> Self {
        self.horizon_minutes = minutes;
        self
    }
    /// Sets [`top`](Self::top).
    pub fn top(mut self, top: usize) -> Self {
        self.top = top;
        self
    }
    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// What a [`StreamReader`] has read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReaderStats {
    /// Entries read (and acknowledged).
    pub entries: u64,
    /// … recorded into the report.
    pub recorded: u64,
    /// … skipped: malformed, or deleted from the stream before this reader got to them.
    pub malformed: u64,
    /// Why the last malformed entry was, with its id.
    pub last_malformed: Option<String>,
    /// Recorded entries by writing gateway (`src`; `(unknown)` without one, `(other)` past
    /// the thousandth name).
    pub sources: BTreeMap<String, u64>,
}

/// Reads a stream the sink wrote through a consumer group, into a report (see the
/// [module docs](self)).
///
/// Its methods block the calling thread on Redis (it drives its own single-threaded tokio
/// runtime, so it must not be called from inside another tokio runtime's task: use
/// `spawn_blocking` there).
///
/// ```no_run
/// use floodwall::monitor::{ReaderOptions, StreamLocation, StreamReader};
/// use floodwall::{Clock, SystemClock};
///
/// let location = StreamLocation::Node("redis://127.0.0.1:6379".into());
/// let mut reader = StreamReader::open(&location, "fw:events", ReaderOptions::default())?;
/// reader.read_available()?;
/// let report = reader.report(SystemClock.now());
/// println!("{} requests, {} rate limited", report.totals.requests, report.totals.rate_limited);
/// # Ok::<(), floodwall::Error>(())
/// ```
pub struct StreamReader {
    runtime: tokio::runtime::Runtime,
    client: Client,
    connection: Option<Connection>,
    stream: String,
    options: ReaderOptions,
    aggregator: Aggregator,
    stats: ReaderStats,
    /// Whether this consumer's unacknowledged entries have all been read again.
    pending_done: bool,
}

impl fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReader")
            .field("stream", &self.stream)
            .field("options", &self.options)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn unavailable(stream: &str, what: &str, cause: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::StoreUnavailable,
        format!("stream {stream}: {what}: {cause}"),
    )
}

impl StreamReader {
    /// Connects to `location` and joins (creating it if needed) the options' consumer group
    /// on `stream` (creating an empty stream if there is none). Fails with `invalid_config`
    /// (field `url` or `urls`) for a bad URL, `store_unavailable` when Redis fails.
    pub fn open(
        location: &StreamLocation,
        stream: &str,
        options: ReaderOptions,
    ) -> Result<Self, Error> {
        let field = match location {
            StreamLocation::Node(_) => "url",
            StreamLocation::Cluster(_) => "urls",
        };
        if stream.is_empty() {
            return Err(Error::config("stream", "must not be empty"));
        }
        if options.group.is_empty() {
            return Err(Error::config("group", "must not be empty"));
        }
        if options.consumer.is_empty() {
            return Err(Error::config("consumer", "must not be empty"));
        }
        let client = location.client(field, options.timeout + FOLLOW_BLOCK)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| unavailable(stream, "cannot start an I/O runtime", e))?;
        let mut reader = StreamReader {
            runtime,
            client,
            connection: None,
            stream: stream.to_owned(),
            aggregator: Aggregator::new(options.horizon_minutes, options.top),
            options,
            stats: ReaderStats::default(),
            pending_done: false,
        };
        let mut create = redis::cmd("XGROUP");
        create
            .arg("CREATE")
            .arg(stream)
            .arg(&reader.options.group)
            .arg(match reader.options.start {
                GroupStart::Beginning => "0",
                GroupStart::New => "$",
            })
            .arg("MKSTREAM");
        match reader.call(&create, Duration::ZERO) {
            Ok(_) => {}
            Err(e) if e.message().contains("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
        Ok(reader)
    }

    /// Runs `cmd` within the deadline (plus `extra`, a `BLOCK` time), connecting first if
    /// needed; a failure forgets the connection, so that the next call connects afresh.
    fn call(&mut self, cmd: &redis::Cmd, extra: Duration) -> Result<Value, Error> {
        let timeout = self.options.timeout + extra;
        let client = &self.client;
        let connection = &mut self.connection;
        let connect_timeout = self.options.timeout;
        let result = self.runtime.block_on(async {
            tokio::time::timeout(timeout, async {
                if connection.is_none() {
                    *connection = Some(client.connect(connect_timeout, None).await?);
                }
                match connection.as_mut() {
                    Some(c) => c.query::<Value>(cmd).await,
                    None => unreachable!("connected just above"),
                }
            })
            .await
        });
        let name = cmd
            .args_iter()
            .next()
            .and_then(|a| match a {
                redis::Arg::Simple(bytes) => std::str::from_utf8(bytes).ok(),
                _ => None,
            })
            .unwrap_or("command")
            .to_owned();
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                self.connection = None;
                Err(unavailable(&self.stream, &name, e))
            }
            Err(_) => {
                self.connection = None;
                Err(unavailable(
                    &self.stream,
                    &name,
                    format!("no answer within {timeout:?}"),
                ))
            }
        }
    }

    /// One `XREADGROUP` (after this consumer's unacknowledged entries, the group's new
    /// ones), waiting up to `block` for entries when there are none; records and
    /// acknowledges what it got. Returns how many entries that was (malformed included).
    pub fn read(&mut self, block: Option<Duration>) -> Result<usize, Error> {
        if !self.pending_done {
            let n = self.read_from("0", None)?;
            if n > 0 {
                return Ok(n);
            }
            self.pending_done = true;
        }
        self.read_from(">", block)
    }

    /// Reads until nothing is left — at most about as many entries as the stream held when
    /// called, so that writers faster than this reader cannot keep it here. Returns how many
    /// entries it read.
    pub fn read_available(&mut self) -> Result<usize, Error> {
        let mut xlen = redis::cmd("XLEN");
        xlen.arg(&self.stream);
        let length = match self.call(&xlen, Duration::ZERO)? {
            Value::Int(n) => usize::try_from(n).unwrap_or(0),
            _ => 0,
        };
        let budget = length + 2 * self.options.count;
        let mut total = 0;
        while total < budget {
            let n = self.read(None)?;
            if n == 0 {
                break;
            }
            total += n;
        }
        Ok(total)
    }

    /// Keeps reading (blocking at most a second at a time) until `duration` has passed.
    /// Returns how many entries it read.
    pub fn follow(&mut self, duration: Duration) -> Result<usize, Error> {
        let deadline = Instant::now() + duration;
        let mut total = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(total);
            }
            total += self.read(Some(left.min(FOLLOW_BLOCK).max(Duration::from_millis(1))))?;
        }
    }

    fn read_from(&mut self, id: &str, block: Option<Duration>) -> Result<usize, Error> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.options.group)
            .arg(&self.options.consumer)
            .arg("COUNT")
            .arg(self.options.count);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(id);
        let reply = self.call(&cmd, block.unwrap_or_default())?;
        let entries =
            stream_entries(&reply).map_err(|e| unavailable(&self.stream, "XREADGROUP", e))?;
        if entries.is_empty() {
            return Ok(0);
        }
        let mut ack = redis::cmd("XACK");
        ack.arg(&self.stream).arg(&self.options.group);
        for (id, fields) in &entries {
            ack.arg(*id);
            self.stats.entries += 1;
            let parsed = match fields {
                Some(fields) => field_pairs(fields).and_then(parse_entry),
                None => Err(malformed("deleted from the stream before it was read")),
            };
            match parsed {
                Ok(entry) => {
                    self.aggregator.record(&entry.event);
                    self.stats.recorded += 1;
                    let source = entry.source.unwrap_or("(unknown)");
                    let sources = &mut self.stats.sources;
                    let key = if sources.contains_key(source) || sources.len() < MAX_SOURCES {
                        source
                    } else {
                        "(other)"
                    };
                    *sources.entry(key.to_owned()).or_default() += 1;
                }
                Err(why) => {
                    self.stats.malformed += 1;
                    self.stats.last_malformed =
                        Some(format!("{}: {why}", String::from_utf8_lossy(id)));
                }
            }
        }
        let n = entries.len();
        drop(entries);
        self.call(&ack, Duration::ZERO)?;
        Ok(n)
    }

    /// The report at `now` of everything read, `source` = `"stream"`.
    pub fn report(&self, now: Timestamp) -> Report {
        let mut report = self.aggregator.report(now);
        report.source = "stream";
        report
    }

    /// What has been read.
    pub fn stats(&self) -> &ReaderStats {
        &self.stats
    }

    /// The aggregate of what has been read.
    pub fn aggregator(&self) -> &Aggregator {
        &self.aggregator
    }

    /// The stream's key.
    pub fn stream(&self) -> &str {
        &self.stream
    }
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

/// An entry's `[name, value, name, value …]` as pairs.
type FieldPair<'a> = (&'a [u8], &'a [u8]);

fn field_pairs(fields: &[Value]) -> Result<Vec<FieldPair<'_>>, MalformedEntry> {
    if !fields.len().is_multiple_of(2) {
        return Err(malformed("an odd number of field names and values"));
    }
    fields
        .chunks(2)
        .map(|pair| match (bytes(&pair[0]), bytes(&pair[1])) {
            (Some(name), Some(value)) => Ok((name, value)),
            _ => Err(malformed("a field that is not a string")),
        })
        .collect()
}

type RawStreamEntry<'a> = (&'a [u8], Option<&'a [Value]>);

/// The entries of an `XREADGROUP` reply on one stream (RESP2 or RESP3): `(id, fields)`, the
/// fields `None` for an entry deleted since it was delivered.
fn stream_entries(reply: &Value) -> Result<Vec<RawStreamEntry<'_>>, String> {
    let entries: &[Value] = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => match streams.first() {
            None => return Ok(Vec::new()),
            Some(Value::Array(pair)) if pair.len() == 2 => match &pair[1] {
                Value::Array(entries) => entries,
                Value::Nil => return Ok(Vec::new()),
                other => return Err(format!("unexpected entries {other:?}")),
            },
            Some(other) => return Err(format!("unexpected stream reply {other:?}")),
        },
        Value::Map(streams) => match streams.first() {
            None => return Ok(Vec::new()),
            Some((_, Value::Array(entries))) => entries,
            Some((_, Value::Nil)) => return Ok(Vec::new()),
            Some((_, other)) => return Err(format!("unexpected entries {other:?}")),
        },
        other => return Err(format!("unexpected reply {other:?}")),
    };
    entries
        .iter()
        .map(|entry| match entry {
            Value::Array(parts) if parts.len() == 2 => {
                let id = bytes(&parts[0]).ok_or_else(|| format!("an entry id {:?}", parts[0]))?;
                match &parts[1] {
                    Value::Array(fields) => Ok((id, Some(fields.as_slice()))),
                    Value::Nil => Ok((id, None)),
                    Value::Map(_) => Err("fields as a map".to_owned()),
                    other => Err(format!("unexpected fields {other:?}")),
                }
            }
            other => Err(format!("unexpected entry {other:?}")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<Event<'static>> {
        let at = Timestamp::from_millis(1_700_000_123_456);
        vec![
            Event::Decision(DecisionEvent {
                at,
                endpoint: Some(("GET", "/api/orders?x=1")),
                subject: Some("alice"),
                role: Some("free"),
                outcome: EventOutcome::RateLimited,
                rule: Some("per-user"),
                error: None,
                store: Some(StoreUsed::Redis),
                shadow_rule: None,
                allowlisted: false,
            }),
            Event::Decision(DecisionEvent {
                at,
                endpoint: None,
                subject: Some(""),
                role: None,
                outcome: EventOutcome::AuthRejected,
                rule: None,
                error: Some(ErrorKind::Expired),
                store: None,
                shadow_rule: None,
                allowlisted: false,
            }),
            Event::Upstream(UpstreamEvent {
                at,
                service: "orders",
                upstream: "http://127.0.0.1:9001",
                outcome: CallOutcome::Timeout,
                latency: Duration::from_micros(1_234_567),
                tripped: true,
            }),
            Event::Response(ResponseEvent {
                at,
                method: "POST",
                path: "/api/ünïcode",
                status: 503,
                latency: Duration::from_micros(42),
            }),
        ]
    }

    fn round_trip(event: &Event<'_>) -> (Option<String>, String) {
        let fields = entry_fields(event, "gw:1");
        let parsed =
            parse_entry(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))).expect("parses");
        (
            parsed.source.map(str::to_owned),
            format!("{:?}", parsed.event),
        )
    }

    #[test]
    fn every_event_survives_the_wire_and_the_queue() {
        for event in events() {
            let copy = QueuedEvent::new(&event, false).expect("fits");
            // The queue holds the path in normal form (no query, non-ASCII escaped).
            let mut buffer = PathBuffer::new();
            let mut normal = |p| normalize_path(p, false, &mut buffer).as_str().to_owned();
            match (copy.event(), event) {
                (Event::Decision(c), Event::Decision(mut e)) => {
                    let path = e.endpoint.map(|(_, p)| normal(p));
                    e.endpoint = e.endpoint.zip(path.as_deref()).map(|((m, _), p)| (m, p));
                    assert_eq!(c, e);
                }
                (Event::Response(c), Event::Response(mut e)) => {
                    let path = normal(e.path);
                    e.path = &path;
                    assert_eq!(c, e);
                }
                (c, e) => assert_eq!(c, e),
            }
            // What goes on the wire never carries the query string.
            let expected = match event {
                Event::Decision(mut e) => {
                    e.endpoint = e.endpoint.map(|(m, p)| (m, bare_path(p)));
                    Event::Decision(e)
                }
                other => other,
            };
            let (source, parsed) = round_trip(&event);
            assert_eq!(source.as_deref(), Some("gw:1"));
            assert_eq!(parsed, format!("{expected:?}"));
        }
    }

    #[test]
    fn every_error_kind_and_store_name_parses_back() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
        }
        for store in StoreUsed::ALL {
            assert_eq!(StoreUsed::parse(store.as_str()), Some(store));
        }
        assert_eq!(ErrorKind::parse("nope"), None);
    }

    fn parse(fields: &[(&str, &str)]) -> Result<String, String> {
        parse_entry(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
            .map(|e| format!("{:?}", e.event))
            .map_err(|e| e.reason().to_owned())
    }

    #[test]
    fn malformed_entries_say_why() {
        let base = [("v", "1"), ("k", "r"), ("t", "5"), ("m", "GET"), ("p", "/")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut f: Vec<(&str, &str)> = base.to_vec();
            f.extend_from_slice(extra);
            f
        };
        assert!(parse(&with(&[("code", "200"), ("lat", "1")])).is_ok());
        for (fields, reason) in [
            (with(&[("code", "200")]), "field lat is missing"),
            (
                with(&[("code", "70000"), ("lat", "1")]),
                "not an HTTP status",
            ),
            (with(&[("code", "-1"), ("lat", "1")]), "not a number"),
            (vec![("k", "r")], "field v is missing"),
            (vec![("v", "2"), ("k", "r")], "version 2"),
            (vec![("v", "1"), ("k", "x"), ("t", "1")], "unknown kind"),
            (
                vec![("v", "1"), ("k", "d"), ("t", "1"), ("o", "won")],
                "unknown outcome",
            ),
            (
                vec![
                    ("v", "1"),
                    ("k", "d"),
                    ("t", "1"),
                    ("o", "admitted"),
                    ("m", "GET"),
                ],
                "without the other",
            ),
            (
                vec![
                    ("v", "1"),
                    ("k", "u"),
                    ("t", "1"),
                    ("svc", "a"),
                    ("up", "b"),
                    ("co", "success"),
                    ("lat", "1"),
                    ("trip", "yes"),
                ],
                "not 0 or 1",
            ),
        ] {
            let got = parse(&fields).expect_err("malformed");
            assert!(got.contains(reason), "{fields:?}: {got}");
        }
        // Unknown fields, and error kinds or stores from a newer writer, are tolerated.
        let newer = parse(&[
            ("v", "1"),
            ("k", "d"),
            ("t", "1"),
            ("o", "failed"),
            ("e", "brand_new_kind"),
            ("st", "etcd"),
            ("zz", "?"),
        ])
        .expect("tolerated");
        assert!(
            newer.contains("error: None") && newer.contains("store: None"),
            "{newer}"
        );
        let invalid_utf8 = parse_entry([
            (&b"v"[..], &b"1"[..]),
            (b"k", b"r"),
            (b"t", b"1"),
            (b"m", b"\xff"),
        ]);
        assert!(
            invalid_utf8
                .expect_err("malformed")
                .reason()
                .contains("UTF-8")
        );
    }

    #[test]
    fn replies_in_either_protocol_give_the_entries() {
        let entry = |id: &str| {
            Value::Array(vec![
                Value::BulkString(id.as_bytes().to_vec()),
                Value::Array(vec![
                    Value::BulkString(b"v".to_vec()),
                    Value::BulkString(b"1".to_vec()),
                ]),
            ])
        };
        let resp2 = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"s".to_vec()),
            Value::Array(vec![
                entry("1-0"),
                Value::Array(vec![Value::BulkString(b"2-0".to_vec()), Value::Nil]),
            ]),
        ])]);
        let got = stream_entries(&resp2).expect("entries");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, b"1-0");
        assert!(got[1].1.is_none());
        let resp3 = Value::Map(vec![(
            Value::BulkString(b"s".to_vec()),
            Value::Array(vec![entry("3-0")]),
        )]);
        assert_eq!(stream_entries(&resp3).expect("entries")[0].0, b"3-0");
        assert!(stream_entries(&Value::Nil).expect("none").is_empty());
        assert!(stream_entries(&Value::Int(3)).is_err());
    }

    #[test]
    fn the_default_instance_names_host_and_process() {
        let instance = default_instance();
        assert!(
            instance.ends_with(&format!(":{}", std::process::id())),
            "{instance}"
        );
        assert!(instance.len() > 2);
    }

    #[test]
    fn a_full_queue_drops_without_waiting_for_redis() {
        // Nothing listens on port 1: every batch fails at once, and the queue stays bounded.
        let config = MonitorConfig {
            stream: Some("s".into()),
            url: Some("redis://127.0.0.1:1".into()),
            queue: 8,
            batch: 4,
            ..MonitorConfig::default()
        };
        let sink = StreamSink::start(&config, &StoreConfig::default())
            .expect("starts")
            .expect("configured");
        for event in events().iter().cycle().take(1000) {
            sink.offer(event, false);
        }
        let stats = sink.stats();
        assert_eq!(stats.written + stats.dropped + stats.queued, 1000);
        assert!(stats.queued <= 8, "{stats:?}");
        assert!(stats.dropped >= 992, "{stats:?}");
        assert!(sink.flush(Duration::from_secs(5)));
        let stats = sink.stats();
        assert_eq!((stats.written, stats.dropped, stats.queued), (0, 1000, 0));
        assert!(stats.errors >= 1);
        assert!(stats.last_error.expect("kept").contains("writing"));
    }
}
