//! The HTTP layer beyond what the language-neutral cases (`tests/http/`) can say: what it
//! records, the stages of a split middleware, lists replaced while serving, the warning about
//! forwarding headers nobody trusts, failing closed, and explicit times.

use floodwall::http::{AccessLists, HttpRequest, HttpStage, HttpVerdict};
use floodwall::{Engine, Timestamp};

const SECRET: &str = "an example secret of at least 32 bytes!";

fn with_auth(extra: &str) -> Engine {
    Engine::from_toml(&format!(
        r#"
        [auth]
        algorithms = ["HS256"]
        keys = [{{ secret = "{SECRET}" }}]
        role_claim = "role"

        {extra}
        "#
    ))
    .unwrap()
}

/// An HS256 token for `subject` (and `role`) that expires in 2100.
fn token(subject: &str, role: Option<&str>) -> String {
    let mut claims = serde_json::json!({ "sub": subject, "exp": 4_102_444_800u64 });
    if let Some(role) = role {
        claims["role"] = role.into();
    }
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let token =
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("encode");
    format!("Bearer {token}")
}

fn status(verdict: &HttpVerdict<'_>) -> u16 {
    match verdict {
        HttpVerdict::Skip => 0,
        HttpVerdict::Pass(_) => 200,
        HttpVerdict::Refuse(r) => r.response.status,
    }
}

#[test]
fn the_test_tokens_verify() {
    let engine = with_auth("");
    let id = engine
        .authenticate(&token("alice", Some("premium")))
        .unwrap();
    assert_eq!(
        (id.subject.as_str(), id.role.as_deref()),
        ("alice", Some("premium"))
    );
}

#[test]
fn a_forwarding_header_nobody_trusts_is_reported_once() {
    let engine = with_auth("");
    let alice = token("alice", None);
    for i in 0..3 {
        let xff = format!("203.0.113.{i}");
        let headers: &[(&str, &str)] = &[("authorization", &alice), ("x-forwarded-for", &xff)];
        let verdict = engine.http(&HttpRequest::new("GET", "/", &headers).peer("127.0.0.1"));
        assert_eq!(status(&verdict), 200);
    }
    let warnings = engine.report().warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].code, "untrusted_forwarded_header");
    assert_eq!(warnings[0].count, 3);
    assert!(warnings[0].message.contains("http.trusted_proxies"));
    // Trusting the proxy makes it go.
    let trusting = with_auth("[http]\ntrusted_proxies = [\"127.0.0.1\"]");
    let headers: &[(&str, &str)] = &[
        ("authorization", &alice),
        ("x-forwarded-for", "203.0.113.1"),
    ];
    trusting.http(&HttpRequest::new("GET", "/", &headers).peer("127.0.0.1"));
    assert!(trusting.report().warnings.is_empty());
}

#[test]
fn an_engine_that_cannot_authenticate_fails_closed() {
    let engine = with_auth("");
    engine.reload_auth(None).unwrap();
    let headers: &[(&str, &str)] = &[("authorization", "Bearer x")];
    let HttpVerdict::Refuse(refusal) = engine.http(&HttpRequest::new("GET", "/", &headers)) else {
        panic!("a guard without [auth] lets nothing through")
    };
    assert_eq!(refusal.response.status, 503);
    assert_eq!(refusal.response.code().as_deref(), Some("invalid_config"));
    // The rate-limit stage never needed a token.
    let limited = engine.http(&HttpRequest::new("GET", "/", &headers).stage(HttpStage::RateLimit));
    assert_eq!(status(&limited), 200);
}

#[test]
fn lists_replaced_while_serving_and_the_headers_they_read() {
    let engine = with_auth("");
    assert_eq!(
        engine.http_headers(),
        ["authorization", "x-forwarded-for", "forwarded"]
    );
    let lists = AccessLists::from_json(
        r#"{"deny": {"headers": {"X-Client": ["scraper"]}, "subjects": ["mallory"]}}"#,
    )
    .unwrap();
    engine.set_access_lists(&lists).unwrap();
    assert_eq!(
        engine.http_headers(),
        ["authorization", "x-forwarded-for", "forwarded", "x-client"]
    );
    let alice = token("alice", None);
    let scraper: &[(&str, &str)] = &[("authorization", &alice), ("x-client", "scraper")];
    assert_eq!(
        status(&engine.http(&HttpRequest::new("GET", "/", &scraper))),
        403
    );
    let mallory = token("mallory", None);
    let as_mallory: &[(&str, &str)] = &[("authorization", &mallory)];
    assert_eq!(
        status(&engine.http(&HttpRequest::new("GET", "/", &as_mallory))),
        403
    );
    engine.set_access_lists(&AccessLists::default()).unwrap();
    assert_eq!(
        status(&engine.http(&HttpRequest::new("GET", "/", &as_mallory))),
        200
    );
    let report = engine.report();
    assert_eq!(report.totals.denied, 2);
}

#[test]
fn the_stages_of_a_split_middleware_decide_each_rule_once_and_record_once() {
    let engine = with_auth(
        r#"
        [[rules]]
        name = "per-ip"
        key = "ip"
        algorithm = "sliding_window"
        limit = 10
        window = "1h"
        before_auth = true

        [[rules]]
        name = "per-user"
        key = "subject"
        algorithm = "sliding_window"
        limit = 10
        window = "1h"
        "#,
    );
    let alice = token("alice", Some("free"));
    let headers: &[(&str, &str)] = &[("authorization", &alice)];
    let at = Timestamp::from_millis(1_000_000);
    let first = HttpRequest::new("GET", "/x", &headers)
        .peer("192.0.2.1")
        .stage(HttpStage::Authenticate)
        .at(at);
    let HttpVerdict::Pass(authenticated) = engine.http(&first) else {
        panic!("admitted")
    };
    let layers: Vec<&str> = authenticated.decision.layers().map(|l| l.rule()).collect();
    assert_eq!(
        layers,
        ["per-ip"],
        "authenticate decides the rules before the token only"
    );
    assert!(authenticated.exchange.records_response());
    let identity = authenticated.identity.clone().unwrap();
    let second = HttpRequest::new("GET", "/x", &headers)
        .peer("192.0.2.1")
        .stage(HttpStage::RateLimit)
        .caller(&identity.subject, identity.role.as_deref())
        .after_authenticate()
        .at(at);
    let HttpVerdict::Pass(limited) = engine.http(&second) else {
        panic!("admitted")
    };
    let layers: Vec<(&str, u64)> = limited
        .decision
        .layers()
        .map(|l| (l.rule(), l.remaining()))
        .collect();
    assert_eq!(
        layers,
        [("per-user", 9)],
        "rateLimit after authenticate decides the others"
    );
    assert!(!limited.exchange.records_response());
    engine.http_finish_at(authenticated.exchange, 200, &(), at);
    engine.http_finish_at(limited.exchange, 200, &(), at);
    let report = engine.report_at(at);
    assert_eq!(report.totals.responses, 1, "one response, recorded once");
    assert_eq!(
        report.totals.requests, 1,
        "one decision: the rate-limit stage's"
    );
}

#[test]
fn what_is_recorded() {
    let engine = with_auth(
        r#"
        [http]
        skip_paths = ["/health"]
        public_paths = ["/public/**"]
        trusted_proxies = ["127.0.0.1"]
        allow = { addresses = ["198.51.100.0/24"] }

        [[rules]]
        name = "trial"
        key = "global"
        algorithm = "fixed_window"
        limit = 1
        window = "1h"
        shadow = true
        "#,
    );
    let at = Timestamp::from_millis(7_200_000);
    let finish = |verdict: HttpVerdict<'_>, code: u16| {
        if let Some(exchange) = verdict.into_exchange() {
            engine.http_finish_at(exchange, code, &(), at);
        }
    };
    let none: &[(&str, &str)] = &[];
    // Skipped: nothing at all.
    let skipped = engine.http(&HttpRequest::new("GET", "/health", &none).at(at));
    assert!(matches!(skipped, HttpVerdict::Skip));
    // Public, twice: the second is one the shadow rule would have denied.
    for _ in 0..2 {
        finish(
            engine.http(
                &HttpRequest::new("GET", "/PUBLIC/a/", &none)
                    .peer("127.0.0.1")
                    .at(at),
            ),
            200,
        );
    }
    // Allowed by address.
    let allowed: &[(&str, &str)] = &[("x-forwarded-for", "198.51.100.7")];
    finish(
        engine.http(
            &HttpRequest::new("GET", "/public/b", &allowed)
                .peer("127.0.0.1")
                .at(at),
        ),
        204,
    );
    // Refused for its token.
    let refused = engine.http(&HttpRequest::new("GET", "/api", &none).at(at));
    assert_eq!(status(&refused), 401);
    finish(refused, 401);
    // Dropped unfinished (the client went away): its decision counts, no response.
    drop(
        engine.http(
            &HttpRequest::new("GET", "/public/c", &none)
                .peer("127.0.0.1")
                .at(at),
        ),
    );

    let report = engine.report_at(at);
    let t = &report.totals;
    assert_eq!((t.requests, t.admitted, t.auth_rejected), (5, 4, 1));
    assert_eq!((t.shadow_limited, t.allowlisted), (2, 1));
    assert_eq!(t.responses, 4);
    assert_eq!(report.status_classes.get("2xx"), Some(&3));
    let shadow: Vec<(&str, u64)> = report
        .shadow_breaches_by_rule
        .iter()
        .map(|e| (e.key.as_str(), e.count))
        .collect();
    assert_eq!(shadow, [("trial", 2)]);
    let endpoints: Vec<&str> = report
        .top_endpoints
        .iter()
        .map(|e| e.key.as_str())
        .collect();
    assert!(
        endpoints.contains(&"GET /public/a"),
        "recorded under the normal path: {endpoints:?}"
    );
    let prometheus = engine.prometheus();
    assert!(
        prometheus.contains("floodwall_shadow_limited_total{rule=\"trial\"} 2"),
        "{prometheus}"
    );
    assert!(
        prometheus.contains("floodwall_allowlisted_total 1"),
        "{prometheus}"
    );
}

/// An engine admitting one request per client address per `window` (rule `r`).
fn one_per_ip(window: &str) -> Engine {
    Engine::from_toml(&format!(
        r#"
        [[rules]]
        name = "r"
        key = "ip"
        algorithm = "fixed_window"
        limit = 1
        window = "{window}"
        "#
    ))
    .unwrap()
}

#[test]
fn explicit_times_give_exact_waits() {
    let engine = one_per_ip("1m");
    let none: &[(&str, &str)] = &[];
    let ask = |ms: u64| {
        engine.http(
            &HttpRequest::new("GET", "/", &none)
                .peer("[2001:db8::1]:443")
                .stage(HttpStage::RateLimit)
                .at(Timestamp::from_millis(ms)),
        )
    };
    assert_eq!(status(&ask(60_000)), 200);
    let HttpVerdict::Refuse(refusal) = ask(75_500) else {
        panic!("limited")
    };
    assert_eq!(refusal.response.header("Retry-After"), Some("45"));
    assert!(
        refusal
            .response
            .body
            .ends_with(r#""rule":"r","retry_after":45}"#),
        "{}",
        refusal.response.body
    );
    assert_eq!(status(&ask(120_000)), 200);
}

#[test]
fn a_bad_cost_is_answered_400_and_consumes_nothing() {
    let engine = Engine::from_toml(
        "[[rules]]\nname = \"r\"\nkey = \"global\"\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"1h\"",
    )
    .unwrap();
    let none: &[(&str, &str)] = &[];
    for cost in [-1.0, 0.5, f64::NAN, f64::INFINITY, 1e17] {
        let verdict = engine.http(
            &HttpRequest::new("GET", "/", &none)
                .cost(cost)
                .stage(HttpStage::RateLimit),
        );
        let HttpVerdict::Refuse(refusal) = verdict else {
            panic!("{cost}: refused")
        };
        assert_eq!(refusal.response.status, 400, "{cost}");
        assert_eq!(refusal.response.code().as_deref(), Some("invalid_cost"));
    }
    let admitted = engine.http(&HttpRequest::new("GET", "/", &none).stage(HttpStage::RateLimit));
    assert_eq!(status(&admitted), 200);
}

#[test]
fn a_refusal_within_the_wait_budget_says_how_long_and_is_not_recorded() {
    let engine = one_per_ip("1s");
    let none: &[(&str, &str)] = &[];
    let ask = |ms: u64, budget_ms: u64| {
        engine.http(
            &HttpRequest::new("GET", "/", &none)
                .peer("192.0.2.1")
                .stage(HttpStage::RateLimit)
                .may_wait(std::time::Duration::from_millis(budget_ms))
                .at(Timestamp::from_millis(ms)),
        )
    };
    let rate_limited = || engine.report().totals.rate_limited;
    assert_eq!(status(&ask(60_000, 0)), 200);
    // Within the budget: the time to the window's end (750 ms), nothing recorded, and its
    // exchange records no response when finished.
    let HttpVerdict::Refuse(waitable) = ask(60_250, 750) else {
        panic!("limited")
    };
    assert_eq!(waitable.response.status, 429);
    assert_eq!(
        waitable.retry_in,
        Some(std::time::Duration::from_millis(750))
    );
    engine.http_finish(waitable.exchange, 429, &none);
    assert_eq!((rate_limited(), engine.report().totals.responses), (0, 0));
    // Past the budget, or without one: the refusal is answered and recorded.
    for budget in [749, 0] {
        let HttpVerdict::Refuse(refusal) = ask(60_250, budget) else {
            panic!("limited")
        };
        assert_eq!(refusal.retry_in, None, "budget {budget}");
    }
    assert_eq!(rate_limited(), 2);
    // The wait over, the next attempt passes.
    assert_eq!(status(&ask(61_000, 750)), 200);
}
