"""Mints the bearer tokens of the HTTP conformance suite (tokens.json) with PyJWT.

Run from the repository root: `python3 tests/http/make_tokens.py` (PyJWT 2.15.1, as pinned in
bindings-python/requirements-dev.txt). Every token but those meant to be refused for their
times expires in 2100, so the committed file stays valid; each refused one has exactly one
thing wrong with it. The secrets are test-only and public.
"""

import json
from pathlib import Path

import jwt

SECRET = "floodwall-http-conformance-secret-0123456789"
OTHER = "a-different-secret-that-forges-tokens-0123"
ISSUER = "https://issuer.test"
AUDIENCE = "api"
EXP = 4102444800  # 2100-01-01
PAST = 946684800  # 2000-01-01


def claims(sub, role=None, **extra):
    c = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": EXP}
    if role is not None:
        c["role"] = role
    c.update(extra)
    return c


def hs256(c, secret=SECRET, kid="k1", alg="HS256"):
    return jwt.encode(c, secret, algorithm=alg, headers={"kid": kid})


tokens = {
    "alice": hs256(claims("alice", "free")),
    "bob": hs256(claims("bob", "free")),
    "carol": hs256(claims("carol", "premium")),
    "ops": hs256(claims("ops-bot", "internal")),
    "mallory": hs256(claims("mallory", "free")),
    "nora": hs256(claims("nora")),
    "expired": hs256(claims("alice", "free", exp=PAST)),
    "not_yet_valid": hs256(claims("alice", "free", nbf=EXP)),
    "bad_signature": hs256(claims("alice", "free"), secret=OTHER),
    "wrong_issuer": hs256(dict(claims("alice", "free"), iss="https://elsewhere.test")),
    "wrong_audience": hs256(dict(claims("alice", "free"), aud="other")),
    "missing_claim": hs256({k: v for k, v in claims("alice", "free").items() if k != "sub"}),
    "invalid_claim": hs256(claims("alice", 42)),
    "unknown_key": hs256(claims("alice", "free"), kid="k9"),
    "algorithm_not_allowed": hs256(claims("alice", "free"), alg="HS512"),
    "malformed_token": "not-a-jwt.at-all",
    "token_too_large": hs256(claims("alice", "free", padding="x" * 1200)),
}

auth = {
    "algorithms": ["HS256"],
    "keys": [{"kid": "k1", "secret": SECRET}],
    "issuer": [ISSUER],
    "audience": [AUDIENCE],
    "role_claim": "role",
    "default_role": "free",
    "max_token_bytes": 1024,
}

out = Path(__file__).with_name("tokens.json")
out.write_text(
    json.dumps(
        {
            "description": "bearer tokens of the HTTP conformance suite, by name, and the [auth] "
            "section that verifies them (\"auth\": \"suite\" in a case's config); minted by "
            "make_tokens.py with PyJWT " + jwt.__version__,
            "auth": auth,
            "tokens": tokens,
        },
        indent=2,
    )
    + "\n"
)
print(f"wrote {out}")
