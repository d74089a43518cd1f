"""The HTTP conformance cases (``tests/http/``) over real HTTP: FastAPI under uvicorn and Flask
under werkzeug's threaded server, each one server for the whole suite whose application is
the README's, behind a ``FloodwallMiddleware`` of the case's engine put in before each case;
FastAPI once more on Redis. Every expectation is checked, and each runner's transcript is
written to ``target/http-conformance/`` (``fastapi``, ``flask``, ``fastapi-redis``) for
``tests/http/compare.py`` to hold beside the engine's own (``engine-memory``).

The client waits for the server to finish each request — the exchange finished, which a rule
that counts by response needs — before it sends the next, as the in-process runner does."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import fastapi
import fastapi.responses
import flask
import pytest
from werkzeug.serving import WSGIRequestHandler

from floodwall import Engine, asgi, wsgi
from http_conformance import (
    METHODS,
    TEXT,
    Observed,
    RawClient,
    Tokens,
    case_config,
    check,
    echo,
    header_cost,
    load_cases,
    load_tokens,
    request_lines,
    transcript_headers,
    write_transcript,
)
from http_servers import asgi_server, wsgi_server

CASES = load_cases()
TOKENS = load_tokens()
FINISH_TIMEOUT_S = 10.0


def fastapi_echo() -> fastapi.FastAPI:
    """The README's application in FastAPI: one route for every path and method."""
    app = fastapi.FastAPI()

    @app.api_route("/{path:path}", methods=METHODS)
    async def answer(request: fastapi.Request) -> fastapi.Response:
        identity = getattr(request.state, asgi.IDENTITY_KEY, None)
        status, headers, body = echo(request.method, request.headers.get, identity)
        return fastapi.responses.Response(body, status, headers, media_type=TEXT)

    return app


def flask_echo() -> flask.Flask:
    """The README's application in Flask: one view for every path and method, slashes as
    they come."""
    app = flask.Flask(__name__)
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False

    def answer(path: str = "") -> flask.Response:
        request = flask.request
        identity = request.environ.get(wsgi.IDENTITY_KEY)
        status, headers, body = echo(request.method, request.headers.get, identity)
        return flask.Response(body, status, headers, content_type=TEXT)

    app.add_url_rule("/", "root", answer, methods=METHODS)
    app.add_url_rule("/<path:path>", "any", answer, methods=METHODS)
    return app


class RawTargetHandler(WSGIRequestHandler):
    """werkzeug's request handler, with ``RAW_URI`` and ``REQUEST_URI`` the target exactly as
    the request line carried it: Python's ``http.server`` collapses a leading ``//`` before
    werkzeug reads the target (gh-87389); gunicorn, for one, passes it on."""

    def make_environ(self) -> dict[str, Any]:
        environ = super().make_environ()
        environ["RAW_URI"] = environ["REQUEST_URI"] = self.requestline.split()[1]
        return environ


class AsgiSignal:
    """The server's ASGI application: calls ``app`` (the case's middleware) and counts each
    request done in ``done``."""

    def __init__(self) -> None:
        self.app: Any = None
        self.done = threading.Semaphore(0)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            self.done.release()


class WsgiSignal:
    """The server's WSGI application: calls ``app`` and counts each request done in ``done``
    once the server closes the response."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.done = threading.Semaphore(0)

    def __call__(self, environ: Any, start_response: Any) -> Iterable[bytes]:
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self.done.release()
            raise
        return _Closing(body, self.done)


class _Closing:
    def __init__(self, body: Iterable[bytes], done: threading.Semaphore) -> None:
        self._body = body
        self._done = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._done.release()


def asgi_cost(scope: Any) -> float:
    value = next((v for n, v in scope["headers"] if n == b"x-test-cost"), None)
    return header_cost(None if value is None else value.decode("latin-1"))


def wsgi_cost(environ: Any) -> float:
    return header_cost(environ.get("HTTP_X_TEST_COST"))


@dataclass
class Runner:
    """One server for the suite: ``install`` puts a case's engine behind it."""

    name: str
    port: int
    install: Callable[[Engine], None]
    done: threading.Semaphore
    store: Optional[Callable[[], dict[str, Any]]] = None
    transcript: dict[str, list[Observed]] = field(default_factory=dict)

    def run(self, case: dict[str, Any], tokens: Tokens) -> tuple[list[Observed], list[str]]:
        """Every step of ``case`` on a fresh engine: what the client saw, and what is wrong."""
        store = self.store() if self.store is not None else None
        engine = Engine.from_dict(case_config(case, tokens, store))
        self.install(engine)
        client = RawClient(self.port)
        seen: list[Observed] = []
        wrong: list[str] = []
        try:
            for i, step in enumerate(case["steps"]):
                request = step["request"]
                status, headers, body = client.send(
                    request["method"], request["target"], request_lines(step, tokens)
                )
                assert self.done.acquire(timeout=FINISH_TIMEOUT_S), "the server did not finish"
                observed = {"status": status, "headers": transcript_headers(headers), "body": body}
                wrong.extend(f"step {i}: {w}" for w in check(step["expect"], observed))
                seen.append(observed)
        finally:
            client.close()
            engine.close()
        return seen, wrong


@contextlib.contextmanager
def fastapi_runner(name: str, store: Optional[Callable[[], dict[str, Any]]]) -> Iterator[Runner]:
    app = fastapi_echo()
    signal = AsgiSignal()

    def install(engine: Engine) -> None:
        signal.app = asgi.FloodwallMiddleware(
            app, engine=engine, authenticate=engine.has_auth, cost=asgi_cost
        )

    with asgi_server(signal, lifespan="off") as port:
        yield Runner(name, port, install, signal.done, store)


@contextlib.contextmanager
def flask_runner(name: str) -> Iterator[Runner]:
    app = flask_echo()
    inner = app.wsgi_app
    signal = WsgiSignal(app)

    def install(engine: Engine) -> None:
        app.wsgi_app = wsgi.FloodwallMiddleware(  # type: ignore[method-assign]
            inner, engine=engine, authenticate=engine.has_auth, cost=wsgi_cost
        )

    with wsgi_server(signal, request_handler=RawTargetHandler) as port:
        yield Runner(name, port, install, signal.done)


@pytest.fixture(scope="module", params=["fastapi", "flask", "fastapi-redis"])
def runner(request: pytest.FixtureRequest) -> Iterator[Runner]:
    """One server for every case; its transcript is written when the module's cases are done."""
    name: str = request.param
    if name == "flask":
        serving = flask_runner(name)
    elif name == "fastapi":
        serving = fastapi_runner(name, None)
    else:
        redis = request.getfixturevalue("redis_server")
        prefix = f"py-http-{uuid.uuid4().hex[:8]}"
        count = iter(range(1_000_000))

        def store() -> dict[str, Any]:
            return {
                "kind": "redis",
                "url": redis.url,
                "prefix": f"{prefix}-{next(count)}:",
                "on_error": "error",
                "timeout": "2s",
            }

        serving = fastapi_runner(name, store)
    with serving as running:
        yield running
        if running.transcript:
            write_transcript(name, running.transcript)


@pytest.mark.parametrize("case", [case for _, case in CASES], ids=[c["name"] for _, c in CASES])
def test_case(runner: Runner, case: dict[str, Any]) -> None:
    seen, wrong = runner.run(case, TOKENS)
    runner.transcript[case["name"]] = seen
    assert not wrong, f"{runner.name} {case['name']}:\n" + "\n".join(wrong)
