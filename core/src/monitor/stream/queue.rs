//! The bounded queue: the copy of an event it holds ([`QueuedEvent`]), the counters the sink
//! shares with its writer, and [`StreamSink::offer`], which reserves a place or drops and
//! counts the event when the queue is full.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use smallvec::SmallVec;

use crate::breaker::CallOutcome;
use crate::clock::Timestamp;
use crate::decision::StoreUsed;
use crate::error::ErrorKind;
use crate::monitor::aggregate::SinkStats;
use crate::monitor::event::{DecisionEvent, Event, EventOutcome, ResponseEvent, UpstreamEvent};
use crate::path::{PathBuffer, normalize_path};

/// A part of a [`QueuedEvent`]'s buffer.
#[derive(Debug, Clone, Copy)]
struct Span(u32, u32);

/// How many bytes of an event's strings a queued copy holds without allocating.
const INLINE_TEXT: usize = 64;

/// An event copied for the writer: its strings in one buffer (inline when they fit in
/// [`INLINE_TEXT`] bytes, else one allocation), the rest as is.
#[derive(Debug)]
pub(super) struct QueuedEvent {
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
        blocked: bool,
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
                blocked: e.blocked,
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
    pub(super) fn event(&self) -> Event<'_> {
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
                blocked,
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
                blocked,
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
pub(super) struct SinkShared {
    pub(super) stream: String,
    /// Events offered, ever (each reserves a place in the queue, or is dropped at once).
    pub(super) offered: AtomicU64,
    pub(super) written: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) last_error: Mutex<Option<String>>,
    pub(super) state: Mutex<WriterState>,
    /// The writer waits here while a batch fills and while it backs off.
    pub(super) wake: Condvar,
    /// [`StreamSink::flush`] waits here; the writer notifies it after every batch.
    pub(super) settled: Condvar,
}

#[derive(Debug, Default)]
pub(super) struct WriterState {
    /// Set when the sink is dropped: the writer stops writing at this instant.
    pub(super) closing: Option<Instant>,
    /// Set by [`StreamSink::flush`]: send what is queued without waiting for a full batch.
    pub(super) flush_requested: bool,
}

impl SinkShared {
    /// Events whose fate is known: written or dropped.
    fn settled(&self) -> u64 {
        self.written.load(Ordering::Acquire) + self.dropped.load(Ordering::Acquire)
    }

    pub(super) fn settle(&self, written: u64, dropped: u64) {
        self.written.fetch_add(written, Ordering::AcqRel);
        self.dropped.fetch_add(dropped, Ordering::AcqRel);
        // Taking the lock orders this notification after a waiter's check of the counters.
        let _state = self.state.lock();
        self.settled.notify_all();
    }
}

/// The Redis Streams sink of a [`Monitor`](crate::monitor::Monitor): a bounded queue and the
/// thread that writes it out (see the [module docs](super)).
pub(crate) struct StreamSink {
    pub(super) shared: Arc<SinkShared>,
    pub(super) sender: Option<Sender<QueuedEvent>>,
    pub(super) worker: Option<JoinHandle<()>>,
    pub(super) capacity: u64,
    pub(super) batch: u64,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::MonitorConfig;
    use crate::monitor::event::bare_path;
    use crate::monitor::stream::{entry_fields, parse_entry};
    use crate::store::StoreConfig;

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
                blocked: true,
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
                blocked: false,
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
