#!/usr/bin/env python3
"""floodwall's Python binding beside the libraries a Python service would use instead,
measured in the same run on the same machine, printed as one table.

Rows (each: floodwall's calls per second, the peer's, the ratio, and the issue's target):

- memory store, one key: ``engine.check(subject=key)`` vs ``limits``'
  ``FixedWindowRateLimiter(MemoryStorage()).hit(item, key)``, both admitting (limit 10⁹/min);
- memory store, 100,000 keys: the same, the key cycling through 100,000 subjects;
- Redis, one caller: the same two on a local ``redis-server`` started for the run
  (``limits``' ``RedisStorage``, redis-py);
- HS256 verification: ``engine.authenticate("Bearer …")`` with no token cache vs
  PyJWT's ``jwt.decode(token, secret, algorithms=["HS256"])``, both checking signature and
  ``exp``; and the same token through floodwall's cache, for reference.

Each row runs both sides in alternation for ``--rounds`` rounds (default 5) of a fixed number
of calls, and reports the median round. Bounded: at most ``calls × rounds`` calls per side,
and every round also stops after ``--max-seconds`` seconds.

Usage: python bench/compare.py [--quick] [--rounds N] [--json]
(``make bench-python`` runs it with the wheel installed in .venv; ``--quick`` is a smoke run
``make test`` does: tiny counts, no targets judged.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import jwt  # noqa: E402  (PyJWT)
from limits import parse, storage, strategies  # noqa: E402

import floodwall  # noqa: E402
from redis_server import RedisServer  # noqa: E402

SECRET = "floodwall-bench-secret-0123456789-abcdefghijklmnop"
KEYS = 100_000


def rule(limit: int = 1_000_000_000) -> dict:
    return {"name": "per-user", "key": "subject", "algorithm": "fixed_window",
            "limit": limit, "window": "1m"}


def time_calls(fn: Callable[[int], None], calls: int, max_seconds: float) -> float:
    """Runs fn(i) for i in range(calls) (in chunks, stopping early after max_seconds);
    answers calls per second."""
    done = 0
    chunk = max(1, min(calls, 10_000))
    start = time.perf_counter()
    while done < calls:
        n = min(chunk, calls - done)
        fn_range(fn, done, n)
        done += n
        if time.perf_counter() - start > max_seconds:
            break
    return done / (time.perf_counter() - start)


def fn_range(fn: Callable[[int], None], first: int, n: int) -> None:
    for i in range(first, first + n):
        fn(i)


def compare(name: str, ours: Callable[[int], None], peer: Callable[[int], None],
            calls: int, rounds: int, max_seconds: float,
            target: Optional[float], peer_name: str) -> dict:
    ours(0)
    peer(0)
    a, b = [], []
    for _ in range(rounds):
        a.append(time_calls(ours, calls, max_seconds))
        b.append(time_calls(peer, calls, max_seconds))
    ours_cps, peer_cps = statistics.median(a), statistics.median(b)
    return {"row": name, "floodwall_per_s": ours_cps, "peer": peer_name,
            "peer_per_s": peer_cps, "ratio": ours_cps / peer_cps, "target": target}


def memory_rows(calls: int, rounds: int, max_seconds: float) -> list[dict]:
    engine = floodwall.Engine.from_dict({"rules": [rule()]})
    limiter = strategies.FixedWindowRateLimiter(storage.MemoryStorage())
    item = parse("1000000000/minute")
    keys = [f"user-{i}" for i in range(KEYS)]
    # Methods are looked up once on both sides, so each call measures the call itself.
    check, hit = engine.check, limiter.hit
    rows = [compare("check, memory store, 1 key",
                    lambda i: check(subject="alice"),
                    lambda i: hit(item, "alice"),
                    calls, rounds, max_seconds, 5.0, "limits FixedWindow + MemoryStorage")]
    # Touch every key once on both sides so that both measure a table of 100,000 keys.
    for k in keys:
        check(subject=k)
        hit(item, k)
    rows.append(compare("check, memory store, 100,000 keys",
                        lambda i: check(subject=keys[i % KEYS]),
                        lambda i: hit(item, keys[i % KEYS]),
                        calls, rounds, max_seconds, 10.0,
                        "limits FixedWindow + MemoryStorage"))
    return rows


def redis_rows(calls: int, rounds: int, max_seconds: float) -> list[dict]:
    server = RedisServer()
    try:
        engine = floodwall.Engine.from_dict({
            "store": {"kind": "redis", "url": server.url, "prefix": "fwbench:",
                      "timeout": "1s"},
            "rules": [rule()],
        })
        limiter = strategies.FixedWindowRateLimiter(storage.RedisStorage(server.url))
        item = parse("1000000000/minute")
        decision = engine.check(subject="alice")
        assert decision.store == "redis", decision
        check, hit = engine.check, limiter.hit
        return [compare("check, Redis, 1 key, 1 caller",
                        lambda i: check(subject="alice"),
                        lambda i: hit(item, "alice"),
                        calls, rounds, max_seconds, None,
                        "limits FixedWindow + RedisStorage")]
    finally:
        server.stop()


def jwt_rows(calls: int, rounds: int, max_seconds: float) -> list[dict]:
    claims = {"sub": "alice", "role": "premium", "exp": int(time.time()) + 86_400}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    header = f"Bearer {token}"
    auth = {"algorithms": ["HS256"], "keys": [{"secret": SECRET}], "role_claim": "role"}
    verify = floodwall.Engine.from_dict({"auth": auth})
    cached = floodwall.Engine.from_dict({"auth": {**auth, "cache": {"max_entries": 1000}}})
    assert verify.authenticate(header).subject == "alice"
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["sub"] == "alice"
    decode, authenticate, authenticate_cached = jwt.decode, verify.authenticate, cached.authenticate
    peer = lambda i: decode(token, SECRET, algorithms=["HS256"])  # noqa: E731
    return [
        compare("HS256 verification", lambda i: authenticate(header), peer,
                calls, rounds, max_seconds, 5.0, "PyJWT jwt.decode"),
        compare("HS256, floodwall's token cache", lambda i: authenticate_cached(header), peer,
                calls, rounds, max_seconds, None, "PyJWT jwt.decode"),
    ]


def fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f} M/s" if x >= 1e6 else f"{x / 1e3:.1f} k/s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny counts, no verdict")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    parser.add_argument("--only", choices=["memory", "redis", "jwt"], action="append",
                        help="run only these groups of rows (repeatable)")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    memory_calls, redis_calls, jwt_calls = (
        (2_000, 200, 200) if args.quick else (200_000, 20_000, 20_000))
    max_seconds = 0.5 if args.quick else 8.0

    groups = args.only or ["memory", "redis", "jwt"]
    rows = []
    if "memory" in groups:
        rows += memory_rows(memory_calls, rounds, max_seconds)
    if "redis" in groups:
        rows += redis_rows(redis_calls, rounds, max_seconds)
    if "jwt" in groups:
        rows += jwt_rows(jwt_calls, rounds, max_seconds)

    print(f"floodwall {floodwall.__version__} (Python binding) vs peers, same run — "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"median of {rounds} round(s)")
    print()
    print("| workload | floodwall | peer | peer/s | ratio | target |")
    print("|---|---|---|---|---|---|")
    failed = []
    for r in rows:
        target = r["target"]
        verdict = ""
        if target is not None and args.quick:
            verdict = f"≥ {target:g}× (not judged in --quick)"
        elif target is not None:
            ok = r["ratio"] >= target
            verdict = f"≥ {target:g}× {'met' if ok else 'NOT met'}"
            if not ok:
                failed.append(r["row"])
        print(f"| {r['row']} | {fmt_rate(r['floodwall_per_s'])} | {r['peer']} | "
              f"{fmt_rate(r['peer_per_s'])} | {r['ratio']:.1f}× | {verdict} |")
    if args.json:
        print(json.dumps(rows, indent=2))
    if args.quick:
        return 0
    if failed:
        print(f"\ntargets not met: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
