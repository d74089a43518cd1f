"""Real HTTP servers for the middleware tests, on 127.0.0.1 and a free port: uvicorn for an
ASGI application, werkzeug's threaded server for a WSGI one, each in a background thread and
stopped (with a bounded wait) when the ``with`` block ends. Also the tokens, configurations and
assertions both middleware test modules use.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, Optional

import httpx
import jwt
import uvicorn
from werkzeug.serving import make_server

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


def config(*, store: Optional[Mapping[str, Any]] = None, auth: bool = True) -> dict[str, Any]:
    """The tests' engine configuration, on the memory store unless ``store`` is given."""
    result: dict[str, Any] = {"rules": rules()}
    if auth:
        result["auth"] = auth_config()
    if store is not None:
        result["store"] = dict(store)
    return result


def route_cost(method: str, path: str) -> int:
    """``/api/export`` costs the whole per-user limit; ``/api/huge`` more than any limit."""
    if path == "/api/export":
        return USER_LIMIT
    if path == "/api/huge":
        return 100
    return 1


@contextlib.contextmanager
def serve_asgi(app: Any) -> Iterator[httpx.Client]:
    """Serves ``app`` with uvicorn (proxy headers off: the middleware decides what to believe)
    and yields a client for it."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="on",
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
        port = server.servers[0].sockets[0].getsockname()[1]
        with _client(port) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=STOP_TIMEOUT_S)
        assert not thread.is_alive(), "uvicorn did not stop"


@contextlib.contextmanager
def serve_wsgi(app: Any) -> Iterator[httpx.Client]:
    """Serves ``app`` with werkzeug's threaded server and yields a client for it."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="werkzeug", daemon=True
    )
    thread.start()
    try:
        with _client(server.server_port) as client:
            yield client
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=STOP_TIMEOUT_S)
        assert not thread.is_alive(), "werkzeug did not stop"


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
