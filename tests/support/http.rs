//! The HTTP conformance cases (`tests/http/`, format in its README): their loader, the checks
//! every runner applies, the transcript every runner writes, and a runner that puts them to
//! an [`Engine`]'s HTTP layer directly, with the application the README describes simulated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use floodwall::Engine;
use floodwall::http::{HttpRequest, HttpStage, HttpVerdict};
use serde::{Deserialize, Serialize};

/// One case file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    /// The format version; this runner reads 1.
    pub format: u32,
    /// What the file covers.
    pub description: String,
    /// The cases.
    pub cases: Vec<HttpCase>,
}

/// One sequence of requests on a fresh engine.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCase {
    /// A unique name such as `paths/case-is-folded`.
    pub name: String,
    /// Why the case exists.
    #[serde(default)]
    pub description: String,
    /// The engine configuration; `"auth": "suite"` stands for the suite's `[auth]`.
    pub config: serde_json::Value,
    /// The requests, in order.
    pub steps: Vec<HttpStep>,
}

/// One request, what the application answers, and what the client must see.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpStep {
    /// The request.
    pub request: CaseRequest,
    /// What the application answers when reached.
    #[serde(default)]
    pub app: AppAnswer,
    /// What the client must see.
    pub expect: Expectation,
}

/// A request as the cases write it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseRequest {
    /// The method.
    pub method: String,
    /// The request target, sent exactly as written.
    pub target: String,
    /// A token of `tokens.json`, sent as `Authorization: Bearer …`.
    #[serde(default)]
    pub token: Option<String>,
    /// Headers: a list is one line per item.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderLines>,
}

/// One header's lines.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HeaderLines {
    /// One line.
    One(String),
    /// Several lines.
    Many(Vec<String>),
}

impl HeaderLines {
    /// The lines.
    pub fn lines(&self) -> Vec<&str> {
        match self {
            HeaderLines::One(v) => vec![v],
            HeaderLines::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// What the application answers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppAnswer {
    /// The status (200 without it).
    #[serde(default)]
    pub status: Option<u16>,
    /// The value of the `X-RateLimit-Cost` response header, if any.
    #[serde(default)]
    pub charge: Option<String>,
}

/// What the client must see.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The status.
    pub status: u16,
    /// Whether the application answered.
    pub reached: bool,
    /// The problem body's `code`.
    #[serde(default)]
    pub code: Option<String>,
    /// The exact body.
    #[serde(default)]
    pub body: Option<String>,
    /// Header values; `None`: absent.
    #[serde(default)]
    pub headers: BTreeMap<String, Option<String>>,
    /// The subject the application echoed.
    #[serde(default)]
    pub subject: Option<String>,
    /// The role the application echoed.
    #[serde(default)]
    pub role: Option<String>,
}

/// What a client saw of one response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// The status.
    pub status: u16,
    /// The headers floodwall answers for (see [`transcript_headers`]), by lower-case name.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: String,
}

/// `tests/http/`.
pub fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("http")
}

/// Every case file, by file name.
pub fn load_cases() -> Vec<(String, HttpFile)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/http exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name().is_some_and(|n| n != "tokens.json")
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable");
            let file: HttpFile =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(file.format, 1, "{}", path.display());
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                file,
            )
        })
        .collect()
}

/// `tokens.json`.
pub struct Tokens {
    /// The `[auth]` section verifying them.
    pub auth: serde_json::Value,
    /// Tokens by name.
    pub tokens: BTreeMap<String, String>,
}

/// Reads `tokens.json`.
pub fn load_tokens() -> Tokens {
    let text = std::fs::read_to_string(cases_dir().join("tokens.json")).expect("tokens.json");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    Tokens {
        auth: doc["auth"].clone(),
        tokens: serde_json::from_value(doc["tokens"].clone()).expect("tokens by name"),
    }
}

/// A case's engine configuration: `"auth": "suite"` resolved, and `store` added when the
/// case has none.
pub fn case_config(
    case: &HttpCase,
    tokens: &Tokens,
    store: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut config = case.config.clone();
    let object = config.as_object_mut().expect("a config is an object");
    if object.get("auth").and_then(|a| a.as_str()) == Some("suite") {
        object.insert("auth".into(), tokens.auth.clone());
    }
    if let Some(store) = store
        && !object.contains_key("store")
    {
        object.insert("store".into(), store);
    }
    config
}

/// The header lines a runner sends for `request` (name, value), tokens resolved; the
/// application's instructions (`X-Test-Status`, `X-Test-Charge`) included.
pub fn request_lines(step: &HttpStep, tokens: &Tokens) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    for (name, value) in &step.request.headers {
        for line in value.lines() {
            lines.push((name.clone(), line.to_owned()));
        }
    }
    if let Some(token) = &step.request.token {
        let token = tokens
            .tokens
            .get(token)
            .unwrap_or_else(|| panic!("no token {token:?} in tokens.json"));
        lines.push(("Authorization".into(), format!("Bearer {token}")));
    }
    if let Some(status) = step.app.status {
        lines.push(("X-Test-Status".into(), status.to_string()));
    }
    if let Some(charge) = &step.app.charge {
        lines.push(("X-Test-Charge".into(), charge.clone()));
    }
    lines
}

/// The headers a transcript keeps (lower-case names): floodwall's, the application's test
/// headers, and — on an answer floodwall gave — its content headers.
pub fn transcript_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, String> {
    let all: Vec<(String, &str)> = headers
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .collect();
    let reached = all.iter().any(|(n, _)| n == "x-test-reached");
    let mut kept = BTreeMap::new();
    for (name, value) in all {
        let floodwall = matches!(
            name.as_str(),
            "ratelimit-policy"
                | "ratelimit"
                | "ratelimit-limit"
                | "ratelimit-remaining"
                | "ratelimit-reset"
                | "retry-after"
                | "www-authenticate"
                | "x-test-reached"
                | "x-test-subject"
                | "x-test-role"
                | "x-ratelimit-cost"
        ) || (!reached
            && matches!(name.as_str(), "content-type" | "content-length"));
        if floodwall {
            kept.insert(name, value.to_owned());
        }
    }
    kept
}

/// What is wrong with `observed` against `expect` (empty when nothing).
pub fn check(expect: &Expectation, observed: &Observed) -> Vec<String> {
    let mut wrong = Vec::new();
    if observed.status != expect.status {
        wrong.push(format!(
            "status {} (want {})",
            observed.status, expect.status
        ));
    }
    let reached = observed.headers.contains_key("x-test-reached");
    if reached != expect.reached {
        wrong.push(format!("reached {reached} (want {})", expect.reached));
    }
    if let Some(code) = &expect.code {
        let got = serde_json::from_str::<serde_json::Value>(&observed.body)
            .ok()
            .and_then(|b| b.get("code").and_then(|c| c.as_str()).map(str::to_owned));
        if got.as_deref() != Some(code) {
            wrong.push(format!("code {got:?} (want {code:?})"));
        }
    }
    if let Some(body) = &expect.body
        && &observed.body != body
    {
        wrong.push(format!("body {:?} (want {body:?})", observed.body));
    }
    for (name, want) in &expect.headers {
        let got = observed.headers.get(&name.to_ascii_lowercase());
        if got != want.as_ref() {
            wrong.push(format!("header {name}: {got:?} (want {want:?})"));
        }
    }
    for (name, want) in [
        ("x-test-subject", &expect.subject),
        ("x-test-role", &expect.role),
    ] {
        if let Some(want) = want
            && observed.headers.get(name) != Some(want)
        {
            wrong.push(format!(
                "{name}: {:?} (want {want:?})",
                observed.headers.get(name)
            ));
        }
    }
    wrong
}

/// Everything a runner saw, by case name.
pub type Transcript = BTreeMap<String, Vec<Observed>>;

/// Writes `transcript` to `target/http-conformance/<runner>.json`.
pub fn write_transcript(runner: &str, transcript: &Transcript) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("http-conformance");
    std::fs::create_dir_all(&dir).expect("target/http-conformance");
    let doc = serde_json::json!({ "runner": runner, "cases": transcript });
    std::fs::write(
        dir.join(format!("{runner}.json")),
        serde_json::to_string_pretty(&doc).expect("JSON") + "\n",
    )
    .expect("written");
}

/// The application of the README, as a host would run it behind the HTTP layer: its status,
/// its headers, its body.
fn application(
    step: &HttpStep,
    subject: Option<&str>,
    role: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let mut headers = vec![
        ("X-Test-Reached".to_owned(), "1".to_owned()),
        (
            "X-Test-Subject".to_owned(),
            subject.unwrap_or("-").to_owned(),
        ),
        ("X-Test-Role".to_owned(), role.unwrap_or("-").to_owned()),
    ];
    if let Some(charge) = &step.app.charge {
        headers.push(("X-RateLimit-Cost".to_owned(), charge.clone()));
    }
    let status = step.app.status.unwrap_or(200);
    // HTTP gives HEAD answers, 204 and 304 no body.
    let body = if step.request.method.eq_ignore_ascii_case("HEAD") || matches!(status, 204 | 304) {
        String::new()
    } else {
        "ok".to_owned()
    };
    (status, headers, body)
}

/// The cost function every runner's middleware is given: `X-Test-Cost` as a number.
pub fn cost_of(lines: &[(String, String)]) -> f64 {
    lines
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-test-cost"))
        .map_or(1.0, |(_, v)| v.trim().parse().unwrap_or(f64::NAN))
}

/// Runs every case through `engine_for(config)`'s HTTP layer directly, as the Guard stage of
/// a host would, and answers the transcript and every mismatch.
pub fn run_in_process(
    mut engine_for: impl FnMut(&HttpCase, &Tokens) -> Engine,
) -> (Transcript, Vec<String>) {
    let tokens = load_tokens();
    let mut transcript = Transcript::new();
    let mut mismatches = Vec::new();
    for (file, cases) in load_cases() {
        for case in &cases.cases {
            let engine = engine_for(case, &tokens);
            let mut seen = Vec::new();
            for (i, step) in case.steps.iter().enumerate() {
                let observed = serve(&engine, step, &tokens);
                for wrong in check(&step.expect, &observed) {
                    mismatches.push(format!("{file} {} step {i}: {wrong}", case.name));
                }
                seen.push(observed);
            }
            transcript.insert(case.name.clone(), seen);
        }
    }
    (transcript, mismatches)
}

/// One step as a host serves it: the verdict, the application when it passes, the finish.
fn serve(engine: &Engine, step: &HttpStep, tokens: &Tokens) -> Observed {
    let lines = request_lines(step, tokens);
    // A header of several lines is one value, joined by commas.
    let mut joined: Vec<(String, String)> = Vec::new();
    for (name, value) in &lines {
        let lower = name.to_ascii_lowercase();
        match joined.iter_mut().find(|(n, _)| *n == lower) {
            Some((_, v)) => {
                v.push(',');
                v.push_str(value);
            }
            None => joined.push((lower, value.clone())),
        }
    }
    let pairs: Vec<(&str, &str)> = joined
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let headers: &[(&str, &str)] = &pairs;
    let request = HttpRequest::new(&step.request.method, &step.request.target, &headers)
        .peer("127.0.0.1")
        .cost(cost_of(&lines))
        .stage(if engine.authenticator().is_some() {
            HttpStage::Guard
        } else {
            HttpStage::RateLimit
        });
    let head = step.request.method.eq_ignore_ascii_case("HEAD");
    match engine.http(&request) {
        HttpVerdict::Skip => {
            let (status, headers, body) = application(step, None, None);
            Observed {
                status,
                headers: transcript_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
                body,
            }
        }
        HttpVerdict::Pass(admission) => {
            let (subject, role) = admission.identity.as_ref().map_or((None, None), |i| {
                (Some(i.subject.as_str()), i.role.as_deref())
            });
            let (status, own, body) = application(step, subject, role);
            // The decision's headers first; the application's own of the same name win.
            let mut all: Vec<(String, String)> = admission
                .headers()
                .into_iter()
                .filter(|(n, _)| !own.iter().any(|(o, _)| o.eq_ignore_ascii_case(n)))
                .map(|(n, v)| (n.to_owned(), v))
                .collect();
            all.extend(own);
            let response: Vec<(String, String)> = all
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect();
            engine.http_finish(admission.exchange, status, &response);
            Observed {
                status,
                headers: transcript_headers(all.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
                body,
            }
        }
        HttpVerdict::Refuse(refusal) => {
            let r = refusal.response;
            engine.http_finish(refusal.exchange, r.status, &());
            Observed {
                status: r.status,
                headers: transcript_headers(r.headers.iter().map(|(n, v)| (*n, v.as_str()))),
                body: if head { String::new() } else { r.body },
            }
        }
    }
}

/// One request from 127.0.0.1 through `engine`'s rate-limit stage (no token) at `at` (the
/// engine's clock when `None`), its response finished with `status`: whether it passed.
pub fn rate_limited(
    engine: &Engine,
    path: &str,
    status: u16,
    at: Option<floodwall::Timestamp>,
) -> bool {
    let none: &[(&str, &str)] = &[];
    let mut request = HttpRequest::new("GET", path, &none)
        .peer("127.0.0.1")
        .stage(HttpStage::RateLimit);
    if let Some(at) = at {
        request = request.at(at);
    }
    let verdict = engine.http(&request);
    let passed = matches!(verdict, HttpVerdict::Pass(_));
    if let Some(exchange) = verdict.into_exchange() {
        match at {
            Some(at) => engine.http_finish_at(exchange, status, &(), at),
            None => engine.http_finish(exchange, status, &()),
        }
    }
    passed
}
