"""The asyncio variants: ``acheck``, ``acheck_many``, ``aauthorize`` answer what the sync calls
answer, on the memory store and on Redis; and on Redis an awaited check leaves the event loop
free while Redis makes it wait."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Callable

import pytest

import floodwall
from conftest import hs256_auth, mint, ticks_while
from redis_server import RedisServer

RULES = [
    {"name": "per-user", "key": "subject", "algorithm": "fixed_window", "limit": 3,
     "window": "1m", "roles": {"premium": {"limit": 5}}},
    {"name": "global", "key": "global", "algorithm": "token_bucket", "capacity": 8,
     "refill_rate": 2},
]

REQUESTS: list[dict[str, Any]] = [
    {"subject": s, "role": r, "now_ms": 60_000 + 100 * i, "path": "/api", "method": "GET"}
    for i, (s, r) in enumerate(
        [("alice", None), ("alice", "premium"), ("bob", None), ("alice", None),
         ("alice", None), ("alice", None), ("carol", "premium"), ("bob", None),
         ("dave", None), ("erin", None), ("erin", None), ("frank", None)]
    )
]


def described(result: Any) -> tuple[Any, ...]:
    """Everything a caller can read of a check result."""
    if isinstance(result, floodwall.FloodwallError):
        return (type(result), result.code, result.status, result.message)
    assert isinstance(result, floodwall.Decision)
    return (repr(result), result.headers, [repr(layer) for layer in result.layers])


@pytest.fixture(params=["memory", "redis"])
def twin_engines(
    request: pytest.FixtureRequest, redis_store: Callable[..., dict[str, Any]]
) -> Iterator[tuple[floodwall.Engine, floodwall.Engine]]:
    """Two engines of the same configuration and empty state (on Redis: two prefixes, the
    caller's clock), one for the sync calls and one for the async ones."""

    def build() -> floodwall.Engine:
        config: dict[str, Any] = {"rules": RULES, "auth": hs256_auth()}
        if request.param == "redis":
            config["store"] = redis_store(clock="local", on_error="deny")
        return floodwall.Engine(config)

    sync_engine, async_engine = build(), build()
    yield sync_engine, async_engine
    async_engine.close()


async def test_may_wait_is_the_store_kind(
    twin_engines: tuple[floodwall.Engine, floodwall.Engine],
) -> None:
    _, engine = twin_engines
    assert engine.may_wait is (engine.store_kind == "redis")


async def test_acheck_answers_what_check_answers(
    twin_engines: tuple[floodwall.Engine, floodwall.Engine],
) -> None:
    sync_engine, async_engine = twin_engines
    store = "memory" if async_engine.store_kind == "memory" else "redis"
    allowed = []
    for request in REQUESTS:
        got = await async_engine.acheck(**request)
        want = sync_engine.check(**request)
        assert got.store == store
        assert described(got) == described(want), request
        allowed.append(got.allowed)
    assert allowed == [True] * 5 + [False] + [True] * 5 + [False]


async def test_acheck_raises_what_check_raises(
    twin_engines: tuple[floodwall.Engine, floodwall.Engine],
) -> None:
    _, engine = twin_engines
    with pytest.raises(floodwall.CostExceedsLimitError) as caught:
        await engine.acheck(subject="alice", cost=4, now_ms=60_000)
    assert caught.value.status == 429
    with pytest.raises(TypeError):
        await engine.acheck(subject=5)  # type: ignore[arg-type]


async def test_acheck_many_answers_what_check_many_answers(
    twin_engines: tuple[floodwall.Engine, floodwall.Engine],
) -> None:
    sync_engine, async_engine = twin_engines
    batch = REQUESTS[:4] + [{"subject": "alice", "cost": 9, "now_ms": 60_500}] + REQUESTS[4:]
    got = await async_engine.acheck_many(iter(batch))
    want = sync_engine.check_many(batch)
    assert len(got) == len(want) == len(batch)
    assert isinstance(got[4], floodwall.CostExceedsLimitError)
    assert [described(r) for r in got] == [described(r) for r in want]
    assert await async_engine.acheck_many([]) == []


async def test_aauthorize_answers_what_authorize_answers(
    twin_engines: tuple[floodwall.Engine, floodwall.Engine],
) -> None:
    sync_engine, async_engine = twin_engines
    tokens = [mint("alice", role="premium"), mint("bob"), mint("alice", role="premium")]
    for i in range(8):
        token = tokens[i % len(tokens)]
        got = await async_engine.aauthorize(token, path="/api", now_ms=60_000 + i)
        want = sync_engine.authorize(token, path="/api", now_ms=60_000 + i)
        assert repr(got) == repr(want)
        assert described(got.decision) == described(want.decision)
        assert got.allowed is want.allowed
    with pytest.raises(floodwall.AuthError) as caught:
        await async_engine.aauthorize(mint("alice", expires_in=-3600))
    assert caught.value.code == "expired"


async def test_concurrent_achecks_on_redis_admit_exactly_the_limit(
    redis_store: Callable[..., dict[str, Any]],
) -> None:
    engine = floodwall.Engine({
        "store": redis_store(on_error="deny"),
        "rules": [{"name": "global", "key": "global", "algorithm": "fixed_window",
                   "limit": 100, "window": "1h"}],
    })
    try:
        decisions = await asyncio.gather(*(engine.acheck(subject=f"u{i}") for i in range(160)))
    finally:
        engine.close()
    assert {d.store for d in decisions if d.allowed} == {"redis"}
    # A denial is Redis's, or Redis's repeated by the deny cache.
    assert {d.store for d in decisions if not d.allowed} <= {"redis", "deny_cache"}
    assert sum(d.allowed for d in decisions) == 100


async def test_acheck_survives_redis_going_away(own_redis: RedisServer) -> None:
    engine = floodwall.Engine({
        "store": {"kind": "redis", "url": own_redis.url, "prefix": "gone:",
                  "on_error": "fallback", "timeout": "300ms"},
        "rules": RULES,
    })
    try:
        assert (await engine.acheck(subject="a")).store == "redis"
        own_redis.stop()
        for _ in range(20):
            decision = await engine.acheck(subject="a")
            assert decision.store == "fallback"
        (batch,) = await engine.acheck_many([{"subject": "a"}])
        assert batch.store == "fallback"
    finally:
        engine.close()


async def test_close_then_acheck_again(redis_store: Callable[..., dict[str, Any]]) -> None:
    engine = floodwall.Engine({"store": redis_store(), "rules": RULES})
    assert (await engine.acheck(subject="a")).store == "redis"
    engine.close()
    assert (await engine.acheck(subject="a")).store == "redis"
    engine.close()


# --- the event loop keeps running while Redis makes a check wait -----------------------------


async def test_an_awaited_check_leaves_the_loop_free_while_redis_is_paused(
    redis_server: RedisServer, redis_store: Callable[..., dict[str, Any]]
) -> None:
    store = redis_store(on_error="deny", timeout="5s")
    engine = floodwall.Engine({"store": store, "rules": RULES})
    try:
        assert (await engine.acheck(subject="warm")).store == "redis"

        # The control: the sync call, made on the loop, blocks it for the whole pause.
        assert redis_server.command("CLIENT", "PAUSE", "1000", "ALL") == "OK"
        decision, ticks = await ticks_while(lambda: engine.check(subject="blocking"))
        assert decision.store == "redis"
        assert ticks == 0, "the loop ran during a sync check: the pause did not hold it"

        assert redis_server.command("CLIENT", "PAUSE", "1000", "ALL") == "OK"
        decision, ticks = await ticks_while(engine.acheck(subject="paused"))
        assert (decision.store, decision.allowed, decision.remaining) == ("redis", True, 2)
        assert ticks >= 10, f"the ticker ticked {ticks} times while acheck waited"

        assert redis_server.command("CLIENT", "PAUSE", "1000", "ALL") == "OK"
        results, ticks = await ticks_while(
            engine.acheck_many([{"subject": "batch"}, {"subject": "batch"}])
        )
        assert [d.store for d in results] == ["redis", "redis"]
        assert ticks >= 10, f"the ticker ticked {ticks} times while acheck_many waited"

        token = mint("grace", role="premium")
        engine.reload_auth(hs256_auth())
        assert redis_server.command("CLIENT", "PAUSE", "1000", "ALL") == "OK"
        authorized, ticks = await ticks_while(engine.aauthorize(token))
        assert authorized.decision.store == "redis" and authorized.decision.limit == 5
        assert ticks >= 10, f"the ticker ticked {ticks} times while aauthorize waited"
    finally:
        engine.close()
