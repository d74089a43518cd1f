//! JWT verification through `Engine::authenticate_at`: HS256, RS256 (2048-bit), ES256 and
//! EdDSA tokens with no cache, and a verified-token cache hit.
//!
//! The tokens and keys are the fixtures' (`tests/fixtures/jwt`, minted by PyJWT), the same ones
//! the peer scripts in `benches/peers/` verify with node's jsonwebtoken and PyJWT; the claim
//! checks are the same too (alg, iss, aud, exp, nbf, iat, leeway 30 s, at the fixtures' clock).
//! `make bench-jwt` runs this and the peers and prints the comparison table.
//!
//! Run: `cargo bench -p floodwall-benches --bench auth` (add `-- --quick --noplot` for a fast
//! pass).

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use floodwall::{Config, Engine, Timestamp};

/// The bench's cases: (label, fixture case name).
const TOKENS: [(&str, &str); 4] = [
    ("HS256", "pyjwt_hs256_hmac_1"),
    ("RS256", "pyjwt_rs256_rsa_1"),
    ("ES256", "pyjwt_es256_ec256_1"),
    ("EdDSA", "pyjwt_eddsa_ed_1"),
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/jwt")
}

fn engine(cache: bool) -> Engine {
    let toml = format!(
        r#"
[auth]
algorithms = ["HS256", "RS256", "ES256", "EdDSA"]
issuer = ["https://auth.floodwall.test", "https://login.floodwall.test"]
audience = ["floodwall-api", "floodwall-admin"]
leeway = "30s"
required_claims = ["tenant"]
role_claim = "realm_access.roles"
roles = ["admin", "premium", "free"]
role_map = {{ gold = "premium", staff = "admin" }}
default_role = "free"
{cache}

[[auth.keys]]
kid = "hmac-1"
secret = "fw-test-hmac-1-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCD"

[[auth.keys]]
kid = "rsa-1"
pem_file = "keys/rsa-1.pub.pem"

[[auth.keys]]
kid = "ec256-1"
pem_file = "keys/ec256-1.pub.pem"

[[auth.keys]]
kid = "ed-1"
pem_file = "keys/ed-1.pub.pem"
"#,
        cache = if cache { "cache = {}" } else { "" }
    );
    let mut config = Config::from_toml(&toml).expect("bench config");
    config.base_dir = Some(fixtures());
    Engine::from_config(config).expect("bench engine")
}

/// The fixtures' clock and the `Bearer` value of each bench token.
fn tokens() -> (Timestamp, Vec<(&'static str, String)>) {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).expect("cases.json");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("cases.json parses");
    let now = Timestamp::from_micros(doc["now"].as_u64().expect("now") * 1_000_000);
    let cases = doc["cases"].as_array().expect("cases");
    let tokens = TOKENS
        .iter()
        .map(|&(label, name)| {
            let case = cases
                .iter()
                .find(|c| c["name"] == name)
                .unwrap_or_else(|| panic!("no fixture {name}"));
            let token = case["token"].as_str().expect("token");
            (label, format!("Bearer {token}"))
        })
        .collect();
    (now, tokens)
}

fn verify(c: &mut Criterion) {
    let (now, tokens) = tokens();
    let uncached = engine(false);
    let cached = engine(true);
    let mut group = c.benchmark_group("jwt");
    for (label, bearer) in &tokens {
        let identity = uncached
            .authenticate_at(bearer, now)
            .expect("fixture verifies");
        assert!(identity.subject.starts_with("user-"));
        group.bench_function(BenchmarkId::new("verify", label), |b| {
            b.iter(|| black_box(uncached.authenticate_at(black_box(bearer), now)).is_ok())
        });
    }
    let (_, hs256) = &tokens[0];
    cached.authenticate_at(hs256, now).expect("fills the cache");
    group.bench_function(BenchmarkId::new("cache_hit", "HS256"), |b| {
        b.iter(|| black_box(cached.authenticate_at(black_box(hs256), now)).is_ok())
    });
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
