#!/usr/bin/env python3
"""JWT verification: floodwall against node's jsonwebtoken and PyJWT, in one run.

Runs the criterion bench `auth` (floodwall through Engine::authenticate_at), then the two
peer scripts of this directory on the same fixture tokens and claim checks, and prints one
table with the ratios and the targets of the JWT issue. Every step is bounded in time.

Usage (from the repository root; `make bench-jwt` installs the peers first):
    python3 benches/peers/jwt_compare.py [--quick]
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS = Path(__file__).resolve().parent
CRITERION = ROOT / "target" / "criterion" / "jwt"
ALGS = ["HS256", "RS256", "ES256", "EdDSA"]


def run(cmd: list[str], timeout: int) -> str:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def median_ns(*parts: str) -> float:
    path = CRITERION.joinpath(*parts, "new", "estimates.json")
    return json.loads(path.read_text())["median"]["point_estimate"]


def peer(cmd: list[str], seconds: str) -> dict[str, float]:
    out = run(cmd + [seconds], timeout=120)
    return {row["alg"]: row["ns_per_op"] for row in map(json.loads, out.splitlines()) if row}


def fmt(ns: float | None) -> str:
    if ns is None:
        return "n/a"
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"


def main() -> None:
    quick = "--quick" in sys.argv
    bench = ["cargo", "bench", "--locked", "-p", "floodwall-benches", "--bench", "auth", "--", "--noplot"]
    run(bench + (["--quick"] if quick else []), timeout=900)
    ours = {alg: median_ns("verify", alg) for alg in ALGS}
    hit = median_ns("cache_hit", "HS256")
    seconds = "0.5" if quick else "1.0"
    node = peer(["node", str(PEERS / "jwt_node.js")], seconds)
    python = ROOT / ".venv" / "bin" / "python"
    pyjwt = peer([str(python if python.exists() else "python3"), str(PEERS / "jwt_pyjwt.py")], seconds)

    print("| verify | floodwall | node jsonwebtoken | PyJWT | node / floodwall | PyJWT / floodwall |")
    print("|---|---|---|---|---|---|")
    for alg in ALGS:
        n, p = node.get(alg), pyjwt.get(alg)
        print(
            f"| {alg} | {fmt(ours[alg])} | {fmt(n)} | {fmt(p)} | "
            f"{f'{n / ours[alg]:.1f}×' if n else 'n/a'} | {f'{p / ours[alg]:.1f}×' if p else 'n/a'} |"
        )
    print(f"| cache hit (HS256 token) | {fmt(hit)} | | | | |")
    print()
    targets = [
        ("HS256 at least 3x node jsonwebtoken", node["HS256"] / ours["HS256"] >= 3),
        ("HS256 at least 5x PyJWT", pyjwt["HS256"] / ours["HS256"] >= 5),
        ("RS256 no slower than node jsonwebtoken", ours["RS256"] <= node["RS256"]),
        ("ES256 no slower than node jsonwebtoken", ours["ES256"] <= node["ES256"]),
        ("cache hit under 200 ns", hit < 200),
    ]
    for name, met in targets:
        print(f"{'met    ' if met else 'NOT MET'}  {name}")


if __name__ == "__main__":
    main()
