"""What only ``floodwall.asgi.FloodwallMiddleware`` does: the lifespan's state beside the
middleware's in the scope, and the ASGI cases a real server does not produce — a websocket
scope, a scope with no state or no ``raw_path``, a peer that is not loopback, an application
that answers in pieces, fails or never answers — as the engine's counters show them; and on
Redis, the event loop left free. What it does like the WSGI middleware is in
``test_middleware.py``."""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from conftest import ticks_while
from floodwall import Engine
from floodwall.asgi import DECISION_KEY, IDENTITY_KEY, FloodwallMiddleware
from http_servers import (
    PUBLIC_IP_LIMIT,
    USER_LIMIT,
    bearer,
    config,
    mint,
    responses,
    served_asgi,
)
from redis_server import RedisServer


def test_the_lifespan_state_reaches_the_route_beside_the_middleware_state() -> None:
    with served_asgi(Engine(config())) as client:
        response = client.get("/api/state", headers=bearer(mint("alice", "free")))
    assert response.status_code == 200
    state = response.json()
    assert state["lifespan_state"] == "kept"
    assert (state["subject"], state["rule"], state["remaining"]) == (
        "alice",
        "per-user",
        USER_LIMIT - 1,
    )


# ASGI cases a real server does not produce.


class Recorder:
    """An inner ASGI application that records the scope it was called with and answers 204
    with ``headers``."""

    def __init__(self, headers: Any = ()) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.headers = list(headers)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": self.headers})
            await send({"type": "http.response.body", "body": b""})


async def call(middleware: FloodwallMiddleware, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    return sent


def http_scope(path: str, client: Any = ("192.0.2.1", 5000), **extra: Any) -> dict[str, Any]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": client,
        "server": ("127.0.0.1", 80),
    }
    scope.update(extra)
    return scope


async def test_websocket_and_lifespan_scopes_pass_through() -> None:
    inner = Recorder()
    engine = Engine(config())
    middleware = FloodwallMiddleware(inner, engine=engine)
    websocket = {"type": "websocket", "path": "/api/whoami", "headers": []}
    lifespan = {"type": "lifespan"}
    assert await call(middleware, websocket) == []
    assert await call(middleware, lifespan) == []
    assert inner.scopes == [websocket, lifespan]
    assert "state" not in websocket
    assert engine.report()["totals"]["requests"] == 0


async def test_a_scope_without_state_gets_one() -> None:
    inner = Recorder()
    middleware = FloodwallMiddleware(inner, engine=Engine(config()), authenticate=False)
    sent = await call(middleware, http_scope("/public/info"))
    assert sent[0]["status"] == 204
    assert (b"ratelimit-limit", str(PUBLIC_IP_LIMIT).encode()) in sent[0]["headers"]
    state = inner.scopes[0]["state"]
    assert state[IDENTITY_KEY] is None
    assert state[DECISION_KEY].rule == "per-ip"


async def test_the_target_is_the_raw_path_with_its_query_else_the_encoded_path() -> None:
    engine = Engine(config(auth=False))
    middleware = FloodwallMiddleware(Recorder(), engine=engine, authenticate=False)
    # `%2F` is no separator: the raw path, not the decoded one, is the target.
    await call(middleware, http_scope("/public/a/b", raw_path=b"/public/a%2Fb", query_string=b"x=1"))
    # Without raw_path, the decoded path is percent-encoded again (UTF-8).
    await call(middleware, http_scope("/public/café", raw_path=None))
    endpoints = {e["key"] for e in engine.report()["top_endpoints"]}
    assert endpoints == {"GET /public/a%2Fb", "GET /public/caf%C3%A9"}


async def test_a_trusted_network_peer_forwards_the_client_address() -> None:
    engine = Engine(config(public_paths=["/public/**"], trusted_proxies=["10.0.0.0/8"]))
    middleware = FloodwallMiddleware(Recorder(), engine=engine)
    headers = [(b"x-forwarded-for", b"203.0.113.5"), (b"x-forwarded-for", b"10.7.7.7")]
    for _ in range(PUBLIC_IP_LIMIT):
        await call(middleware, http_scope("/public/info", ("10.1.2.3", 5000), headers=headers))
    assert not engine.check(method="GET", path="/public/info", ip="203.0.113.5").allowed
    assert engine.check(method="GET", path="/public/info", ip="10.1.2.3").allowed
    assert engine.check(method="GET", path="/public/info", ip="10.7.7.7").allowed


async def test_the_decision_headers_never_replace_the_apps_own() -> None:
    inner = Recorder([(b"RateLimit-Limit", b"999")])
    middleware = FloodwallMiddleware(inner, engine=Engine(config()), authenticate=False)
    [start, _] = await call(middleware, http_scope("/public/info"))
    names = [name.lower() for name, _ in start["headers"]]
    assert names.count(b"ratelimit-limit") == 1
    assert (b"RateLimit-Limit", b"999") in start["headers"]
    assert (b"ratelimit-remaining", str(PUBLIC_IP_LIMIT - 1).encode()) in start["headers"]


async def test_a_response_in_pieces_is_finished_once_after_its_last_piece() -> None:
    engine = Engine(config())
    seen_before_the_end: list[int] = []

    async def pieces(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 206, "headers": []})
        await send({"type": "http.response.body", "body": b"one,", "more_body": True})
        seen_before_the_end.append(engine.report()["totals"]["responses"])
        await send({"type": "http.response.body", "body": b"two"})

    middleware = FloodwallMiddleware(pieces, engine=engine, authenticate=False)
    sent = await call(middleware, http_scope("/public/info", query_string=b"page=2"))
    assert [m["type"] for m in sent] == ["http.response.start"] + ["http.response.body"] * 2
    assert seen_before_the_end == [0]
    assert engine.report()["totals"]["responses"] == 1
    assert responses(engine) == {"2xx": 1}


async def test_an_application_that_fails_or_never_answers_is_finished_as_a_500() -> None:
    engine = Engine({})

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("the application failed")

    async def silent(scope: Any, receive: Any, send: Any) -> None:
        return None

    async def failing_midway(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("the body failed")

    for app in (failing, silent, failing_midway):
        middleware = FloodwallMiddleware(app, engine=engine, authenticate=False)
        if app is silent:
            assert await call(middleware, http_scope("/public/info")) == []
        else:
            with pytest.raises(RuntimeError):
                await call(middleware, http_scope("/public/info"))
    # Once the answer has begun, its status is what the client got.
    assert responses(engine) == {"5xx": 2, "2xx": 1}


async def test_the_middlewares_own_answers_are_finished() -> None:
    engine = Engine(config())
    middleware = FloodwallMiddleware(Recorder(), engine=engine)
    missing = await call(middleware, http_scope("/api/whoami"))
    token = [(b"authorization", f"Bearer {mint('alice')}".encode())]
    for _ in range(USER_LIMIT + 1):
        last = await call(middleware, http_scope("/api/whoami", headers=token))
    assert (missing[0]["status"], last[0]["status"]) == (401, 429)
    assert [m["type"] for m in last] == ["http.response.start", "http.response.body"]
    assert b'"code":"rate_limited"' in last[1]["body"]
    assert responses(engine) == {"4xx": 2, "2xx": USER_LIMIT}


# On Redis the engine's calls leave the event loop free.


async def test_on_redis_the_middleware_leaves_the_loop_free_while_redis_is_paused(
    redis_server: RedisServer, redis_store: Callable[..., dict[str, Any]]
) -> None:
    engine = Engine({
        "store": redis_store(on_error="deny", timeout="5s"),
        "rules": [{"name": "failures", "key": "ip", "algorithm": "sliding_window", "limit": 5,
                   "window": "1h", "count_responses": "failed"}],
    })
    middleware = FloodwallMiddleware(Recorder(), engine=engine, authenticate=False)
    try:
        await call(middleware, http_scope("/warm"))
        assert redis_server.command("CLIENT", "PAUSE", "1000", "ALL") == "OK"
        sent, ticks = await ticks_while(call(middleware, http_scope("/paused")))
        assert sent[0]["status"] == 204
        assert (b"ratelimit-remaining", b"4") in sent[0]["headers"]
        assert ticks >= 10, f"the ticker ticked {ticks} times while the middleware waited"
    finally:
        engine.close()
    # Both 204s were refunded when finished (the rule counts failures only).
    assert engine.check(method="GET", path="/x", ip="192.0.2.1").remaining == 4


def bucket_engine(store: Any = None) -> Engine:
    """One request a 250 ms turn per client address."""
    rules = [
        {
            "name": "per-ip",
            "key": "ip",
            "algorithm": "token_bucket",
            "capacity": 1,
            "refill_rate": 4,
        }
    ]
    return Engine({"rules": rules, **({"store": store} if store else {})})


async def waits_out_then_answers(engine: Engine) -> None:
    waits = FloodwallMiddleware(Recorder(), engine=engine, authenticate=False, max_wait_ms=2000)
    answers = FloodwallMiddleware(Recorder(), engine=engine, authenticate=False, max_wait_ms=50)
    assert (await call(waits, http_scope("/api/x")))[0]["status"] == 204
    started = time.monotonic()
    waited = await call(waits, http_scope("/api/x"))
    elapsed = time.monotonic() - started
    assert waited[0]["status"] == 204
    # The bucket's next token comes 250 ms after the first was taken.
    assert elapsed >= 0.15, elapsed
    assert (await call(answers, http_scope("/api/x")))[0]["status"] == 429
    totals = engine.report()["totals"]
    # The waited-out refusal is not recorded; the answered one is.
    assert (totals["requests"], totals["admitted"], totals["rate_limited"]) == (3, 2, 1)


async def test_a_429_within_max_wait_is_waited_out_and_one_past_it_answered() -> None:
    await waits_out_then_answers(bucket_engine())


async def test_on_redis_a_429_within_max_wait_is_waited_out_too(
    redis_store: Callable[..., dict[str, Any]],
) -> None:
    await waits_out_then_answers(bucket_engine(redis_store()))


def test_a_bad_max_wait_is_refused_naming_it() -> None:
    engine = bucket_engine()
    for bad, error in [(-1, ValueError), (86_400_001, ValueError), ("1s", TypeError), (True, TypeError)]:
        with pytest.raises(error, match="max_wait_ms"):
            FloodwallMiddleware(Recorder(), engine=engine, authenticate=False, max_wait_ms=bad)
    with pytest.raises(ValueError, match="max_wait_ms"):
        engine.http("GET", "/", None, {}, max_wait_ms=-5)
