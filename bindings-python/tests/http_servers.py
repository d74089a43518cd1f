"""Real HTTP servers for the middleware tests, on 127.0.0.1 and a free port: uvicorn for an
ASGI application, werkzeug's threaded server for a WSGI one, each in a background thread and
stopped (with a bounded wait) when the ``with`` block ends. Also the two applications behind
the middleware (FastAPI for ASGI, Flask for WSGI, with the same routes), :func:`served_asgi`
and :func:`served_wsgi` that serve them, and the tokens, configurations and assertions the
middleware test modules use.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Optional, Protocol

import fastapi
import fastapi.responses
import flask
import httpx
import jwt
import uvicorn
from werkzeug.serving import make_server

from floodwall import Decision, Engine, Identity, asgi, wsgi

SECRET = "floodwall-middleware-tests-secret-0123456789"
"""The HS256 key of :func:`auth_config` (32 bytes or more)."""
OTHER_SECRET = "a-different-secret-that-signs-forged-tokens!"

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 10.0


def mint(
    subject: str,
    role: Optional[str] = None,
    *,
    expires_in_s: int = 3600,
    secret: str = SECRET,
) -> str:
    """An HS256 token for ``subject`` (with ``role`` in the ``role`` claim when given)."""
    claims: dict[str, Any] = {"sub": subject, "exp": int(time.time()) + expires_in_s}
    if role is not None:
        claims["role"] = role
    return jwt.encode(claims, secret, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def auth_config() -> dict[str, Any]:
    return {
        "algorithms": ["HS256"],
        "keys": [{"secret": SECRET}],
        "role_claim": "role",
        "default_role": "free",
    }


USER_LIMIT = 3
PREMIUM_LIMIT = 5
PUBLIC_IP_LIMIT = 2


def rules() -> list[dict[str, Any]]:
    """Per-subject limits under ``/api`` (3 an hour, 5 for premium) and per-address limits
    under ``/public`` (2 an hour): exact sliding logs over an hour, so no window boundary
    falls inside a test."""
    return [
        {
            "name": "per-user",
            "match": {"paths": ["/api/**"]},
            "key": "subject",
            "algorithm": "sliding_window",
            "limit": USER_LIMIT,
            "window": "1h",
            "roles": {"premium": {"limit": PREMIUM_LIMIT}},
        },
        {
            "name": "per-ip",
            "match": {"paths": ["/public/**"]},
            "key": "ip",
            "algorithm": "sliding_window",
            "limit": PUBLIC_IP_LIMIT,
            "window": "1h",
        },
    ]


def config(
    *,
    store: Optional[Mapping[str, Any]] = None,
    auth: bool = True,
    **http: Any,
) -> dict[str, Any]:
    """The tests' engine configuration, on the memory store unless ``store`` is given;
    keyword arguments are ``[http]`` fields (``public_paths=["/public/**"]`` …)."""
    result: dict[str, Any] = {"rules": rules()}
    if auth:
        result["auth"] = auth_config()
    if store is not None:
        result["store"] = dict(store)
    if http:
        result["http"] = http
    return result


def responses(engine: Engine) -> dict[str, int]:
    """The responses the engine recorded, by status class (``2xx`` …)."""
    result: dict[str, int] = engine.report()["status_classes"]
    return result


SLOW_PAUSE_S = 0.05
"""The pause between the two chunks ``/api/slow`` streams."""


def route_cost(request: Mapping[str, Any]) -> int:
    """The ``cost`` of both middlewares (it reads the ASGI scope's ``path`` or the WSGI
    environ's ``PATH_INFO``): ``/api/export`` costs the whole per-user limit, ``/api/huge``
    more than any limit."""
    path = request.get("path", request.get("PATH_INFO"))
    if path == "/api/export":
        return USER_LIMIT
    if path == "/api/huge":
        return 100
    return 1


@contextlib.contextmanager
def asgi_server(app: Any, *, lifespan: str = "on") -> Iterator[int]:
    """Serves ``app`` with uvicorn on 127.0.0.1 (proxy headers off: the engine decides what to
    believe) and yields its port."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan=lifespan,  # type: ignore[arg-type]
        proxy_headers=False,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=STOP_TIMEOUT_S)
        assert not thread.is_alive(), "uvicorn did not stop"


@contextlib.contextmanager
def wsgi_server(app: Any, *, request_handler: Optional[type] = None) -> Iterator[int]:
    """Serves ``app`` with werkzeug's threaded server on 127.0.0.1 and yields its port."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=request_handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="werkzeug", daemon=True
    )
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=STOP_TIMEOUT_S)
        assert not thread.is_alive(), "werkzeug did not stop"


@contextlib.contextmanager
def serve_asgi(app: Any) -> Iterator[httpx.Client]:
    """Serves ``app`` with uvicorn and yields a client for it."""
    with asgi_server(app) as port, _client(port) as client:
        yield client


@contextlib.contextmanager
def serve_wsgi(app: Any) -> Iterator[httpx.Client]:
    """Serves ``app`` with werkzeug's threaded server and yields a client for it."""
    with wsgi_server(app) as port, _client(port) as client:
        yield client


def make_asgi_app(engine: Engine, **options: Any) -> fastapi.FastAPI:
    """A FastAPI application behind the ASGI middleware; its routes report what the
    middleware told them (``/api/state`` also what the lifespan put in the state), but
    ``/api/slow`` (a body streamed in two chunks, ``SLOW_PAUSE_S`` apart) and ``/api/boom``
    (raises)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: fastapi.FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"lifespan_state": "kept"}

    app = fastapi.FastAPI(lifespan=lifespan)

    def describe(request: fastapi.Request) -> dict[str, Any]:
        state = request.state
        return _describe(state.floodwall_identity, state.floodwall_decision)

    @app.get("/api/whoami")
    async def whoami(request: fastapi.Request) -> dict[str, Any]:
        return describe(request)

    @app.get("/api/export")
    async def export(request: fastapi.Request) -> dict[str, Any]:
        return describe(request)

    @app.get("/api/huge")
    async def huge(request: fastapi.Request) -> dict[str, Any]:
        return describe(request)

    @app.get("/api/state")
    async def state(request: fastapi.Request) -> dict[str, Any]:
        lifespan_state = getattr(request.state, "lifespan_state", None)
        return {**describe(request), "lifespan_state": lifespan_state}

    @app.get("/api/own-header")
    async def own_header() -> fastapi.Response:
        return fastapi.Response("own", headers={"RateLimit-Limit": "999"})

    @app.get("/api/slow")
    async def slow() -> fastapi.responses.StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"one,"
            await asyncio.sleep(SLOW_PAUSE_S)
            yield b"two"

        return fastapi.responses.StreamingResponse(chunks())

    @app.get("/api/boom")
    async def boom() -> None:
        raise RuntimeError("the route failed")

    @app.get("/public/info")
    async def public_info(request: fastapi.Request) -> dict[str, Any]:
        return describe(request)

    @app.get("/health")
    async def health(request: fastapi.Request) -> dict[str, Any]:
        return {"seen_by_middleware": hasattr(request.state, asgi.IDENTITY_KEY)}

    app.add_middleware(asgi.FloodwallMiddleware, engine=engine, **options)
    return app


def make_wsgi_app(engine: Engine, **options: Any) -> flask.Flask:
    """A Flask application behind the WSGI middleware, with the routes of
    :func:`make_asgi_app` but ``/api/state`` (Flask answers ``/api/boom`` with a 500 of its
    own)."""
    app = flask.Flask(__name__)

    def describe() -> dict[str, Any]:
        environ = flask.request.environ
        return _describe(environ[wsgi.IDENTITY_KEY], environ[wsgi.DECISION_KEY])

    app.add_url_rule("/api/whoami", "whoami", describe)
    app.add_url_rule("/api/export", "export", describe)
    app.add_url_rule("/api/huge", "huge", describe)
    app.add_url_rule("/public/info", "public_info", describe)

    @app.get("/api/own-header")
    def own_header() -> flask.Response:
        return flask.Response("own", headers={"RateLimit-Limit": "999"})

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"seen_by_middleware": wsgi.IDENTITY_KEY in flask.request.environ}

    @app.get("/api/slow")
    def slow() -> flask.Response:
        def chunks() -> Iterator[bytes]:
            yield b"one,"
            time.sleep(SLOW_PAUSE_S)
            yield b"two"

        return flask.Response(chunks())

    @app.get("/api/boom")
    def boom() -> None:
        raise RuntimeError("the route failed")

    app.wsgi_app = wsgi.FloodwallMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, engine=engine, **options
    )
    return app


def _describe(identity: Optional[Identity], decision: Decision) -> dict[str, Any]:
    """What a route answers: the identity and decision the middleware handed it."""
    return {
        "subject": identity.subject if identity else None,
        "role": identity.role if identity else None,
        "rule": decision.rule,
        "remaining": decision.remaining,
        "store": decision.store,
    }


class Served(Protocol):
    """Serves the application of one middleware, behind it ``engine`` with ``options``, and
    yields a client for it."""

    def __call__(
        self, engine: Engine, **options: Any
    ) -> AbstractContextManager[httpx.Client]: ...


@contextlib.contextmanager
def served_asgi(engine: Engine, **options: Any) -> Iterator[httpx.Client]:
    with serve_asgi(make_asgi_app(engine, **options)) as client:
        yield client


@contextlib.contextmanager
def served_wsgi(engine: Engine, **options: Any) -> Iterator[httpx.Client]:
    with serve_wsgi(make_wsgi_app(engine, **options)) as client:
        yield client


SERVED: dict[str, Served] = {"asgi": served_asgi, "wsgi": served_wsgi}
"""The serving function of each middleware, by kind."""


def _client(port: int) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT_S, trust_env=False
    )


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Checks that ``response`` is an RFC 9457 problem with ``status`` and ``code``; answers
    its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == "about:blank"
    assert body["status"] == status
    assert body["code"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def assert_rate_limit_headers(
    response: httpx.Response, *, rule: str, limit: int, remaining: int
) -> None:
    """Checks the decision's headers on ``response`` (each present once)."""
    for name in ("ratelimit-policy", "ratelimit", "ratelimit-limit", "ratelimit-remaining"):
        assert len(response.headers.get_list(name)) == 1, name
    assert response.headers["ratelimit-limit"] == str(limit)
    assert response.headers["ratelimit-remaining"] == str(remaining)
    assert response.headers["ratelimit-policy"].startswith(f'"{rule}";q={limit};w=3600')
    assert response.headers["ratelimit"].startswith(f'"{rule}";r={remaining};t=')
    assert 0 < int(response.headers["ratelimit-reset"]) <= 3600


def assert_limited_in_redis(redis_server: Any, prefix: str, subjects: list[str]) -> None:
    """Checks that Redis holds, under ``prefix``, limiter state naming each subject, and that
    all of it expires within the rules' hour."""
    keys = redis_server.command("KEYS", f"{prefix}*")
    assert isinstance(keys, list) and keys
    for subject in subjects:
        assert any(subject in key for key in keys), (subject, keys)
    for key in keys:
        assert 0 < int(redis_server.command("TTL", key)) <= 3600, key
