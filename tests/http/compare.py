"""Compares the HTTP conformance transcripts (target/http-conformance/<runner>.json): every
runner named on the command line must have written one, for every case, and all must be
identical, step by step. Exits 1 naming the first difference of each case that differs.

    python3 tests/http/compare.py engine-memory engine-redis express fastapi flask go gateway
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DIR = ROOT / "target" / "http-conformance"


def main(runners: list[str]) -> int:
    if len(runners) < 2:
        print("usage: compare.py RUNNER RUNNER [RUNNER ...]", file=sys.stderr)
        return 2
    transcripts = {}
    for runner in runners:
        path = DIR / f"{runner}.json"
        if not path.exists():
            print(f"http conformance: no transcript from {runner} ({path} is missing: did its tests run?)")
            return 1
        transcripts[runner] = json.loads(path.read_text())["cases"]
    first, reference = runners[0], transcripts[runners[0]]
    problems = []
    for runner in runners[1:]:
        other = transcripts[runner]
        for name in sorted(set(reference) | set(other)):
            if name not in other or name not in reference:
                problems.append(f"{name}: only {first if name in reference else runner} ran it")
                continue
            mine, theirs = reference[name], other[name]
            if len(mine) != len(theirs):
                problems.append(f"{name}: {first} saw {len(mine)} steps, {runner} {len(theirs)}")
                continue
            for i, (a, b) in enumerate(zip(mine, theirs)):
                if a != b:
                    problems.append(f"{name} step {i}: {first} saw {json.dumps(a)}\n    {runner} saw {json.dumps(b)}")
                    break
    cases = len(reference)
    if problems:
        print(f"http conformance: the answers differ ({len(problems)} cases):")
        for p in problems:
            print("  " + p)
        return 1
    steps = sum(len(s) for s in reference.values())
    print(f"http conformance: {len(runners)} runners gave identical answers to {cases} cases ({steps} requests): {', '.join(runners)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
