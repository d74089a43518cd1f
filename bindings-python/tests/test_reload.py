"""Hot reload from Python: counts carried over or restarted, the summary, errors that change
nothing, the headers the engine reads refreshed — on the memory store and on Redis."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

import floodwall
from redis_server import RedisServer

PER_USER: dict[str, Any] = {
    "name": "per-user",
    "key": "subject",
    "algorithm": "fixed_window",
    "limit": 3,
    "window": "1h",
}
PER_TENANT: dict[str, Any] = {
    "name": "per-tenant",
    "key": "header:x-tenant",
    "algorithm": "fixed_window",
    "limit": 10,
    "window": "1h",
}


def config(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"rules": [copy.deepcopy(r) for r in rules], **extra}


def carry_over(engine: floodwall.Engine, base: dict[str, Any]) -> None:
    assert engine.check(subject="bob").remaining == 2
    summary = engine.reload({**base, "rules": [PER_TENANT, PER_USER]})
    assert summary["rules"] == [
        {"name": "per-tenant", "change": "added"},
        {"name": "per-user", "change": "unchanged"},
    ]
    assert engine.check(subject="bob").remaining == 1
    changed = dict(PER_USER, limit=5)
    summary = engine.reload({**base, "rules": [changed]})
    assert [r["change"] for r in summary["rules"]] == ["restarted", "removed"]
    assert engine.check(subject="bob").remaining == 4


def test_a_reload_keeps_an_unchanged_rule_s_count_and_restarts_a_changed_one() -> None:
    base: dict[str, Any] = {}
    engine = floodwall.Engine.from_dict(config(PER_USER))
    carry_over(engine, base)
    assert engine.reload({**base, "rules": [dict(PER_USER, limit=5)]})["generations"] == 3


def test_on_redis_too(redis_server: RedisServer) -> None:
    base = {"store": {"kind": "redis", "url": redis_server.url, "prefix": "pyreload:"}}
    engine = floodwall.Engine.from_dict(config(PER_USER, **base))
    carry_over(engine, base)
    # Another engine still on the old limit counts apart from the restarted rule.
    old = floodwall.Engine.from_dict(config(PER_USER, **base))
    assert old.check(subject="bob").remaining == 0


def test_an_invalid_configuration_changes_nothing_and_names_the_field(tmp_path: Path) -> None:
    engine = floodwall.Engine.from_dict(config(PER_USER))
    engine.check(subject="bob")
    with pytest.raises(floodwall.ConfigError) as caught:
        engine.reload(config(dict(PER_USER, limit=0)))
    assert caught.value.field == "rules[0].limit"
    with pytest.raises(floodwall.ConfigError) as caught:
        engine.reload(config(PER_USER, monitor={"horizon": "5m"}))
    assert caught.value.field == "monitor.horizon"
    with pytest.raises(floodwall.ConfigError):
        engine.reload_toml("[[rules]]\nname = ")
    with pytest.raises(floodwall.ConfigError):
        engine.reload_file(tmp_path / "absent.toml")
    with pytest.raises(TypeError):
        engine.reload("rules")  # type: ignore[arg-type]
    assert engine.check(subject="bob").remaining == 1


def test_reload_file_and_the_headers_it_reads(tmp_path: Path) -> None:
    engine = floodwall.Engine.from_dict(config(PER_USER))
    assert "x-tenant" not in engine.http_headers
    assert "x-tenant" not in engine._http_request_names()
    path = tmp_path / "floodwall.toml"
    path.write_text(
        '[[rules]]\nname = "per-tenant"\nkey = "header:x-tenant"\n'
        'algorithm = "fixed_window"\nlimit = 1\nwindow = "1h"\n'
    )
    summary = engine.reload_file(path)
    assert summary["rules"][0] == {"name": "per-tenant", "change": "added"}
    assert "x-tenant" in engine._http_request_names()
    assert engine.check(headers={"x-tenant": "acme"}).allowed
    assert not engine.check(headers={"x-tenant": "acme"}).allowed
    assert engine.reload_json('{"rules": []}')["rules"] == [
        {"name": "per-tenant", "change": "removed"}
    ]
    assert engine.check(headers={"x-tenant": "acme"}).allowed
