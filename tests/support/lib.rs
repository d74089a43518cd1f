//! Shared fixtures of the workspace-level tests: the conformance vectors (`tests/vectors/`),
//! their loader and a runner that checks any [`Engine`] against them step by step.
//!
//! The format is documented in `tests/vectors/README.md`. Stores and bindings added later run
//! the same files through [`run_case`], each with its own way of building an engine.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use floodwall::{Engine, Request, Timestamp};
use serde::Deserialize;

/// One vector file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorFile {
    /// The format version; this runner reads 1.
    pub format: u32,
    /// What the file covers.
    pub description: String,
    /// The sequences.
    pub cases: Vec<Case>,
}

/// One request sequence on a fresh engine.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// A unique name such as `fixed_window/exhaust-and-reset`.
    pub name: String,
    /// Why the case exists.
    #[serde(default)]
    pub description: String,
    /// The engine configuration, JSON form.
    pub config: serde_json::Value,
    /// The requests, in order.
    pub steps: Vec<Step>,
}

/// One request and what must come of it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// The request.
    #[serde(default)]
    pub request: VectorRequest,
    /// The expected decision or error.
    pub expect: Expect,
    /// Keep what the decision holds of `concurrency` rules under this name (without it, the
    /// decision releases its holds once the step is checked).
    #[serde(default)]
    pub hold: Option<String>,
    /// Release these held decisions (named by earlier steps' `hold`) before the request.
    #[serde(default)]
    pub release: Vec<String>,
}

/// A request as the vectors write it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorRequest {
    /// The subject.
    pub subject: Option<String>,
    /// The role.
    pub role: Option<String>,
    /// The method (default `GET`).
    pub method: Option<String>,
    /// The path (default `/`).
    pub path: Option<String>,
    /// The client address.
    pub ip: Option<String>,
    /// Headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The cost (default 1).
    pub cost: Option<u64>,
}

/// The expected outcome of a step. Absent fields are not checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Admitted or not.
    pub allowed: Option<bool>,
    /// The error kind expected instead of a decision.
    pub error: Option<String>,
    /// The deciding rule (`null`: none matched).
    #[serde(default, deserialize_with = "present")]
    pub rule: Option<Option<String>>,
    /// The deciding layer's limit.
    #[serde(default, deserialize_with = "present")]
    pub limit: Option<Option<u64>>,
    /// The deciding layer's remaining.
    #[serde(default, deserialize_with = "present")]
    pub remaining: Option<Option<u64>>,
    /// `reset_after` in ms, rounded up.
    pub reset_after_ms: Option<u64>,
    /// `retry_after` in ms, rounded up.
    pub retry_after_ms: Option<u64>,
    /// Denied by a block (`block_for`).
    pub blocked: Option<bool>,
    /// Header name → exact value, or `null` for "absent".
    pub headers: Option<BTreeMap<String, Option<String>>>,
}

/// Distinguishes a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The folder of the vector files.
pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

/// Every vector file, by file name, in name order. Panics with the file's name on a bad file.
pub fn load_vectors() -> Vec<(String, VectorFile)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(vectors_dir())
        .expect("tests/vectors exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable vector file");
            let file: VectorFile =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(file.format, 1, "{}: unknown format", path.display());
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                file,
            )
        })
        .collect()
}

/// Runs `case` on the engine `build` makes from its config; returns every mismatch, one line
/// each (empty when the engine conforms).
pub fn run_case(
    case: &Case,
    build: impl FnOnce(&serde_json::Value) -> Result<Engine, floodwall::Error>,
) -> Vec<String> {
    run_case_on(case, None, build)
}

/// [`run_case`], also requiring every decision to come from `store` (so that a shared store
/// that silently fell back to memory cannot pass for one that works).
pub fn run_case_on(
    case: &Case,
    store: Option<floodwall::StoreUsed>,
    build: impl FnOnce(&serde_json::Value) -> Result<Engine, floodwall::Error>,
) -> Vec<String> {
    let engine = match build(&case.config) {
        Ok(engine) => engine,
        Err(e) => return vec![format!("{}: config rejected: {e}", case.name)],
    };
    let mut failures = Vec::new();
    let mut held: BTreeMap<&str, floodwall::Permit> = BTreeMap::new();
    for (i, step) in case.steps.iter().enumerate() {
        for name in &step.release {
            match held.remove(name.as_str()) {
                Some(permit) => {
                    engine.release(permit);
                }
                None => failures.push(format!(
                    "{} step {i}: releases {name:?}, which no earlier step holds",
                    case.name
                )),
            }
        }
        let r = &step.request;
        let headers: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let request = Request {
            method: r.method.as_deref().unwrap_or("GET"),
            path: r.path.as_deref().unwrap_or("/"),
            subject: r.subject.as_deref(),
            role: r.role.as_deref(),
            ip: r.ip.as_deref(),
            headers: &headers,
            cost: r.cost.unwrap_or(1),
            now: Some(Timestamp::from_millis(step.now_ms)),
        };
        let mut wrong = String::new();
        let e = &step.expect;
        match (engine.check(&request), &e.error) {
            (Err(err), Some(kind)) if err.kind().as_str() == kind => {}
            (Err(err), _) => {
                let _ = write!(wrong, " error {:?} ({err})", err.kind().as_str());
            }
            (Ok(_), Some(kind)) => {
                let _ = write!(wrong, " a decision instead of error {kind}");
            }
            (Ok(mut d), None) => {
                if let Some(name) = &step.hold {
                    match d.take_permit() {
                        Some(permit) => {
                            held.insert(name, permit);
                        }
                        None => {
                            let _ = write!(wrong, " holds nothing to keep as {name:?};");
                        }
                    }
                }
                // A repeated denial may come from the shared store's deny cache.
                let cached_denial = store == Some(floodwall::StoreUsed::Redis)
                    && d.store() == floodwall::StoreUsed::DenyCache
                    && !d.allowed();
                if let Some(store) = store
                    && d.store() != store
                    && !cached_denial
                {
                    wrong.push_str(&format!(
                        "\n  decided by the {} store, expected {store}",
                        d.store()
                    ));
                }
                let mut check = |what: &str, got: String, want: String| {
                    if got != want {
                        let _ = write!(wrong, " {what}: got {got}, want {want};");
                    }
                };
                if let Some(want) = e.allowed {
                    check("allowed", d.allowed().to_string(), want.to_string());
                }
                if let Some(want) = &e.rule {
                    check(
                        "rule",
                        format!("{:?}", d.rule()),
                        format!("{:?}", want.as_deref()),
                    );
                }
                if let Some(want) = e.limit {
                    check("limit", format!("{:?}", d.limit()), format!("{want:?}"));
                }
                if let Some(want) = e.remaining {
                    check(
                        "remaining",
                        format!("{:?}", d.remaining()),
                        format!("{want:?}"),
                    );
                }
                if let Some(want) = e.reset_after_ms {
                    check(
                        "reset_after_ms",
                        d.reset_after_ms().to_string(),
                        want.to_string(),
                    );
                }
                if let Some(want) = e.retry_after_ms {
                    check(
                        "retry_after_ms",
                        d.retry_after_ms().to_string(),
                        want.to_string(),
                    );
                }
                if let Some(want) = e.blocked {
                    check("blocked", d.blocked().to_string(), want.to_string());
                }
                for (name, want) in e.headers.iter().flatten() {
                    check(
                        &format!("header {name}"),
                        format!("{:?}", d.header(name)),
                        format!("{want:?}"),
                    );
                }
            }
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{} step {i} (now_ms {}):{wrong}",
                case.name, step.now_ms
            ));
        }
    }
    failures
}

/// Runs every vector with the `[store]` section `store(case_number)` (a JSON object), requiring
/// every decision to come from `expected`; panics with every mismatch. Returns how many cases
/// and steps ran.
pub fn run_vectors_on(
    store: impl Fn(usize) -> serde_json::Value,
    expected: floodwall::StoreUsed,
) -> (usize, usize) {
    let mut cases = 0;
    let mut steps = 0;
    let mut failures = Vec::new();
    for (_, vectors) in &load_vectors() {
        for case in &vectors.cases {
            cases += 1;
            steps += case.steps.len();
            failures.extend(run_case_on(case, Some(expected), |config| {
                let mut config = config.clone();
                config["store"] = store(cases);
                Engine::from_config(floodwall::Config::from_value(config)?)
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
    (cases, steps)
}

pub mod http;
pub mod redis_server;

/// The name `rule`'s state goes by in a store (`NAME@FINGERPRINT`), as Redis keys spell it.
pub fn stored_name(engine: &floodwall::Engine, rule: &str) -> String {
    engine
        .rules()
        .iter()
        .find(|r| r.name() == rule)
        .unwrap_or_else(|| panic!("no rule {rule:?}"))
        .stored_name()
        .to_owned()
}
