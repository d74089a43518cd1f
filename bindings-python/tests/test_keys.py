"""Per-key administration from Python: inspect, reset, block, penalize, reward and a key's
own limit — on the memory store and on Redis (another engine sees it)."""

from __future__ import annotations

from typing import Any

import pytest

import floodwall
from redis_server import RedisServer

RULES: dict[str, Any] = {
    "rules": [
        {
            "name": "per-user",
            "key": "subject",
            "algorithm": "fixed_window",
            "limit": 5,
            "window": "1h",
            "block_for": "10m",
            "block_after": 3,
        },
        {
            "name": "per-team",
            "key": "header:x-team",
            "algorithm": "token_bucket",
            "capacity": 10,
            "refill_rate": 1.0,
            "key_limits": True,
        },
    ]
}


def administer(engine: floodwall.Engine, other: floodwall.Engine) -> None:
    assert other.check(subject="alice").allowed
    status = engine.inspect("per-user", "alice")
    assert (status.limit, status.remaining, status.blocked_for_ms) == (5, 4, None)
    engine.penalize("per-user", "alice", 4)
    assert other.inspect("per-user", "alice").remaining == 0
    engine.reward("per-user", "alice", 2)
    assert other.check(subject="alice").allowed
    engine.block_key("per-user", "alice", duration_ms=60_000)
    blocked = other.check(subject="alice")
    assert not blocked.allowed and blocked.blocked
    left = engine.inspect("per-user", "alice").blocked_for_ms
    assert left is not None and 50_000 < left <= 60_000
    engine.reset_key("per-user", "alice")
    assert other.inspect("per-user", "alice").remaining == 5


def own_limits(engine: floodwall.Engine, other: floodwall.Engine) -> None:
    team = {"x-team": "red"}
    assert engine.inspect("per-team", "red").key_limit_for_ms is None
    engine.set_key_limit("per-team", "red", 3, lifetime_ms=60_000)
    status = other.inspect("per-team", "red")
    assert (status.limit, status.remaining) == (3, 3)
    assert status.key_limit_for_ms is not None and 50_000 < status.key_limit_for_ms <= 60_000
    admitted = [other.check(subject=f"bob{i}", headers=team).allowed for i in range(5)]
    assert admitted == [True, True, True, False, False]
    denied = other.check(subject="carol", headers=team)
    assert denied.limit == 3
    # another key of the rule keeps the rule's limit
    assert other.inspect("per-team", "blue").limit == 10
    engine.clear_key_limit("per-team", "red")
    cleared = other.inspect("per-team", "red")
    assert (cleared.limit, cleared.key_limit_for_ms) == (10, None)


def test_keys_on_the_memory_store() -> None:
    engine = floodwall.Engine.from_dict(RULES)
    administer(engine, engine)
    own_limits(engine, engine)
    assert "remaining=5" in repr(engine.inspect("per-user", "alice"))
    assert "key_limit_for_ms=None" in repr(engine.inspect("per-team", "red"))


def test_keys_on_redis_reach_every_engine(redis_server: RedisServer) -> None:
    config = dict(
        RULES,
        store={"kind": "redis", "url": redis_server.url, "prefix": "pykeys:", "deny_cache": False},
    )
    administer(floodwall.Engine.from_dict(config), floodwall.Engine.from_dict(config))
    own_limits(floodwall.Engine.from_dict(config), floodwall.Engine.from_dict(config))


def test_errors_name_what_is_wrong() -> None:
    engine = floodwall.Engine.from_dict(RULES)
    with pytest.raises(floodwall.UnknownRuleError) as caught:
        engine.inspect("nope", "alice")
    assert caught.value.code == "unknown_rule" and "per-user" in str(caught.value)
    with pytest.raises(TypeError):
        engine.penalize("per-user", "alice", -1)
    with pytest.raises(floodwall.ConfigError) as refused:
        engine.set_key_limit("per-user", "alice", 3, lifetime_ms=60_000)
    assert "key_limits = true" in str(refused.value)
    with pytest.raises(floodwall.ConfigError) as zero:
        engine.set_key_limit("per-team", "red", 0, lifetime_ms=60_000)
    assert "limit" in str(zero.value)
    with pytest.raises(TypeError):
        engine.set_key_limit("per-team", "red", 3, lifetime_ms=-5)
