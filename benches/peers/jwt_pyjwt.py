#!/usr/bin/env python3
"""Peer benchmark: JWT verification with PyJWT, on tokens from
tests/fixtures/jwt/cases.json.

Keys are loaded once up front (a str secret for HMAC, cryptography public-key
objects for RSA/EC/Ed25519), so each iteration measures `jwt.decode` alone:
split + base64url + JSON + signature + alg/iss/aud/exp/nbf/iat/required-claim
checks with the fixtures' leeway.

Clock: PyJWT has no clock option, and the fixtures are pinned to
cases.json "now" (2027-01-15). Rather than a huge leeway (which would change
what is checked), the `datetime` that jwt.api_jwt reads the time from is
replaced by a subclass whose now() returns that fixed instant. It costs about
the same as the real datetime.now(), and every claim check still runs.

Bounded: per alg, warm up for 0.3 s, then measure until 1 s (or the first
argument, in seconds) or 2,000,000 iterations, whichever comes first.

Usage: .venv/bin/python benches/peers/jwt_pyjwt.py [measure_seconds]
Output: one JSON line per alg on stdout.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import jwt
import jwt.api_jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "jwt"
WARMUP_S = 0.3
MEASURE_S = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
MAX_ITERS = 2_000_000
CHECK_EVERY = 64  # iterations between clock reads

# (alg, case name in cases.json, kid in keys.json)
BENCHES = [
    ("HS256", "pyjwt_hs256_hmac_1", "hmac-1"),
    ("RS256", "pyjwt_rs256_rsa_1", "rsa-1"),
    ("ES256", "pyjwt_es256_ec256_1", "ec256-1"),
    ("EdDSA", "pyjwt_eddsa_ed_1", "ed-1"),
]


def freeze_clock(now: int) -> None:
    fixed = datetime.fromtimestamp(now, tz=timezone.utc)

    class FrozenDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return fixed

    jwt.api_jwt.datetime = FrozenDatetime


def main() -> None:
    doc = json.loads((FIXTURES / "cases.json").read_text())
    manifest = {k["kid"]: k for k in json.loads((FIXTURES / "keys.json").read_text())}
    cfg = doc["config"]
    freeze_clock(doc["now"])
    cases = {c["name"]: c for c in doc["cases"]}
    required = ["exp", cfg["subject_claim"], "iss", "aud", *cfg["required_claims"]]

    for alg, case_name, kid in BENCHES:
        case = cases[case_name]
        token = case["token"]
        entry = manifest[kid]
        if entry["kind"] == "hmac":
            key = entry["secret"]
        else:
            key = load_pem_public_key((FIXTURES / entry["pem"]).read_bytes())
        kwargs = dict(algorithms=[alg], audience=cfg["audiences"], issuer=cfg["issuers"],
                      leeway=cfg["leeway_seconds"], options={"require": required})
        decode = jwt.decode

        claims = decode(token, key, **kwargs)  # correctness once, outside the timing
        assert claims["sub"] == case["expect"]["ok"]["subject"], claims

        perf = time.perf_counter_ns
        warm_end = perf() + int(WARMUP_S * 1e9)
        while perf() < warm_end:
            for _ in range(CHECK_EVERY):
                decode(token, key, **kwargs)

        budget = int(MEASURE_S * 1e9)
        iters = 0
        start = perf()
        elapsed = 0
        while iters < MAX_ITERS:
            n = min(CHECK_EVERY, MAX_ITERS - iters)
            for _ in range(n):
                decode(token, key, **kwargs)
            iters += n
            elapsed = perf() - start
            if elapsed >= budget:
                break
        print(json.dumps({"peer": "pyjwt", "alg": alg,
                          "ns_per_op": round(elapsed / iters), "iters": iters,
                          "version": jwt.__version__,
                          "python": platform.python_version()}, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
