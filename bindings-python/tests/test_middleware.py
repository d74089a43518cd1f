"""What ``floodwall.asgi.FloodwallMiddleware`` and ``floodwall.wsgi.FloodwallMiddleware`` do
alike, each test written once and run on both: the FastAPI application served by uvicorn and
the Flask one served by werkzeug, over real HTTP, on the memory store and on Redis. Then the
rules both middlewares share (the client address behind trusted proxies, public and skip
paths, the details of the authentication errors), checked without a server. What only one
middleware does is in ``test_asgi.py`` and ``test_wsgi.py``."""

from __future__ import annotations

import re
import uuid
from typing import Any, Optional, Protocol

import fastapi
import flask
import pytest

import floodwall
from floodwall import Engine, asgi, wsgi
from floodwall._http import AUTH_DETAILS, PathSet, TrustedProxies
from conftest import wait_until
from http_servers import (
    OTHER_SECRET,
    PREMIUM_LIMIT,
    PUBLIC_IP_LIMIT,
    SERVED,
    SLOW_PAUSE_S,
    USER_LIMIT,
    RecordingEngine,
    Served,
    assert_limited_in_redis,
    assert_problem,
    assert_rate_limit_headers,
    bearer,
    config,
    mint,
    route_cost,
)


class Wrap(Protocol):
    """Builds one middleware, with ``engine`` and ``options``, around an application it
    never calls."""

    def __call__(self, engine: Engine, **options: Any) -> object: ...


def wrap_asgi(engine: Engine, **options: Any) -> asgi.FloodwallMiddleware:
    return asgi.FloodwallMiddleware(fastapi.FastAPI(), engine=engine, **options)


def wrap_wsgi(engine: Engine, **options: Any) -> wsgi.FloodwallMiddleware:
    return wsgi.FloodwallMiddleware(flask.Flask(__name__).wsgi_app, engine=engine, **options)


WRAP: dict[str, Wrap] = {"asgi": wrap_asgi, "wsgi": wrap_wsgi}


@pytest.fixture(params=sorted(SERVED))
def kind(request: pytest.FixtureRequest) -> str:
    """Which middleware the test runs on: ``asgi`` or ``wsgi``."""
    result: str = request.param
    return result


@pytest.fixture
def served(kind: str) -> Served:
    """``served(engine, **options)``: a ``with`` block serving the ``kind`` application behind
    its middleware, yielding a client."""
    return SERVED[kind]


@pytest.fixture
def wrap(kind: str) -> Wrap:
    """``wrap(engine, **options)``: the ``kind`` middleware, built and never called."""
    return WRAP[kind]


def test_admitted_request_carries_rate_limit_headers_and_the_identity(served: Served) -> None:
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


def test_the_request_over_the_limit_is_429_while_another_caller_is_admitted(
    served: Served,
) -> None:
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


def test_a_premium_caller_gets_the_premium_limit(served: Served) -> None:
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


def test_a_request_without_a_token_is_401_missing_token(served: Served) -> None:
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
def test_a_refused_token_is_401_with_its_kind_and_never_echoed(
    served: Served, token: str, code: str
) -> None:
    with served(Engine(config())) as client:
        response = client.get("/api/whoami", headers=bearer(token))
    body = assert_problem(response, 401, code)
    assert body["detail"] == AUTH_DETAILS[code]
    assert response.headers["www-authenticate"].startswith('Bearer realm="floodwall", ')
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert token not in response.text
    assert token not in response.headers["www-authenticate"]


def test_public_paths_need_no_token_but_are_limited_by_address(served: Served) -> None:
    with served(Engine(config()), public_paths=["/public/*"]) as client:
        codes = [client.get("/public/info").status_code for _ in range(PUBLIC_IP_LIMIT)]
        denied = client.get("/public/info", headers=bearer(mint("alice")))
        first = client.get("/api/whoami")
    assert codes == [200] * PUBLIC_IP_LIMIT
    assert assert_problem(denied, 429, "rate_limited")["rule"] == "per-ip"
    assert_rate_limit_headers(denied, rule="per-ip", limit=PUBLIC_IP_LIMIT, remaining=0)
    assert_problem(first, 401, "missing_token")


def test_a_public_request_reaches_the_app_with_no_identity(served: Served) -> None:
    with served(Engine(config()), public_paths=["/public/info"]) as client:
        response = client.get("/public/info")
    assert response.status_code == 200
    assert response.json()["subject"] is None
    assert response.json()["rule"] == "per-ip"


def test_skip_paths_bypass_the_middleware(served: Served) -> None:
    with served(Engine(config()), skip_paths=["/health"]) as client:
        responses = [client.get("/health") for _ in range(PUBLIC_IP_LIMIT + USER_LIMIT)]
    assert [r.status_code for r in responses] == [200] * len(responses)
    assert responses[-1].json() == {"seen_by_middleware": False}
    assert "ratelimit" not in responses[-1].headers


def test_authentication_off_limits_without_a_subject(served: Served) -> None:
    with served(Engine(config(auth=False)), authenticate=False) as client:
        response = client.get("/api/whoami")
    assert response.status_code == 200
    assert response.json()["subject"] is None
    assert_rate_limit_headers(response, rule="per-user", limit=USER_LIMIT, remaining=2)


def test_the_route_cost_is_what_the_limits_count(served: Served) -> None:
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


def test_headers_the_app_sets_are_not_replaced(served: Served) -> None:
    with served(Engine(config())) as client:
        response = client.get("/api/own-header", headers=bearer(mint("alice")))
    assert response.status_code == 200
    assert response.headers.get_list("ratelimit-limit") == ["999"]
    assert response.headers["ratelimit-remaining"] == str(USER_LIMIT - 1)


def test_a_forwarding_header_from_an_untrusted_peer_is_ignored(served: Served) -> None:
    with served(Engine(config()), public_paths=["/public/*"]) as client:
        codes = [
            client.get("/public/info", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
            for i in range(PUBLIC_IP_LIMIT + 1)
        ]
    assert codes == [200] * PUBLIC_IP_LIMIT + [429]


def test_a_forwarding_header_from_a_trusted_peer_names_the_client(served: Served) -> None:
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


def test_every_response_is_recorded_once_with_its_status_and_bare_path(served: Served) -> None:
    engine = RecordingEngine(config())
    alice = bearer(mint("alice"))
    requests = [
        ("/api/whoami?verbose=1", alice, 200),
        ("/api/whoami", alice, 200),
        ("/api/own-header", alice, 200),
        ("/api/whoami", alice, 429),  # the limit, answered by the middleware
        ("/api/whoami", {}, 401),  # no token
        ("/api/whoami", bearer(mint("eve", secret=OTHER_SECRET)), 401),
        ("/api/huge", bearer(mint("bob")), 429),  # costs more than any limit
        ("/api/nowhere", bearer(mint("carol")), 404),  # the application's answer
        ("/public/info?page=2", {}, 200),
        ("/health", {}, 200),  # skipped: not recorded
        # The application failed (last: uvicorn then closes the connection).
        ("/api/boom", bearer(mint("dave")), 500),
    ]
    expected = [
        ("GET", path.partition("?")[0], status) for path, _, status in requests if path != "/health"
    ]
    with served(engine, public_paths=["/public/*"], skip_paths=["/health"], cost=route_cost) as client:
        statuses = [client.get(path, headers=headers).status_code for path, headers, _ in requests]
        # WSGI records a streamed response when the server closes it, just after sending it.
        assert wait_until(lambda: len(engine.recorded) >= len(expected))
    assert statuses == [status for _, _, status in requests]
    assert sorted(r[:3] for r in engine.recorded) == sorted(expected)
    assert all(latency_ms > 0 for *_, latency_ms in engine.recorded)
    report = engine.report()
    assert report["totals"]["responses"] == len(expected)
    assert report["status_classes"] == {"2xx": 4, "4xx": 5, "5xx": 1}
    assert report["totals"]["server_errors"] == 1


def test_a_streamed_response_is_recorded_when_its_body_is_through(served: Served) -> None:
    engine = RecordingEngine(config())
    with served(engine) as client:
        response = client.get("/api/slow", headers=bearer(mint("alice")))
        assert wait_until(lambda: len(engine.recorded) >= 1)
    assert (response.status_code, response.text) == (200, "one,two")
    [(method, path, status, latency_ms)] = engine.recorded
    assert (method, path, status) == ("GET", "/api/slow", 200)
    # The pause between the chunks is part of the request's time.
    assert latency_ms >= SLOW_PAUSE_S * 1000


def test_another_engine_error_propagates_as_a_500(served: Served) -> None:
    engine = RecordingEngine(config())
    with served(engine) as client:
        engine.reload_auth(None)
        response = client.get("/api/whoami", headers=bearer(mint("alice")))
        assert wait_until(lambda: len(engine.recorded) >= 1)
    assert response.status_code == 500
    assert [r[:3] for r in engine.recorded] == [("GET", "/api/whoami", 500)]


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
    wrap: Wrap, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        wrap(Engine(config()), **options)


def test_authentication_needs_an_auth_section(wrap: Wrap) -> None:
    with pytest.raises(ValueError, match=r"\[auth\]"):
        wrap(Engine(config(auth=False)))
    wrap(Engine(config(auth=False)), authenticate=False)


def test_on_redis_the_limit_headers_and_401_hold(
    served: Served, kind: str, redis_server: Any
) -> None:
    prefix = f"{kind}-{uuid.uuid4().hex}:"
    engine = Engine(config(store={"kind": "redis", "url": redis_server.url, "prefix": prefix}))
    alice = bearer(mint("alice"))
    try:
        with served(engine) as client:
            admitted = [client.get("/api/whoami", headers=alice) for _ in range(USER_LIMIT)]
            denied = client.get("/api/whoami", headers=alice)
            other = client.get("/api/whoami", headers=bearer(mint("bob")))
            missing = client.get("/api/whoami")
    finally:
        engine.close()
    assert [r.status_code for r in admitted] == [200] * USER_LIMIT
    assert admitted[0].json()["store"] == "redis"
    assert_rate_limit_headers(admitted[0], rule="per-user", limit=USER_LIMIT, remaining=2)
    assert assert_problem(denied, 429, "rate_limited")["rule"] == "per-user"
    assert_rate_limit_headers(denied, rule="per-user", limit=USER_LIMIT, remaining=0)
    assert 0 < int(denied.headers["retry-after"]) <= 3600
    assert other.status_code == 200
    assert_problem(missing, 401, "missing_token")
    assert_limited_in_redis(redis_server, prefix, ["alice", "bob"])


# The client-address rule both middlewares share, with peers a loopback server cannot give.

TRUSTED = ["10.0.0.0/8", "2001:db8:ffff::/48"]


@pytest.mark.parametrize(
    ("peer", "forwarded", "header", "client"),
    [
        ("192.0.2.1", "203.0.113.9", "x-forwarded-for", "192.0.2.1"),
        ("10.1.2.3", None, "x-forwarded-for", "10.1.2.3"),
        ("10.1.2.3", "", "x-forwarded-for", "10.1.2.3"),
        ("10.1.2.3", "203.0.113.9", "x-forwarded-for", "203.0.113.9"),
        ("10.1.2.3", "198.51.100.1, 203.0.113.9, 10.9.9.9", "x-forwarded-for", "203.0.113.9"),
        ("10.1.2.3", "10.4.4.4, 10.9.9.9", "x-forwarded-for", "10.4.4.4"),
        ("10.1.2.3", "203.0.113.9, bogus", "x-forwarded-for", "10.1.2.3"),
        ("10.1.2.3", "bogus, 203.0.113.9", "x-forwarded-for", "203.0.113.9"),
        ("10.1.2.3", "203.0.113.9:4711", "x-forwarded-for", "203.0.113.9"),
        ("10.1.2.3", "[2001:DB8::1]:80", "x-forwarded-for", "2001:db8::1"),
        ("10.1.2.3", "2001:db8:0:0::1", "x-forwarded-for", "2001:db8::1"),
        ("10.1.2.3", "::ffff:203.0.113.9", "x-forwarded-for", "203.0.113.9"),
        ("::ffff:10.1.2.3", "203.0.113.9", "x-forwarded-for", "203.0.113.9"),
        ("2001:db8:ffff::5", "203.0.113.9", "x-forwarded-for", "203.0.113.9"),
        ("2001:db8:fffe::5", "203.0.113.9", "x-forwarded-for", "2001:db8:fffe::5"),
        ("10.1.2.3", "203.0.113.256", "x-forwarded-for", "10.1.2.3"),
        ("10.1.2.3", 'for=192.0.2.60;proto=http, for="[2001:db8::7]:4711"', "forwarded",
         "2001:db8::7"),
        ("10.1.2.3", "for=192.0.2.60, for=10.0.0.1;by=10.1.2.3", "forwarded", "192.0.2.60"),
        ("10.1.2.3", "for=unknown", "forwarded", "10.1.2.3"),
        ("10.1.2.3", "proto=https", "forwarded", "10.1.2.3"),
        ("unix-socket", "203.0.113.9", "x-forwarded-for", "unix-socket"),
        (None, "203.0.113.9", "x-forwarded-for", None),
    ],
)
def test_the_client_address_rule(
    peer: Optional[str], forwarded: Optional[str], header: str, client: Optional[str]
) -> None:
    assert TrustedProxies(TRUSTED, header).client_address(peer, forwarded) == client


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert TrustedProxies([]).client_address("10.1.2.3", "203.0.113.9") == "10.1.2.3"


@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("/health", True),
        ("/health/", False),
        ("/healthz", False),
        ("/public/", True),
        ("/public/a/b", True),
        ("/public", False),
        ("/docs", True),
        ("/docs/oauth2-redirect", True),
        ("/public/../admin", False),
        ("/public/./a", False),
        ("/public/..", False),
        ("/public/..a", True),
    ],
)
def test_public_and_skip_paths_match_exactly_or_by_prefix(path: str, matches: bool) -> None:
    assert PathSet(["/health", "/public/*", "/docs*"], "public_paths").matches(path) is matches


def test_every_auth_error_kind_has_its_own_detail() -> None:
    auth_kinds = {
        code for code, cls in floodwall._floodwall._error_classes.items() if cls == "AuthError"
    }
    assert auth_kinds == set(AUTH_DETAILS)
