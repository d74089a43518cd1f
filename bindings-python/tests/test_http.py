"""``Engine.http`` and ``HttpExchange`` (the core's HTTP layer, ``floodwall::http``) from
Python: the three verdicts and what each carries, ``finish`` exactly once, the arguments
converted or refused, the stages, the access lists replaced at run time, and the asyncio
variants on the memory store and on Redis. What the layer decides for each kind of request is
held by the conformance cases, over real HTTP (``test_http_conformance.py``)."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest

import floodwall
from conftest import hs256_auth, mint, ticks_while
from floodwall import ConfigError, Engine, HttpExchange
from redis_server import RedisServer

RULES = [
    {"name": "per-user", "match": {"paths": ["/api/**"]}, "key": "subject",
     "algorithm": "fixed_window", "limit": 2, "window": "1h"},
    {"name": "per-ip", "match": {"paths": ["/public/**"]}, "key": "ip",
     "algorithm": "fixed_window", "limit": 1, "window": "1h"},
]
HTTP = {"public_paths": ["/public/**"], "skip_paths": ["/health"]}


def engine(**extra: Any) -> Engine:
    return Engine({"auth": hs256_auth(), "rules": RULES, "http": HTTP, **extra})


def test_a_pass_carries_the_identity_the_decision_and_the_headers_to_add() -> None:
    exchange = engine().http("GET", "/API/orders/?page=2", "192.0.2.1",
                             {"authorization": mint("alice", role="premium")})
    assert (exchange.verdict, exchange.status, exchange.reason, exchange.body) == (
        "pass", 0, "", b""
    )
    assert exchange.path == "/api/orders"
    assert exchange.identity is not None
    assert (exchange.identity.subject, exchange.identity.role) == ("alice", "premium")
    assert exchange.decision is not None
    assert (exchange.decision.rule, exchange.decision.remaining) == ("per-user", 1)
    assert exchange.headers == list(exchange.decision.headers.items())
    assert dict(exchange.headers)["RateLimit-Remaining"] == "1"
    assert not exchange.touches_store and not exchange.finished
    assert repr(exchange) == "HttpExchange(verdict='pass', status=0, path='/api/orders')"


def test_a_refusal_carries_the_answer_to_write() -> None:
    exchange = engine().http("GET", "/api/orders", None, {})
    assert (exchange.verdict, exchange.status, exchange.reason) == (
        "refuse", 401, "Unauthorized"
    )
    assert exchange.identity is None and exchange.decision is None
    headers = dict(exchange.headers)
    assert headers["WWW-Authenticate"] == 'Bearer realm="floodwall"'
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["Content-Length"] == str(len(exchange.body))
    assert json.loads(exchange.body)["code"] == "missing_token"


def test_a_skip_carries_nothing_and_has_nothing_to_finish() -> None:
    exchange = engine().http("GET", "/health", "192.0.2.1", {})
    assert (exchange.verdict, exchange.status, exchange.headers, exchange.path) == (
        "skip", 0, [], None
    )
    assert exchange.finished
    with pytest.raises(RuntimeError, match="nothing to finish"):
        exchange.finish(200)


def test_finish_records_the_response_once() -> None:
    e = engine()
    exchange = e.http("GET", "/public/x", "192.0.2.1", {})
    assert exchange.identity is None and exchange.decision is not None
    exchange.finish(404)
    assert exchange.finished
    with pytest.raises(RuntimeError, match="already finished"):
        exchange.finish(200)
    report = e.report()
    assert report["status_classes"] == {"4xx": 1}
    assert [(t["key"], t["count"]) for t in report["top_endpoints"]] == [("GET /public/x", 1)]


@pytest.mark.parametrize(
    ("status", "error"),
    [(True, TypeError), ("200", TypeError), (200.0, TypeError), (99, ValueError),
     (1000, ValueError)],
)
def test_finish_refuses_a_bad_status_and_stays_unfinished(status: Any, error: type) -> None:
    exchange = engine().http("GET", "/public/x", "192.0.2.1", {})
    with pytest.raises(error, match="status"):
        exchange.finish(status)
    with pytest.raises(TypeError, match="headers"):
        exchange.finish(200, [("x-cost", "1")])  # type: ignore[arg-type]
    assert not exchange.finished
    exchange.finish(200)


def test_finish_reads_the_cost_header_of_the_response() -> None:
    e = Engine({"rules": [{"name": "tokens", "key": "global", "algorithm": "fixed_window",
                           "limit": 10, "window": "1h", "cost_header": "X-Tokens-Used"}]})
    assert e.http_response_headers == ["x-tokens-used"]
    exchange = e.http("POST", "/llm", None, {}, stage="rate_limit")
    exchange.finish(200, {"x-tokens-used": "6"})
    assert e.check(method="POST", path="/llm", cost=0).remaining == 3


@pytest.mark.parametrize(
    ("cost", "verdict"),
    [(0, "pass"), (2, "pass"), (2.0, "pass"), (3, "refuse"), (2**53, "refuse"),
     (2**53 + 1, "refuse"), (10**400, "refuse"), (-(10**400), "refuse"), (-1, "refuse"),
     (0.5, "refuse"), (float("inf"), "refuse"), (float("nan"), "refuse")],
    ids=repr,
)
def test_the_cost_is_a_number_the_engine_judges(cost: Any, verdict: str) -> None:
    e = Engine({"rules": [{"name": "global", "key": "global", "algorithm": "fixed_window",
                           "limit": 2, "window": "1h"}]})
    exchange = e.http("GET", "/api/x", None, {}, cost=cost, stage="rate_limit")
    assert exchange.verdict == verdict
    if verdict == "refuse":
        code = json.loads(exchange.body)["code"]
        assert code == ("cost_exceeds_limit" if cost in (3, 2**53) else "invalid_cost")


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"cost": "1"}, TypeError, "cost"),
        ({"cost": True}, TypeError, "cost"),
        ({"stage": "auth"}, ValueError, "'guard', 'authenticate' or 'rate_limit'"),
        ({"caller": "alice"}, TypeError, "caller"),
        ({"method": 5}, TypeError, "method"),
        ({"target": b"/x"}, TypeError, "target"),
        ({"peer": 127}, TypeError, "peer"),
        ({"headers": [("a", "b")]}, TypeError, "headers"),
        ({"headers": {"a": 1}}, TypeError, "headers"),
    ],
)
def test_a_bad_argument_is_refused_naming_it(
    kwargs: dict[str, Any], error: type, name: str
) -> None:
    e = engine()
    args: dict[str, Any] = {"method": "GET", "target": "/public/x", "peer": "192.0.2.1",
                            "headers": {}}
    args.update(kwargs)
    with pytest.raises(error) as caught:
        e.http(**args)
    assert name in " ".join([str(caught.value), *getattr(caught.value, "__notes__", [])])
    assert e.key_count == 0, "a refused call consumed nothing"


def test_the_stages_split_the_token_from_the_limits() -> None:
    e = engine()
    token = {"authorization": mint("alice")}
    first = e.http("GET", "/api/x", None, token, stage="authenticate")
    assert first.verdict == "pass" and first.identity is not None
    assert first.decision is not None and first.decision.rule is None
    second = e.http("GET", "/api/x", None, {}, stage="rate_limit", caller=("alice", None),
                    after_authenticate=True)
    assert second.identity is None
    assert second.decision is not None
    assert (second.decision.rule, second.decision.remaining) == ("per-user", 1)
    second.finish(200)
    first.finish(200)
    assert e.report()["totals"]["responses"] == 1, "the first stage records the response"


def test_access_lists_are_replaced_while_serving() -> None:
    e = engine()
    empty = {"addresses": [], "subjects": [], "roles": [], "headers": {}}
    assert e.access_lists() == {"allow": empty, "deny": empty}
    assert "x-api-key" not in e.http_headers
    e.set_access_lists({"deny": {"headers": {"X-Api-Key": ["leaked"]}, "subjects": ["mallory"]}})
    assert e.access_lists()["deny"]["subjects"] == ["mallory"]
    assert "x-api-key" in e.http_headers
    denied = e.http("GET", "/public/x", "192.0.2.1", {"x-api-key": "leaked"})
    assert (denied.status, json.loads(denied.body)["code"]) == (403, "access_denied")
    assert e.report()["totals"]["denied"] == 1


@pytest.mark.parametrize(
    ("lists", "field"),
    [
        ({"deny": {"addresses": ["10.0.0.1/8"]}}, "deny.addresses[0]"),
        ({"allow": {"subjects": [""]}}, "allow.subjects[0]"),
        ({"deny": {"addresses": "10.0.0.1"}}, "deny.addresses"),
    ],
)
def test_bad_access_lists_name_the_entry_and_keep_the_lists(
    lists: dict[str, Any], field: str
) -> None:
    e = engine()
    e.set_access_lists({"deny": {"subjects": ["mallory"]}})
    with pytest.raises(ConfigError) as caught:
        e.set_access_lists(lists)
    assert caught.value.field == field
    assert e.access_lists()["deny"]["subjects"] == ["mallory"]


def test_unknown_access_list_fields_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="block"):
        engine().set_access_lists({"block": {}})
    with pytest.raises(ConfigError, match="JSON"):
        engine().set_access_lists({"deny": {"subjects": [object()]}})


async def test_ahttp_and_afinish_answer_what_http_and_finish_do() -> None:
    e = engine()
    exchange = await e.ahttp("GET", "/api/x", "192.0.2.1", {"authorization": mint("bob")})
    assert isinstance(exchange, HttpExchange)
    assert exchange.verdict == "pass" and exchange.identity is not None
    await e.afinish(exchange, 201)
    assert exchange.finished
    assert e.report()["status_classes"] == {"2xx": 1}


async def test_on_redis_finishing_gives_back_what_the_rule_does_not_count_off_the_loop(
    redis_server: RedisServer, redis_store: Callable[..., dict[str, Any]],
) -> None:
    rules = [{"name": "failures", "key": "ip", "algorithm": "sliding_window", "limit": 2,
              "window": "1h", "count_responses": "failed"}]
    e = Engine({"store": redis_store(on_error="error"), "rules": rules})
    plain = Engine({"store": redis_store(on_error="error"), "rules": [
        {"name": "global", "key": "global", "algorithm": "fixed_window", "limit": 9,
         "window": "1h"}]})
    try:
        # A rule that does not hear about the response leaves nothing to write.
        assert not (await plain.ahttp("GET", "/x", None, {}, stage="rate_limit")).touches_store
        for i, status in enumerate((200, 200, 500, 200)):
            exchange = await e.ahttp("GET", "/x", "192.0.2.9", {}, stage="rate_limit")
            assert exchange.verdict == "pass" and exchange.touches_store
            assert exchange.decision is not None and exchange.decision.store == "redis"
            if i > 0:
                await e.afinish(exchange, status)
                continue
            assert redis_server.command("CLIENT", "PAUSE", "1000", "ALL") == "OK"
            _, ticks = await ticks_while(e.afinish(exchange, status))
            assert ticks >= 10, f"the ticker ticked {ticks} times while afinish waited"
        # The successes were given back: one failure counted, one more fits.
        last = await e.ahttp("GET", "/x", "192.0.2.9", {}, stage="rate_limit")
        assert last.decision is not None and last.decision.remaining == 0
        over = await e.ahttp("GET", "/x", "192.0.2.9", {}, stage="rate_limit")
        assert over.status == 429
        await e.afinish(over, over.status)
        await e.afinish(last, 200)
    finally:
        e.close()
        plain.close()


def test_the_package_exports_the_http_types() -> None:
    assert floodwall.HttpExchange is floodwall._floodwall.HttpExchange
    assert set(floodwall.AccessLists.__annotations__) == {"allow", "deny"}
    assert list(floodwall.AccessList.__annotations__) == [
        "addresses", "subjects", "roles", "headers"
    ]
