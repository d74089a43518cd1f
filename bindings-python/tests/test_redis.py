"""The Redis store through the binding, against real ``redis-server`` processes: decisions from
Redis, a TTL on every key, exact admission from eight threads, batches, Redis killed and
restarted under each ``on_error`` policy, and ``check`` releasing the interpreter while it
waits on Redis — as ``tests/redis_store.rs`` checks the store in Rust."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import pytest

import floodwall
from conftest import hs256_auth, mint, wait_until
from redis_server import RedisServer

PATHS = ("/fixed", "/log", "/bucket", "/layered")


def rules() -> list[dict[str, Any]]:
    """One rule per exact algorithm, each allowing 100 per hour on one global key, plus a
    two-layer rule set on ``/layered`` (as ``tests/redis_store.rs``)."""
    hourly = {"key": "global", "limit": 100, "window": "1h"}
    return [
        {"name": "fixed", "match": {"paths": ["/fixed"]}, "algorithm": "fixed_window", **hourly},
        {"name": "log", "match": {"paths": ["/log"]}, "algorithm": "sliding_window", **hourly},
        {"name": "bucket", "match": {"paths": ["/bucket"]}, "key": "global",
         "algorithm": "token_bucket", "capacity": 100, "refill_rate": 0.0001},
        {"name": "per-user", "match": {"paths": ["/layered"]}, "key": "subject",
         "algorithm": "sliding_window_counter", "limit": 1000, "window": "1h"},
        {"name": "layered-global", "match": {"paths": ["/layered"]},
         "algorithm": "fixed_window", **hourly},
    ]


def from_redis(d: floodwall.Decision) -> bool:
    """Whether Redis decided ``d``: itself, or a denial it gave, repeated from the deny cache."""
    return d.store == "redis" or (d.store == "deny_cache" and not d.allowed)


def admitted(engine: floodwall.Engine, path: str, subject: str, n: int) -> int:
    """Admitted requests out of ``n`` on ``path``, every decision from Redis."""
    count = 0
    for _ in range(n):
        decision = engine.check(path=path, subject=subject)
        assert from_redis(decision), (decision.store, engine.store_failure)
        count += decision.allowed
    return count


@pytest.fixture
def engine(redis_store: Callable[..., dict[str, Any]]) -> floodwall.Engine:
    return floodwall.Engine({"store": redis_store(on_error="deny"), "rules": rules()})


def test_decisions_come_from_redis(engine: floodwall.Engine) -> None:
    assert engine.store_kind == "redis"
    assert engine.may_wait is True
    assert repr(engine) == "Engine(store_kind='redis', rules=5)"
    decision = engine.check(path="/fixed", subject="a")
    assert (decision.allowed, decision.store, decision.rule, decision.remaining) == (
        True, "redis", "fixed", 99
    )
    assert "store='redis'" in repr(decision)
    assert engine.store_failure is None
    assert engine.key_count == 0, "the memory store holds nothing"


def test_every_key_written_has_a_ttl(
    redis_server: RedisServer, redis_store: Callable[..., dict[str, Any]]
) -> None:
    store = redis_store(on_error="deny")
    engine = floodwall.Engine({"store": store, "rules": rules()})
    for path in PATHS:
        for subject in ("a", "b", "c"):
            assert admitted(engine, path, subject, 5) == 5
    keys = redis_server.command("KEYS", store["prefix"] + "*")
    assert isinstance(keys, list) and len(keys) >= 7, keys
    for key in keys:
        ttl = redis_server.command("PTTL", key)
        assert isinstance(ttl, int) and ttl > 0, (key, ttl)


def test_two_engines_on_one_prefix_share_their_counters(
    redis_store: Callable[..., dict[str, Any]]
) -> None:
    store = redis_store(on_error="deny")
    first = floodwall.Engine({"store": store, "rules": rules()})
    second = floodwall.Engine({"store": store, "rules": rules()})
    assert admitted(first, "/fixed", "a", 60) == 60
    assert admitted(second, "/fixed", "b", 60) == 40


def test_a_denied_flood_through_check_and_check_many_costs_redis_one_call(
    redis_server: RedisServer, engine: floodwall.Engine
) -> None:
    assert admitted(engine, "/log", "a", 100) == 100

    def calls() -> int:
        info = str(redis_server.command("INFO", "commandstats"))
        return int(info.split("cmdstat_evalsha:calls=")[1].split(",")[0])

    before = calls()
    assert engine.check(path="/log").store == "redis", "the first denial asks"
    stores: dict[str, int] = {}
    for _ in range(10):
        repeats = [engine.check(path="/log") for _ in range(100)]
        repeats += engine.check_many([{"path": "/log"}] * 100)
        for d in repeats:
            assert isinstance(d, floodwall.Decision) and not d.allowed
            stores[d.store] = stores.get(d.store, 0) + 1
    assert stores == {"deny_cache": 2000}
    assert calls() - before == 1, "only the first denial asked Redis"


def test_eight_threads_on_one_key_admit_exactly_the_limit(engine: floodwall.Engine) -> None:
    for path in PATHS:
        barrier = threading.Barrier(8, timeout=30)
        counts = [0] * 8
        errors: list[BaseException] = []

        def run(i: int, path: str = path) -> None:
            try:
                barrier.wait()
                counts[i] = admitted(engine, path, f"user-{i}", 40)
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        assert sum(counts) == 100, f"{path}: {counts} of 320 requests from 8 threads"


def test_check_many_on_redis_decides_a_batch_with_the_same_meaning(
    engine: floodwall.Engine,
) -> None:
    requests = [
        {"path": "/fixed" if i % 2 == 0 else "/log", "subject": "batch"} for i in range(250)
    ]
    decisions = engine.check_many(requests)
    assert len(decisions) == 250
    assert all(isinstance(d, floodwall.Decision) and d.store == "redis" for d in decisions)
    assert sum(d.allowed for d in decisions[0::2]) == 100
    assert sum(d.allowed for d in decisions[1::2]) == 100
    assert [d.allowed for d in decisions[0::2]] == [True] * 100 + [False] * 25, "in order"

    ok, too_costly, no_rule = engine.check_many([
        {"path": "/bucket", "subject": "batch"},
        {"path": "/bucket", "subject": "batch", "cost": 101},
        {"path": "/nothing-matches"},
    ])
    assert ok.allowed and ok.store == "redis"
    assert isinstance(too_costly, floodwall.CostExceedsLimitError)
    assert no_rule.allowed and no_rule.rule is None


def test_cost_over_the_limit_is_an_error_on_redis_too(engine: floodwall.Engine) -> None:
    with pytest.raises(floodwall.CostExceedsLimitError):
        engine.check(path="/fixed", cost=101)
    assert engine.check(path="/fixed", cost=100).allowed


# --- Redis killed and restarted --------------------------------------------------------------


def expect_fallback(d: floodwall.Decision) -> None:
    assert (d.store, d.allowed) == ("fallback", True)


def expect_allow(d: floodwall.Decision) -> None:
    assert (d.store, d.allowed) == ("unavailable", True)


def expect_deny(d: floodwall.Decision) -> None:
    assert (d.store, d.allowed, d.retry_after_ms) == ("unavailable", False, 1000)
    assert d.headers["Retry-After"] == "1"


@pytest.mark.parametrize(
    "policy, while_down",
    [("fallback", expect_fallback), ("allow", expect_allow), ("deny", expect_deny)],
)
def test_redis_killed_and_restarted(
    policy: str, while_down: Callable[[floodwall.Decision], None], own_redis: RedisServer
) -> None:
    engine = floodwall.Engine({
        "store": {"kind": "redis", "url": own_redis.url, "prefix": "restart:",
                  "on_error": policy, "timeout": "300ms"},
        "rules": rules(),
    })
    assert admitted(engine, "/layered", "u", 5) == 5
    port = own_redis.port
    own_redis.stop()

    for _ in range(50):
        while_down(engine.check(path="/layered", subject="u"))
    for d in engine.check_many([{"path": "/layered", "subject": "u"}] * 3):
        assert isinstance(d, floodwall.Decision)
        while_down(d)
    assert engine.store_failure is not None

    restarted = RedisServer(port=port)
    try:
        assert wait_until(
            lambda: engine.check(path="/layered", subject="u").store == "redis",
            attempts=400, pause=0.05,
        ), f"Redis not used again after its restart: {engine.store_failure}"
        assert admitted(engine, "/layered", "u", 5) == 5
    finally:
        restarted.stop()


def test_store_failure_is_none_once_redis_is_back(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """``store_failure`` is documented as "the shared store's last failure while it is
    failing (``None`` when healthy …)": a health check reads it. Each transition is one
    record on the ``floodwall.store`` logger."""
    caplog.set_level(logging.INFO, logger="floodwall.store")
    engine = floodwall.Engine({
        "store": {"kind": "redis", "url": own_redis.url, "prefix": "health:",
                  "on_error": "fallback", "timeout": "300ms"},
        "rules": rules(),
    })
    assert engine.check(path="/fixed").store == "redis"
    assert engine.store_failure is None
    assert engine.store_health["state"] == "ok"
    port = own_redis.port
    own_redis.stop()
    assert engine.check(path="/fixed").store == "fallback"
    assert engine.store_failure is not None
    # A few failed calls open the breaker: degraded, with the reason.
    assert wait_until(
        lambda: engine.check(path="/fixed").store == "fallback"
        and engine.store_health["state"] == "degraded",
        attempts=100,
        pause=0.02,
    ), engine.store_health
    health = engine.store_health
    assert health["reason"] and health["reason_kind"] in ("refused", "timeout"), health
    restarted = RedisServer(port=port)
    try:
        assert wait_until(
            lambda: engine.check(path="/fixed").store == "redis", attempts=400, pause=0.05
        )
        assert engine.check(path="/fixed").store == "redis"
        assert engine.store_failure is None, "Redis answers again, yet store_failure says"
        back = engine.store_health
        assert (back["state"], back["reason"], back["reason_kind"]) == ("ok", None, None)
        assert back["since_ms"] >= health["since_ms"]
    finally:
        restarted.stop()
    records = [r for r in caplog.records if r.name == "floodwall.store"]
    assert [(r.levelname, r.store_state) for r in records] == [  # type: ignore[attr-defined]
        ("WARNING", "degraded"), ("INFO", "ok")
    ], [r.getMessage() for r in records]
    assert "the in-process fallback decides" in records[0].getMessage()
    assert records[0].reason_kind in ("refused", "timeout")  # type: ignore[attr-defined]
    assert records[1].getMessage() == "the shared store is back: deciding on Redis again"


# --- the interpreter is released while Redis is waited on ------------------------------------


@pytest.mark.parametrize("call", ["check", "check_many", "authorize"])
def test_a_call_releases_the_interpreter_while_it_waits_on_redis(
    call: str, redis_server: RedisServer, redis_store: Callable[..., dict[str, Any]]
) -> None:
    """While Redis is paused, this thread's call waits; another Python thread keeps counting.
    Each count yields the interpreter (``sleep(0)``) and needs it back, so a call that kept it
    would let the counter move only in the microseconds of bytecode around the call."""
    store = redis_store(on_error="deny", timeout="5s")
    engine = floodwall.Engine({"store": store, "rules": rules(), "auth": hs256_auth()})
    assert engine.check(path="/fixed", subject="warm").store == "redis"
    token = mint("alice")
    run = {
        "check": lambda: engine.check(path="/fixed", subject="paused"),
        "check_many": lambda: engine.check_many([{"path": "/fixed"}, {"path": "/log"}])[0],
        "authorize": lambda: engine.authorize(token, path="/fixed").decision,
    }[call]

    state = {"pending": False, "during": 0, "started": False}
    stop = threading.Event()

    def count() -> None:
        for _ in range(100_000_000):
            if stop.is_set():
                return
            state["started"] = True
            if state["pending"]:
                state["during"] += 1
            time.sleep(0)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        assert wait_until(lambda: state["started"])
        assert redis_server.command("CLIENT", "PAUSE", "1000", "ALL") == "OK"
        state["pending"] = True
        decision = run()
        state["pending"] = False
        during = state["during"]
    finally:
        stop.set()
        counter.join(timeout=30)
    assert (decision.store, decision.allowed, decision.remaining) == ("redis", True, 98)
    assert during >= 100, f"the counting thread moved {during} times while {call} waited"

