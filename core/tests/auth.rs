//! JWT authentication through the engine: header parsing, configuration errors, claims, key
//! rotation and reload, the verified-token cache, and authenticate-then-check. Tokens are
//! minted here with jsonwebtoken (the fixtures minted by PyJWT and node are in
//! `tests/jwt_fixtures.rs`); time is the engine's manual clock.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use floodwall::auth::AuthConfig;
use floodwall::{Config, Engine, ErrorKind, ManualClock, Request, Timestamp};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use proptest::prelude::*;
use serde_json::{Value, json};

const NOW: u64 = 1_800_000_000;
const SECRET: &str = "an-hmac-secret-of-at-least-thirty-two-bytes";
const OTHER_SECRET: &str = "another-hmac-secret-of-at-least-32-bytes!!";

fn at(seconds: u64) -> Timestamp {
    Timestamp::from_micros(seconds * 1_000_000)
}

fn engine(toml: &str) -> (Engine, ManualClock) {
    let clock = ManualClock::new(at(NOW));
    let engine = Engine::from_toml(toml)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_clock(clock.clone());
    (engine, clock)
}

fn base(extra: &str) -> String {
    format!(
        r#"
[auth]
algorithms = ["HS256", "HS384"]
leeway = "10s"
issuer = "https://issuer.test"
audience = ["api"]
role_claim = "realm_access.roles"
roles = ["admin", "premium"]
role_map = {{ gold = "premium" }}
default_role = "free"
{extra}

[[auth.keys]]
kid = "k1"
secret = "{SECRET}"

[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 2
window = "1m"
roles.premium = {{ limit = 5 }}
"#
    )
}

fn claims(sub: &str, extra: Value) -> Value {
    let mut c = json!({
        "sub": sub,
        "iss": "https://issuer.test",
        "aud": "api",
        "exp": NOW + 3600,
        "iat": NOW - 10,
    });
    for (k, v) in extra.as_object().expect("object") {
        if v.is_null() {
            c.as_object_mut().expect("object").remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn hs256(kid: Option<&str>, secret: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

fn token(sub: &str, extra: Value) -> String {
    hs256(Some("k1"), SECRET, &claims(sub, extra))
}

fn kind_of(engine: &Engine, authorization: &str) -> ErrorKind {
    engine
        .authenticate(authorization)
        .expect_err("should be rejected")
        .kind()
}

#[test]
fn authorization_values_are_parsed_leniently_in_case_and_strictly_in_shape() {
    let (engine, _) = engine(&base(""));
    let t = token("alice", json!({}));
    for value in [
        format!("Bearer {t}"),
        format!("bearer {t}"),
        format!("BEARER   {t}"),
        format!("  Bearer\t{t}  "),
    ] {
        assert_eq!(
            engine.authenticate(&value).expect("accepted").subject,
            "alice"
        );
    }
    for (value, kind) in [
        ("", ErrorKind::MissingToken),
        ("   ", ErrorKind::MissingToken),
        ("Bearer", ErrorKind::MissingToken),
        ("Bearer   ", ErrorKind::MissingToken),
        ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", ErrorKind::MissingToken),
        ("Bearer a.b.c d", ErrorKind::MalformedToken),
        ("Bearer not-a-jwt", ErrorKind::MalformedToken),
    ] {
        assert_eq!(kind_of(&engine, value), kind, "{value:?}");
    }
    // A bare token only where configured; elsewhere it is no bearer credential at all.
    assert_eq!(kind_of(&engine, &t), ErrorKind::MissingToken);
    let (bare, _) = self::engine(&base("bare_token = true"));
    assert_eq!(
        bare.authenticate(&t).expect("bare accepted").subject,
        "alice"
    );
}

#[test]
fn rejections_carry_status_and_an_rfc6750_challenge_without_request_data() {
    let (engine, _) = engine(&base("realm = \"orders-api\""));
    let missing = engine.authenticate("").unwrap_err();
    assert_eq!(missing.http_status(), 401);
    assert_eq!(
        missing.www_authenticate(),
        Some("Bearer realm=\"orders-api\"")
    );

    let evil_kid = hs256(Some("\"><script>"), SECRET, &claims("a", json!({})));
    let unknown = engine
        .authenticate(&format!("Bearer {evil_kid}"))
        .unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::UnknownKey);
    assert_eq!(
        unknown.www_authenticate(),
        Some(
            "Bearer realm=\"orders-api\", error=\"invalid_token\", error_description=\"The access token is signed by an unknown key\""
        )
    );
    assert!(
        unknown.message().contains("\\\"><script>"),
        "{}",
        unknown.message()
    );
    // Every auth kind has a name, a status and (but missing_token) a description.
    for kind in ErrorKind::ALL.iter().filter(|k| k.is_auth()) {
        assert_eq!(kind.http_status(), 401);
        assert_eq!(
            kind.challenge_description().is_none(),
            *kind == ErrorKind::MissingToken
        );
    }
}

#[test]
fn oversized_tokens_are_refused_before_decoding() {
    let (engine, _) = engine(&base("max_token_bytes = 256"));
    let big = token("alice", json!({ "pad": "x".repeat(400) }));
    assert!(big.len() > 256);
    assert_eq!(
        kind_of(&engine, &format!("Bearer {big}")),
        ErrorKind::TokenTooLarge
    );
    // Not even a valid JWT: the size is what is reported.
    assert_eq!(
        kind_of(&engine, &format!("Bearer {}", "!".repeat(300))),
        ErrorKind::TokenTooLarge
    );
}

#[test]
fn claims_are_checked_against_the_injected_clock_with_leeway() {
    let (engine, clock) = engine(&base(""));
    let t = format!("Bearer {}", token("alice", json!({ "exp": NOW + 60 })));
    assert!(engine.authenticate(&t).is_ok());
    clock.set(at(NOW + 69)); // exp + leeway - 1
    assert!(engine.authenticate(&t).is_ok());
    clock.set(at(NOW + 70)); // exp + leeway: expired
    assert_eq!(kind_of(&engine, &t), ErrorKind::Expired);

    clock.set(at(NOW));
    for (extra, kind) in [
        (json!({ "nbf": NOW + 11 }), ErrorKind::NotYetValid),
        (json!({ "iat": NOW + 11 }), ErrorKind::NotYetValid),
        (json!({ "exp": null }), ErrorKind::MissingClaim),
        (json!({ "exp": "soon" }), ErrorKind::InvalidClaim),
        (json!({ "iss": null }), ErrorKind::MissingClaim),
        (
            json!({ "iss": "https://evil.test" }),
            ErrorKind::WrongIssuer,
        ),
        (json!({ "iss": 7 }), ErrorKind::InvalidClaim),
        (json!({ "aud": null }), ErrorKind::MissingClaim),
        (json!({ "aud": "other" }), ErrorKind::WrongAudience),
        (json!({ "aud": ["other", 3] }), ErrorKind::InvalidClaim),
        (json!({ "sub": null }), ErrorKind::MissingClaim),
        (json!({ "sub": "" }), ErrorKind::MissingClaim),
        (json!({ "sub": 42 }), ErrorKind::InvalidClaim),
        (
            json!({ "realm_access": { "roles": 5 } }),
            ErrorKind::InvalidClaim,
        ),
    ] {
        let t = format!("Bearer {}", token("alice", extra.clone()));
        assert_eq!(kind_of(&engine, &t), kind, "{extra}");
    }
    for extra in [
        json!({ "nbf": NOW + 10 }),
        json!({ "aud": ["other", "api"] }),
        json!({ "exp": NOW as f64 + 0.5 }),
    ] {
        let t = format!("Bearer {}", token("alice", extra.clone()));
        assert!(engine.authenticate(&t).is_ok(), "{extra}");
    }
}

#[test]
fn exp_may_be_optional_and_audience_unconfigured_refuses_tokens_that_name_one() {
    let (engine, _) = engine(&base("require_exp = false").replace("audience = [\"api\"]\n", ""));
    let no_exp = token("alice", json!({ "exp": null, "aud": null }));
    assert!(engine.authenticate(&format!("Bearer {no_exp}")).is_ok());
    let with_aud = token("alice", json!({ "exp": null }));
    assert_eq!(
        kind_of(&engine, &format!("Bearer {with_aud}")),
        ErrorKind::WrongAudience
    );
}

#[test]
fn roles_follow_priority_mapping_and_default() {
    let (engine, _) = engine(&base("required_claims = [\"tenant\", \"org.id\"]"));
    let role = |roles: Value| {
        let t = token(
            "alice",
            json!({ "realm_access": { "roles": roles }, "tenant": "acme", "org": { "id": 1 } }),
        );
        engine
            .authenticate(&format!("Bearer {t}"))
            .expect("accepted")
            .role
            .clone()
    };
    assert_eq!(role(json!(["user", "gold"])), Some("premium".into()));
    assert_eq!(role(json!(["premium", "admin"])), Some("admin".into()));
    assert_eq!(role(json!("gold")), Some("premium".into()));
    assert_eq!(role(json!(["user"])), Some("free".into()));
    assert_eq!(role(json!([])), Some("free".into()));
    let no_org = token("alice", json!({ "tenant": "acme" }));
    let e = engine
        .authenticate(&format!("Bearer {no_org}"))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingClaim);
    assert!(e.message().contains("org.id"), "{e}");
}

#[test]
fn claim_names_with_dots_are_found_whole() {
    let (engine, _) = engine(&base("").replace("realm_access.roles", "https://example.com/roles"));
    let t = token("alice", json!({ "https://example.com/roles": ["admin"] }));
    let identity = engine
        .authenticate(&format!("Bearer {t}"))
        .expect("accepted");
    assert_eq!(identity.role.as_deref(), Some("admin"));
    assert_eq!(
        identity.claim("https://example.com/roles"),
        Some(&json!(["admin"]))
    );
    assert_eq!(identity.key_id.as_deref(), Some("k1"));
    assert_eq!(identity.algorithm, "HS256");
    assert_eq!(identity.expires_at, Some(at(NOW + 3600)));
}

#[test]
fn several_keys_are_active_at_once_and_kidless_tokens_try_each() {
    let toml = base("").replace(
        "[[rules]]",
        &format!("[[auth.keys]]\nkid = \"k2\"\nsecret = \"{OTHER_SECRET}\"\n\n[[rules]]"),
    );
    let (engine, _) = engine(&toml);
    let c = claims("alice", json!({}));
    for t in [
        hs256(Some("k1"), SECRET, &c),
        hs256(Some("k2"), OTHER_SECRET, &c),
        hs256(None, SECRET, &c),
        hs256(None, OTHER_SECRET, &c),
    ] {
        assert!(engine.authenticate(&format!("Bearer {t}")).is_ok());
    }
    // Each kid selects its key alone.
    let crossed = hs256(Some("k1"), OTHER_SECRET, &c);
    assert_eq!(
        kind_of(&engine, &format!("Bearer {crossed}")),
        ErrorKind::BadSignature
    );
    let unknown = hs256(Some("k3"), SECRET, &c);
    assert_eq!(
        kind_of(&engine, &format!("Bearer {unknown}")),
        ErrorKind::UnknownKey
    );
}

#[test]
fn an_algorithm_outside_the_list_is_refused_even_with_a_valid_signature() {
    let (engine, _) = engine(&base(""));
    let mut header = Header::new(Algorithm::HS512);
    header.kid = Some("k1".into());
    let t = encode(
        &header,
        &claims("alice", json!({})),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode");
    assert_eq!(
        kind_of(&engine, &format!("Bearer {t}")),
        ErrorKind::AlgorithmNotAllowed
    );
}

#[test]
fn invalid_configurations_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("algorithms = []", "auth.algorithms", "list the accepted"),
        (
            "algorithms = [\"none\"]",
            "auth.algorithms[0]",
            "never accepted",
        ),
        (
            "algorithms = [\"HS257\"]",
            "auth.algorithms[0]",
            "unknown algorithm",
        ),
        (
            "algorithms = [\"HS256\"]\nkeys = [{ secret = \"short\" }]",
            "auth.keys[0]",
            "at least 32",
        ),
        (
            "algorithms = [\"HS256\"]\nkeys = [{ secret = \"x\", pem = \"y\" }]",
            "auth.keys[0]",
            "exactly one of",
        ),
        (
            "algorithms = [\"HS256\"]\nkeys = [{ kid = \"a\" }]",
            "auth.keys[0]",
            "none is given",
        ),
        (
            "algorithms = [\"HS256\"]\nkeys = [{ secret_env = \"FLOODWALL_SURELY_UNSET_VARIABLE\" }]",
            "auth.keys[0].secret_env",
            "not set",
        ),
        (
            "algorithms = [\"RS256\"]\nkeys = [{ pem = \"-----BEGIN PRIVATE KEY-----\\nMII=\\n-----END PRIVATE KEY-----\" }]",
            "auth.keys[0].pem",
            "private key",
        ),
        (
            "algorithms = [\"RS256\"]\nkeys = [{ pem = \"hello\" }]",
            "auth.keys[0].pem",
            "not a PEM",
        ),
        (
            "algorithms = [\"RS256\"]\nkeys = [{ secret = \"an-hmac-secret-of-at-least-thirty-two-bytes\" }]",
            "auth.keys[0]",
            "has none of its algorithms",
        ),
        (
            "algorithms = [\"HS256\"]\nkeys = [{ kid = \"a\", secret = \"an-hmac-secret-of-at-least-thirty-two-bytes\" }, { kid = \"a\", secret = \"an-hmac-secret-of-at-least-thirty-two-bytes\" }]",
            "auth.keys[1].kid",
            "duplicate key id",
        ),
        (
            "algorithms = [\"HS256\"]\nkeys = [{ secret = \"an-hmac-secret-of-at-least-thirty-two-bytes\", algorithms = [\"RS256\"] }]",
            "auth.keys[0].algorithms[0]",
            "cannot be verified with an HMAC secret",
        ),
        ("algorithms = [\"HS256\"]", "auth", "no verification key"),
        (
            "algorithms = [\"RS256\"]\njwks = [{ json = \"{}\" }]",
            "auth.jwks[0].json",
            "\"keys\" array",
        ),
        (
            "algorithms = [\"RS256\"]\njwks = [{ file = \"/nonexistent/jwks.json\" }]",
            "auth.jwks[0].file",
            "cannot read",
        ),
        (
            "algorithms = [\"HS256\"]\nkeys = [{ secret = \"an-hmac-secret-of-at-least-thirty-two-bytes\" }]\nroles = [\"admin\"]\nrole_map = { gold = \"premium\" }",
            "auth.role_map.gold",
            "not one of auth.roles",
        ),
        (
            "algorithms = [\"HS256\"]\nkeys = [{ secret = \"an-hmac-secret-of-at-least-thirty-two-bytes\" }]\nrealm = 'a\"b'",
            "auth.realm",
            "printable ASCII",
        ),
        (
            "algorithms = [\"HS256\"]\nkeys = [{ secret = \"an-hmac-secret-of-at-least-thirty-two-bytes\" }]\ncache = { max_entries = 0 }",
            "auth.cache.max_entries",
            "at least 1",
        ),
        (
            "algorithms = [\"HS256\"]\nkeys = [{ secret = \"an-hmac-secret-of-at-least-thirty-two-bytes\" }]\nleeway = \"-1s\"",
            "auth.leeway",
            "negative",
        ),
        (
            "algorithms = [\"HS256\"]\nalgorithm = \"HS256\"",
            "auth.algorithm",
            "unknown field",
        ),
    ];
    for (body, field, words) in cases {
        let e = Engine::from_toml(&format!("[auth]\n{body}\n")).expect_err(body);
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{body}");
        assert_eq!(e.field(), Some(*field), "{body}: {e}");
        assert!(e.message().contains(words), "{body}: {e}");
    }
}

#[test]
fn an_engine_without_auth_says_so() {
    let engine = Engine::from_toml("").expect("empty config");
    let e = engine.authenticate("Bearer x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert_eq!(e.field(), Some("auth"));
}

#[test]
fn authenticate_and_check_limits_by_the_tokens_subject_and_role() {
    let (engine, _) = engine(&base(""));
    let free = format!("Bearer {}", token("bob", json!({})));
    let premium = format!(
        "Bearer {}",
        token("carol", json!({ "realm_access": { "roles": ["gold"] } }))
    );
    // Whatever the request says of subject and role is replaced by the token's.
    let request = Request::new("GET", "/api/orders")
        .subject("mallory")
        .role("admin");
    for expected in [true, true, false] {
        let got = engine.authorize(&free, &request).expect("check");
        assert_eq!(got.identity.subject, "bob");
        assert_eq!(got.decision.allowed(), expected);
    }
    let got = engine.authorize(&premium, &request).expect("check");
    assert_eq!(got.identity.role.as_deref(), Some("premium"));
    assert_eq!(got.decision.remaining(), Some(4));
    // A rejected token consumes nothing.
    let bad = format!(
        "Bearer {}",
        hs256(Some("k1"), OTHER_SECRET, &claims("dave", json!({})))
    );
    assert_eq!(
        engine.authorize(&bad, &request).unwrap_err().kind(),
        ErrorKind::BadSignature
    );
    assert_eq!(engine.key_count(), 2, "bob and carol only");
}

#[test]
fn a_cache_hit_returns_the_same_identity_until_exp_minus_leeway_or_ttl() {
    let (engine, clock) = engine(&base("cache = { max_entries = 1000, ttl = \"5m\" }"));
    let t = format!("Bearer {}", token("alice", json!({ "exp": NOW + 120 })));
    let first = engine.authenticate(&t).expect("verified");
    let second = engine.authenticate(&t).expect("cached");
    assert!(
        Arc::ptr_eq(&first, &second),
        "a hit shares the verified identity"
    );
    assert_eq!(engine.authenticator().expect("auth").cached_tokens(), 1);

    // exp - leeway = NOW + 110: the entry is gone, the token is verified again (and still
    // valid, inside its leeway, but not cached any more).
    clock.set(at(NOW + 110));
    let third = engine
        .authenticate(&t)
        .expect("re-verified inside the leeway");
    assert!(!Arc::ptr_eq(&first, &third));
    let fourth = engine.authenticate(&t).expect("re-verified again");
    assert!(
        !Arc::ptr_eq(&third, &fourth),
        "inside the leeway nothing is cached"
    );
    clock.set(at(NOW + 130));
    assert_eq!(kind_of(&engine, &t), ErrorKind::Expired);

    // The TTL bounds an entry of a long-lived token.
    clock.set(at(NOW));
    let long = format!("Bearer {}", token("bob", json!({ "exp": NOW + 86_400 })));
    let a = engine.authenticate(&long).expect("verified");
    clock.advance(Duration::from_secs(299));
    assert!(Arc::ptr_eq(&a, &engine.authenticate(&long).expect("hit")));
    clock.advance(Duration::from_secs(1));
    assert!(!Arc::ptr_eq(
        &a,
        &engine.authenticate(&long).expect("re-verified")
    ));
}

#[test]
fn the_cache_is_bounded_in_entries_and_bytes() {
    let (engine, _) = engine(&base("cache = { max_entries = 256, max_bytes = 1048576 }"));
    for i in 0..2_000 {
        let t = format!("Bearer {}", token(&format!("user-{i}"), json!({})));
        engine.authenticate(&t).expect("accepted");
    }
    let auth = engine.authenticator().expect("auth");
    assert!(auth.cached_tokens() <= 256, "{}", auth.cached_tokens());
    assert!(auth.cached_tokens() >= 128, "{}", auth.cached_tokens());

    let (engine, _) = self::engine(&base("cache = { max_entries = 100000, max_bytes = 65536 }"));
    for i in 0..2_000 {
        let t = format!(
            "Bearer {}",
            token(&format!("user-{i}"), json!({ "pad": "p".repeat(500) }))
        );
        engine.authenticate(&t).expect("accepted");
    }
    let auth = engine.authenticator().expect("auth");
    assert!(auth.cached_bytes() <= 65_536, "{}", auth.cached_bytes());
    assert!(auth.cached_tokens() >= 10, "{}", auth.cached_tokens());
}

#[test]
fn a_reload_that_removes_a_key_stops_its_cached_tokens() {
    let two_keys = base("cache = {}").replace(
        "[[rules]]",
        &format!("[[auth.keys]]\nkid = \"k2\"\nsecret = \"{OTHER_SECRET}\"\n\n[[rules]]"),
    );
    let (engine, _) = engine(&two_keys);
    let old = format!(
        "Bearer {}",
        hs256(Some("k1"), SECRET, &claims("alice", json!({})))
    );
    let new = format!(
        "Bearer {}",
        hs256(Some("k2"), OTHER_SECRET, &claims("bob", json!({})))
    );
    engine.authenticate(&old).expect("k1 verifies");
    engine.authenticate(&old).expect("k1 cached");

    // Rotate: k1 is retired, k2 stays.
    let mut config: AuthConfig = Config::from_toml(&two_keys)
        .expect("config")
        .auth
        .expect("auth");
    config.keys.retain(|k| k.kid.as_deref() == Some("k2"));
    engine.reload_auth(Some(&config)).expect("reload");
    assert_eq!(kind_of(&engine, &old), ErrorKind::UnknownKey);
    assert!(engine.authenticate(&new).is_ok());

    // A reload that fails keeps the running keys.
    config.algorithms = vec!["none".into()];
    assert!(engine.reload_auth(Some(&config)).is_err());
    assert!(engine.authenticate(&new).is_ok());

    engine.reload_auth(None).expect("auth removed");
    assert_eq!(kind_of(&engine, &new), ErrorKind::InvalidConfig);
}

#[test]
fn pem_keys_and_jwks_from_files_resolve_against_the_config_directory() {
    let dir = std::env::temp_dir().join(format!("floodwall-auth-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("keys")).expect("temp dir");
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/jwt");
    std::fs::copy(
        fixtures.join("keys/ec256-1.pub.pem"),
        dir.join("keys/ec.pem"),
    )
    .expect("copy");
    std::fs::copy(fixtures.join("jwks.json"), dir.join("jwks.json")).expect("copy");
    std::fs::write(
        dir.join("floodwall.toml"),
        "[auth]\nalgorithms = [\"ES256\", \"RS256\", \"EdDSA\"]\nkeys = [{ kid = \"ec\", pem_file = \"keys/ec.pem\" }]\njwks = [{ file = \"jwks.json\" }]\n",
    )
    .expect("write config");
    let engine = Engine::from_file(dir.join("floodwall.toml")).expect("loads");
    assert_eq!(engine.authenticator().expect("auth").key_count(), 4);

    let private = std::fs::read(fixtures.join("keys/ec256-1.key.pem")).expect("key");
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec".into());
    let t = encode(
        &header,
        &json!({ "sub": "eve", "exp": 4_000_000_000u64 }),
        &EncodingKey::from_ec_pem(&private).expect("ec key"),
    )
    .expect("encode");
    assert_eq!(
        engine
            .authenticate(&format!("Bearer {t}"))
            .expect("verifies")
            .subject,
        "eve"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A token whose header and payload are these exact JSON texts, HS256-signed with `SECRET`.
fn hand_made(header: &str, payload: &Value) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .expect("sign");
    format!("Bearer {message}.{signature}")
}

#[test]
fn the_header_must_be_an_object_without_crit() {
    let (engine, _) = engine(&base(""));
    let c = claims("alice", json!({}));
    assert!(
        engine
            .authenticate(&hand_made(r#"{"alg":"HS256","kid":"k1"}"#, &c))
            .is_ok()
    );
    for header in [
        r#"["HS256","k1"]"#,
        r#"{"alg":"HS256","kid":"k1","crit":null}"#,
        r#"{"alg":"HS256","kid":"k1","crit":["exp"]}"#,
        r#"{"alg":"HS256","alg":"HS256","kid":"k1"}"#,
        r#"{"kid":"k1"}"#,
        r#"{"alg":256,"kid":"k1"}"#,
        r#""HS256""#,
    ] {
        assert_eq!(
            kind_of(&engine, &hand_made(header, &c)),
            ErrorKind::MalformedToken,
            "{header}"
        );
    }
}

#[test]
fn an_unknown_kid_is_refused_even_when_kidless_keys_exist() {
    let toml = base("").replace(
        "[[rules]]",
        &format!("[[auth.keys]]\nsecret = \"{OTHER_SECRET}\"\n\n[[rules]]"),
    );
    let (engine, _) = engine(&toml);
    let c = claims("alice", json!({}));
    let kidless = hs256(None, OTHER_SECRET, &c);
    assert!(engine.authenticate(&format!("Bearer {kidless}")).is_ok());
    let named = hs256(Some("nope"), OTHER_SECRET, &c);
    assert_eq!(
        kind_of(&engine, &format!("Bearer {named}")),
        ErrorKind::UnknownKey
    );
}

#[test]
fn jwks_keys_are_used_only_for_signatures_and_oct_keys_need_length() {
    let jwks = |keys: Value| {
        let text = json!({ "keys": keys }).to_string().replace('\'', "");
        format!("[auth]\nalgorithms = [\"HS256\"]\njwks = [{{ json = '{text}' }}]\n")
    };
    let k32 = URL_SAFE_NO_PAD.encode(SECRET);
    let loaded = |keys: Value| {
        Engine::from_toml(&jwks(keys))
            .map(|e| e.authenticator().expect("auth").key_count())
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        loaded(json!([
            { "kty": "oct", "kid": "ok", "k": k32 },
            { "kty": "oct", "kid": "enc", "use": "enc", "k": k32 },
            { "kty": "oct", "kid": "odd-use", "use": "foo", "k": k32 },
            { "kty": "oct", "kid": "ops", "key_ops": ["encrypt", "decrypt"], "k": k32 },
            { "kty": "oct", "kid": "verify", "key_ops": ["verify"], "k": k32 },
            { "kty": "oct", "kid": "oaep", "alg": "RSA-OAEP", "k": k32 },
            { "kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA" },
        ])),
        Ok(2)
    );
    for short in ["", "c2hvcnQ"] {
        let e = loaded(json!([{ "kty": "oct", "kid": "short", "k": short }])).unwrap_err();
        assert!(e.contains("keys[0].k") && e.contains("at least 32"), "{e}");
    }
    let e = loaded(json!([{ "kty": "oct", "use": "enc", "k": k32 }])).unwrap_err();
    assert!(e.contains("no signing key"), "{e}");

    // The JWKS key verifies; the one meant for encryption does not exist.
    let engine = Engine::from_toml(&jwks(json!([
        { "kty": "oct", "kid": "ok", "k": k32 },
        { "kty": "oct", "kid": "enc", "use": "enc", "k": k32 },
    ])))
    .expect("loads")
    .with_clock(ManualClock::new(at(NOW)));
    let c = json!({ "sub": "a", "exp": NOW + 60 });
    assert!(
        engine
            .authenticate(&format!("Bearer {}", hs256(Some("ok"), SECRET, &c)))
            .is_ok()
    );
    assert_eq!(
        kind_of(
            &engine,
            &format!("Bearer {}", hs256(Some("enc"), SECRET, &c))
        ),
        ErrorKind::UnknownKey
    );
}

#[test]
fn the_cache_never_serves_a_token_outside_its_validity() {
    let (engine, _) = engine(&base("cache = {}"));
    let later = format!(
        "Bearer {}",
        token("alice", json!({ "nbf": NOW + 3600, "exp": NOW + 86_400 }))
    );
    assert_eq!(kind_of(&engine, &later), ErrorKind::NotYetValid);
    // Verified (and cached) at an explicit time when it is valid …
    assert!(engine.authenticate_at(&later, at(NOW + 7200)).is_ok());
    // … it is still refused now.
    assert_eq!(kind_of(&engine, &later), ErrorKind::NotYetValid);

    // A request's explicit time dates the decision, not the token's validity.
    let old = format!(
        "Bearer {}",
        token("bob", json!({ "exp": NOW - 3600, "iat": NOW - 7200 }))
    );
    let past = Request::new("GET", "/").at(at(NOW - 5000));
    assert_eq!(
        engine.authorize(&old, &past).unwrap_err().kind(),
        ErrorKind::Expired
    );
}

#[test]
fn huge_and_odd_numeric_dates_are_handled() {
    let (engine, _) = engine(&base(""));
    let far = format!("Bearer {}", token("alice", json!({ "exp": 1e300 })));
    assert!(engine.authenticate(&far).is_ok());
    let negative = format!("Bearer {}", token("alice", json!({ "exp": -1 })));
    assert_eq!(kind_of(&engine, &negative), ErrorKind::Expired);
    let big = format!("Bearer {}", token("alice", json!({ "nbf": u64::MAX })));
    assert_eq!(kind_of(&engine, &big), ErrorKind::NotYetValid);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any Authorization value: never a panic, never an identity, always an auth kind.
    #[test]
    fn arbitrary_authorization_values_are_rejected_cleanly(value in ".{0,400}") {
        let (engine, _) = engine(&base(""));
        let e = engine.authenticate(&value).expect_err("no identity from noise");
        prop_assert!(e.kind().is_auth(), "{e:?}");
        prop_assert!(e.www_authenticate().is_some());
    }

    /// A valid token with one character changed, removed or inserted is refused.
    #[test]
    fn mutated_tokens_are_refused(
        at in any::<prop::sample::Index>(),
        op in 0..3u8,
        ch in prop::sample::select(b"AZaz09-_.=+/ ~".to_vec()),
    ) {
        let (engine, _) = engine(&base(""));
        let good = token("alice", json!({}));
        let mut bytes = good.clone().into_bytes();
        let i = at.index(bytes.len());
        match op {
            0 => bytes[i] = ch,
            1 => { bytes.remove(i); }
            _ => bytes.insert(i, ch),
        }
        let mutated = String::from_utf8(bytes).expect("ascii");
        // Spaces around the token are the header's, not the token's.
        prop_assume!(mutated.trim() != good);
        match engine.authenticate(&format!("Bearer {mutated}")) {
            Ok(identity) => prop_assert!(false, "accepted {mutated} as {identity:?}"),
            Err(e) => prop_assert!(e.kind().is_auth(), "{e:?}"),
        }
    }
}
