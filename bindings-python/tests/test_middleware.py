"""What ``floodwall.asgi.FloodwallMiddleware`` and ``floodwall.wsgi.FloodwallMiddleware`` do
alike, each test written once and run on both: the FastAPI application served by uvicorn and
the Flask one served by werkzeug, over real HTTP, on the memory store and on Redis. What the
engine's HTTP layer decides (paths, client addresses, public and skipped paths, the answers'
texts and headers) is held by the conformance cases (``test_http_conformance.py``); these
tests hold the adapters: what reaches the application, the headers added to its response,
the answers written, and every request finished once. What only one middleware does is in
``test_asgi.py`` and ``test_wsgi.py``."""

from __future__ import annotations

import re
import uuid
from typing import Any, Protocol

import fastapi
import flask
import pytest

from floodwall import Engine, asgi, wsgi
from conftest import wait_until
from http_servers import (
    PUBLIC_IP_LIMIT,
    SERVED,
    USER_LIMIT,
    Served,
    assert_limited_in_redis,
    assert_problem,
    assert_rate_limit_headers,
    bearer,
    config,
    mint,
    responses,
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


def test_an_admitted_request_reaches_the_app_with_identity_decision_and_headers(
    served: Served,
) -> None:
    with served(Engine(config())) as client:
        response = client.get("/api/whoami", headers=bearer(mint("alice", "premium")))
    assert response.status_code == 200
    assert response.json() == {
        "subject": "alice",
        "role": "premium",
        "rule": "per-user",
        "remaining": 4,
        "store": "memory",
    }
    assert_rate_limit_headers(response, rule="per-user", limit=5, remaining=4)
    assert "retry-after" not in response.headers


def test_refusals_are_written_as_the_engine_answers_them(served: Served) -> None:
    alice = bearer(mint("alice"))
    with served(Engine(config())) as client:
        admitted = [client.get("/api/whoami", headers=alice) for _ in range(USER_LIMIT)]
        limited = client.get("/api/whoami", headers=alice)
        missing = client.get("/api/whoami")
    assert [r.status_code for r in admitted] == [200] * USER_LIMIT
    assert assert_problem(limited, 429, "rate_limited")["rule"] == "per-user"
    assert_rate_limit_headers(limited, rule="per-user", limit=USER_LIMIT, remaining=0)
    assert 0 < int(limited.headers["retry-after"]) <= 3600
    assert int(limited.headers["content-length"]) == len(limited.content)
    assert_problem(missing, 401, "missing_token")
    assert missing.headers["www-authenticate"] == 'Bearer realm="floodwall"'


def test_a_skipped_path_reaches_the_app_untouched(served: Served) -> None:
    with served(Engine(config(skip_paths=["/health"]))) as client:
        answers = [client.get("/health") for _ in range(PUBLIC_IP_LIMIT + USER_LIMIT)]
    assert [r.status_code for r in answers] == [200] * len(answers)
    assert answers[-1].json() == {"seen_by_middleware": False}
    assert "ratelimit" not in answers[-1].headers


def test_a_public_path_reaches_the_app_with_no_identity_limited_by_address(
    served: Served,
) -> None:
    with served(Engine(config(public_paths=["/public/**"]))) as client:
        admitted = [client.get("/public/info") for _ in range(PUBLIC_IP_LIMIT)]
        limited = client.get("/public/info", headers=bearer(mint("alice")))
    assert [r.status_code for r in admitted] == [200] * PUBLIC_IP_LIMIT
    assert admitted[0].json()["subject"] is None
    assert admitted[0].json()["rule"] == "per-ip"
    assert assert_problem(limited, 429, "rate_limited")["rule"] == "per-ip"


def test_authentication_off_is_the_rate_limit_stage(served: Served) -> None:
    with served(Engine(config(auth=False)), authenticate=False) as client:
        response = client.get("/api/whoami", headers=bearer("not even a token"))
    assert response.status_code == 200
    assert response.json()["subject"] is None
    assert_rate_limit_headers(response, rule="per-user", limit=USER_LIMIT, remaining=2)


def test_the_cost_callable_answers_what_the_limits_count(served: Served) -> None:
    alice = bearer(mint("alice"))
    with served(Engine(config()), cost=route_cost) as client:
        export = client.get("/api/export", headers=alice)
        after = client.get("/api/whoami", headers=alice)
        huge = client.get("/api/huge", headers=bearer(mint("bob")))
    assert export.status_code == 200
    assert export.json()["remaining"] == 0
    assert assert_problem(after, 429, "rate_limited")["rule"] == "per-user"
    assert_problem(huge, 429, "cost_exceeds_limit")


def test_headers_the_app_sets_are_not_replaced(served: Served) -> None:
    with served(Engine(config())) as client:
        response = client.get("/api/own-header", headers=bearer(mint("alice")))
    assert response.status_code == 200
    assert response.headers.get_list("ratelimit-limit") == ["999"]
    assert response.headers["ratelimit-remaining"] == str(USER_LIMIT - 1)


def test_new_access_lists_are_read_from_the_next_request(served: Served) -> None:
    engine = Engine(config(public_paths=["/public/**"]))
    with served(engine) as client:
        before = client.get("/public/info", headers={"X-Client": "scraper"})
        engine.set_access_lists({"deny": {"headers": {"x-client": ["scraper"]}}})
        denied = client.get("/public/info", headers={"X-Client": "scraper"})
        other = client.get("/public/info", headers={"X-Client": "browser"})
    assert before.status_code == 200
    assert_problem(denied, 403, "access_denied")
    assert other.status_code == 200


def test_every_request_not_skipped_is_finished_once_with_its_status(served: Served) -> None:
    engine = Engine(config(public_paths=["/public/**"], skip_paths=["/health"]))
    alice = bearer(mint("alice"))
    requests = [
        ("/api/whoami?verbose=1", alice, 200),
        ("/api/whoami", alice, 200),
        ("/api/own-header", alice, 200),
        ("/api/whoami", alice, 429),  # the limit, answered by the middleware
        ("/api/whoami", {}, 401),  # no token
        ("/api/nowhere", bearer(mint("carol")), 404),  # the application's answer
        ("/public/info?page=2", {}, 200),
        ("/health", {}, 200),  # skipped: not recorded
        # The application failed (last: uvicorn then closes the connection).
        ("/api/boom", bearer(mint("dave")), 500),
    ]
    with served(engine) as client:
        statuses = [client.get(path, headers=headers).status_code for path, headers, _ in requests]
        # A streamed response is finished when the server closes it, just after sending it.
        assert wait_until(lambda: engine.report()["totals"]["responses"] >= len(requests) - 1)
    assert statuses == [status for _, _, status in requests]
    report = engine.report()
    assert report["totals"]["responses"] == len(requests) - 1
    assert responses(engine) == {"2xx": 4, "4xx": 3, "5xx": 1}
    endpoints = {e["key"]: e["count"] for e in report["top_endpoints"]}
    assert endpoints["GET /api/whoami"] == 4
    assert "GET /health" not in endpoints


def test_a_streamed_response_is_finished_once_its_body_is_through(served: Served) -> None:
    engine = Engine(config())
    with served(engine) as client:
        response = client.get("/api/slow", headers=bearer(mint("alice")))
        assert wait_until(lambda: engine.report()["totals"]["responses"] >= 1)
    assert (response.status_code, response.text) == (200, "one,two")
    assert responses(engine) == {"2xx": 1}


def test_an_engine_without_auth_answers_503_invalid_config(served: Served) -> None:
    engine = Engine(config())
    with served(engine) as client:
        engine.reload_auth(None)
        response = client.get("/api/whoami", headers=bearer(mint("alice")))
    assert_problem(response, 503, "invalid_config")
    assert responses(engine) == {"5xx": 1}


@pytest.mark.parametrize("option", ["public_paths", "skip_paths", "trusted_proxies",
                                    "forwarded_header"])
def test_an_option_that_moved_to_the_http_section_says_where(wrap: Wrap, option: str) -> None:
    with pytest.raises(TypeError, match=re.escape(f"[http] section's {option} (http.{option})")):
        wrap(Engine(config()), **{option: ["/health"]})


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"public_path": ["/x"]}, TypeError, "'public_path'"),
        ({"cost": 5}, TypeError, "cost must be a callable"),
        ({"authenticate": "yes"}, TypeError, "authenticate must be True or False"),
        ({"engine": object()}, TypeError, "engine must be a floodwall.Engine"),
    ],
)
def test_a_bad_option_is_refused_naming_it(
    wrap: Wrap, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    options = dict(options)
    engine = options.pop("engine", Engine(config()))
    with pytest.raises(error, match=re.escape(message)):
        wrap(engine, **options)


def test_authentication_needs_an_auth_section(wrap: Wrap) -> None:
    with pytest.raises(ValueError, match=r"\[auth\]"):
        wrap(Engine(config(auth=False)))
    wrap(Engine(config(auth=False)), authenticate=False)


def test_on_redis_the_limit_headers_and_answers_hold(
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
            assert wait_until(lambda: engine.report()["totals"]["responses"] >= USER_LIMIT + 3)
    finally:
        engine.close()
    assert [r.status_code for r in admitted] == [200] * USER_LIMIT
    assert admitted[0].json()["store"] == "redis"
    assert_rate_limit_headers(admitted[0], rule="per-user", limit=USER_LIMIT, remaining=2)
    assert assert_problem(denied, 429, "rate_limited")["rule"] == "per-user"
    assert other.status_code == 200
    assert_problem(missing, 401, "missing_token")
    assert_limited_in_redis(redis_server, prefix, ["alice", "bob"])
    assert responses(engine) == {"2xx": USER_LIMIT + 1, "4xx": 2}
