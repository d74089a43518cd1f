"""What only ``floodwall.wsgi.FloodwallMiddleware`` does: the WSGI cases a loopback server
does not produce — the target from ``RAW_URI``, ``REQUEST_URI`` or the decoded path, a peer
that is not loopback, the application's response iterable (returned as it is when whole, else
passed through a thin one that finishes the exchange when closed), an application that fails,
a ``HEAD`` refused. What it does like the ASGI middleware, over real HTTP, is in
``test_middleware.py``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Optional

import pytest

from floodwall import Engine
from floodwall.wsgi import DECISION_KEY, IDENTITY_KEY, FloodwallMiddleware
from http_servers import PUBLIC_IP_LIMIT, config, responses


class Recorder:
    """An inner WSGI application that records the environ it was called with and answers
    204 with the body it was given."""

    def __init__(self, body: Optional[Iterable[bytes]] = None) -> None:
        self.environs: list[dict[str, Any]] = []
        self.body: Iterable[bytes] = [] if body is None else body

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.environs.append(environ)
        start_response("204 No Content", [("X-Inner", "yes"), ("RateLimit-Limit", "999")])
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


def endpoints(engine: Engine) -> set[str]:
    return {e["key"] for e in engine.report()["top_endpoints"]}


def test_the_target_is_the_raw_uri_else_the_request_uri_else_the_encoded_path() -> None:
    engine = Engine(config(auth=False))
    middleware = FloodwallMiddleware(Recorder(), engine=engine, authenticate=False)
    call(middleware, "/public/a/b", RAW_URI="/public/a%2Fb?x=1", REQUEST_URI="/other")
    call(middleware, "/public/c/d", REQUEST_URI="/public/c%2Fd")
    # A mounted application: SCRIPT_NAME + PATH_INFO, whose bytes PEP 3333 passes as latin-1.
    path_info = "/café".encode().decode("latin-1")
    call(middleware, path_info, SCRIPT_NAME="/public", QUERY_STRING="page=2")
    assert endpoints(engine) == {
        "GET /public/a%2Fb",
        "GET /public/c%2Fd",
        "GET /public/caf%C3%A9",
    }


def test_a_trusted_network_peer_forwards_the_client_address() -> None:
    engine = Engine(config(public_paths=["/public/**"], trusted_proxies=["10.0.0.0/8"]))
    middleware = FloodwallMiddleware(Recorder(), engine=engine)
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


def test_a_whole_body_is_returned_as_it_is_and_finished_at_once() -> None:
    body = [b"whole"]
    inner = Recorder(body)
    engine = Engine(config())
    middleware = FloodwallMiddleware(inner, engine=engine, authenticate=False)
    status, headers, returned = call(middleware, "/public/info", QUERY_STRING="page=2")
    assert returned is body
    assert ("X-Inner", "yes") in headers
    assert [v for n, v in headers if n.lower() == "ratelimit-limit"] == ["999"]
    assert ("RateLimit-Remaining", str(PUBLIC_IP_LIMIT - 1)) in headers
    assert inner.environs[0][IDENTITY_KEY] is None
    assert inner.environs[0][DECISION_KEY].rule == "per-ip"
    assert responses(engine) == {"2xx": 1}


class Streamed:
    """A response iterable that is not whole: its chunks, and whether it was closed."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield b"one,"
        yield b"two"

    def close(self) -> None:
        self.closed = True


def test_a_streamed_body_passes_through_and_is_finished_when_closed() -> None:
    body = Streamed()
    engine = Engine(config())
    middleware = FloodwallMiddleware(Recorder(body), engine=engine, authenticate=False)
    status, headers, returned = call(middleware, "/public/info")
    assert status == "204 No Content"
    assert b"".join(returned) == b"one,two"
    assert responses(engine) == {}, "not before the server closes it"
    returned.close()  # type: ignore[attr-defined]
    assert body.closed
    assert responses(engine) == {"2xx": 1}
    returned.close()  # type: ignore[attr-defined]
    assert engine.report()["totals"]["responses"] == 1, "finished once"


def test_a_generator_that_starts_its_response_lazily_is_finished_with_its_status() -> None:
    engine = Engine(config())

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
    assert responses(engine) == {"4xx": 1}


def test_an_application_that_fails_is_finished_as_a_500() -> None:
    engine = Engine(config())

    def failing(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [])
        raise RuntimeError("the application failed")

    middleware = FloodwallMiddleware(failing, engine=engine, authenticate=False)
    with pytest.raises(RuntimeError):
        call(middleware, "/public/info")
    assert responses(engine) == {"5xx": 1}


def test_a_refusal_is_written_with_its_reason_phrase_and_finished_at_once() -> None:
    engine = Engine(config())
    middleware = FloodwallMiddleware(Recorder(), engine=engine)
    status, headers, body = call(middleware, "/api/whoami")
    assert status == "401 Unauthorized"
    assert isinstance(body, list)
    [text] = body
    assert dict(headers)["Content-Length"] == str(len(text))
    assert b'"code":"missing_token"' in text
    assert responses(engine) == {"4xx": 1}
    # A HEAD is answered the same, without the body.
    status, headers, body = call(middleware, "/api/whoami", REQUEST_METHOD="HEAD")
    assert status == "401 Unauthorized"
    assert dict(headers)["Content-Length"] == str(len(text))
    assert body == []
