//! Every conformance vector against a real Redis (single node), decision by decision, with the
//! caller's clock passing the vectors' explicit times (`store.clock = "local"`). Every decision
//! must come from Redis: a silent fallback to memory would fail the run. The vectors run twice:
//! with the denial cache off (every decision is a script call) and on (repeat denials are
//! answered locally, and must mean the same).

use floodwall::{Config, Engine, StoreUsed};
use floodwall_tests::redis_server::RedisServer;
use floodwall_tests::{load_vectors, run_case_on};

fn evalsha_calls(server: &RedisServer) -> u64 {
    let stats = server.command("INFO commandstats");
    stats
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

fn run_all(server: &RedisServer, deny_cache: bool) -> (usize, usize) {
    let mut cases = 0;
    let mut steps = 0;
    let mut failures = Vec::new();
    for (_, vectors) in &load_vectors() {
        for case in &vectors.cases {
            cases += 1;
            steps += case.steps.len();
            failures.extend(run_case_on(case, Some(StoreUsed::Redis), |config| {
                let mut config = config.clone();
                config["store"] = serde_json::json!({
                    "kind": "redis",
                    "url": server.url(),
                    "clock": "local",
                    "prefix": format!("v{deny_cache}{cases}:"),
                    "on_error": "deny",
                    "timeout": "2s",
                    "deny_cache": deny_cache,
                });
                Engine::from_config(Config::from_value(config)?)
            }));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches on Redis (deny_cache = {deny_cache}):\n{}",
        failures.len(),
        failures.join("\n")
    );
    (cases, steps)
}

#[test]
fn redis_single_node_conforms() {
    let server = RedisServer::start();
    let (cases, steps) = run_all(&server, false);
    assert!(cases >= 40, "only {cases} vector cases");
    // Steps expecting an error (cost over the limit) never reach the store.
    let calls = evalsha_calls(&server);
    assert!(
        calls >= 300 && calls as usize <= steps,
        "{calls} EVALSHA for {steps} steps"
    );

    run_all(&server, true);
    let cached = evalsha_calls(&server) - calls;
    assert!(
        cached < calls,
        "the denial cache answered nothing: {cached} calls"
    );
}
