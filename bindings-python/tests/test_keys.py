"""Per-key administration from Python: inspect, reset, block, penalize, reward — on the
memory store and on Redis (another engine sees it)."""

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
        }
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


def test_keys_on_the_memory_store() -> None:
    engine = floodwall.Engine.from_dict(RULES)
    administer(engine, engine)
    assert "remaining=5" in repr(engine.inspect("per-user", "alice"))


def test_keys_on_redis_reach_every_engine(redis_server: RedisServer) -> None:
    config = dict(
        RULES,
        store={"kind": "redis", "url": redis_server.url, "prefix": "pykeys:", "deny_cache": False},
    )
    administer(floodwall.Engine.from_dict(config), floodwall.Engine.from_dict(config))


def test_errors_name_what_is_wrong() -> None:
    engine = floodwall.Engine.from_dict(RULES)
    with pytest.raises(floodwall.UnknownRuleError) as caught:
        engine.inspect("nope", "alice")
    assert caught.value.code == "unknown_rule" and "per-user" in str(caught.value)
    with pytest.raises(TypeError):
        engine.penalize("per-user", "alice", -1)
