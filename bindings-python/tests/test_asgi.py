"""What only ``floodwall.asgi.FloodwallMiddleware`` does: the lifespan's state beside the
middleware's in the scope, and the ASGI cases a real server does not produce (a websocket
scope, a scope with no state, a peer that is not loopback, an application that answers in
pieces, fails or never answers, as the responses recorded show). What it does like the WSGI
middleware is in ``test_middleware.py``."""

from __future__ import annotations

from typing import Any

import pytest

from floodwall import Engine
from floodwall.asgi import DECISION_KEY, IDENTITY_KEY, FloodwallMiddleware
from http_servers import (
    PUBLIC_IP_LIMIT,
    USER_LIMIT,
    RecordingEngine,
    bearer,
    config,
    mint,
    served_asgi,
)


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
    """An inner ASGI application that records the scope it was called with and answers 204."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
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
    engine = RecordingEngine(config())
    middleware = FloodwallMiddleware(inner, engine=engine)
    websocket = {"type": "websocket", "path": "/api/whoami", "headers": []}
    lifespan = {"type": "lifespan"}
    assert await call(middleware, websocket) == []
    assert await call(middleware, lifespan) == []
    assert inner.scopes == [websocket, lifespan]
    assert "state" not in websocket
    assert engine.recorded == []


async def test_a_scope_without_state_gets_one() -> None:
    inner = Recorder()
    middleware = FloodwallMiddleware(inner, engine=Engine(config()), authenticate=False)
    sent = await call(middleware, http_scope("/public/info"))
    assert sent[0]["status"] == 204
    assert (b"ratelimit-limit", str(PUBLIC_IP_LIMIT).encode()) in sent[0]["headers"]
    state = inner.scopes[0]["state"]
    assert state[IDENTITY_KEY] is None
    assert state[DECISION_KEY].rule == "per-ip"


async def test_a_trusted_network_peer_forwards_the_client_address() -> None:
    engine = Engine(config())
    inner = Recorder()
    middleware = FloodwallMiddleware(
        inner, engine=engine, public_paths=["/public/*"], trusted_proxies=["10.0.0.0/8"]
    )
    headers = [(b"x-forwarded-for", b"203.0.113.5"), (b"x-forwarded-for", b"10.7.7.7")]
    for _ in range(PUBLIC_IP_LIMIT):
        await call(middleware, http_scope("/public/info", ("10.1.2.3", 5000), headers=headers))
    assert not engine.check(method="GET", path="/public/info", ip="203.0.113.5").allowed
    assert engine.check(method="GET", path="/public/info", ip="10.1.2.3").allowed
    assert engine.check(method="GET", path="/public/info", ip="10.7.7.7").allowed


async def test_a_response_in_pieces_is_recorded_once_after_its_last_piece() -> None:
    engine = RecordingEngine(config())
    seen_before_the_end: list[int] = []

    async def pieces(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 206, "headers": []})
        await send({"type": "http.response.body", "body": b"one,", "more_body": True})
        seen_before_the_end.append(len(engine.recorded))
        await send({"type": "http.response.body", "body": b"two"})

    middleware = FloodwallMiddleware(pieces, engine=engine, authenticate=False)
    sent = await call(middleware, http_scope("/public/info", query_string=b"page=2"))
    assert [m["type"] for m in sent] == ["http.response.start"] + ["http.response.body"] * 2
    assert seen_before_the_end == [0]
    assert [r[:3] for r in engine.recorded] == [("GET", "/public/info", 206)]


async def test_an_application_that_fails_or_never_answers_is_recorded_as_a_500() -> None:
    engine = RecordingEngine({})

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
    assert [r[2] for r in engine.recorded] == [500, 500, 200]


async def test_the_middlewares_own_answers_are_recorded() -> None:
    engine = RecordingEngine(config())
    middleware = FloodwallMiddleware(Recorder(), engine=engine)
    missing = await call(middleware, http_scope("/api/whoami"))
    token = [(b"authorization", f"Bearer {mint('alice')}".encode())]
    for _ in range(USER_LIMIT + 1):
        last = await call(middleware, http_scope("/api/whoami", headers=token))
    assert (missing[0]["status"], last[0]["status"]) == (401, 429)
    assert [r[2] for r in engine.recorded] == [401] + [204] * USER_LIMIT + [429]
