//! `make demo`: a free and a premium caller against layered limits on the memory store,
//! admitted and denied, with the headers a server would send.
//!
//! Reads `examples/floodwall.toml`, or the file given as the first argument. Time is a manual
//! clock so the run is the same every time and shows refills without sleeping.

use std::time::Duration;

use floodwall::{Decision, Engine, ManualClock, Request, Timestamp};

fn show(who: &str, request: &Request<'_>, decision: &Decision<'_>) {
    let verdict = if decision.allowed() {
        "200 admitted"
    } else {
        "429 denied  "
    };
    println!(
        "  {who:<15} {:<6} {:<18} -> {verdict}  rule={:<13} remaining={:<3} retry_after={}ms",
        request.method,
        request.path,
        decision.rule().unwrap_or("-"),
        decision
            .remaining()
            .map_or("-".to_owned(), |r| r.to_string()),
        decision.retry_after_ms(),
    );
}

fn show_headers(decision: &Decision<'_>) {
    for (name, value) in decision.headers() {
        println!("      {name}: {value}");
    }
}

fn main() -> Result<(), floodwall::Error> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/floodwall.toml").to_owned()
    });
    let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
    let engine = Engine::from_file(&path)?.with_clock(clock.clone());
    println!(
        "floodwall {} — demo on the memory store ({path})\n",
        floodwall::VERSION
    );
    for rule in engine.rules() {
        for policy in rule.policies() {
            let q = policy.quota();
            let per = match q.emission_interval() {
                Some(_) => format!("refills fully in {:?}", q.period()),
                None => format!("per {:?}", q.period()),
            };
            println!(
                "  rule {:<13} role {:<8} {:<15} limit {:<4} {per}",
                rule.name(),
                policy.role().unwrap_or("(any)"),
                q.algorithm().as_str(),
                q.limit(),
            );
        }
    }

    println!("\nA free caller (alice) bursts 7 requests: her bucket holds 5.");
    let alice = Request::new("GET", "/api/orders")
        .subject("alice")
        .role("free")
        .ip("192.0.2.10");
    for i in 1..=7 {
        let d = engine.check(&alice)?;
        show("alice (free)", &alice, &d);
        if i == 1 || i == 6 {
            show_headers(&d);
        }
    }

    println!("\nA premium caller (carol) sends the same 7: her bucket holds 50.");
    let carol = Request::new("GET", "/api/orders")
        .subject("carol")
        .role("premium")
        .ip("192.0.2.20");
    for i in 1..=7 {
        let d = engine.check(&carol)?;
        if i == 1 || i == 7 {
            show("carol (premium)", &carol, &d);
        }
        if i == 7 {
            show_headers(&d);
        }
    }

    println!("\nAlice waits the 1000 ms she was told, and is admitted again.");
    clock.advance(Duration::from_millis(1000));
    let d = engine.check(&alice)?;
    show("alice (free)", &alice, &d);

    println!("\nFour writes to one order from two callers: the endpoint allows 3 per 10 s,");
    println!("and the denied write consumes nothing from carol's own bucket.");
    let write_alice = Request::new("POST", "/api/orders/42")
        .subject("alice")
        .role("free");
    let write_carol = Request::new("POST", "/api/orders/42")
        .subject("carol")
        .role("premium");
    clock.advance(Duration::from_secs(5));
    for request in [write_alice, write_carol, write_alice, write_carol] {
        let d = engine.check(&request)?;
        let who = if request.subject == Some("alice") {
            "alice (free)"
        } else {
            "carol (premium)"
        };
        show(who, &request, &d);
        if !d.allowed() {
            show_headers(&d);
            println!(
                "      (carol's own bucket shows r=49: her admitted write took one token, the denied one none)"
            );
        }
    }

    println!("\nA cost larger than any bucket can hold is an error, not a wait:");
    match engine.check(&alice.cost(6)) {
        Ok(d) => show("alice (free)", &alice, &d),
        Err(e) => println!("  error {}: {e}", e.kind()),
    }
    Ok(())
}
