//! Every conformance vector against a real Redis (single node), decision by decision, with the
//! caller's clock passing the vectors' explicit times (`store.clock = "local"`). Every decision
//! must come from Redis: a silent fallback to memory would fail the run.

use floodwall::{Config, Engine, StoreUsed};
use floodwall_tests::redis_server::RedisServer;
use floodwall_tests::{load_vectors, run_case_on};

#[test]
fn redis_single_node_conforms() {
    let server = RedisServer::start();
    let mut cases = 0;
    let mut failures = Vec::new();
    for (_, vectors) in &load_vectors() {
        for case in &vectors.cases {
            cases += 1;
            failures.extend(run_case_on(case, Some(StoreUsed::Redis), |config| {
                let mut config = config.clone();
                config["store"] = serde_json::json!({
                    "kind": "redis",
                    "url": server.url(),
                    "clock": "local",
                    "prefix": format!("v{cases}:"),
                    "on_error": "deny",
                    "timeout": "2s",
                });
                Engine::from_config(Config::from_value(config)?)
            }));
        }
    }
    assert!(cases >= 40, "only {cases} vector cases");
    let stats = server.command("INFO commandstats");
    let evalsha = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        evalsha >= 300,
        "only {evalsha} EVALSHA calls reached Redis:\n{stats}"
    );
    assert!(
        failures.is_empty(),
        "{} mismatches on Redis:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
