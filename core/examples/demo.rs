//! `make demo`: a free and a premium caller against layered limits on the memory store,
//! admitted and denied, with the headers a server would send; then the same callers with
//! bearer tokens, and the tokens a server must refuse; then an upstream that fails, is skipped
//! by its breaker, and comes back after its probes succeed.
//!
//! Reads `examples/floodwall.toml`, or the file given as the first argument. Time is a manual
//! clock so the run is the same every time and shows refills without sleeping.

use std::time::Duration;

use floodwall::{CallOutcome, Decision, Engine, ManualClock, Request, Timestamp};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

/// The demo configuration's HMAC key (see `examples/floodwall.toml`).
const DEMO_KID: &str = "demo-2026";
const DEMO_SECRET: &str = "demo-only-secret-use-secret_env-in-production";

/// A token as the demo's identity provider would mint it.
fn mint(claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(DEMO_KID.to_owned());
    encode(
        &header,
        claims,
        &EncodingKey::from_secret(DEMO_SECRET.as_bytes()),
    )
    .expect("HS256 signing")
}

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

/// Unpadded base64url, as JWT segments are encoded.
fn base64_url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
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

    println!("\nWith bearer tokens: one call verifies the token and checks the limits under its");
    println!(
        "subject and role (dave has no role claim, so he is \"free\"; erin's token says premium)."
    );
    let now = engine.now().as_millis() / 1000;
    let claims = |sub: &str, extra: serde_json::Value| {
        let mut c = json!({
            "sub": sub, "iss": "https://login.example.com", "aud": "orders-api",
            "iat": now - 60, "exp": now + 3600,
        });
        c.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        c
    };
    let dave = format!("Bearer {}", mint(&claims("dave", json!({}))));
    let erin = format!(
        "Bearer {}",
        mint(&claims("erin", json!({ "roles": ["staff", "premium"] })))
    );
    let list = Request::new("GET", "/api/orders");
    for (who, bearer) in [("dave (token)", &dave), ("erin (token)", &erin)] {
        let ok = engine.authorize(bearer, &list)?;
        println!(
            "  {who:<15} subject={} role={}",
            ok.identity.subject,
            ok.identity.role.as_deref().unwrap_or("-")
        );
        show(who, &list, &ok.decision);
    }

    println!("\nTokens a server must refuse, each with its kind, status and challenge:");
    let forged = mint(&claims("mallory", json!({ "roles": ["premium"] })));
    let (head, rest) = forged.split_once('.').expect("a JWT");
    let (_, signature) = rest.split_once('.').expect("a JWT");
    let elevated = format!(
        "{head}.{}.{signature}",
        base64_url(&claims("mallory", json!({ "roles": ["premium"], "sub": "admin" })).to_string())
    );
    let unsigned = format!(
        "{}.{}.",
        base64_url(r#"{"alg":"none","typ":"JWT"}"#),
        base64_url(&claims("mallory", json!({})).to_string())
    );
    let refused = [
        ("no token", String::new()),
        (
            "expired",
            format!(
                "Bearer {}",
                mint(&claims("dave", json!({ "exp": now - 3600 })))
            ),
        ),
        ("tampered payload", format!("Bearer {elevated}")),
        ("alg none", format!("Bearer {unsigned}")),
        (
            "wrong audience",
            format!(
                "Bearer {}",
                mint(&claims("dave", json!({ "aud": "billing" })))
            ),
        ),
    ];
    for (what, bearer) in refused {
        let e = engine.authorize(&bearer, &list).expect_err("refused");
        println!(
            "  {what:<17} -> {} {}: {}",
            e.http_status(),
            e.kind(),
            e.message()
        );
        println!(
            "      WWW-Authenticate: {}",
            e.www_authenticate().unwrap_or("-")
        );
    }

    println!(
        "\nUpstreams: orders-a starts failing; its breaker opens and orders-b takes everything."
    );
    let a_healthy = std::cell::Cell::new(false);
    let call = |engine: &Engine, label: &str| -> Result<(), floodwall::Error> {
        let lease = engine.pick("orders")?;
        let upstream = lease.upstream().to_owned();
        let outcome = if upstream == "orders-a" && !a_healthy.get() {
            CallOutcome::Failure
        } else {
            CallOutcome::Success
        };
        println!(
            "  {label:<10} -> {upstream:<9} {}{}",
            outcome.as_str(),
            if lease.is_probe() { " (probe)" } else { "" }
        );
        lease.finish(outcome, Duration::from_millis(20));
        Ok(())
    };
    for i in 1..=10 {
        call(&engine, &format!("call {i}"))?;
    }
    for u in engine.upstreams("orders")? {
        println!(
            "  {} breaker {} ({} calls, {} failures)",
            u.name, u.state, u.stats.calls, u.stats.failures
        );
    }
    println!(
        "\n2 s later orders-a has healed: it gets its two probe calls, closes, and shares again."
    );
    clock.advance(Duration::from_secs(2));
    a_healthy.set(true);
    for i in 11..=16 {
        call(&engine, &format!("call {i}"))?;
    }
    for event in engine.breaker_events(0) {
        println!(
            "  event {}: {} {} -> {}",
            event.seq, event.upstream, event.transition.from, event.transition.to
        );
    }
    Ok(())
}
