//! Shared fixtures of the workspace-level tests: the conformance vectors (`tests/vectors/`),
//! their loader and a runner that checks any [`Engine`] against them step by step.
//!
//! The format is documented in `tests/vectors/README.md`. Stores and bindings added later run
//! the same files through [`run_case`], each with its own way of building an engine.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// An administration of one key instead of a request.
    #[serde(default)]
    pub admin: Option<Admin>,
}

/// An administration of one key of one rule, at the step's time.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `inspect`, `reset`, `block`, `penalize`, `reward`, `set_limit` or `clear_limit`.
    pub op: String,
    /// The rule's name.
    pub rule: String,
    /// The key as the rule counts it; absent or `null`: the requests lacking the keyed part.
    #[serde(default)]
    pub key: Option<String>,
    /// The role whose policy counts the key.
    #[serde(default)]
    pub role: Option<String>,
    /// `block`: how long.
    pub duration_ms: Option<u64>,
    /// `penalize`, `reward`: how many points.
    pub points: Option<u64>,
    /// `set_limit`: the key's own limit.
    pub limit: Option<u64>,
    /// `set_limit`: how long it lasts.
    pub lifetime_ms: Option<u64>,
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
    /// `inspect`: how long the key stays blocked in ms, rounded up (`null`: not blocked).
    #[serde(default, deserialize_with = "present")]
    pub blocked_for_ms: Option<Option<u64>>,
    /// `inspect`: how long the key's own limit lasts in ms, rounded up (`null`: none).
    #[serde(default, deserialize_with = "present")]
    pub key_limit_for_ms: Option<Option<u64>>,
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
        if let Some(admin) = &step.admin {
            let wrong = run_admin(&engine, step, admin, store);
            if !wrong.is_empty() {
                failures.push(format!(
                    "{} step {i} (now_ms {}, {}):{wrong}",
                    case.name, step.now_ms, admin.op
                ));
            }
            continue;
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

/// Runs the administration of `step` on `engine`; returns its mismatches (empty if none).
fn run_admin(
    engine: &Engine,
    step: &Step,
    admin: &Admin,
    store: Option<floodwall::StoreUsed>,
) -> String {
    let key = floodwall::KeyRef {
        rule: &admin.rule,
        key: admin.key.as_deref(),
        role: admin.role.as_deref(),
        now: Some(Timestamp::from_millis(step.now_ms)),
    };
    let given = |value: Option<u64>, what: &str| {
        value.unwrap_or_else(|| panic!("admin {} needs {what}", admin.op))
    };
    let ms = |value: Option<u64>, what: &str| Duration::from_millis(given(value, what));
    let result = match admin.op.as_str() {
        "inspect" => engine.inspect(&key).map(Some),
        "reset" => engine.reset_key(&key).map(|()| None),
        "block" => engine
            .block_key(&key, ms(admin.duration_ms, "duration_ms"))
            .map(|()| None),
        "penalize" => engine
            .penalize(&key, given(admin.points, "points"))
            .map(|()| None),
        "reward" => engine
            .reward(&key, given(admin.points, "points"))
            .map(|()| None),
        "set_limit" => engine
            .set_key_limit(
                &key,
                given(admin.limit, "limit"),
                ms(admin.lifetime_ms, "lifetime_ms"),
            )
            .map(|()| None),
        "clear_limit" => engine.clear_key_limit(&key).map(|()| None),
        other => panic!("no admin op {other:?}"),
    };
    let e = &step.expect;
    let mut wrong = String::new();
    match (result, &e.error) {
        (Err(err), Some(kind)) if err.kind().as_str() == kind => {}
        (Err(err), _) => {
            let _ = write!(wrong, " error {:?} ({err})", err.kind().as_str());
        }
        (Ok(_), Some(kind)) => {
            let _ = write!(wrong, " done instead of error {kind}");
        }
        (Ok(None), None) => {}
        (Ok(Some(status)), None) => {
            let ceil = |d: Duration| d.as_micros().div_ceil(1000) as u64;
            let mut check = |what: &str, got: String, want: Option<String>| {
                if let Some(want) = want
                    && got != want
                {
                    let _ = write!(wrong, " {what}: got {got}, want {want};");
                }
            };
            let show = |v: &Option<u64>| format!("{v:?}");
            check(
                "limit",
                show(&Some(status.limit)),
                e.limit.as_ref().map(show),
            );
            check(
                "remaining",
                show(&Some(status.remaining)),
                e.remaining.as_ref().map(show),
            );
            check(
                "reset_after_ms",
                ceil(status.reset_after).to_string(),
                e.reset_after_ms.map(|v| v.to_string()),
            );
            check(
                "blocked_for_ms",
                show(&status.blocked_for.map(ceil)),
                e.blocked_for_ms.as_ref().map(show),
            );
            check(
                "key_limit_for_ms",
                show(&status.key_limit_for.map(ceil)),
                e.key_limit_for_ms.as_ref().map(show),
            );
            if let Some(store) = store
                && status.store != store
            {
                let _ = write!(
                    wrong,
                    " answered by the {} store, expected {store};",
                    status.store
                );
            }
        }
    }
    wrong
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
