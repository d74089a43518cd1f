//! Decisions per second and latency against a local Redis, beside the same Redis's
//! `redis-benchmark` figures for PING and for an EVALSHA of a trivial script (the ceiling).
//!
//! Run: `cargo bench -p floodwall-benches --bench redis_load` (`make bench-redis`). It starts
//! its own `redis-server` on a free loopback port, measures each cell for a bounded time, and
//! prints one table. Under `cargo test --benches` it runs one short cell as a smoke test.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use floodwall::{Engine, Request, StoreUsed};
use floodwall_tests::redis_server::RedisServer;

const SUBJECTS: usize = 1000;
const BATCH: usize = 32;

/// One per-user token bucket, or three layers (per user, per endpoint, global); with `sync`,
/// one per-user fixed window counted locally and synced every 100 ms instead; with
/// `key_limits`, the per-user bucket takes key limits (none set: the script reads one more key).
fn engine(url: &str, layers: usize, sync: bool, key_limits: bool) -> Engine {
    let per_user = if sync {
        "algorithm = \"fixed_window\"\nlimit = 1000000000\nwindow = \"1h\"\nsync = \"100ms\""
    } else if key_limits {
        "algorithm = \"token_bucket\"\ncapacity = 1000000000\nrefill_rate = 1000000\nkey_limits = true"
    } else {
        "algorithm = \"token_bucket\"\ncapacity = 1000000000\nrefill_rate = 1000000"
    };
    let mut toml = format!(
        r#"
[store]
kind = "redis"
url = "{url}"
timeout = "1s"
on_error = "deny"

[[rules]]
name = "per-user"
key = "subject"
{per_user}
"#
    );
    if layers == 3 {
        toml.push_str(
            r#"
[[rules]]
name = "per-endpoint"
key = "endpoint"
algorithm = "sliding_window_counter"
limit = 1000000000
window = "1s"

[[rules]]
name = "global"
key = "global"
algorithm = "fixed_window"
limit = 1000000000
window = "1m"
"#,
        );
    }
    Engine::from_toml(&toml).expect("bench config")
}

struct Cell {
    decisions: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// `callers` threads deciding for `span` (each call a decision, or a batch of `BATCH` with
/// `check_many`); latency is per call.
fn measure(engine: &Arc<Engine>, callers: usize, batched: bool, span: Duration) -> Cell {
    let subjects: Arc<Vec<String>> = Arc::new((0..SUBJECTS).map(|i| format!("user-{i}")).collect());
    let started = Instant::now();
    let handles: Vec<_> = (0..callers)
        .map(|t| {
            let (engine, subjects) = (Arc::clone(engine), Arc::clone(&subjects));
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(100_000);
                let mut decisions = 0usize;
                let mut i = t;
                while started.elapsed() < span && latencies.len() < 2_000_000 {
                    let at = Instant::now();
                    if batched {
                        let requests: Vec<Request<'_>> = (0..BATCH)
                            .map(|k| {
                                Request::new("GET", "/api/orders")
                                    .subject(&subjects[(i + k) % SUBJECTS])
                            })
                            .collect();
                        for d in engine.check_many(&requests) {
                            assert_eq!(d.expect("decision").store(), StoreUsed::Redis);
                        }
                        decisions += BATCH;
                    } else {
                        let request =
                            Request::new("GET", "/api/orders").subject(&subjects[i % SUBJECTS]);
                        let d = engine.check(&request).expect("decision");
                        assert_eq!(d.store(), StoreUsed::Redis, "{:?}", engine.store_failure());
                        decisions += 1;
                    }
                    latencies.push(at.elapsed());
                    i += callers;
                }
                (decisions, latencies)
            })
        })
        .collect();
    let mut total = 0;
    let mut all = Vec::new();
    for h in handles {
        let (n, mut l) = h.join().expect("caller");
        total += n;
        all.append(&mut l);
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Cell {
        decisions: total,
        per_second: total as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

/// Redis's CPU time so far (user + sys, `INFO cpu`), in seconds.
fn server_cpu(server: &RedisServer) -> f64 {
    server
        .command("INFO cpu")
        .lines()
        .filter_map(|l| {
            let (name, value) = l.trim().split_once(':')?;
            matches!(name, "used_cpu_user" | "used_cpu_sys").then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// `redis-benchmark --csv` for one test: (requests/s, p50 ms, p99 ms).
fn redis_benchmark(
    port: u16,
    clients: usize,
    requests: usize,
    command: &[&str],
) -> (f64, f64, f64) {
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-c",
            &clients.to_string(),
        ])
        .args(["-n", &requests.to_string(), "--csv"])
        .args(command)
        .output()
        .expect("redis-benchmark (Debian package redis-tools) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| !l.starts_with("\"test\""))
        .unwrap_or_else(|| panic!("no redis-benchmark figures in {text:?}"));
    let fields: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|f| f.trim_matches('"').parse().unwrap_or(0.0))
        .collect();
    // "rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms",…
    (fields[0], fields[3], fields[5])
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let server = RedisServer::start();
    let span = if full {
        Duration::from_secs(2)
    } else {
        Duration::from_millis(200)
    };
    if !full {
        let engine = Arc::new(engine(&server.url(), 1, false, false));
        let cell = measure(&engine, 2, false, span);
        assert!(cell.per_second > 0.0);
        println!("redis_load smoke: {:.0} decisions/s", cell.per_second);
        return;
    }
    let sha = server
        .command("SCRIPT LOAD \"return 1\"")
        .lines()
        .nth(1)
        .expect("a SHA")
        .to_owned();
    let requests = 200_000;
    println!("| peer (redis-benchmark, same server) | clients | requests/s | p50 | p99 |");
    println!("|---|---|---|---|---|");
    let mut ceiling = std::collections::BTreeMap::new();
    for clients in [1, 16, 64] {
        for (name, cmd) in [
            ("PING", vec!["PING"]),
            ("EVALSHA trivial", vec!["EVALSHA", &sha, "0"]),
        ] {
            let (rps, p50, p99) = redis_benchmark(server.port(), clients, requests, &cmd);
            println!("| {name} | {clients} | {rps:.0} | {p50:.3} ms | {p99:.3} ms |");
            ceiling.insert((name, clients), (rps, p50));
        }
    }
    println!();
    println!(
        "| floodwall | layers | callers | decisions/s | p50 per call | p99 per call | vs EVALSHA ceiling | Redis CPU per decision |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (layers, sync, own) in [
        (1, false, false),
        (1, false, true),
        (3, false, false),
        (1, true, false),
    ] {
        let engine = Arc::new(engine(&server.url(), layers, sync, own));
        for callers in [1, 16, 64] {
            for batched in [false, true] {
                if sync && batched {
                    continue;
                }
                let cpu = server_cpu(&server);
                let cell = measure(&engine, callers, batched, span);
                let cpu = (server_cpu(&server) - cpu) * 1e6 / cell.decisions as f64;
                let (ceil, _) = ceiling[&("EVALSHA trivial", callers)];
                println!(
                    "| {} | {layers} | {callers} | {:.0} | {:.3} ms | {:.3} ms | {:.0}% | {cpu:.2} µs |",
                    if sync {
                        "check, sync = 100ms"
                    } else if own && batched {
                        "check_many (32), key_limits"
                    } else if own {
                        "check, key_limits"
                    } else if batched {
                        "check_many (32)"
                    } else {
                        "check"
                    },
                    cell.per_second,
                    cell.p50.as_secs_f64() * 1e3,
                    cell.p99.as_secs_f64() * 1e3,
                    100.0 * cell.per_second / ceil
                );
            }
        }
    }
    let (_, ping_p50) = ceiling[&("PING", 1)];
    println!(
        "\nPING p50 at 1 client: {ping_p50:.3} ms (target: floodwall's p99 at 1 caller under twice that)"
    );
}
