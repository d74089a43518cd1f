//! Dropping an engine that writes a stream: what is queued is written before the drop
//! returns, the writer thread ends with it, and a dead Redis bounds the drop by the shutdown
//! grace. A test binary of its own, so that no other test's writer thread is alive while it
//! counts them.

use std::time::{Duration, Instant};

use floodwall::monitor::{Event, ResponseEvent, stream::SHUTDOWN_GRACE, stream::WRITE_TIMEOUT};
use floodwall::{Engine, Request, Timestamp};
use floodwall_tests::redis_server::{RedisServer, free_port};

/// Threads of this process named like the sink's writer.
fn writer_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "fw-stream")
        .count()
}

/// Drops `engine`, which must return — within its grace and write deadline, with a wide
/// margin for a busy machine: this checks that the drop cannot hang, not how fast it is — and
/// leave no writer thread.
fn drop_and_check_the_writer_ends(engine: Engine) {
    let started = Instant::now();
    drop(engine);
    let took = started.elapsed();
    assert!(
        took <= SHUTDOWN_GRACE + WRITE_TIMEOUT + Duration::from_secs(20),
        "dropping took {took:?}"
    );
    assert_no_writer_left();
}

/// Asserts that no writer thread is left. A drop joins its writer, but the kernel may list an
/// exited thread a moment longer: wait for that (bounded).
fn assert_no_writer_left() {
    let deadline = Instant::now() + Duration::from_secs(5);
    while writer_threads() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(writer_threads(), 0, "no writer outlives its engine");
}

fn writing_engine(url: &str, stream: &str) -> Engine {
    Engine::from_toml(&format!(
        "[monitor]\nstream = \"{stream}\"\nurl = \"{url}\"\nbatch = 1000\nflush = \"30s\""
    ))
    .expect("config")
}

#[test]
fn dropping_the_engine_writes_what_is_queued_and_ends_the_writer() {
    assert_eq!(writer_threads(), 0);
    let server = RedisServer::start();

    // 500 events wait for a batch of 1000 or 30 s; the drop writes them at once.
    let engines: Vec<Engine> = (0..3)
        .map(|i| writing_engine(&server.url(), &format!("fw:drop{i}")))
        .collect();
    // A thread names itself once it runs: wait for that (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    while writer_threads() < 3 {
        assert!(
            Instant::now() < deadline,
            "{} writer threads",
            writer_threads()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(writer_threads(), 3);
    for (i, engine) in engines.iter().enumerate() {
        for n in 0..500u64 {
            let request = Request::new("GET", "/api")
                .subject("s")
                .at(Timestamp::from_millis(1_800_000_000_000 + n));
            engine.check(&request).expect("decision");
        }
        assert_eq!(server.command(&format!("XLEN fw:drop{i}")), ":0\r\n");
    }
    drop(engines);
    assert_no_writer_left();
    for i in 0..3 {
        assert_eq!(server.command(&format!("XLEN fw:drop{i}")), ":500\r\n");
    }

    // Nothing listens: the drop gives up after the grace, and still ends the thread.
    let engine = writing_engine(&format!("redis://127.0.0.1:{}", free_port()), "fw:nowhere");
    for n in 0..100u64 {
        engine.monitor().record(&Event::Response(ResponseEvent {
            at: Timestamp::from_millis(n),
            method: "GET",
            path: "/",
            status: 200,
            latency: Duration::from_micros(n),
        }));
    }
    drop_and_check_the_writer_ends(engine);

    // Redis paused: a batch in flight cannot finish; the drop is bounded all the same.
    let engine = writing_engine(&server.url(), "fw:paused-drop");
    engine
        .check(&Request::new("GET", "/").subject("s"))
        .expect("decision");
    assert!(engine.monitor().flush(Duration::from_secs(10)));
    assert!(server.command("CLIENT PAUSE 4000 WRITE").starts_with("+OK"));
    for _ in 0..10 {
        engine
            .check(&Request::new("GET", "/").subject("s"))
            .expect("decision");
    }
    drop_and_check_the_writer_ends(engine);
    server.command("CLIENT UNPAUSE");
}
