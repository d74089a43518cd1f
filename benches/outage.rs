//! How soon decisions are on Redis again after an outage of 2, 10 and 30 s: a real
//! `redis-server` on loopback is killed while one caller decides every millisecond, and
//! started again on the same port; the table gives, per outage, how long the store took to turn
//! `degraded`, the slowest decision during the outage, and the time from Redis's return to the
//! first decision it made.
//!
//! `cargo bench -p floodwall-benches --bench outage` runs the three outages (about a minute);
//! under `cargo test --benches` it runs one 1 s outage, so that the harness itself is tested.

use std::time::{Duration, Instant};

use floodwall::{Engine, Request, StoreState, StoreUsed};
use floodwall_tests::redis_server::RedisServer;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let outages: &[u64] = if full { &[2, 10, 30] } else { &[1] };
    let mut server = RedisServer::start();
    let port = server.port();
    let engine = Engine::from_toml(&format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\nprefix = \"outage-bench:\"\ntimeout = \"50ms\"\n\n\
         [[rules]]\nname = \"r\"\nkey = \"subject\"\nalgorithm = \"fixed_window\"\nlimit = 100000000\nwindow = \"1h\"\n",
        server.url()
    ))
    .expect("config");
    let request = Request::new("GET", "/").subject("caller");
    let decide = || engine.check(&request).expect("decision").store();
    // Bounded waits: every loop ends by its deadline.
    let until = |limit: Duration, mut done: Box<dyn FnMut() -> bool + '_>| -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if done() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    };
    assert!(
        until(
            Duration::from_secs(5),
            Box::new(|| decide() == StoreUsed::Redis)
        )
        .is_some()
    );
    println!(
        "| outage | degraded after | slowest decision while out | on Redis again after its return |"
    );
    println!("|---|---|---|---|");
    for &secs in outages {
        server.kill();
        let degraded = until(
            Duration::from_secs(5),
            Box::new(|| {
                decide() != StoreUsed::Redis && engine.store_health().state != StoreState::Ok
            }),
        )
        .expect("degraded");
        let out_until = Instant::now() + Duration::from_secs(secs);
        let mut slowest = Duration::ZERO;
        while Instant::now() < out_until {
            let t = Instant::now();
            decide();
            slowest = slowest.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(1));
        }
        server = RedisServer::start_on(port);
        let back = until(
            Duration::from_secs(60),
            Box::new(|| decide() == StoreUsed::Redis),
        );
        println!(
            "| {secs} s | {:.0} ms | {:.2} ms | {} |",
            degraded.as_secs_f64() * 1e3,
            slowest.as_secs_f64() * 1e3,
            back.map_or("not within 60 s".to_owned(), |b| format!(
                "{:.0} ms",
                b.as_secs_f64() * 1e3
            )),
        );
    }
}
