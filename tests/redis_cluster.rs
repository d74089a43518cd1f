//! The Redis store on a three-primary Redis Cluster: the conformance vectors decision by
//! decision (multi-layer decisions span slots and take the evaluate / decide / refund path),
//! exact admission from many threads across slots, and never a CROSSSLOT.

use std::sync::Arc;

use floodwall::{Engine, Request, StoreUsed};
use floodwall_tests::redis_server::RedisCluster;
use floodwall_tests::run_vectors_on;

#[test]
fn redis_cluster_conforms_and_stays_exact() {
    let cluster = RedisCluster::start();
    run_vectors_on(
        |case| {
            serde_json::json!({
                "kind": "redis_cluster",
                "urls": cluster.urls(),
                "clock": "local",
                "prefix": format!("c{case}:"),
                "on_error": "deny",
                "timeout": "3s",
                "deny_cache": false,
            })
        },
        StoreUsed::Redis,
    );
    assert!(
        cluster.evalsha_calls() >= 300,
        "{}",
        cluster.evalsha_calls()
    );

    // Three layers in three slots, eight threads: exactly the tightest limit is admitted.
    let toml = format!(
        r#"
[store]
kind = "redis_cluster"
urls = {urls:?}
timeout = "3s"
on_error = "deny"

[[rules]]
name = "per-user"
key = "subject"
algorithm = "sliding_window"
limit = 1000
window = "1h"

[[rules]]
name = "per-endpoint"
key = "endpoint"
algorithm = "token_bucket"
capacity = 500
refill_rate = 0.0001

[[rules]]
name = "global"
key = "global"
algorithm = "fixed_window"
limit = 100
window = "1h"
"#,
        urls = cluster.urls()
    );
    let engine = Arc::new(Engine::from_toml(&toml).expect("config"));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                let subject = format!("user-{t}");
                let request = Request::new("GET", "/api/orders").subject(&subject);
                (0..40)
                    .filter(|_| {
                        let d = engine.check(&request).expect("decision");
                        assert_eq!(d.store(), StoreUsed::Redis, "{:?}", engine.store_failure());
                        d.allowed()
                    })
                    .count()
            })
        })
        .collect();
    let admitted: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    assert_eq!(admitted, 100, "320 requests, global limit 100");
    assert_eq!(cluster.crossslot_errors(), 0);
}
