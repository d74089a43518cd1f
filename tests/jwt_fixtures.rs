//! Every token of `fixtures/jwt/cases.json` — minted by PyJWT and node's jsonwebtoken, or
//! crafted by hand for the attacks — against `fixtures/jwt/floodwall.toml`, at the fixtures'
//! fixed time on the engine's injected clock. Each case expects an identity (subject, role) or
//! one error kind.

use std::path::PathBuf;
use std::process::Command;

use floodwall::{Engine, ErrorKind, ManualClock, Timestamp};
use serde::Deserialize;

/// The variable the `hmac-env` key's secret is read from.
const SECRET_ENV: &str = "FLOODWALL_TEST_HMAC_SECRET";

#[derive(Deserialize)]
struct Fixtures {
    now: u64,
    config: FixtureConfig,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct FixtureConfig {
    env: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    minted_by: String,
    token: String,
    expect: Expect,
    why: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Expect {
    Ok {
        subject: String,
        role: Option<String>,
    },
    Error(String),
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/jwt")
}

fn fixtures() -> Fixtures {
    let text = std::fs::read_to_string(dir().join("cases.json")).expect("cases.json");
    serde_json::from_str(&text).expect("cases.json parses")
}

/// `secret_env` is read from the process environment, which a test may not change while other
/// threads run (edition 2024 makes `set_var` unsafe): this test re-runs itself in a child
/// process that has the variable set.
#[test]
fn every_fixture_token_gets_its_expected_outcome() {
    let fixtures = fixtures();
    let secret = &fixtures.config.env[SECRET_ENV];
    match std::env::var(SECRET_ENV) {
        Ok(value) => {
            assert_eq!(
                &value, secret,
                "{SECRET_ENV} differs from the fixtures' value"
            );
            run_all(&fixtures);
        }
        Err(_) => {
            let out = Command::new(std::env::current_exe().expect("test binary"))
                .args([
                    "--exact",
                    "every_fixture_token_gets_its_expected_outcome",
                    "--nocapture",
                ])
                .env(SECRET_ENV, secret)
                .output()
                .expect("re-run the test with the secret set");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "child run failed:\n{stdout}\n{stderr}"
            );
            print!("{stdout}");
        }
    }
}

fn run_all(fixtures: &Fixtures) {
    let now = Timestamp::from_micros(fixtures.now * 1_000_000);
    let engine = Engine::from_file(dir().join("floodwall.toml"))
        .expect("fixture config loads")
        .with_clock(ManualClock::new(now));
    let auth = engine.authenticator().expect("auth configured");
    assert_eq!(
        auth.key_count(),
        9,
        "six configured keys and three JWKS keys"
    );

    let mut failures = Vec::new();
    let mut per_kind = std::collections::BTreeMap::<String, usize>::new();
    for case in &fixtures.cases {
        let got = engine.authenticate(&format!("Bearer {}", case.token));
        let label = format!("{} ({}; {})", case.name, case.minted_by, case.why);
        match (&case.expect, got) {
            (Expect::Ok { subject, role }, Ok(identity)) => {
                *per_kind.entry("ok".into()).or_default() += 1;
                if identity.subject != *subject || identity.role != *role {
                    failures.push(format!(
                        "{label}: identity {:?}/{:?}, expected {subject:?}/{role:?}",
                        identity.subject, identity.role
                    ));
                }
            }
            (Expect::Ok { .. }, Err(e)) => {
                failures.push(format!(
                    "{label}: rejected ({}: {e}), expected ok",
                    e.kind()
                ));
            }
            (Expect::Error(kind), Ok(identity)) => {
                failures.push(format!(
                    "{label}: accepted as {identity:?}, expected {kind}"
                ));
            }
            (Expect::Error(kind), Err(e)) => {
                *per_kind.entry(kind.clone()).or_default() += 1;
                if e.kind().as_str() != kind {
                    failures.push(format!("{label}: got {} ({e}), expected {kind}", e.kind()));
                }
                assert_eq!(e.http_status(), 401, "{label}");
                // Exactly the fixed challenge of the kind: never anything from the token.
                let expected = match e.kind().challenge_description() {
                    Some(d) => format!(
                        "Bearer realm=\"floodwall\", error=\"invalid_token\", error_description=\"{d}\""
                    ),
                    None => "Bearer realm=\"floodwall\"".to_owned(),
                };
                assert_eq!(e.www_authenticate(), Some(expected.as_str()), "{label}");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        fixtures.cases.len(),
        failures.join("\n")
    );
    // Every rejection kind of the auth module appears at least once.
    for kind in ErrorKind::ALL.iter().filter(|k| k.is_auth()) {
        assert!(
            per_kind.contains_key(kind.as_str()),
            "no fixture expects {kind}"
        );
    }
    println!("fixtures per outcome: {per_kind:?}");
}
