//! `floodwall-stats` end to end: the built binary against a real `redis-server` that an
//! engine's sink wrote to.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use floodwall::{Clock, Engine, Request, SystemClock, Timestamp};
use floodwall_tests::redis_server::{RedisServer, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_floodwall-stats");

fn stats(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8")
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(output)).expect("a JSON report")
}

/// An engine writing `stream` on `server`, limiting each subject to 2 a minute.
fn gateway(server: &RedisServer, stream: &str) -> Engine {
    Engine::from_toml(&format!(
        r#"
[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 2
window = "1m"

[monitor]
stream = "{stream}"
url = "{url}"
flush = "20ms"
instance = "gw-test"
"#,
        url = server.url()
    ))
    .expect("config")
}

/// A minute's start, early in the test run's hour.
fn minute(k: u64) -> u64 {
    let now = SystemClock.now().as_millis();
    (now / 60_000 + k) * 60_000
}

/// `n` requests of `subjects` subjects in turn at `now` (ms); returns how many were rate
/// limited.
fn traffic(engine: &Engine, now: u64, n: u64, subjects: u64) -> u64 {
    let limited = (0..n)
        .filter(|i| {
            let subject = format!("user-{}", i % subjects);
            let request = Request::new("GET", "/api/orders")
                .subject(&subject)
                .at(Timestamp::from_millis(now));
            !engine.check(&request).expect("decision").allowed()
        })
        .count() as u64;
    assert!(engine.monitor().flush(Duration::from_secs(10)));
    limited
}

#[test]
fn help_and_version() {
    let help = stdout(&stats(&["--help"]));
    for option in [
        "--url",
        "--cluster",
        "--stream",
        "--group",
        "--follow",
        "--format",
    ] {
        assert!(help.contains(option), "{option} in\n{help}");
    }
    assert!(stdout(&stats(&["-V"])).starts_with("floodwall-stats "));
}

#[test]
fn a_wrong_command_line_names_the_argument_and_exits_2() {
    for (args, named) in [
        (&["--bogus"][..], "--bogus"),
        (&["--top", "0"], "--top"),
        (&["--format", "xml"], "--format"),
        (&["--url", "http://127.0.0.1:1"], "--url"),
        (&["--follow"], "--follow"),
    ] {
        let output = stats(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with(&format!("floodwall-stats: {named}: ")),
            "{args:?}: {stderr}"
        );
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn redis_unreachable_exits_1() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let output = stats(&["--url", &url]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("fw:events"), "{stderr}");
}

#[test]
fn reports_what_the_gateway_wrote_once_per_group() {
    let server = RedisServer::start();
    let engine = gateway(&server, "fw:cli");
    let limited = traffic(&engine, minute(0), 30, 5);
    assert_eq!(limited, 20);
    let url = server.url();

    let first = json(&stats(&["--url", &url, "--stream", "fw:cli"]));
    assert_eq!(first["source"], "stream");
    assert_eq!(first["totals"]["requests"], 30);
    assert_eq!(first["totals"]["rate_limited"], 20);
    assert_eq!(first["top_endpoints"][0]["key"], "GET /api/orders");
    assert_eq!(
        first["breaches_by_subject"].as_array().map(Vec::len),
        Some(5)
    );
    assert!(first["sink"].is_null() && first["store_kind"].is_null());
    assert_eq!(first["horizon_minutes"], 60);

    // The same group has read it all; new traffic only is reported next time.
    assert_eq!(traffic(&engine, minute(1), 4, 4), 0, "a new window");
    let second = json(&stats(&["--url", &url, "--stream", "fw:cli", "--top=2"]));
    assert_eq!(second["totals"]["requests"], 4);

    // Another group reads everything, in the Prometheus text format.
    let text = stdout(&stats(&[
        "--url",
        &url,
        "--stream",
        "fw:cli",
        "--group",
        "prometheus",
        "--format",
        "prometheus",
    ]));
    assert!(
        text.contains("floodwall_decisions_total{outcome=\"rate_limited\"} 20"),
        "{text}"
    );
    assert!(
        text.contains("floodwall_decisions_total{outcome=\"admitted\"} 14"),
        "{text}"
    );
    // A group starting at the end sees nothing of the past.
    let new = json(&stats(&[
        "--url", &url, "--stream", "fw:cli", "--group", "late", "--start", "new",
    ]));
    assert_eq!(new["totals"]["requests"], 0);
}

#[test]
fn follow_reads_what_arrives_while_it_runs() {
    let server = RedisServer::start();
    let engine = gateway(&server, "fw:follow");
    traffic(&engine, minute(0), 3, 3);
    let mut child = Command::new(BIN)
        .args([
            "--url",
            &server.url(),
            "--stream",
            "fw:follow",
            "--follow",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    std::thread::sleep(Duration::from_millis(800));
    traffic(&engine, minute(0), 7, 7);
    // --follow 3 ends by itself; a hang fails here rather than holding the test run.
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().expect("status").is_none() {
        if Instant::now() >= deadline {
            child.kill().ok();
            panic!("floodwall-stats --follow 3 still runs after 15 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("exits");
    let report = json(&output);
    assert_eq!(report["totals"]["requests"], 10);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("10 entries read"), "{stderr}");
}
