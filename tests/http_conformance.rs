//! The HTTP conformance cases (`tests/http/`) against the engine's HTTP layer itself, on the
//! memory store and on a real Redis: every expectation holds, and both stores give the same
//! transcript (written to `target/http-conformance/` for `compare.py`, beside the hosts').

use floodwall::Engine;
use floodwall_tests::http::{case_config, load_cases, run_in_process, write_transcript};
use floodwall_tests::redis_server::RedisServer;

fn engine(config: serde_json::Value) -> Engine {
    Engine::from_json(&config.to_string()).unwrap_or_else(|e| panic!("{e}\n{config:#}"))
}

#[test]
fn the_cases_are_enough() {
    let cases: usize = load_cases().iter().map(|(_, f)| f.cases.len()).sum();
    assert!(cases >= 80, "{cases} cases");
    let mut names: Vec<String> = load_cases()
        .into_iter()
        .flat_map(|(_, f)| f.cases.into_iter().map(|c| c.name))
        .collect();
    let all = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), all, "case names are unique");
}

#[test]
fn memory_store() {
    let (transcript, wrong) =
        run_in_process(|case, tokens| engine(case_config(case, tokens, None)));
    assert!(
        wrong.is_empty(),
        "{} mismatches:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    write_transcript("engine-memory", &transcript);
}

#[test]
fn redis_store() {
    let server = RedisServer::start();
    let mut n = 0;
    let (transcript, wrong) = run_in_process(|case, tokens| {
        n += 1;
        let store = serde_json::json!({
            "kind": "redis",
            "url": server.url(),
            "prefix": format!("h{n}:"),
            "on_error": "error",
            "timeout": "2s",
        });
        engine(case_config(case, tokens, Some(store)))
    });
    assert!(
        wrong.is_empty(),
        "{} mismatches:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    write_transcript("engine-redis", &transcript);
}
