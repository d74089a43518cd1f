//! Runs every conformance vector against the memory store.

use floodwall::{Config, Engine};
use floodwall_tests::{load_vectors, run_case};

#[test]
fn memory_store_conforms() {
    let files = load_vectors();
    let mut cases = 0;
    let mut failures = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (file, vectors) in &files {
        for case in &vectors.cases {
            assert!(
                names.insert(case.name.clone()),
                "{file}: duplicate case name {}",
                case.name
            );
            cases += 1;
            failures.extend(run_case(case, |config| {
                Engine::from_config(Config::from_value(config.clone())?)
            }));
        }
    }
    assert!(cases >= 40, "only {cases} vector cases");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
