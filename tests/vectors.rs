//! Runs every conformance vector against the memory store.

use floodwall::StoreUsed;
use floodwall_tests::{load_vectors, run_vectors_on};

#[test]
fn memory_store_conforms() {
    let mut names = std::collections::HashSet::new();
    for (file, vectors) in &load_vectors() {
        for case in &vectors.cases {
            assert!(
                names.insert(case.name.clone()),
                "{file}: duplicate case name {}",
                case.name
            );
        }
    }
    let (cases, _) = run_vectors_on(
        |_| serde_json::json!({ "kind": "memory" }),
        StoreUsed::Memory,
    );
    assert_eq!(cases, names.len());
}
