"""``floodwall.wsgi.FloodwallMiddleware`` around a Flask application served by werkzeug over
real HTTP, on the memory store and on Redis — the same answers as the ASGI middleware — and
the WSGI cases a loopback server does not produce (a peer that is not loopback, a mounted
application, a non-ASCII path)."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Optional

import httpx
import pytest
from flask import Flask, Response, request

from floodwall import Engine
from floodwall._http import AUTH_DETAILS
from floodwall.wsgi import DECISION_KEY, IDENTITY_KEY, FloodwallMiddleware
from http_servers import (
    OTHER_SECRET,
    PREMIUM_LIMIT,
    PUBLIC_IP_LIMIT,
    USER_LIMIT,
    assert_limited_in_redis,
    assert_problem,
    assert_rate_limit_headers,
    bearer,
    config,
    mint,
    route_cost,
    serve_wsgi,
)


def make_app(engine: Engine, **options: Any) -> Flask:
    """A Flask application behind the middleware; its routes report what the middleware
    told them."""
    app = Flask(__name__)

    def describe() -> dict[str, Any]:
        identity = request.environ[IDENTITY_KEY]
        decision = request.environ[DECISION_KEY]
        return {
            "subject": identity.subject if identity else None,
            "role": identity.role if identity else None,
            "rule": decision.rule,
            "remaining": decision.remaining,
            "store": decision.store,
        }

    app.add_url_rule("/api/whoami", "whoami", describe)
    app.add_url_rule("/api/export", "export", describe)
    app.add_url_rule("/api/huge", "huge", describe)
    app.add_url_rule("/public/info", "public_info", describe)

    @app.get("/api/own-header")
    def own_header() -> Response:
        return Response("own", headers={"RateLimit-Limit": "999"})

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"seen_by_middleware": IDENTITY_KEY in request.environ}

    app.wsgi_app = FloodwallMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, engine=engine, **options
    )
    return app


@contextlib.contextmanager
def served(engine: Engine, **options: Any) -> Iterator[httpx.Client]:
    with serve_wsgi(make_app(engine, **options)) as client:
        yield client


def test_admitted_request_carries_rate_limit_headers_and_the_identity() -> None:
    with served(Engine(config())) as client:
        response = client.get("/api/whoami", headers=bearer(mint("alice", "free")))
    assert response.status_code == 200
    assert response.json() == {
        "subject": "alice",
        "role": "free",
        "rule": "per-user",
        "remaining": USER_LIMIT - 1,
        "store": "memory",
    }
    assert_rate_limit_headers(response, rule="per-user", limit=USER_LIMIT, remaining=2)
    assert "retry-after" not in response.headers


def test_the_request_over_the_limit_is_429_while_another_caller_is_admitted() -> None:
    alice, bob = bearer(mint("alice")), bearer(mint("bob"))
    with served(Engine(config())) as client:
        admitted = [client.get("/api/whoami", headers=alice) for _ in range(USER_LIMIT)]
        denied = client.get("/api/whoami", headers=alice)
        other = client.get("/api/whoami", headers=bob)
    assert [r.status_code for r in admitted] == [200] * USER_LIMIT
    body = assert_problem(denied, 429, "rate_limited")
    assert body["title"] == "Too Many Requests"
    assert body["rule"] == "per-user"
    assert 0 < body["retry_after_ms"] <= 3_600_000
    assert 0 < int(denied.headers["retry-after"]) <= 3600
    assert_rate_limit_headers(denied, rule="per-user", limit=USER_LIMIT, remaining=0)
    assert other.status_code == 200
    assert other.json()["subject"] == "bob"


def test_a_premium_caller_gets_the_premium_limit() -> None:
    premium, free = bearer(mint("carol", "premium")), bearer(mint("dave", "free"))
    with served(Engine(config())) as client:
        premium_codes = [
            client.get("/api/whoami", headers=premium).status_code
            for _ in range(PREMIUM_LIMIT + 1)
        ]
        free_codes = [
            client.get("/api/whoami", headers=free).status_code for _ in range(USER_LIMIT + 1)
        ]
    assert premium_codes == [200] * PREMIUM_LIMIT + [429]
    assert free_codes == [200] * USER_LIMIT + [429]


def test_a_request_without_a_token_is_401_missing_token() -> None:
    with served(Engine(config())) as client:
        response = client.get("/api/whoami")
    body = assert_problem(response, 401, "missing_token")
    assert body["title"] == "Unauthorized"
    assert response.headers["www-authenticate"] == 'Bearer realm="floodwall"'
    assert "ratelimit" not in response.headers


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (mint("alice", expires_in_s=-3600), "expired"),
        (mint("alice", secret=OTHER_SECRET), "bad_signature"),
        ("not-a-jwt", "malformed_token"),
    ],
    ids=["expired", "bad_signature", "malformed"],
)
def test_a_refused_token_is_401_with_its_kind_and_never_echoed(token: str, code: str) -> None:
    with served(Engine(config())) as client:
        response = client.get("/api/whoami", headers=bearer(token))
    body = assert_problem(response, 401, code)
    assert body["detail"] == AUTH_DETAILS[code]
    assert response.headers["www-authenticate"].startswith('Bearer realm="floodwall", ')
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert token not in response.text
    assert token not in response.headers["www-authenticate"]


def test_public_paths_need_no_token_but_are_limited_by_address() -> None:
    with served(Engine(config()), public_paths=["/public/*"]) as client:
        codes = [client.get("/public/info").status_code for _ in range(PUBLIC_IP_LIMIT)]
        denied = client.get("/public/info", headers=bearer(mint("alice")))
        first = client.get("/api/whoami")
    assert codes == [200] * PUBLIC_IP_LIMIT
    assert assert_problem(denied, 429, "rate_limited")["rule"] == "per-ip"
    assert_rate_limit_headers(denied, rule="per-ip", limit=PUBLIC_IP_LIMIT, remaining=0)
    assert_problem(first, 401, "missing_token")


def test_a_public_request_reaches_the_app_with_no_identity() -> None:
    with served(Engine(config()), public_paths=["/public/info"]) as client:
        response = client.get("/public/info")
    assert response.status_code == 200
    assert response.json()["subject"] is None
    assert response.json()["rule"] == "per-ip"


def test_skip_paths_bypass_the_middleware() -> None:
    with served(Engine(config()), skip_paths=["/health"]) as client:
        responses = [client.get("/health") for _ in range(PUBLIC_IP_LIMIT + USER_LIMIT)]
    assert [r.status_code for r in responses] == [200] * len(responses)
    assert responses[-1].json() == {"seen_by_middleware": False}
    assert "ratelimit" not in responses[-1].headers


def test_authentication_off_limits_without_a_subject() -> None:
    with served(Engine(config(auth=False)), authenticate=False) as client:
        response = client.get("/api/whoami")
    assert response.status_code == 200
    assert response.json()["subject"] is None
    assert_rate_limit_headers(response, rule="per-user", limit=USER_LIMIT, remaining=2)


def test_the_route_cost_is_what_the_limits_count() -> None:
    alice = bearer(mint("alice"))
    with served(Engine(config()), cost=route_cost) as client:
        export = client.get("/api/export", headers=alice)
        after = client.get("/api/whoami", headers=alice)
        huge = client.get("/api/huge", headers=bearer(mint("bob")))
        bob = client.get("/api/whoami", headers=bearer(mint("bob")))
    assert export.status_code == 200
    assert export.json()["remaining"] == 0
    assert assert_problem(after, 429, "rate_limited")["rule"] == "per-user"
    assert_problem(huge, 429, "cost_exceeds_limit")
    assert "retry-after" not in huge.headers
    assert bob.json()["remaining"] == USER_LIMIT - 1


def test_headers_the_app_sets_are_not_replaced() -> None:
    with served(Engine(config())) as client:
        response = client.get("/api/own-header", headers=bearer(mint("alice")))
    assert response.status_code == 200
    assert response.headers.get_list("ratelimit-limit") == ["999"]
    assert response.headers["ratelimit-remaining"] == str(USER_LIMIT - 1)


def test_a_forwarding_header_from_an_untrusted_peer_is_ignored() -> None:
    with served(Engine(config()), public_paths=["/public/*"]) as client:
        codes = [
            client.get("/public/info", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
            for i in range(PUBLIC_IP_LIMIT + 1)
        ]
    assert codes == [200] * PUBLIC_IP_LIMIT + [429]


def test_a_forwarding_header_from_a_trusted_peer_names_the_client() -> None:
    options: dict[str, Any] = {"public_paths": ["/public/*"], "trusted_proxies": ["127.0.0.1"]}
    with served(Engine(config()), **options) as client:

        def status(forwarded: str) -> int:
            return client.get("/public/info", headers={"X-Forwarded-For": forwarded}).status_code

        first = [status("203.0.113.1") for _ in range(PUBLIC_IP_LIMIT)]
        spoofed_left = status("198.51.100.7, 203.0.113.1")
        past_trusted_hop = status("203.0.113.1, 127.0.0.1")
        other_client = status("203.0.113.2")
        invalid_means_peer = [status("not-an-address") for _ in range(PUBLIC_IP_LIMIT + 1)]
    assert first == [200] * PUBLIC_IP_LIMIT
    assert spoofed_left == 429
    assert past_trusted_hop == 429
    assert other_client == 200
    assert invalid_means_peer == [200] * PUBLIC_IP_LIMIT + [429]


def test_another_engine_error_propagates_as_a_500() -> None:
    engine = Engine(config())
    with served(engine) as client:
        engine.reload_auth(None)
        response = client.get("/api/whoami", headers=bearer(mint("alice")))
    assert response.status_code == 500


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"trusted_proxies": ["10.0.0.0/33"]}, "'10.0.0.0/33'"),
        ({"trusted_proxies": ["proxy.internal"]}, "'proxy.internal'"),
        ({"trusted_proxies": ["10.0.0.1/8"]}, "'10.0.0.1/8'"),
        ({"trusted_proxies": "10.0.0.0/8"}, "not one string"),
        ({"public_paths": ["public/*"]}, "'public/*'"),
        ({"skip_paths": ["/a*b"]}, "'/a*b'"),
        ({"forwarded_header": "X Forwarded For"}, "'X Forwarded For'"),
    ],
)
def test_an_invalid_option_is_a_value_error_naming_it(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        FloodwallMiddleware(Recorder(), engine=Engine(config()), **options)


def test_authentication_needs_an_auth_section() -> None:
    with pytest.raises(ValueError, match=r"\[auth\]"):
        FloodwallMiddleware(Recorder(), engine=Engine(config(auth=False)))
    FloodwallMiddleware(Recorder(), engine=Engine(config(auth=False)), authenticate=False)


def test_on_redis_the_limit_headers_and_401_hold(redis_server: Any) -> None:
    prefix = f"wsgi-{uuid.uuid4().hex}:"
    engine = Engine(config(store={"kind": "redis", "url": redis_server.url, "prefix": prefix}))
    alice = bearer(mint("alice"))
    with served(engine) as client:
        admitted = [client.get("/api/whoami", headers=alice) for _ in range(USER_LIMIT)]
        denied = client.get("/api/whoami", headers=alice)
        other = client.get("/api/whoami", headers=bearer(mint("bob")))
        missing = client.get("/api/whoami")
    assert [r.status_code for r in admitted] == [200] * USER_LIMIT
    assert admitted[0].json()["store"] == "redis"
    assert_rate_limit_headers(admitted[0], rule="per-user", limit=USER_LIMIT, remaining=2)
    assert assert_problem(denied, 429, "rate_limited")["rule"] == "per-user"
    assert_rate_limit_headers(denied, rule="per-user", limit=USER_LIMIT, remaining=0)
    assert 0 < int(denied.headers["retry-after"]) <= 3600
    assert other.status_code == 200
    assert_problem(missing, 401, "missing_token")
    assert_limited_in_redis(redis_server, prefix, ["alice", "bob"])


# WSGI cases a loopback server does not produce.


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


def test_the_app_response_is_returned_as_it_is_with_the_decision_headers() -> None:
    body = iter([b"streamed"])
    inner = Recorder(body)
    middleware = FloodwallMiddleware(inner, engine=Engine(config()), authenticate=False)
    status, headers, returned = call(middleware, "/public/info")
    assert returned is body
    assert ("X-Inner", "yes") in headers
    assert ("RateLimit-Limit", str(PUBLIC_IP_LIMIT)) in headers
    assert inner.environs[0][IDENTITY_KEY] is None
    assert inner.environs[0][DECISION_KEY].rule == "per-ip"


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
