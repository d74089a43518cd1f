#!/usr/bin/env python3
"""floodwall's Python binding beside the libraries a Python service would use instead,
measured in the same run on the same machine, printed as one table (or, with ``--json``, one
JSON document on the last line of stdout, which ``benches/compare/run.py`` merges with the
other languages' parts).

Groups of rows (floodwall vs peer, same keys, same limits, same concurrency):

- ``memory``: ``engine.check(subject=key)`` vs ``limits``'
  ``FixedWindowRateLimiter(MemoryStorage()).hit(item, key)``, both admitting (10⁹ a minute),
  1 key and 100,000 keys, in 1 and 2 processes (each process holds its own engine and its own
  limiter, as each worker of a pre-fork server would);
- ``redis``: the same two on one key of a local ``redis-server`` (``limits``' ``RedisStorage``,
  redis-py), 1 and 64 threads calling at once: throughput, p50 and p99 per call;
- ``jwt``: ``engine.authenticate("Bearer …")`` with no token cache vs PyJWT's ``jwt.decode``
  with a pre-parsed key, HS256 / RS256 (2048-bit) / ES256, both checking signature, alg, iss,
  aud, exp and the required claims on the same token, minted for the run with the keys of
  ``tests/fixtures/jwt``;
- ``race``: correctness beside speed — 4 processes race on one Redis key with limit N, each
  trying N times: how many floodwall and ``limits`` admitted (exact is N).

Each row runs both sides in alternation for ``--rounds`` rounds (default 5) and reports the
median round. Bounded: every round stops after a fixed number of calls or a fixed time,
whichever comes first.

Usage: python bench/compare.py [--quick] [--rounds N] [--only GROUP] [--redis URL] [--json]
Without ``--redis``, a redis-server of its own is started on a free 127.0.0.1 port and stopped.
(``make bench-python`` runs it with the release wheel; ``make python-test`` runs ``--quick``,
a smoke run with tiny counts and no targets judged; ``make compare`` runs it through
benches/compare/run.py.)
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parents[1] / "tests" / "fixtures" / "jwt"
sys.path.insert(0, str(HERE.parent / "tests"))

import jwt  # noqa: E402  (PyJWT)
from cryptography.hazmat.primitives.serialization import load_pem_public_key  # noqa: E402
from limits import parse, storage, strategies  # noqa: E402

import floodwall  # noqa: E402
from redis_server import RedisServer  # noqa: E402

SECRET = "floodwall-bench-secret-0123456789-abcdefghijklmnop"
KEYS = 100_000
GROUPS = ["memory", "redis", "jwt", "race"]


def rule(limit: int = 1_000_000_000, window: str = "1m") -> dict:
    return {"name": "per-user", "key": "subject", "algorithm": "fixed_window",
            "limit": limit, "window": window}


def time_calls(fn: Callable[[int], object], calls: int, max_seconds: float) -> tuple[int, float]:
    """Runs fn(i) for i in range(calls), in chunks, stopping early after max_seconds;
    answers (calls done, seconds)."""
    done = 0
    chunk = max(1, min(calls, 2_000))
    start = time.perf_counter()
    while done < calls:
        n = min(chunk, calls - done)
        for i in range(done, done + n):
            fn(i)
        done += n
        if time.perf_counter() - start > max_seconds:
            break
    return done, time.perf_counter() - start


def row(group: str, workload: str, unit: str, ours: dict, theirs: dict, **extra: Any) -> dict:
    """A row of the shared schema (benches/compare/run.py reads it)."""
    ratio = ours["value"] / theirs["value"] if theirs["value"] else None
    return {"group": group, "workload": workload, "lang": "Python", "unit": unit,
            "floodwall": ours, "peer": theirs, "ratio": ratio, **extra}


# --- worker processes ------------------------------------------------------------------------


def _sides(kind: str, params: dict) -> dict[str, Callable[[int], object]]:
    """The two sides of a worker process: floodwall's call and the peer's, keyed by name."""
    if kind == "memory":
        nkeys = params["keys"]
        keys = ["alice"] if nkeys == 1 else [f"user-{i}" for i in range(nkeys)]
        engine = floodwall.Engine.from_dict({"rules": [rule()]})
        limiter = strategies.FixedWindowRateLimiter(storage.MemoryStorage())
        item = parse("1000000000/minute")
        check, hit = engine.check, limiter.hit
        # Touch every key once on both sides so that both measure a table of that size.
        for k in keys:
            check(subject=k)
            hit(item, k)
        return {"floodwall": lambda i: check(subject=keys[i % nkeys]),
                "peer": lambda i: hit(item, keys[i % nkeys])}
    if kind == "race":
        limit, url = params["limit"], params["url"]
        if params["impl"] == "floodwall":
            engine = floodwall.Engine.from_dict({
                "store": {"kind": "redis", "url": url, "prefix": "fwpyrace:", "timeout": "2s",
                          "on_error": "deny"},
                "rules": [rule(limit, "1h")],
            })

            def attempt(key: str) -> str:
                d = engine.check(subject=key)
                if d.store != "redis":
                    return "error"
                return "admitted" if d.allowed else "denied"
        else:
            limiter = strategies.FixedWindowRateLimiter(storage.RedisStorage(url))
            item = parse(f"{limit}/hour")

            def attempt(key: str) -> str:
                return "admitted" if limiter.hit(item, key) else "denied"
        attempt(f"{params['key']}-warm-{os.getpid()}")  # connects before the start
        return {"race": attempt}  # type: ignore[dict-item]
    raise ValueError(kind)


def _worker(conn: Any, kind: str, params: dict) -> None:
    """A worker process: builds its sides, says ready, then runs what it is told."""
    sides = _sides(kind, params)
    conn.send("ready")
    while True:
        command = conn.recv()
        if command["op"] == "exit":
            return
        if command["op"] == "run":
            conn.send(time_calls(sides[command["side"]], command["calls"], command["max_seconds"]))
        elif command["op"] == "race":
            counts = {"admitted": 0, "denied": 0, "error": 0}
            deadline = time.monotonic() + 60
            attempt = sides["race"]
            for _ in range(command["tries"]):
                if time.monotonic() > deadline:
                    break
                try:
                    counts[str(attempt(command["key"]))] += 1
                except Exception:  # noqa: BLE001  (a failed attempt is counted, not fatal)
                    counts["error"] += 1
            conn.send(counts)


class Workers:
    """``n`` worker processes of one kind, started together and told the same thing at once."""

    def __init__(self, n: int, kind: str, params: dict) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns, self.procs = [], []
        for _ in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, kind, params), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        for conn in self.conns:
            if not conn.poll(120):
                raise RuntimeError(f"a {kind} worker did not start")
            assert conn.recv() == "ready"

    def ask(self, command: dict, timeout: float = 120) -> list:
        for conn in self.conns:
            conn.send(command)
        replies = []
        for conn in self.conns:
            if not conn.poll(timeout):
                raise RuntimeError(f"a worker did not answer {command['op']}")
            replies.append(conn.recv())
        return replies

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send({"op": "exit"})
            except OSError:
                pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()


# --- the groups ------------------------------------------------------------------------------


def memory_rows(calls: int, rounds: int, max_seconds: float) -> list[dict]:
    rows = []
    for nkeys in (1, KEYS):
        for processes in (1, 2):
            workers = Workers(processes, "memory", {"keys": nkeys})
            try:
                def run(side: str, n: int, seconds: float) -> float:
                    replies = workers.ask({"op": "run", "side": side, "calls": n,
                                           "max_seconds": seconds})
                    return sum(done / secs for done, secs in replies)
                run("floodwall", calls // 10, max_seconds / 4)  # warm-up, not recorded
                run("peer", calls // 10, max_seconds / 4)
                a, b = [], []
                for _ in range(rounds):
                    a.append(run("floodwall", calls, max_seconds))
                    b.append(run("peer", calls, max_seconds))
            finally:
                workers.close()
            target = {(1, 1): 5.0, (KEYS, 1): 10.0}.get((nkeys, processes))
            rows.append(row(
                "memory",
                f"in-process decision, {'1 key' if nkeys == 1 else '100,000 keys'}, "
                f"{processes} {'process' if processes == 1 else 'processes'}",
                "decisions/s",
                {"name": "check", "value": statistics.median(a)},
                {"name": "limits FixedWindow + MemoryStorage", "value": statistics.median(b)},
                target=target))
    return rows


def concurrent(call: Callable[[], object], total: int, threads: int,
               max_seconds: float) -> dict:
    """Throughput and latency percentiles of up to ``total`` calls made by ``threads``
    threads at once (each call timed on its own)."""
    counter = itertools.count()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    start = time.perf_counter()
    deadline = start + max_seconds
    clock = time.perf_counter

    def lane(mine: list[float]) -> None:
        while next(counter) < total and clock() < deadline:
            t = clock()
            call()
            mine.append(clock() - t)

    pool = [threading.Thread(target=lane, args=(latencies[t],)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    seconds = time.perf_counter() - start
    every = sorted(itertools.chain.from_iterable(latencies))
    n = len(every)
    return {"per_s": n / seconds, "p50_ms": every[n // 2] * 1e3,
            "p99_ms": every[min(n - 1, int(n * 0.99))] * 1e3}


def redis_rows(url: str, calls: tuple[int, int], rounds: int, max_seconds: float) -> list[dict]:
    engine = floodwall.Engine.from_dict({
        "store": {"kind": "redis", "url": url, "prefix": "fwbench:", "timeout": "1s",
                  "on_error": "deny"},
        "rules": [rule()],
    })
    limiter = strategies.FixedWindowRateLimiter(storage.RedisStorage(url))
    item = parse("1000000000/minute")
    decision = engine.check(subject="alice")
    assert decision.store == "redis", decision
    check, hit = engine.check, limiter.hit

    def ours() -> None:
        if not check(subject="alice").allowed:
            raise RuntimeError("floodwall denied")

    def theirs() -> None:
        if not hit(item, "alice"):
            raise RuntimeError("limits denied")

    rows = []
    for threads, total in zip((1, 64), calls):
        concurrent(ours, total // 10, threads, max_seconds / 4)  # warm-up (and connections)
        concurrent(theirs, total // 10, threads, max_seconds / 4)
        a, b = [], []
        for _ in range(rounds):
            a.append(concurrent(ours, total, threads, max_seconds))
            b.append(concurrent(theirs, total, threads, max_seconds))
        pick = lambda xs: next(  # noqa: E731
            x for x in xs if x["per_s"] == statistics.median_low([y["per_s"] for y in xs]))
        x, y = pick(a), pick(b)
        rows.append(row(
            "redis", f"Redis decision, 1 key, concurrency {threads}", "decisions/s",
            {"name": f"check ({threads} {'thread' if threads == 1 else 'threads'})",
             "value": x["per_s"], "p50_ms": x["p50_ms"], "p99_ms": x["p99_ms"]},
            {"name": "limits FixedWindow + RedisStorage (redis-py)",
             "value": y["per_s"], "p50_ms": y["p50_ms"], "p99_ms": y["p99_ms"]},
            target=None))
    return rows


def jwt_cases() -> tuple[list[dict], dict]:
    """A token per algorithm, minted now with the fixtures' keys (RSA 2048, P-256) and claims;
    floodwall's auth configuration and PyJWT's arguments for the same checks."""
    def pem(name: str) -> str:
        return (FIXTURES / "keys" / name).read_text()
    issuer, audience = "https://auth.floodwall.test", "floodwall-api"
    cases = [
        {"alg": "HS256", "kid": "hmac", "sign": SECRET, "verify": SECRET,
         "key": {"kid": "hmac", "secret": SECRET}},
        {"alg": "RS256", "kid": "rsa-1", "sign": pem("rsa-1.key.pem"),
         "verify": load_pem_public_key(pem("rsa-1.pub.pem").encode()),
         "key": {"kid": "rsa-1", "pem": pem("rsa-1.pub.pem")}},
        {"alg": "ES256", "kid": "ec256-1", "sign": pem("ec256-1.key.pem"),
         "verify": load_pem_public_key(pem("ec256-1.pub.pem").encode()),
         "key": {"kid": "ec256-1", "pem": pem("ec256-1.pub.pem")}},
    ]
    auth = {"algorithms": [c["alg"] for c in cases], "keys": [c["key"] for c in cases],
            "issuer": [issuer], "audience": [audience], "leeway": "30s",
            "required_claims": ["tenant"], "role_claim": "realm_access.roles"}
    now = int(time.time())
    claims = {"sub": "alice", "tenant": "t-1", "realm_access": {"roles": ["premium"]},
              "iss": issuer, "aud": audience, "iat": now, "exp": now + 86_400}
    for c in cases:
        c["token"] = jwt.encode(claims, c["sign"], algorithm=c["alg"],
                                headers={"kid": c["kid"]})
        c["kwargs"] = {"algorithms": [c["alg"]], "issuer": issuer, "audience": audience,
                       "leeway": 30,
                       "options": {"require": ["exp", "sub", "iss", "aud", "tenant"]}}
    return cases, auth


def jwt_rows(calls: int, rounds: int, max_seconds: float) -> list[dict]:
    cases, auth = jwt_cases()
    engine = floodwall.Engine.from_dict({"auth": auth})
    authenticate, decode = engine.authenticate, jwt.decode
    rows = []
    for c in cases:
        header, token, key, kwargs = f"Bearer {c['token']}", c["token"], c["verify"], c["kwargs"]
        assert authenticate(header).subject == "alice"
        assert decode(token, key, **kwargs)["sub"] == "alice"
        ours = lambda i: authenticate(header)  # noqa: E731
        theirs = lambda i: decode(token, key, **kwargs)  # noqa: E731
        time_calls(ours, calls // 10, max_seconds / 4)
        time_calls(theirs, calls // 10, max_seconds / 4)
        a, b = [], []
        for _ in range(rounds):
            done, secs = time_calls(ours, calls, max_seconds)
            a.append(done / secs)
            done, secs = time_calls(theirs, calls, max_seconds)
            b.append(done / secs)
        rows.append(row("jwt", f"JWT verification, {c['alg']}", "verifications/s",
                        {"name": "authenticate (no cache)", "value": statistics.median(a)},
                        {"name": "PyJWT jwt.decode, pre-parsed key",
                         "value": statistics.median(b)},
                        target=5.0 if c["alg"] == "HS256" else None))
    return rows


def race(impl: str, url: str, limit: int, processes: int) -> dict:
    """``processes`` processes of ``impl`` racing on one fresh key: how many were admitted."""
    for attempt in range(2):
        key = f"race-{impl}-{os.getpid()}-{time.time_ns()}"
        workers = Workers(processes, "race", {"impl": impl, "url": url, "limit": limit,
                                              "key": key})
        try:
            started = time.time()
            counts = workers.ask({"op": "race", "tries": limit, "key": key})
        finally:
            workers.close()
        # floodwall's fixed windows are aligned to the clock (limits' start at the first hit):
        # a race across an hour's boundary would rightly admit twice. Run it again then.
        if impl == "floodwall" and int(started // 3600) != int(time.time() // 3600):
            continue
        total = {k: sum(c[k] for c in counts) for k in ("admitted", "denied", "error")}
        return {**total, "attempts": limit * processes}
    raise RuntimeError("the race crossed a window boundary twice")


def race_rows(url: str, limit: int, processes: int = 4) -> list[dict]:
    ours = race("floodwall", url, limit, processes)
    theirs = race("limits", url, limit, processes)
    return [row("race",
                f"Redis race: {processes} processes × {limit} tries on one key, limit {limit}",
                "admitted",
                {"name": "check", "value": ours["admitted"], "errors": ours["error"]},
                {"name": "limits FixedWindow + RedisStorage (redis-py)",
                 "value": theirs["admitted"], "errors": theirs["error"]},
                limit=limit, attempts=ours["attempts"], ratio=None)]


# --- output ----------------------------------------------------------------------------------


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f} M/s"
    return f"{x / 1e3:.1f} k/s" if x >= 1e3 else f"{x:.0f}/s"


def figure(r: dict, side: dict) -> str:
    if r["unit"] == "admitted":
        over = side["value"] - r["limit"]
        return f"{side['value']} of {r['attempts']} admitted ({over:+d})"
    text = fmt_rate(side["value"])
    if "p99_ms" in side:
        text += f" (p50 {side['p50_ms']:.3f} ms, p99 {side['p99_ms']:.3f} ms)"
    return text


def versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in ("limits", "redis", "PyJWT", "cryptography")}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny counts, no verdict")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (meta and rows) instead of the table")
    parser.add_argument("--only", choices=GROUPS, action="append",
                        help="run only these groups of rows (repeatable)")
    parser.add_argument("--redis", help="use this Redis (redis://127.0.0.1:PORT) instead of "
                                        "starting one")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    if args.quick:
        memory_calls, redis_calls, jwt_calls, limit, max_seconds = 5_000, (200, 1_000), 200, 100, 0.1
    else:
        memory_calls, redis_calls, jwt_calls, limit, max_seconds = (
            1_000_000, (4_000, 20_000), 100_000, 1_000, 0.5)

    groups = args.only or GROUPS
    started = time.perf_counter()
    server = None
    url = args.redis
    if url is None and ({"redis", "race"} & set(groups)):
        server = RedisServer()
        url = server.url
    rows: list[dict] = []
    try:
        if "memory" in groups:
            rows += memory_rows(memory_calls, rounds, max_seconds)
        if "redis" in groups:
            rows += redis_rows(str(url), redis_calls, rounds, max_seconds * 2)
        if "jwt" in groups:
            rows += jwt_rows(jwt_calls, rounds, max_seconds)
        if "race" in groups:
            rows += race_rows(str(url), limit)
    finally:
        if server is not None:
            server.stop()

    if args.json:
        meta = {"lang": "Python", "runtime": f"Python {platform.python_version()}",
                "floodwall": floodwall.__version__, "versions": versions(), "rounds": rounds,
                "quick": args.quick, "seconds": time.perf_counter() - started}
        print(json.dumps({"meta": meta, "rows": rows}))
        return 0

    print(f"floodwall {floodwall.__version__} (Python binding) vs peers, same run — "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"median of {rounds} round(s)")
    print()
    print("| workload | floodwall | peer | peer figure | floodwall / peer | target |")
    print("|---|---|---|---|---|---|")
    failed = []
    for r in rows:
        target = r.get("target")
        verdict = ""
        if target is not None and args.quick:
            verdict = f"≥ {target:g}× (not judged in --quick)"
        elif target is not None:
            ok = r["ratio"] >= target
            verdict = f"≥ {target:g}× {'met' if ok else 'NOT met'}"
            if not ok:
                failed.append(r["workload"])
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.1f}×"
        print(f"| {r['workload']} | {figure(r, r['floodwall'])} | {r['peer']['name']} | "
              f"{figure(r, r['peer'])} | {ratio} | {verdict} |")
    if args.quick:
        return 0
    if failed:
        print(f"\ntargets not met: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
