"""What only ``floodwall.wsgi.FloodwallMiddleware`` does: the WSGI cases a loopback server
does not produce (a peer that is not loopback, the application's response iterable — returned
as it is when whole, else passed through a thin one that records the response when closed —,
an application that fails, a mounted application, a non-ASCII path). What it does like the
ASGI middleware, over real HTTP, is in ``test_middleware.py``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Optional

import pytest

from floodwall import Engine
from floodwall.wsgi import DECISION_KEY, IDENTITY_KEY, FloodwallMiddleware
from http_servers import PUBLIC_IP_LIMIT, RecordingEngine, config


class Recorder:
    """An inner WSGI application that records the environ it was called with and answers
    204 with the body it was given."""

    def __init__(self, body: Optional[Iterable[bytes]] = None) -> None:
        self.environs: list[dict[str, Any]] = []
        self.body: Iterable[bytes] = [] if body is None else body

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.environs.append(environ)
        start_response("204 No Content", [("X-Inner", "yes")])
        return self.body


def call(
    middleware: FloodwallMiddleware, path: str, **environ: Any
) -> tuple[str, list[tuple[str, str]], Iterable[bytes]]:
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, headers))
        return lambda data: None

    full_environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "REMOTE_ADDR": "192.0.2.1"}
    full_environ.update(environ)
    body = middleware(full_environ, start_response)
    return started[0][0], started[0][1], body


def test_a_trusted_network_peer_forwards_the_client_address() -> None:
    engine = Engine(config())
    middleware = FloodwallMiddleware(
        Recorder(), engine=engine, public_paths=["/public/*"], trusted_proxies=["10.0.0.0/8"]
    )
    for _ in range(PUBLIC_IP_LIMIT):
        status, _, _ = call(
            middleware,
            "/public/info",
            REMOTE_ADDR="10.1.2.3",
            HTTP_X_FORWARDED_FOR="203.0.113.5,10.7.7.7",
        )
        assert status == "204 No Content"
    assert not engine.check(method="GET", path="/public/info", ip="203.0.113.5").allowed
    assert engine.check(method="GET", path="/public/info", ip="10.1.2.3").allowed


def test_a_whole_body_is_returned_as_it_is_and_recorded_at_once() -> None:
    body = [b"whole"]
    inner = Recorder(body)
    engine = RecordingEngine(config())
    middleware = FloodwallMiddleware(inner, engine=engine, authenticate=False)
    status, headers, returned = call(middleware, "/public/info", QUERY_STRING="page=2")
    assert returned is body
    assert ("X-Inner", "yes") in headers
    assert ("RateLimit-Limit", str(PUBLIC_IP_LIMIT)) in headers
    assert inner.environs[0][IDENTITY_KEY] is None
    assert inner.environs[0][DECISION_KEY].rule == "per-ip"
    assert [r[:3] for r in engine.recorded] == [("GET", "/public/info", 204)]


class Streamed:
    """A response iterable that is not whole: its chunks, and whether it was closed."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield b"one,"
        yield b"two"

    def close(self) -> None:
        self.closed = True


def test_a_streamed_body_passes_through_and_is_recorded_when_closed() -> None:
    body = Streamed()
    engine = RecordingEngine(config())
    middleware = FloodwallMiddleware(Recorder(body), engine=engine, authenticate=False)
    status, headers, returned = call(middleware, "/public/info")
    assert status == "204 No Content"
    assert ("RateLimit-Limit", str(PUBLIC_IP_LIMIT)) in headers
    assert b"".join(returned) == b"one,two"
    assert engine.recorded == [], "not before the server closes it"
    returned.close()  # type: ignore[attr-defined]
    assert body.closed
    assert [r[:3] for r in engine.recorded] == [("GET", "/public/info", 204)]
    returned.close()  # type: ignore[attr-defined]
    assert len(engine.recorded) == 1, "recorded once"


def test_a_generator_that_starts_its_response_lazily_is_recorded_with_its_status() -> None:
    engine = RecordingEngine(config())

    def lazy(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("418 I'm a teapot", [])
        yield b"short and stout"

    middleware = FloodwallMiddleware(lazy, engine=engine, authenticate=False)
    body = middleware(
        {"REQUEST_METHOD": "POST", "PATH_INFO": "/public/info", "REMOTE_ADDR": "192.0.2.1"},
        lambda status, headers, exc_info=None: None,
    )
    assert b"".join(body) == b"short and stout"
    body.close()  # type: ignore[attr-defined]
    assert [r[:3] for r in engine.recorded] == [("POST", "/public/info", 418)]


def test_an_application_that_fails_is_recorded_as_a_500() -> None:
    engine = RecordingEngine(config())

    def failing(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [])
        raise RuntimeError("the application failed")

    middleware = FloodwallMiddleware(failing, engine=engine, authenticate=False)
    with pytest.raises(RuntimeError):
        call(middleware, "/public/info")
    assert [r[:3] for r in engine.recorded] == [("GET", "/public/info", 500)]


def test_the_middlewares_own_answers_are_recorded_at_once() -> None:
    engine = RecordingEngine(config())
    middleware = FloodwallMiddleware(Recorder(), engine=engine)
    status, _, body = call(middleware, "/api/whoami")
    assert status == "401 Unauthorized" and isinstance(body, list)
    assert [r[:3] for r in engine.recorded] == [("GET", "/api/whoami", 401)]


def test_a_mounted_app_is_matched_and_limited_on_its_full_utf8_path() -> None:
    engine = Engine(config())
    middleware = FloodwallMiddleware(Recorder(), engine=engine, public_paths=["/public/café"])
    path_info = "/café".encode().decode("latin-1")
    for _ in range(PUBLIC_IP_LIMIT):
        status, _, _ = call(middleware, path_info, SCRIPT_NAME="/public")
        assert status == "204 No Content"
    status, _, body = call(middleware, path_info, SCRIPT_NAME="/public")
    assert status == "429 Too Many Requests"
    assert b'"rule":"per-ip"' in b"".join(body)
