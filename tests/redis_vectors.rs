//! Every conformance vector against a real Redis (single node), decision by decision, with the
//! caller's clock passing the vectors' explicit times (`store.clock = "local"`). Every decision
//! must come from Redis: a silent fallback to memory would fail the run. The vectors run twice:
//! with the denial cache off (every decision is a script call) and on (repeat denials are
//! answered locally, and must mean the same).

use floodwall::StoreUsed;
use floodwall_tests::redis_server::RedisServer;
use floodwall_tests::run_vectors_on;

#[test]
fn redis_single_node_conforms() {
    let server = RedisServer::start();
    let url = server.url();
    let store = |deny_cache: bool| {
        let url = url.clone();
        move |case: usize| {
            serde_json::json!({
                "kind": "redis",
                "url": url,
                "clock": "local",
                "prefix": format!("v{deny_cache}{case}:"),
                "on_error": "deny",
                "timeout": "2s",
                "deny_cache": deny_cache,
            })
        }
    };
    let (_, steps) = run_vectors_on(store(false), StoreUsed::Redis);
    // Steps expecting an error (cost over the limit) never reach the store.
    let calls = server.evalsha_calls();
    assert!(
        calls >= 300 && calls as usize <= steps,
        "{calls} EVALSHA for {steps} steps"
    );

    run_vectors_on(store(true), StoreUsed::Redis);
    let cached = server.evalsha_calls() - calls;
    assert!(
        cached < calls,
        "the denial cache answered nothing: {cached} calls"
    );
}
