"""The conformance vectors (``tests/vectors/*.json``, format in its README) through the binding:
every step of every case on a fresh engine, on the memory store and on a real Redis — as
``tests/vectors.rs`` and ``tests/redis_vectors.rs`` run them in Rust."""

from __future__ import annotations

import copy
import json
from typing import Any, Callable

import pytest

import floodwall
from conftest import VECTORS

REQUEST_FIELDS = ("subject", "role", "method", "path", "ip", "headers", "cost")


def _load_cases() -> list[dict[str, Any]]:
    cases = []
    for path in sorted(VECTORS.glob("*.json")):
        document = json.loads(path.read_text())
        assert document["format"] == 1, f"{path.name}: unknown format"
        cases.extend(document["cases"])
    return cases


CASES = _load_cases()
CASE_PARAMS = [pytest.param(case, id=case["name"]) for case in CASES]


def run_case(engine: floodwall.Engine, case: dict[str, Any], store: str) -> list[str]:
    """Every mismatch of ``case`` on ``engine``, one line each; every decision must come from
    ``store``."""
    failures = []
    held: dict[str, floodwall.Decision] = {}
    for i, step in enumerate(case["steps"]):
        for name in step.get("release", []):
            if name in held:
                held.pop(name).release()
            else:
                failures.append(f"{case['name']} step {i}: releases {name!r}, held by no step")
        if "admin" in step:
            wrong = run_admin(engine, step, store)
            if wrong:
                failures.append(
                    f"{case['name']} step {i} (now_ms {step['now_ms']}, {step['admin']['op']}): "
                    + "; ".join(wrong)
                )
            continue
        request = step.get("request", {})
        unknown = set(request) - set(REQUEST_FIELDS)
        assert not unknown, f"{case['name']} step {i}: unknown request fields {unknown}"
        kwargs = {name: request[name] for name in REQUEST_FIELDS if name in request}
        expect = step["expect"]
        wrong: list[str] = []
        try:
            decision = engine.check(**kwargs, now_ms=step["now_ms"])
        except floodwall.FloodwallError as error:
            if error.code != expect.get("error"):
                wrong.append(f"error {error.code!r} ({error})")
        else:
            if "error" in expect:
                wrong.append(f"{decision!r} instead of error {expect['error']!r}")
            else:
                got = {
                    "allowed": decision.allowed,
                    "rule": decision.rule,
                    "limit": decision.limit,
                    "remaining": decision.remaining,
                    "reset_after_ms": decision.reset_after_ms,
                    "retry_after_ms": decision.retry_after_ms,
                    "blocked": decision.blocked,
                }
                for field, value in got.items():
                    if field in expect and value != expect[field]:
                        wrong.append(f"{field}: got {value!r}, want {expect[field]!r}")
                if bool(decision) is not decision.allowed:
                    wrong.append(f"bool() is {bool(decision)}, allowed is {decision.allowed}")
                # A repeated denial may come from the shared store's deny cache.
                cached_denial = (
                    store == "redis" and decision.store == "deny_cache" and not decision.allowed
                )
                if decision.store != store and not cached_denial:
                    wrong.append(f"decided by the {decision.store!r} store, not {store!r}")
                headers = {name.lower(): value for name, value in decision.headers.items()}
                for name, want in expect.get("headers", {}).items():
                    if headers.get(name.lower()) != want:
                        wrong.append(
                            f"header {name}: got {headers.get(name.lower())!r}, want {want!r}"
                        )
                if "hold" in step:
                    if decision.holds:
                        held[step["hold"]] = decision
                    else:
                        wrong.append(f"holds nothing to keep as {step['hold']!r}")
                else:
                    # Freed at once (the decision's last reference), it gives back its holds.
                    del decision
        if wrong:
            failures.append(f"{case['name']} step {i} (now_ms {step['now_ms']}): " + "; ".join(wrong))
    return failures


def run_admin(engine: floodwall.Engine, step: dict[str, Any], store: str) -> list[str]:
    """The mismatches of one ``admin`` step."""
    admin, expect, now = step["admin"], step["expect"], step["now_ms"]
    rule, key, role = admin["rule"], admin.get("key"), admin.get("role")
    op = admin["op"]
    status = None
    try:
        if op == "inspect":
            status = engine.inspect(rule, key, role=role, now_ms=now)
        elif op == "reset":
            engine.reset_key(rule, key, role=role, now_ms=now)
        elif op == "block":
            engine.block_key(rule, key, duration_ms=admin["duration_ms"], role=role, now_ms=now)
        elif op == "penalize":
            engine.penalize(rule, key, admin["points"], role=role, now_ms=now)
        elif op == "reward":
            engine.reward(rule, key, admin["points"], role=role, now_ms=now)
        elif op == "set_limit":
            engine.set_key_limit(
                rule, key, admin["limit"], lifetime_ms=admin["lifetime_ms"], role=role, now_ms=now
            )
        elif op == "clear_limit":
            engine.clear_key_limit(rule, key, role=role, now_ms=now)
        else:
            raise AssertionError(f"no admin op {op!r}")
    except floodwall.FloodwallError as error:
        return [] if error.code == expect.get("error") else [f"error {error.code!r} ({error})"]
    if "error" in expect:
        return [f"done instead of error {expect['error']!r}"]
    if status is None:
        return []
    got = {
        "limit": status.limit,
        "remaining": status.remaining,
        "reset_after_ms": status.reset_after_ms,
        "blocked_for_ms": status.blocked_for_ms,
        "key_limit_for_ms": status.key_limit_for_ms,
    }
    wrong = [
        f"{field}: got {value!r}, want {expect[field]!r}"
        for field, value in got.items()
        if field in expect and value != expect[field]
    ]
    if status.store != store:
        wrong.append(f"answered by the {status.store!r} store, not {store!r}")
    return wrong


def test_the_vectors_are_all_there_with_unique_names() -> None:
    names = [case["name"] for case in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    assert len(names) >= 40
    error_steps = [s for c in CASES for s in c["steps"] if "error" in s["expect"]]
    assert error_steps, "no step expects an error"
    ops = {s["admin"]["op"] for c in CASES for s in c["steps"] if "admin" in s}
    assert ops == {"inspect", "reset", "block", "penalize", "reward", "set_limit", "clear_limit"}


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_memory_store_conforms(case: dict[str, Any]) -> None:
    engine = floodwall.Engine.from_dict(case["config"])
    assert engine.store_kind == "memory"
    failures = run_case(engine, case, "memory")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("deny_cache", [False, True], ids=["deny_cache_off", "deny_cache_on"])
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_redis_store_conforms(
    case: dict[str, Any], deny_cache: bool, redis_store: Callable[..., dict[str, Any]]
) -> None:
    """As ``tests/redis_vectors.rs``: the vectors' explicit times on the caller's clock
    (``clock = "local"``), a key prefix per case, and every decision from Redis (``deny`` on
    error, so that a failing store cannot pass for a working one)."""
    config = copy.deepcopy(case["config"])
    config["store"] = redis_store(clock="local", on_error="deny", deny_cache=deny_cache)
    engine = floodwall.Engine.from_dict(config)
    assert engine.store_kind == "redis"
    failures = run_case(engine, case, "redis")
    assert not failures, "\n".join(failures) + f"\nstore failure: {engine.store_failure}"
