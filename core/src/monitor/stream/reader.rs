//! The reader: [`StreamReader`], which reads a stream back through a consumer group into a
//! [`Report`], with its options and counters.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use redis::Value;
use serde::Serialize;

use super::host_name;
use super::location::StreamLocation;
use super::wire::{MalformedEntry, malformed, parse_entry};
use crate::clock::Timestamp;
use crate::error::{Error, ErrorKind};
use crate::link::{self, Client, Connection};
use crate::monitor::aggregate::{Aggregator, Report};

/// The consumer group a reader uses unless told otherwise.
pub const DEFAULT_GROUP: &str = "floodwall-stats";
/// The most entries one `XREADGROUP` asks for, unless told otherwise.
pub const DEFAULT_READ_COUNT: usize = 500;
/// The deadline of one reader call (added to its `BLOCK` time), unless told otherwise.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `BLOCK` of one read while a reader follows a stream.
const FOLLOW_BLOCK: Duration = Duration::from_secs(1);
/// The most writing gateways [`ReaderStats::sources`] names; the rest count as `(other)`.
const MAX_SOURCES: usize = 1000;

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
/// [module docs](super)).
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

impl Drop for StreamReader {
    fn drop(&mut self) {
        // Its connection's socket closes now, not when another part next waits on Redis.
        self.connection = None;
        link::settle();
    }
}

impl StreamReader {
    /// Connects to `location` and joins (creating it if needed) the options' consumer group
    /// on `stream` (creating an empty stream if there is none). Fails with `invalid_config`
    /// (field `url`, `urls` or `sentinels`) for a bad URL, `store_unavailable` when Redis fails.
    pub fn open(
        location: &StreamLocation,
        stream: &str,
        options: ReaderOptions,
    ) -> Result<Self, Error> {
        let field = match location {
            StreamLocation::Node(_) => "url",
            StreamLocation::Cluster(_) => "urls",
            StreamLocation::Sentinel { .. } => "sentinels",
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
        let client = location.client(field, options.timeout + FOLLOW_BLOCK, Some(2))?;
        link::start().map_err(|e| unavailable(stream, "cannot start an I/O runtime", e))?;
        let mut reader = StreamReader {
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
        let result = link::within(timeout, async {
            if connection.is_none() {
                *connection = Some(client.connect(connect_timeout, None).await?);
            }
            match connection.as_mut() {
                Some(c) => cmd.query_async::<Value>(c).await,
                None => unreachable!("connected just above"),
            }
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
}
