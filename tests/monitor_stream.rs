//! The Redis Streams sink and reader against real `redis-server` processes: events written in
//! batches of one round trip, a full batch sent at once and a partial one at the flush
//! interval, the stream trimmed near `maxlen`, a full queue dropping (and counting) while
//! Redis is unreachable or paused and writing again once it is back, the reader building the
//! engine's own report from the stream, two gateways into one report, malformed entries
//! skipped, and the same on a Redis Cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use floodwall::monitor::{
    Event, ReaderOptions, Report, ResponseEvent, StreamLocation, StreamReader, UpstreamEvent,
};
use floodwall::{CallOutcome, Engine, ErrorKind, Request, Timestamp};
use floodwall_tests::redis_server::{RedisCluster, RedisServer, free_port};

/// The longest any test waits for the sink to catch up.
const WAIT: Duration = Duration::from_secs(10);

fn integer(reply: &str) -> i64 {
    reply
        .trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an integer reply: {reply:?}"))
}

fn xlen(server: &RedisServer, key: &str) -> i64 {
    integer(&server.command(&format!("XLEN {key}")))
}

/// A field of `INFO section`, as a number.
fn info(server: &RedisServer, section: &str, prefix: &str, field: &str) -> u64 {
    server
        .command(&format!("INFO {section}"))
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split(field).nth(1))
        .and_then(|v| {
            v.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn now_ms() -> u64 {
    use floodwall::Clock;
    floodwall::SystemClock.now().as_millis()
}

/// The start of the current minute, so that [`traffic`] before it fills whole minutes.
fn this_minute() -> u64 {
    now_ms() / 60_000 * 60_000
}

/// An engine on the memory store with a per-user limit of 3 a minute on `/api/**`, JWT auth,
/// and the sink writing `stream` to `url` with the extra `[monitor]` lines.
fn engine(url: &str, stream: &str, monitor: &str) -> Engine {
    Engine::from_toml(&format!(
        r#"
[auth]
algorithms = ["HS256"]
keys = [{{ secret = "a-test-secret-of-at-least-thirty-two-bytes" }}]

[[rules]]
name = "per-user"
match = {{ paths = ["/api/**"] }}
key = "subject"
algorithm = "fixed_window"
limit = 3
window = "1m"

[monitor]
stream = "{stream}"
url = "{url}"
{monitor}
"#
    ))
    .expect("config")
}

fn sink(engine: &Engine) -> floodwall::monitor::SinkStats {
    engine.report().sink.expect("the engine has a sink")
}

fn reader(location: StreamLocation, stream: &str, group: &str) -> StreamReader {
    StreamReader::open(
        &location,
        stream,
        ReaderOptions::default().group(group).consumer("tester"),
    )
    .expect("reader")
}

/// Polls `done` every 20 ms for at most [`WAIT`].
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A varied traffic: decisions of three subjects over `minutes` minutes before `end_ms`
/// (admitted and rate limited), refused tokens, failing upstream calls with a breaker trip,
/// and responses of every status class. Returns how many events it recorded.
fn traffic(engine: &Engine, end_ms: u64, minutes: u64, salt: &str) -> u64 {
    let mut events = 0;
    for minute in 0..minutes {
        let t = end_ms - (minutes - minute) * 60_000;
        for (i, (subject, role)) in [("alice", "free"), ("bob", "premium"), ("carol", "free")]
            .into_iter()
            .enumerate()
        {
            let subject = format!("{subject}{salt}");
            for n in 0..(2 + i as u64 + minute) {
                let path = if n % 2 == 0 {
                    "/api/orders?page=2"
                } else {
                    "/api/users/7"
                };
                let request = Request::new(if n % 3 == 0 { "post" } else { "GET" }, path)
                    .subject(&subject)
                    .role(role)
                    .at(Timestamp::from_millis(t + n * 1000));
                engine.check(&request).expect("decision");
                events += 1;
            }
        }
        let refused = engine.authenticate_at("Bearer not-a-jwt", Timestamp::from_millis(t + 5));
        assert_eq!(
            refused.expect_err("refused").kind(),
            ErrorKind::MalformedToken
        );
        engine
            .authenticate_at("", Timestamp::from_millis(t + 6))
            .expect_err("missing");
        events += 2;
        for (k, outcome) in [
            CallOutcome::Success,
            CallOutcome::Failure,
            CallOutcome::Timeout,
        ]
        .into_iter()
        .enumerate()
        {
            engine.monitor().record(&Event::Upstream(UpstreamEvent {
                at: Timestamp::from_millis(t + 10 + k as u64),
                service: "orders",
                upstream: if k == 2 { "b" } else { "a" },
                outcome,
                latency: Duration::from_micros(900 + 1000 * k as u64),
                tripped: k == 2 && minute % 2 == 0,
            }));
            events += 1;
        }
        for (k, status) in [200u16, 201, 302, 404, 429, 500, 503, 99]
            .into_iter()
            .enumerate()
        {
            engine.monitor().record(&Event::Response(ResponseEvent {
                at: Timestamp::from_millis(t + 20 + k as u64),
                method: "GET",
                path: "/api/orders?page=1",
                status,
                latency: Duration::from_micros(150 * (k as u64 + 1).pow(3)),
            }));
            events += 1;
        }
    }
    events
}

/// `report` as a reader of the stream would make it: no store, no sink, source `stream`.
fn as_from_stream(mut report: Report) -> Report {
    report.source = "stream";
    report.store_kind = None;
    report.store_failure = None;
    report.sink = None;
    report
}

#[test]
fn a_full_batch_goes_at_once_a_partial_one_at_the_flush_and_each_is_one_round_trip() {
    let server = RedisServer::start();
    let engine = engine(
        &server.url(),
        "fw:batches",
        "batch = 20\nflush = \"30s\"\nqueue = 1000",
    );
    let admit = |n: u64, subject: &str| {
        for i in 0..n {
            let request = Request::new("GET", "/health")
                .subject(subject)
                .at(Timestamp::from_millis(1_800_000_000_000 + i));
            assert!(engine.check(&request).expect("decision").allowed());
        }
    };
    // A full batch does not wait for the 30 s flush interval.
    admit(20, "a");
    eventually("a full batch written", || xlen(&server, "fw:batches") == 20);
    // A partial one does (or for a flush).
    admit(5, "b");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(xlen(&server, "fw:batches"), 20, "a partial batch waits");
    assert!(engine.monitor().flush(WAIT));
    assert_eq!(xlen(&server, "fw:batches"), 25);
    let stats = sink(&engine);
    assert_eq!(
        (stats.written, stats.dropped, stats.queued, stats.errors),
        (25, 0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.stream, "fw:batches");
    assert_eq!(stats.last_error, None);
    assert_eq!(info(&server, "commandstats", "cmdstat_xadd:", "calls="), 25);

    // 100 events in one batch: one pipeline, written in one go.
    let engine = self::engine(&server.url(), "fw:pipeline", "batch = 100\nflush = \"30s\"");
    engine
        .check(&Request::new("GET", "/").subject("warm-up"))
        .expect("decision");
    assert!(engine.monitor().flush(WAIT)); // connected
    let before = info(&server, "stats", "total_reads_processed:", ":");
    for i in 0..100u64 {
        let request = Request::new("GET", "/api/x")
            .subject("p")
            .at(Timestamp::from_millis(1_800_000_000_000 + i * 60_000));
        engine.check(&request).expect("decision");
    }
    assert!(engine.monitor().flush(WAIT));
    // Reads between the two INFO calls: the batch's (about 25 KB: two or three reads of
    // 16 KB at most) and the second INFO's own. One XADD per round trip would be 100.
    let reads = info(&server, "stats", "total_reads_processed:", ":") - before;
    assert!(
        reads <= 10,
        "{reads} socket reads for one batch of 100 XADD"
    );
    assert_eq!(xlen(&server, "fw:pipeline"), 101);
    assert_eq!(sink(&engine).written, 101);
}

#[test]
fn the_stream_is_trimmed_near_maxlen() {
    let server = RedisServer::start();
    let engine = engine(
        &server.url(),
        "fw:trimmed",
        "maxlen = 100\nbatch = 500\nqueue = 5000",
    );
    for i in 0..3000u64 {
        engine.monitor().record(&Event::Response(ResponseEvent {
            at: Timestamp::from_millis(1_800_000_000_000 + i),
            method: "GET",
            path: "/",
            status: 200,
            latency: Duration::from_micros(i),
        }));
    }
    assert!(engine.monitor().flush(WAIT));
    let stats = sink(&engine);
    assert_eq!((stats.written, stats.dropped), (3000, 0), "{stats:?}");
    // `MAXLEN ~` trims whole macro nodes (100 entries each by default): never below maxlen,
    // never far above it.
    let length = xlen(&server, "fw:trimmed");
    assert!((100..300).contains(&length), "XLEN {length}");
}

#[test]
fn a_full_queue_drops_while_redis_is_unreachable_and_writing_resumes_when_it_is_back() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let engine = engine(
        &url,
        "fw:outage",
        "queue = 50\nbatch = 10\nflush = \"10ms\"",
    );
    // Decisions go on at full speed; every record returns at once.
    let mut admitted = 0;
    for i in 0..5000u64 {
        let subject = format!("user-{}", i % 1000);
        let request = Request::new("GET", "/api/orders")
            .subject(&subject)
            .at(Timestamp::from_millis(1_800_000_000_000 + i));
        admitted += usize::from(engine.check(&request).expect("decision").allowed());
    }
    assert_eq!(admitted, 3000, "3 a minute for each of 1000 users");
    let stats = sink(&engine);
    assert_eq!(
        stats.written + stats.dropped + stats.queued,
        5000,
        "{stats:?}"
    );
    assert!(stats.queued <= 50, "the queue is bounded: {stats:?}");
    assert!(stats.dropped >= 4950, "{stats:?}");
    // What was queued is tried and dropped, batch by batch, with the error kept.
    assert!(engine.monitor().flush(WAIT));
    let stats = sink(&engine);
    assert_eq!(
        (stats.written, stats.dropped, stats.queued),
        (0, 5000, 0),
        "{stats:?}"
    );
    assert!(stats.errors >= 1, "{stats:?}");
    let error = stats.last_error.expect("the last error is kept");
    assert!(error.contains("fw:outage"), "{error}");
    assert_eq!(
        engine.report().totals.requests,
        5000,
        "the aggregate has them all"
    );

    // Redis comes up on that port: the writer reconnects by itself (after its backoff).
    let server = RedisServer::start_on(port);
    let mut attempts = 0;
    eventually("writing again after Redis is back", || {
        attempts += 1;
        let subject = format!("back-{attempts}");
        let request = Request::new("GET", "/back").subject(&subject);
        engine.check(&request).expect("decision");
        engine.monitor().flush(Duration::from_secs(3));
        sink(&engine).written > 0
    });
    let stats = sink(&engine);
    assert_eq!(stats.last_error, None, "cleared by a batch that succeeded");
    assert_eq!(
        stats.written + stats.dropped + stats.queued,
        5000 + attempts,
        "{stats:?}"
    );
    assert!(server.command("XRANGE fw:outage - +").contains("back-"));
}

#[test]
fn a_paused_redis_costs_events_not_decisions() {
    let server = RedisServer::start();
    let engine = engine(
        &server.url(),
        "fw:paused",
        "queue = 100\nbatch = 10\nflush = \"10ms\"",
    );
    engine
        .check(&Request::new("GET", "/").subject("warm-up"))
        .expect("decision");
    assert!(engine.monitor().flush(WAIT));
    assert_eq!(sink(&engine).written, 1);
    // XADD now waits for the pause (2 s) longer than a batch's deadline (1 s).
    assert!(server.command("CLIENT PAUSE 2000 WRITE").starts_with("+OK"));
    let paused = Instant::now();
    let mut decisions = 1;
    while decisions < 3001 {
        engine
            .check(&Request::new("GET", "/api/orders").subject(&format!("u{decisions}")))
            .expect("decision");
        decisions += 1;
    }
    let stats = sink(&engine);
    assert_eq!(
        stats.written + stats.dropped + stats.queued,
        3001,
        "{stats:?}"
    );
    if paused.elapsed() < Duration::from_millis(1500) {
        // Recorded while Redis was paused: the queue held 100 at most.
        assert!(stats.dropped > 0, "{stats:?}");
    }
    assert!(engine.monitor().flush(WAIT));
    eventually("the pause ends and a batch fails on its deadline", || {
        sink(&engine).errors >= 1
    });
    let written_before = sink(&engine).written;
    eventually("written again after the pause", || {
        engine
            .check(&Request::new("GET", "/after").subject("after-pause"))
            .expect("decision");
        engine.monitor().flush(Duration::from_secs(3));
        sink(&engine).written > written_before
    });
    assert_eq!(sink(&engine).last_error, None);
    assert!(
        server
            .command("XRANGE fw:paused - +")
            .contains("after-pause")
    );
}

#[test]
fn the_reader_builds_the_engines_own_report_from_the_stream() {
    let server = RedisServer::start();
    let engine = engine(&server.url(), "fw:report", "instance = \"gw-1\"");
    let end = this_minute();
    let recorded = traffic(&engine, end, 5, "");
    assert!(engine.monitor().flush(WAIT));
    assert_eq!(sink(&engine).written, recorded);
    assert_eq!(xlen(&server, "fw:report") as u64, recorded);

    let mut reader = reader(StreamLocation::Node(server.url()), "fw:report", "analytics");
    assert_eq!(reader.read_available().expect("read") as u64, recorded);
    let stats = reader.stats().clone();
    assert_eq!(
        (stats.entries, stats.recorded, stats.malformed),
        (recorded, recorded, 0)
    );
    assert_eq!(stats.sources.get("gw-1"), Some(&recorded));

    let now = Timestamp::from_millis(end);
    let from_stream = reader.report(now);
    let expected = as_from_stream(engine.report_at(now));
    assert_eq!(from_stream.totals, expected.totals);
    assert_eq!(from_stream.per_minute, expected.per_minute);
    assert_eq!(from_stream.top_endpoints, expected.top_endpoints);
    assert_eq!(
        from_stream.breaches_by_subject,
        expected.breaches_by_subject
    );
    assert_eq!(from_stream, expected, "every field of the report");
    assert!(from_stream.totals.rate_limited > 0 && from_stream.totals.auth_rejected == 10);
    assert_eq!(from_stream.per_minute.len(), 5);

    // Everything was acknowledged; the group does not read it again.
    assert!(
        server
            .command("XPENDING fw:report analytics")
            .starts_with("*4\r\n:0\r\n")
    );
    assert_eq!(reader.read_available().expect("read"), 0);
    // Another group reads the history again, from the beginning.
    let mut other = self::reader(StreamLocation::Node(server.url()), "fw:report", "other");
    assert_eq!(other.read_available().expect("read") as u64, recorded);
    assert_eq!(other.report(now), from_stream);
}

#[test]
fn two_gateways_writing_one_stream_make_one_report() {
    let server = RedisServer::start();
    let end = this_minute();
    let gateways: Vec<_> = ["gw-a", "gw-b"]
        .into_iter()
        .map(|name| {
            Arc::new(engine(
                &server.url(),
                "fw:shared",
                &format!("instance = \"{name}\"\nbatch = 7"),
            ))
        })
        .collect();
    let threads: Vec<_> = gateways
        .iter()
        .enumerate()
        .map(|(i, engine)| {
            let engine = Arc::clone(engine);
            std::thread::spawn(move || {
                let salt = if i == 0 { "" } else { "-b" };
                traffic(&engine, end, 3 + i as u64, salt)
            })
        })
        .collect();
    let counts: Vec<u64> = threads
        .into_iter()
        .map(|t| t.join().expect("gateway"))
        .collect();
    for engine in &gateways {
        assert!(engine.monitor().flush(WAIT));
    }

    let mut reader = reader(StreamLocation::Node(server.url()), "fw:shared", "g");
    reader.read_available().expect("read");
    let stats = reader.stats();
    assert_eq!(stats.sources.get("gw-a"), Some(&counts[0]));
    assert_eq!(stats.sources.get("gw-b"), Some(&counts[1]));
    let now = Timestamp::from_millis(end);
    let report = reader.report(now);
    let a = gateways[0].report_at(now);
    let b = gateways[1].report_at(now);
    assert_eq!(
        report.totals.requests,
        a.totals.requests + b.totals.requests
    );
    assert_eq!(
        report.totals.rate_limited,
        a.totals.rate_limited + b.totals.rate_limited
    );
    assert_eq!(
        report.totals.responses,
        a.totals.responses + b.totals.responses
    );
    assert_eq!(
        report.totals.breaker_trips,
        a.totals.breaker_trips + b.totals.breaker_trips
    );
    // Minute by minute, the sum of both gateways'.
    for minute in &report.per_minute {
        let of = |r: &Report| {
            r.per_minute
                .iter()
                .find(|m| m.start_ms == minute.start_ms)
                .map_or(0, |m| m.requests)
        };
        assert_eq!(
            minute.requests,
            of(&a) + of(&b),
            "minute {}",
            minute.start_ms
        );
    }
    // Endpoints both gateways called are counted together.
    let count = |r: &Report, key: &str| {
        r.top_endpoints
            .iter()
            .find(|e| e.key == key)
            .map_or(0, |e| e.count)
    };
    assert_eq!(
        count(&report, "GET /api/users/7"),
        count(&a, "GET /api/users/7") + count(&b, "GET /api/users/7")
    );
    // Breaches by subject: each gateway's own subjects.
    assert!(
        report
            .breaches_by_subject
            .iter()
            .any(|e| e.key.ends_with("-b"))
    );
    assert!(
        report
            .breaches_by_subject
            .iter()
            .any(|e| !e.key.ends_with("-b"))
    );
}

#[test]
fn malformed_entries_are_counted_acknowledged_and_skipped() {
    let server = RedisServer::start();
    let ok = |reply: String| assert!(!reply.starts_with('-'), "{reply}");
    ok(server.command("XGROUP CREATE fw:bad g 0 MKSTREAM"));
    // Delivered to our consumer, then deleted before it was acknowledged.
    ok(server.command("XADD fw:bad 1-1 v 1 k r t 60000 m GET p / code 200 lat 5"));
    ok(server.command("XREADGROUP GROUP g tester COUNT 1 STREAMS fw:bad >"));
    ok(server.command("XDEL fw:bad 1-1"));
    for entry in [
        "2-1 v 1 k r t 60000 m GET p /ok code 200 lat 5",
        "2-2 v 2 k r t 60000 m GET p / code 200 lat 5",
        "2-3 foo bar",
        "2-4 v 1 k d t soon o admitted",
        "2-5 v 1 k d t 60000 o admitted m GET",
        "2-6 v 1 k u t 60000 svc s up u co melted lat 1 trip 0",
        "2-7 v 1 k d t 60001 o rate_limited s mallory rule per-user extra ignored",
    ] {
        ok(server.command(&format!("XADD fw:bad {entry}")));
    }
    let mut reader = reader(StreamLocation::Node(server.url()), "fw:bad", "g");
    assert_eq!(reader.read_available().expect("read"), 8);
    let stats = reader.stats();
    assert_eq!(
        (stats.entries, stats.recorded, stats.malformed),
        (8, 2, 6),
        "{stats:?}"
    );
    assert!(
        stats
            .last_malformed
            .as_deref()
            .is_some_and(|m| m.starts_with("2-6") && m.contains("melted")),
        "{stats:?}"
    );
    let report = reader.report(Timestamp::from_millis(120_000));
    assert_eq!(report.totals.requests, 1);
    assert_eq!(report.totals.rate_limited, 1);
    assert_eq!(report.totals.responses, 1);
    assert_eq!(report.breaches_by_subject[0].key, "mallory");
    assert!(
        server
            .command("XPENDING fw:bad g")
            .starts_with("*4\r\n:0\r\n")
    );
}

#[test]
fn bad_stream_settings_name_the_field() {
    let field = |toml: &str| {
        let e = Engine::from_toml(toml).expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        e.field().unwrap_or_default().to_owned()
    };
    assert_eq!(
        field("[monitor]\nstream = \"s\"\nurl = \"http://127.0.0.1:6379\""),
        "monitor.url"
    );
    assert_eq!(field("[monitor]\nstream = \"s\""), "monitor.url");
    assert_eq!(
        field("[store]\nkind = \"redis\"\nurl = \"nope\"\n[monitor]\nstream = \"s\""),
        "store.url"
    );
    assert_eq!(
        field("[monitor]\nstream = \"\"\nurl = \"redis://127.0.0.1:1\""),
        "monitor.stream"
    );
    assert_eq!(
        field("[monitor]\nstream = \"s\"\nurl = \"redis://127.0.0.1:1\"\nqueue = 0"),
        "monitor.queue"
    );
    let e = StreamReader::open(
        &StreamLocation::Node("localhost:6379".into()),
        "s",
        ReaderOptions::default(),
    )
    .expect_err("refused");
    assert_eq!(
        (e.kind(), e.field()),
        (ErrorKind::InvalidConfig, Some("url"))
    );
    // Nothing listens: the reader says Redis is unavailable, within its deadline.
    let e = StreamReader::open(
        &StreamLocation::Node(format!("redis://127.0.0.1:{}", free_port())),
        "s",
        ReaderOptions::default().timeout(Duration::from_secs(2)),
    )
    .expect_err("no Redis");
    assert_eq!(e.kind(), ErrorKind::StoreUnavailable, "{e}");
}

#[test]
fn the_sink_and_the_reader_work_on_a_cluster() {
    let cluster = RedisCluster::start();
    let toml = format!(
        r#"
[store]
kind = "redis_cluster"
urls = {urls:?}
timeout = "2s"
on_error = "deny"

[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 3
window = "1m"

[monitor]
stream = "fw:cluster-events"
batch = 16
instance = "gw-cluster"
"#,
        urls = cluster.urls()
    );
    let engine = Engine::from_toml(&toml).expect("config");
    let mut decided = 0;
    let mut limited = 0;
    for i in 0..40 {
        let d = engine
            .check(&Request::new("GET", "/api/orders").subject(&format!("c{}", i % 10)))
            .expect("decision");
        assert_eq!(d.store(), floodwall::StoreUsed::Redis);
        decided += 1;
        limited += u64::from(!d.allowed());
    }
    assert!(engine.monitor().flush(WAIT));
    let stats = sink(&engine);
    assert_eq!(
        (stats.written, stats.dropped, stats.errors),
        (decided, 0, 0),
        "{stats:?}"
    );
    // The stream is one key, on the node that owns its slot.
    let lengths: i64 = cluster
        .nodes()
        .iter()
        .map(|n| {
            let reply = n.command("XLEN fw:cluster-events");
            if reply.starts_with(':') {
                integer(&reply)
            } else {
                0 // MOVED: another node owns it
            }
        })
        .sum();
    assert_eq!(lengths, decided as i64);

    let mut reader = reader(
        StreamLocation::Cluster(cluster.urls()),
        "fw:cluster-events",
        "stats",
    );
    assert_eq!(reader.read_available().expect("read") as u64, decided);
    let report = reader.report(Timestamp::from_millis(now_ms()));
    assert_eq!(report.totals.requests, decided);
    assert_eq!(report.totals.rate_limited, limited);
    assert_eq!(report.stores.get("redis"), Some(&decided));
    assert_eq!(reader.stats().sources.get("gw-cluster"), Some(&decided));
}
