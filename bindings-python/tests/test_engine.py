"""The engine's construction routes and the values it answers: ``Decision`` (fields, repr,
immutability, headers, layers, truth value), ``check_many``, and the engine's properties
(``rules``, ``key_count``, ``purge_expired``, ``store_kind``, ``may_wait``)."""

from __future__ import annotations

import gc
import json
import pathlib
import shutil
import time
from typing import Any

import jwt as pyjwt
import pytest

import floodwall
from conftest import JWT_FIXTURES
from floodwall import ConfigError, CostExceedsLimitError, Decision, Layer

TOML = """
[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 2
window = "1m"

[[rules]]
name = "global"
key = "global"
algorithm = "token_bucket"
capacity = 3
refill_rate = 1
"""

CONFIG: dict[str, Any] = {
    "rules": [
        {"name": "per-user", "key": "subject", "algorithm": "fixed_window", "limit": 2,
         "window": "1m"},
        {"name": "global", "key": "global", "algorithm": "token_bucket", "capacity": 3,
         "refill_rate": 1},
    ]
}


def history(engine: floodwall.Engine) -> list[str]:
    """The decisions of a fixed request sequence, as reprs."""
    return [
        repr(engine.check(subject=subject, now_ms=1_000))
        for subject in ("alice", "alice", "alice", "bob", "carol")
    ]


# --- construction --------------------------------------------------------------------------


def test_every_construction_route_gives_the_same_engine(tmp_path: pathlib.Path) -> None:
    (tmp_path / "floodwall.toml").write_text(TOML)
    (tmp_path / "floodwall.json").write_text(json.dumps(CONFIG))
    engines = {
        "from_dict": floodwall.Engine.from_dict(CONFIG),
        "from_toml": floodwall.Engine.from_toml(TOML),
        "from_json": floodwall.Engine.from_json(json.dumps(CONFIG)),
        "from_file toml": floodwall.Engine.from_file(tmp_path / "floodwall.toml"),
        "from_file json (str)": floodwall.Engine.from_file(str(tmp_path / "floodwall.json")),
        "Engine(config)": floodwall.Engine(CONFIG),
    }
    expected = history(floodwall.Engine.from_dict(CONFIG))
    assert expected[2].startswith("Decision(allowed=False, rule='per-user'")
    assert expected[4].startswith("Decision(allowed=False, rule='global'")
    for route, engine in engines.items():
        assert type(engine) is floodwall.Engine, route
        assert engine.rules == ("per-user", "global"), route
        assert history(engine) == expected, route


def test_a_toml_file_not_ending_in_json_is_read_as_toml(tmp_path: pathlib.Path) -> None:
    (tmp_path / "gateway.conf").write_text(TOML)
    assert floodwall.Engine.from_file(tmp_path / "gateway.conf").rules == ("per-user", "global")
    (tmp_path / "gateway2.conf").write_text(json.dumps(CONFIG))
    with pytest.raises(ConfigError):
        floodwall.Engine.from_file(tmp_path / "gateway2.conf")


def test_a_configuration_must_be_an_object() -> None:
    """A JSON array is no configuration: it must not build an engine that admits everything."""
    for build in (
        lambda: floodwall.Engine.from_json("[]"),
        lambda: floodwall.Engine.from_dict([]),  # type: ignore[arg-type]
        lambda: floodwall.Engine.from_json("null"),
        lambda: floodwall.Engine.from_json('"rules"'),
    ):
        with pytest.raises((ConfigError, TypeError)):
            build()


def test_an_empty_engine_admits_everything() -> None:
    for engine in (floodwall.Engine(), floodwall.Engine({}), floodwall.Engine.from_toml("")):
        decision = engine.check(subject="alice", path="/anything")
        assert decision.allowed
        assert (decision.rule, decision.limit, decision.remaining) == (None, None, None)
        assert (decision.reset_after_ms, decision.retry_after_ms) == (0, 0)
        assert decision.headers == {}
        assert decision.layers == ()
        assert engine.rules == ()


def test_subclasses_are_built_by_every_route() -> None:
    class Gateway(floodwall.Engine):
        pass

    for engine in (
        Gateway(CONFIG),
        Gateway.from_dict(CONFIG),
        Gateway.from_toml(TOML),
        Gateway.from_json(json.dumps(CONFIG)),
    ):
        assert type(engine) is Gateway
        assert engine.check(subject="a", now_ms=1_000).allowed


def test_from_file_resolves_key_files_against_its_own_directory(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    (conf / "keys").mkdir(parents=True)
    shutil.copy(JWT_FIXTURES / "keys" / "rsa-1.pub.pem", conf / "keys" / "rsa-1.pub.pem")
    (conf / "floodwall.toml").write_text(
        '[auth]\nalgorithms = ["RS256"]\n\n[[auth.keys]]\nkid = "rsa-1"\n'
        'pem_file = "keys/rsa-1.pub.pem"\n'
    )
    (conf / "floodwall.json").write_text(
        json.dumps({"auth": {"algorithms": ["RS256"],
                             "keys": [{"kid": "rsa-1", "pem_file": "keys/rsa-1.pub.pem"}]}})
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    private = (JWT_FIXTURES / "keys" / "rsa-1.key.pem").read_text()
    token = pyjwt.encode({"sub": "heidi", "exp": int(time.time()) + 3600}, private,
                         algorithm="RS256", headers={"kid": "rsa-1"})
    for path in (conf / "floodwall.toml", "../conf/floodwall.toml", conf / "floodwall.json"):
        engine = floodwall.Engine.from_file(path)
        identity = engine.authenticate("Bearer " + token)
        assert (identity.subject, identity.key_id, identity.algorithm) == ("heidi", "rsa-1", "RS256")
    # The same section as text has no file to resolve against: the working directory.
    with pytest.raises(ConfigError) as caught:
        floodwall.Engine.from_toml((conf / "floodwall.toml").read_text())
    assert caught.value.field is not None and "pem_file" in caught.value.field


def test_engine_repr() -> None:
    assert repr(floodwall.Engine(CONFIG)) == "Engine(store_kind='memory', rules=2)"
    assert repr(floodwall.Engine()) == "Engine(store_kind='memory', rules=0)"


def test_engine_properties_on_memory() -> None:
    engine = floodwall.Engine(CONFIG)
    assert engine.store_kind == "memory"
    assert engine.may_wait is False
    assert engine.store_failure is None
    assert engine.rules == ("per-user", "global")
    assert isinstance(engine.rules, tuple)


# --- Decision ------------------------------------------------------------------------------


def test_decision_fields_and_repr() -> None:
    engine = floodwall.Engine(CONFIG)
    first = engine.check(subject="alice", now_ms=1_000)
    assert isinstance(first, Decision)
    assert repr(first) == (
        "Decision(allowed=True, rule='per-user', limit=2, remaining=1, reset_after_ms=59000, "
        "retry_after_ms=0, store='memory')"
    )
    engine.check(subject="alice", now_ms=1_000)
    denied = engine.check(subject="alice", now_ms=1_000)
    assert repr(denied) == (
        "Decision(allowed=False, rule='per-user', limit=2, remaining=0, reset_after_ms=59000, "
        "retry_after_ms=59000, store='memory')"
    )
    assert bool(first) is True and bool(denied) is False
    assert (not denied) and first


def test_decision_headers() -> None:
    engine = floodwall.Engine(CONFIG)
    engine.check(subject="alice", now_ms=1_000)
    admitted = engine.check(subject="alice", now_ms=1_000)
    assert admitted.headers == {
        "RateLimit-Policy": '"per-user";q=2;w=60, "global";q=3;w=3',
        "RateLimit": '"per-user";r=0;t=59, "global";r=1;t=2',
        "RateLimit-Limit": "2",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "59",
    }
    denied = engine.check(subject="alice", now_ms=1_000)
    assert denied.headers["Retry-After"] == "59"
    copy = denied.headers
    copy.clear()
    assert denied.headers["Retry-After"] == "59", "headers is a new dict on every read"


def test_header_sets_can_be_turned_off() -> None:
    engine = floodwall.Engine({**CONFIG, "headers": {"ietf": False, "retry_after": False}})
    for _ in range(3):
        decision = engine.check(subject="alice", now_ms=1_000)
    assert not decision.allowed
    assert decision.headers == {
        "RateLimit-Limit": "2", "RateLimit-Remaining": "0", "RateLimit-Reset": "59"
    }


def test_decision_layers() -> None:
    engine = floodwall.Engine(CONFIG)
    decision = engine.check(subject="alice", now_ms=1_000)
    assert isinstance(decision.layers, tuple)
    per_user, global_ = decision.layers
    assert all(isinstance(layer, Layer) for layer in decision.layers)
    assert (per_user.rule, per_user.allowed, per_user.limit, per_user.remaining) == (
        "per-user", True, 2, 1
    )
    assert (per_user.reset_after_ms, per_user.retry_after_ms) == (59_000, 0)
    assert (global_.rule, global_.allowed, global_.limit, global_.remaining) == (
        "global", True, 3, 2
    )
    assert (global_.reset_after_ms, global_.retry_after_ms) == (1_000, 0)
    assert repr(global_) == (
        "Layer(rule='global', allowed=True, limit=3, remaining=2, reset_after_ms=1000, "
        "retry_after_ms=0)"
    )
    # Bob and carol empty the global bucket; dave is denied by it alone, and nothing of
    # his own counter is consumed.
    engine.check(subject="bob", now_ms=1_000)
    engine.check(subject="carol", now_ms=1_000)
    denied = engine.check(subject="dave", now_ms=1_000)
    assert (denied.allowed, denied.rule, denied.retry_after_ms) == (False, "global", 1_000)
    assert [(l.rule, l.allowed, l.remaining) for l in denied.layers] == [
        ("per-user", True, 2),
        ("global", False, 0),
    ]
    later = engine.check(subject="dave", now_ms=2_000)
    assert later.allowed and later.layers[0].remaining == 1, "the denial consumed nothing"


def test_decision_and_layer_are_immutable() -> None:
    decision = floodwall.Engine(CONFIG).check(subject="alice", now_ms=1_000)
    for name, value in [("allowed", False), ("remaining", 0), ("store", "redis"), ("extra", 1)]:
        with pytest.raises(AttributeError):
            setattr(decision, name, value)
    layer = decision.layers[0]
    with pytest.raises(AttributeError):
        layer.remaining = 0  # type: ignore[misc]
    assert decision.allowed and decision.remaining == 1 and layer.remaining == 1


def test_a_decision_outlives_the_name_of_its_engine() -> None:
    decision = floodwall.Engine(CONFIG).check(subject="alice", now_ms=1_000)
    gc.collect()
    assert decision.headers["RateLimit-Remaining"] == "1"
    assert decision.layers[0].rule == "per-user"


def test_check_arguments() -> None:
    engine = floodwall.Engine(
        {"rules": [
            {"name": "writes", "match": {"methods": ["POST"], "paths": ["/api/**"]},
             "key": "header:X-Api-Key", "algorithm": "fixed_window", "limit": 10,
             "window": "1m", "roles": {"premium": {"limit": 100}}},
        ]}
    )
    assert engine.check(method="GET", path="/api/x", now_ms=1_000).rule is None
    decision = engine.check(method="post", path="/api//x/?q=1", headers={"x-api-key": "k1"},
                            cost=4, now_ms=1_000)
    assert (decision.rule, decision.remaining) == ("writes", 6)
    decision = engine.check(method="POST", path="/api/x", headers={"X-API-KEY": "k1"},
                            now_ms=1_000)
    assert decision.remaining == 5, "the same key whatever the header name's case"
    premium = engine.check(method="POST", path="/api/x", role="premium",
                           headers={"X-Api-Key": "k1"}, now_ms=1_000)
    assert (premium.limit, premium.remaining) == (100, 99)
    peek = engine.check(method="POST", path="/api/x", headers={"X-Api-Key": "k1"}, cost=0,
                        now_ms=1_000)
    assert (peek.allowed, peek.remaining) == (True, 5)
    assert engine.check(method="POST", path="/api/x", ip="10.0.0.1", now_ms=1_000).remaining == 9


# --- check_many ----------------------------------------------------------------------------


def test_check_many_answers_in_order_with_errors_in_their_slots() -> None:
    engine = floodwall.Engine(CONFIG)
    results = engine.check_many([
        {"subject": "alice", "now_ms": 1_000},
        {"subject": "alice", "cost": 5, "now_ms": 1_000},
        {"subject": "alice", "now_ms": 1_000},
        {"subject": "alice", "now_ms": 1_000},
        {"subject": "bob", "now_ms": 61_000, "headers": {"X-Any": "1"}, "method": "POST",
         "path": "/", "ip": "10.0.0.1", "role": "free"},
    ])
    assert isinstance(results, list) and len(results) == 5
    first, error, second, third, later = results
    assert isinstance(first, Decision) and first.allowed and first.remaining == 1
    assert isinstance(error, CostExceedsLimitError)
    assert (error.code, error.status) == ("cost_exceeds_limit", 429)
    assert second.allowed and second.remaining == 0
    assert not third.allowed and third.headers["Retry-After"] == "59"
    assert later.allowed and later.rule == "per-user"


def test_check_many_decides_like_check_in_sequence() -> None:
    requests = [{"subject": s, "now_ms": 1_000 + i} for i, s in enumerate("aabacbadcb")]
    batch = floodwall.Engine(CONFIG).check_many(requests)
    one_by_one = floodwall.Engine(CONFIG)
    assert [repr(d) for d in batch] == [repr(one_by_one.check(**r)) for r in requests]
    assert [d.headers for d in batch] == [
        d.headers for d in floodwall.Engine(CONFIG).check_many(iter(requests))
    ]


def test_check_many_of_nothing() -> None:
    assert floodwall.Engine(CONFIG).check_many([]) == []
    assert floodwall.Engine(CONFIG).check_many(iter(())) == []


# --- keys ----------------------------------------------------------------------------------


def test_key_count_and_purge_expired() -> None:
    engine = floodwall.Engine(CONFIG)
    assert engine.key_count == 0
    for subject in ("alice", "bob", "carol"):
        engine.check(subject=subject, now_ms=1_000)
    assert engine.key_count == 4, "three subjects and the global bucket"
    # Their windows ended in 1970: the engine's clock finds them all expired.
    assert engine.purge_expired() == 4
    assert engine.key_count == 0
    assert engine.purge_expired() == 0

    engine.check(subject="dave")
    engine.check(subject="erin")
    assert engine.key_count == 3
    assert engine.purge_expired() == 0, "keys written now are alive"
    assert engine.key_count == 3


def test_max_keys_caps_the_memory_store() -> None:
    engine = floodwall.Engine({**CONFIG, "store": {"kind": "memory", "max_keys": 10}})
    for i in range(50):
        engine.check(subject=f"user-{i}")
    assert engine.key_count <= 10


def test_close_keeps_the_engine_usable() -> None:
    engine = floodwall.Engine(CONFIG)
    engine.close()
    engine.close()
    assert engine.check(subject="alice", now_ms=1_000).allowed


def test_what_the_rules_key_on() -> None:
    engine = floodwall.Engine.from_dict({"rules": [
        {"name": "by-key", "key": "header:X-Api-Key", "algorithm": "fixed_window", "limit": 5, "window": "1m"},
        {"name": "by-key-again", "key": "header:x-api-key", "algorithm": "fixed_window", "limit": 9, "window": "1m"},
        {"name": "by-ip", "key": "ip", "algorithm": "fixed_window", "limit": 5, "window": "1m"},
    ]})
    assert engine.key_headers == ("x-api-key",)
    assert engine.keys_ip is True
    bare = floodwall.Engine.from_dict({"rules": [
        {"name": "per-user", "key": "subject", "algorithm": "fixed_window", "limit": 5, "window": "1m"},
    ]})
    assert bare.key_headers == ()
    assert bare.keys_ip is False
