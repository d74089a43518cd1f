#!/usr/bin/env python3
"""floodwall beside its peers, on the same machine, in the same run, in ONE table.

`make compare` runs this. It

1. installs what it measures: redis-server and redis-benchmark (Debian's packages, when
   missing), the Node peers pinned in bindings-node/bench/package.json (+ its lockfile), the
   Python peers pinned in benches/compare/requirements.txt (a venv in target/compare/venv),
   and builds floodwall's pieces in release mode — the Node addon (into target/compare/node,
   loaded through NAPI_RS_NATIVE_LIBRARY_PATH so a debug build beside it cannot be measured by
   mistake), the Python wheel (target/compare/wheels) and the criterion bench `check`;
   `--quick` builds them in debug mode instead (reusing what `make test` compiled before it),
   noted in target/compare/built so that `--no-build` never measures a debug build;
2. starts one redis-server on a free 127.0.0.1 port (stopped at the end, on Ctrl-C, on
   SIGTERM and on failure) and records the conditions: date, CPU, `nproc`, load average,
   versions of every runtime and peer;
3. runs each part as a subprocess that answers JSON, one after the other so that they do not
   compete for the two cores:
   - Redis's ceiling: `redis-benchmark` PING and EVALSHA of `return 1`, 1 and 64 clients;
   - Rust: `cargo bench --bench check` (criterion) — `MemoryStore::acquire` and
     `Engine::check` against governor's keyed `check_key`, 1 key and 100,000 keys, 1 and 2
     threads;
   - Node: bindings-node/bench/compare.js --json (rate-limiter-flexible memory and Redis,
     jsonwebtoken, Express with express-rate-limit / rate-limit-redis / rate-limiter-flexible,
     the 4-process race on one Redis key);
   - Python: bindings-python/bench/compare.py --json (limits memory and Redis, PyJWT, the
     race);
4. prints one table — each figure, the peer's, and floodwall / peer (above 1: floodwall does
   more per second) — and writes it with the conditions to target/compare/result.md and
   target/compare/result.json.

Every figure is the median of repeated rounds (criterion's median for Rust). The measuring
is bounded to well under 15 minutes on a 2-core machine (about 5); `--quick` (what
`make compare-smoke` runs) uses tiny counts and takes seconds once built — nothing is judged.

Usage: python3 benches/compare/run.py [--quick] [--no-build] [--only PART ...]
                                      [--wait-load LOAD]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "target" / "compare"
VENV = OUT / "venv"
VENV_PY = VENV / "bin" / "python"
NODE_ADDON_DIR = OUT / "node"
NODE_ADDON = NODE_ADDON_DIR / "floodwall.linux-x64-gnu.node"
WHEELS = OUT / "wheels"
CRITERION = OUT / "criterion"
BUILT = OUT / "built"  # "release" or "debug": what the set-up last built
REQUIREMENTS = ROOT / "benches" / "compare" / "requirements.txt"
PARTS = ["ceiling", "rust", "node", "python"]
BUDGET_SECONDS = 15 * 60

# Subprocesses still running (each in a process group of its own), killed on any exit.
RUNNING: set[subprocess.Popen] = set()


def log(message: str) -> None:
    print(f"[compare] {message}", file=sys.stderr, flush=True)


def kill_all() -> None:
    for proc in list(RUNNING):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
        RUNNING.discard(proc)


def on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def run(cmd: list[str], *, cwd: Path = ROOT, timeout: float, env: Optional[dict] = None,
        capture: bool = False, stdout_to: Optional[Path] = None) -> str:
    """Runs `cmd` in a process group of its own (so that everything it starts can be killed
    with it); fails on a non-zero exit or after `timeout` seconds. Answers stdout when
    `capture`; else writes it to `stdout_to`, or lets it through to stderr."""
    sink: Any = subprocess.PIPE if capture else (
        stdout_to.open("w") if stdout_to else sys.stderr)
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})},
                            stdout=sink, text=True, start_new_session=True)
    if stdout_to and not capture:
        sink.close()
    RUNNING.add(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_all()
        raise RuntimeError(f"{' '.join(cmd)} took more than {timeout:.0f} s") from None
    # On any other exception (Ctrl-C, SIGTERM) the process group stays in RUNNING, and
    # main's `finally` kills it.
    RUNNING.discard(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
    return out or ""


def sudo() -> list[str]:
    return [] if os.geteuid() == 0 else ["sudo"]


# --- set-up ----------------------------------------------------------------------------------


def newer(a: Path, b: Path) -> bool:
    """Whether `a` is missing or older than `b` (so what `a` stands for is stale)."""
    return not a.exists() or a.stat().st_mtime < b.stat().st_mtime


def setup(build: bool, quick: bool) -> None:
    """Installs and builds what is measured: release builds for a measurement; for `--quick`
    (a smoke run, nothing judged) debug builds, which reuse what `make test`'s earlier steps
    compiled, so the smoke run costs seconds rather than three release builds."""
    for tool in ("node", "cargo", "python3"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is required (see README.md)")
    if not (shutil.which("redis-server") and shutil.which("redis-benchmark")
            and shutil.which("redis-cli")):
        log("installing redis-server and redis-tools (Debian)")
        run(sudo() + ["apt-get", "update", "-qq"], timeout=300)
        run(sudo() + ["apt-get", "install", "-y", "-qq", "redis-server", "redis-tools"],
            timeout=600)
    if not build:
        missing = [p for p in (NODE_ADDON, VENV_PY, BUILT) if not p.exists()]
        if missing:
            raise SystemExit(f"--no-build, but {missing[0]} is missing: run once without it")
        if BUILT.read_text().strip() == "debug" and not quick:
            raise SystemExit("--no-build, but target/compare holds debug builds (from --quick): "
                             "run once without --no-build")
        return
    BUILT.unlink(missing_ok=True)

    node = ROOT / "bindings-node"
    for folder in (node, node / "bench"):
        if newer(folder / "node_modules" / ".package-lock.json", folder / "package-lock.json"):
            log(f"npm ci in {folder.relative_to(ROOT)}")
            run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder,
                timeout=600)
    mode = "debug" if quick else "release"
    log(f"building the Node addon ({mode}) into target/compare/node")
    run(["npx", "napi", "build", "--platform", *([] if quick else ["--release"]),
         "--output-dir", str(NODE_ADDON_DIR), "--js", "native.js", "--dts", "native.d.ts"],
        cwd=node, timeout=1200)
    for generated in ("native.js", "native.d.ts"):  # index.js loads ./native.js
        if not (node / generated).exists():
            shutil.copy(NODE_ADDON_DIR / generated, node / generated)

    stamp = VENV / "requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if not VENV_PY.exists() or not stamp.exists() or stamp.read_text() != digest:
        log("creating target/compare/venv with benches/compare/requirements.txt")
        shutil.rmtree(VENV, ignore_errors=True)
        run([sys.executable, "-m", "venv", str(VENV)], timeout=300)
        run([str(VENV_PY), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], timeout=600)
        run([str(VENV_PY), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
            timeout=900)
        stamp.write_text(digest)
    log(f"building the Python wheel ({mode}) into target/compare/wheels")
    shutil.rmtree(WHEELS, ignore_errors=True)
    run([str(VENV / "bin" / "maturin"), "build", "--locked", *([] if quick else ["--release"]),
         "--quiet", "--out", str(WHEELS)], cwd=ROOT / "bindings-python", timeout=1200)
    wheel = next(WHEELS.glob("floodwall-*.whl"))
    run([str(VENV_PY), "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps",
         str(wheel)], timeout=300)
    build_rust_bench(quick)
    BUILT.write_text(f"{mode}\n")


def bench_profile(quick: bool) -> list[str]:
    """The cargo profile of the criterion bench: `bench` (release) to measure, `dev` for
    `--quick`, whose binary `make test`'s bench-smoke has already built."""
    return ["--profile", "dev"] if quick else []


def build_rust_bench(quick: bool) -> None:
    """Builds the criterion bench. Done in the set-up and again right before measuring (after
    any wait for a quiet machine: a no-op unless the tree changed meanwhile), so that no
    compilation falls inside the measuring time."""
    log(f"building the criterion bench `check` ({'debug' if quick else 'release'})")
    run(["cargo", "bench", "--locked", *bench_profile(quick), "-p", "floodwall-benches",
         "--bench", "check", "--no-run"], timeout=1200)


# --- conditions ------------------------------------------------------------------------------


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def wait_for_load(limit: float, max_minutes: float = 25) -> str:
    """Polls the 1-minute load average every 60 s until it is under `limit`, for at most
    `max_minutes`; answers what happened."""
    deadline = time.monotonic() + max_minutes * 60
    while True:
        one = float(loadavg().split()[0])
        if one < limit:
            return f"1-minute load {one} < {limit}"
        if time.monotonic() > deadline:
            return f"gave up waiting after {max_minutes:.0f} min: 1-minute load still {one}"
        log(f"1-minute load average {one} ≥ {limit}: waiting 60 s")
        time.sleep(60)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def lock_version(name: str) -> str:
    text = (ROOT / "Cargo.lock").read_text()
    m = re.search(rf'name = "{re.escape(name)}"\nversion = "([^"]+)"', text)
    return m.group(1) if m else "?"


def first_line(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def conditions() -> dict:
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "memory": f"{mem_kb / 1024 / 1024:.0f} GiB",
        "kernel": platform.release(),
        "loadavg_before": loadavg(),
        "versions": {
            "Rust": first_line(["rustc", "--version"]),
            "Node": first_line(["node", "--version"]),
            "Python": first_line([str(VENV_PY), "--version"]) if VENV_PY.exists() else "?",
            "Redis": re.sub(r" sha=.*", "", first_line(["redis-server", "--version"])),
            "governor": lock_version("governor"),
            "criterion": lock_version("criterion"),
        },
    }


# --- Redis -----------------------------------------------------------------------------------


class Redis:
    """One redis-server on a free 127.0.0.1 port, no persistence, in a temporary directory."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix=f"floodwall-compare-redis-{self.port}-")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        RUNNING.add(self.proc)
        deadline = time.monotonic() + 10
        while self.cli("PING") != "PONG":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
                              capture_output=True, text=True, timeout=10)
        return done.stdout.strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        RUNNING.discard(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def ceiling_rows(redis: Redis, quick: bool) -> list[dict]:
    """redis-benchmark on the same server: PING and EVALSHA of a trivial script, 1 and 64
    clients; the median of 3 runs (1 with --quick)."""
    sha = redis.cli("SCRIPT", "LOAD", "return 1")
    repeats = 1 if quick else 3
    rows = []
    for clients in (1, 64):
        requests = (2_000 if clients == 1 else 10_000) if quick else (
            40_000 if clients == 1 else 200_000)
        for name, command in (("PING", ["PING"]), ("EVALSHA of `return 1`", ["EVALSHA", sha, "0"])):
            runs = []
            for _ in range(repeats):
                out = run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(redis.port),
                           "-c", str(clients), "-n", str(requests), "--csv", *command],
                          timeout=120, capture=True)
                fields = next(line for line in out.splitlines()
                              if line and not line.startswith('"test"')).split(",")
                # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95…","p99…"
                rps, p50, p99 = (float(fields[i].strip('"')) for i in (1, 4, 6))
                runs.append({"value": rps, "p50_ms": p50, "p99_ms": p99})
            mid = statistics.median_low([r["value"] for r in runs])
            best = next(r for r in runs if r["value"] == mid)
            rows.append({"group": "ceiling",
                         "workload": f"Redis ceiling, concurrency {clients}",
                         "lang": "redis-benchmark", "unit": "requests/s", "floodwall": None,
                         "peer": {"name": name, **best}, "ratio": None})
    return rows


# --- Rust ------------------------------------------------------------------------------------


def rust_rows(quick: bool) -> list[dict]:
    timing = (["--warm-up-time", "0.1", "--measurement-time", "0.3", "--sample-size", "10"]
              if quick else ["--warm-up-time", "1", "--measurement-time", "3"])
    shutil.rmtree(CRITERION, ignore_errors=True)
    run(["cargo", "bench", "--locked", *bench_profile(quick), "-p", "floodwall-benches",
         "--bench", "check", "--",
         "--noplot", *timing, r"^(store/(floodwall|governor)|engine/floodwall/1layer)/"],
        timeout=600, env={"CRITERION_HOME": str(CRITERION)}, stdout_to=OUT / "criterion.log")

    def per_second(*parts: str) -> float:
        estimates = CRITERION.joinpath(*parts, "new", "estimates.json")
        ns = json.loads(estimates.read_text())["median"]["point_estimate"]
        return 1e9 / ns

    rows = []
    for keys, label in (("1key", "1 key"), ("100k_keys", "100,000 keys")):
        for threads in (1, 2):
            cell = f"{keys}_{threads}thread"
            workload = f"in-process decision, {label}, {threads} {'thread' if threads == 1 else 'threads'}"
            governor = {"name": "governor check_key (keyed, DefaultKeyedStateStore)",
                        "value": per_second("store", "governor", cell)}
            for name, value in (
                    ("MemoryStore::acquire, one layer",
                     per_second("store", "floodwall", cell)),
                    ("Engine::check, one layer",
                     per_second("engine", "floodwall", f"1layer_{cell}"))):
                rows.append({"group": "memory", "workload": workload, "lang": "Rust",
                             "unit": "decisions/s", "floodwall": {"name": name, "value": value},
                             "peer": governor, "ratio": value / governor["value"]})
    return rows


# --- Node and Python -------------------------------------------------------------------------


def part(cmd: list[str], cwd: Path, timeout: float, env: Optional[dict] = None) -> dict:
    out = run(cmd, cwd=cwd, timeout=timeout, env=env, capture=True)
    return json.loads(out.strip().splitlines()[-1])


# --- the table -------------------------------------------------------------------------------


def rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f} M/s"
    return f"{x / 1e3:.1f} k/s" if x >= 1e3 else f"{x:.0f}/s"


def latency(ms: float) -> str:
    return f"{ms * 1000:.0f} µs" if ms < 1 else f"{ms:.1f} ms"


def figure(r: dict, side: Optional[dict]) -> str:
    if side is None:
        return ""
    if r["unit"] == "admitted":
        over = side["value"] - r["limit"]
        text = f"{side['value']} of {r['attempts']} ({over:+d})"
        return text + (f", {side['errors']} errors" if side.get("errors") else "")
    if r["unit"] == "µs":
        return f"{side['value']:.1f} µs"
    text = rate(side["value"])
    if "p99_ms" in side:
        text += f"; p50 {latency(side['p50_ms'])}, p99 {latency(side['p99_ms'])}"
    return text


def table(rows: list[dict]) -> str:
    ceiling = {r["workload"].rsplit(" ", 1)[-1]: r["peer"]["value"]
               for r in rows if r["group"] == "ceiling" and r["peer"]["name"].startswith("EVALSHA")}
    lines = ["| workload | lang | floodwall | peer | peer's figure | floodwall / peer | notes |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ours = r["floodwall"]
        note = ""
        if r["group"] == "redis" and r["unit"] == "µs":
            note = "Redis's CPU time per decision (user + sys, INFO cpu): lower is better"
        elif r["group"] == "redis":
            c = r["workload"].rsplit(" ", 1)[-1]
            if c in ceiling:
                note = f"floodwall at {100 * ours['value'] / ceiling[c]:.0f}% of the EVALSHA ceiling"
        elif r["group"] == "race":
            over = (ours["value"] - r["limit"], r["peer"]["value"] - r["limit"])
            note = f"over-admission: floodwall {over[0]:+d}, peer {over[1]:+d} (exact is +0)"
        elif r["unit"] == "decisions/s" and r["lang"] == "Rust":
            note = f"{1e9 / ours['value']:.1f} ns vs {1e9 / r['peer']['value']:.1f} ns a decision"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        lines.append(f"| {r['workload']} | {r['lang']} | "
                     f"{(ours['name'] + ': ' + figure(r, ours)) if ours else '—'} | "
                     f"{r['peer']['name']} | {figure(r, r['peer'])} | {ratio} | {note} |")
    return "\n".join(lines)


def conditions_text(c: dict, peers: dict, wait_note: Optional[str]) -> str:
    v = c["versions"]
    lines = [
        f"- date: {c['date']}",
        f"- machine: {c['nproc']} CPUs (`nproc`), {c['cpu']}, {c['memory']}, Linux {c['kernel']}",
        f"- load average (1, 5, 15 min) before the run: {c['loadavg_before']}; "
        f"after: {c.get('loadavg_after', '?')}" + (f" ({wait_note})" if wait_note else ""),
        f"- runtimes: {v['Rust']}; Node {v['Node'].lstrip('v')}; {v['Python']}; {v['Redis']}",
        f"- Rust peers: governor {v['governor']} (criterion {v['criterion']})",
    ]
    for lang, versions in peers.items():
        listed = ", ".join(f"{k} {val}" for k, val in versions.items())
        lines.append(f"- {lang} peers: {listed}")
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in c.get("part_seconds", {}).items())
    lines.append(f"- mode: {'--quick (tiny counts: not a measurement)' if c['quick'] else 'full'}; "
                 f"measuring took {c['seconds']:.0f} s ({parts})")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny counts, seconds; nothing judged")
    parser.add_argument("--no-build", action="store_true",
                        help="measure what target/compare already holds")
    parser.add_argument("--only", choices=PARTS, action="append",
                        help="run only these parts (repeatable)")
    parser.add_argument("--wait-load", type=float, metavar="LOAD",
                        help="first wait (polling every 60 s, 25 min at most) until the "
                             "1-minute load average is under LOAD")
    args = parser.parse_args()
    parts = args.only or PARTS
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    OUT.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    redis: Optional[Redis] = None
    try:
        setup(build=not args.no_build, quick=args.quick)
        wait_note = wait_for_load(args.wait_load) if args.wait_load else None
        if wait_note:
            log(wait_note)
        if not args.no_build and "rust" in parts:
            build_rust_bench(args.quick)
        cond = conditions()
        cond["quick"] = args.quick
        built = measuring = time.monotonic()
        redis = Redis()
        log(f"redis-server on {redis.url}")
        rows: list[dict] = []
        peers: dict[str, dict] = {}
        remaining = lambda: BUDGET_SECONDS - (time.monotonic() - measuring)  # noqa: E731
        timings: dict[str, float] = {}
        mark = time.monotonic()

        def done(name: str) -> None:
            nonlocal mark
            timings[name] = time.monotonic() - mark
            mark = time.monotonic()
            log(f"{name}: {timings[name]:.0f} s")
        if "ceiling" in parts:
            log("Redis's ceiling (redis-benchmark)")
            rows += ceiling_rows(redis, args.quick)
            done("ceiling")
        if "rust" in parts:
            log("Rust: criterion bench `check` (floodwall and governor; output in "
                "target/compare/criterion.log)")
            rows += rust_rows(args.quick)
            done("rust")
        quick = ["--quick"] if args.quick else []
        if "node" in parts:
            log("Node: bindings-node/bench/compare.js")
            doc = part(["node", "bench/compare.js", "--json", "--redis", redis.url, *quick],
                       ROOT / "bindings-node", timeout=min(600, remaining()),
                       env={"NAPI_RS_NATIVE_LIBRARY_PATH": str(NODE_ADDON)})
            rows += doc["rows"]
            peers["Node"] = doc["meta"]["versions"]
            done("node")
        if "python" in parts:
            log("Python: bindings-python/bench/compare.py")
            doc = part([str(VENV_PY), "bench/compare.py", "--json", "--redis", redis.url,
                        *quick], ROOT / "bindings-python", timeout=min(600, remaining()))
            rows += doc["rows"]
            peers["Python"] = doc["meta"]["versions"]
            done("python")
        cond["seconds"] = time.monotonic() - measuring
        cond["part_seconds"] = {k: round(v, 1) for k, v in timings.items()}
        cond["loadavg_after"] = loadavg()
    finally:
        if redis is not None:
            redis.stop()
        kill_all()

    order = {g: i for i, g in enumerate(["memory", "redis", "ceiling", "race", "jwt", "express"])}
    rows.sort(key=lambda r: order[r["group"]])  # stable: languages keep their order
    text = table(rows)
    header = conditions_text(cond, peers, wait_note)
    print(f"floodwall beside its peers — same machine, same run\n\n{header}\n\n{text}")
    (OUT / "result.md").write_text(f"{header}\n\n{text}\n")
    (OUT / "result.json").write_text(json.dumps({"conditions": cond, "peers": peers,
                                                 "rows": rows}, indent=1))
    log(f"set-up, builds and waiting {built - started:.0f} s, measuring {cond['seconds']:.0f} s; "
        f"written to {(OUT / 'result.md').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted: redis-server and every part stopped")
        sys.exit(130)
