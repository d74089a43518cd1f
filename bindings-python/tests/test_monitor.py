"""Monitoring through the engine: ``report()`` (its shape, the ``Report`` typed dict, and the
counts after checks, refusals, failures, upstream calls and recorded responses),
``prometheus()``, and ``record_response`` (what it refuses; many threads at once). What the
ASGI and WSGI middlewares record is in ``test_middleware.py``."""

from __future__ import annotations

import threading
import time
from typing import Any, Optional

import pytest

import floodwall
from conftest import hs256_auth, mint
from floodwall import CostExceedsLimitError, MinuteCounts, Report

_START = 4_102_444_800_000 // 60_000  # 2100-01-01 00:00 UTC, in minutes since the epoch
AT = (_START + (time.time_ns() // 60_000_000_000 + 30 - _START) % 60) * 60_000
"""A minute's start within the first hour of 2100: decisions dated then land in a minute of their
own, apart from what happens at the engine's clock — decades earlier, and half an hour away in the
report's ring of 60 minutes whenever the test runs (a minute sharing the clock's slot would push
the clock's events out of the ring)."""


def config() -> dict[str, Any]:
    return {
        "auth": hs256_auth(default_role="free"),
        "rules": [
            {
                "name": "per-user",
                "key": "subject",
                "algorithm": "fixed_window",
                "limit": 2,
                "window": "1m",
                "roles": {"premium": {"limit": 5}},
            }
        ],
        "services": {
            "api": {
                "upstreams": [
                    {"name": "a", "url": "http://127.0.0.1:9001"},
                    {"name": "b", "url": "http://127.0.0.1:9002"},
                ]
            }
        },
    }


def busy_engine() -> tuple[floodwall.Engine, str]:
    """An engine that saw, dated ``AT``: alice admitted twice and limited once, a forged
    token, premium bob admitted, a request too costly ever to pass; then, at its clock, one
    upstream call that timed out and three responses (200, 429, 503). Answers the engine and
    the upstream that timed out."""
    engine = floodwall.Engine(config())
    decisions = [
        engine.check(subject="alice", role="free", method="get", path="/api/orders?page=2", now_ms=AT)
        for _ in range(3)
    ]
    assert [d.allowed for d in decisions] == [True, True, False]
    with pytest.raises(floodwall.AuthError):
        engine.authorize(
            mint("mallory", secret="a-forged-secret-of-at-least-32-bytes!!"),
            method="POST",
            path="/api/orders",
            now_ms=AT,
        )
    bob = engine.authorize(mint("bob", role="premium"), method="GET", path="/api/items", now_ms=AT)
    assert bob.allowed
    with pytest.raises(CostExceedsLimitError):
        engine.check(subject="carol", method="GET", path="/api/orders", cost=100, now_ms=AT)
    lease = engine.pick("api")
    lease.finish("timeout", 3.0)
    engine.record_response("GET", "/api/orders?page=2", 200, 1.5)
    engine.record_response("GET", "/api/orders", 429, 0.3)
    engine.record_response("POST", "/api/orders", 503, 2500)
    return engine, lease.upstream


def entries(top: list[floodwall.TopEntry]) -> dict[str, int]:
    assert all(e["error"] == 0 for e in top), top
    return {e["key"]: e["count"] for e in top}


def test_the_report_counts_what_the_engine_saw() -> None:
    engine, timed_out = busy_engine()
    report = engine.report(now_ms=AT + 30_000)

    assert report["generated_at_ms"] == AT + 30_000
    assert report["horizon_minutes"] == 60
    assert (report["source"], report["store_kind"], report["store_failure"]) == (
        "memory",
        "memory",
        None,
    )
    assert report["sink"] is None

    empty_latency = {
        "latency_p50_us": 0,
        "latency_p99_us": 0,
        "mean_latency_us": 0,
        "max_latency_us": 0,
    }
    minute: MinuteCounts = {
        "start_ms": AT,
        "requests": 6,
        "admitted": 3,
        "rate_limited": 1,
        "auth_rejected": 1,
        "failed": 1,
        "denied": 0,
        "shadow_limited": 0,
        "allowlisted": 0,
        "blocked": 0,
        "upstream_calls": 0,
        "upstream_failures": 0,
        "breaker_trips": 0,
        "responses": 0,
        "client_errors": 0,
        "server_errors": 0,
        **empty_latency,  # type: ignore[typeddict-item]
    }
    assert report["per_minute"] == [minute]
    assert report["peaks"] == [minute]

    totals = report["totals"]
    p50 = totals["latency_p50_us"]
    assert 1_000 <= p50 <= 2_500, "the median (1.5 ms) lies in the 1–2.5 ms bucket"
    assert totals == {
        **minute,
        "start_ms": 0,
        "upstream_calls": 1,
        "upstream_failures": 1,
        "responses": 3,
        "client_errors": 1,
        "server_errors": 1,
        "latency_p50_us": p50,
        "latency_p99_us": totals["latency_p99_us"],
        "mean_latency_us": (1_500 + 300 + 2_500_000) // 3,
        "max_latency_us": 2_500_000,
    }

    assert entries(report["top_endpoints"]) == {
        "GET /api/orders": 4,
        "POST /api/orders": 1,
        "GET /api/items": 1,
    }
    assert entries(report["top_subjects"]) == {"alice": 3, "bob": 1, "carol": 1}
    assert entries(report["breaches_by_subject"]) == {"alice": 1}
    assert entries(report["breaches_by_role"]) == {"free": 1}
    assert entries(report["breaches_by_endpoint"]) == {"GET /api/orders": 1}
    assert entries(report["breaches_by_rule"]) == {"per-user": 1}
    assert report["auth_rejections"] == {"bad_signature": 1}
    assert report["errors"] == {"cost_exceeds_limit": 1}
    assert entries(report["upstream_failures"]) == {f"api/{timed_out}": 1}
    assert report["breaker_trips"] == []
    assert report["stores"] == {"memory": 4}, "the failed and refused decisions used no store"
    assert report["status_classes"] == {"2xx": 1, "4xx": 1, "5xx": 1}

    histogram = report["response_latency"]
    assert histogram["bounds_us"][:4] == [100, 250, 500, 1_000]
    assert len(histogram["counts"]) == len(histogram["bounds_us"]) + 1
    bucket = {bound: n for bound, n in zip(histogram["bounds_us"], histogram["counts"]) if n}
    assert bucket == {500: 1, 2_500: 1, 2_500_000: 1}
    assert (histogram["count"], histogram["sum_us"]) == (3, 1_500 + 300 + 2_500_000)


def test_the_report_has_the_documented_keys_in_the_documents_order() -> None:
    engine, _ = busy_engine()
    report = engine.report()
    assert list(report) == list(Report.__annotations__)
    assert list(report["totals"]) == list(MinuteCounts.__annotations__)
    assert list(report["top_endpoints"][0]) == list(floodwall.TopEntry.__annotations__)
    assert list(report["response_latency"]) == list(floodwall.LatencyHistogram.__annotations__)


def test_the_http_layer_counts_denials_allow_lists_shadow_breaches_and_warnings() -> None:
    engine = floodwall.Engine({
        "http": {
            "allow": {"addresses": ["192.0.2.7"]},
            "deny": {"addresses": ["203.0.113.0/24"]},
        },
        "rules": [{"name": "watch", "key": "ip", "algorithm": "fixed_window", "limit": 1,
                   "window": "1h", "shadow": True}],
    })

    def ask(peer: str, headers: Optional[dict[str, str]] = None) -> str:
        exchange = engine.http("GET", "/api", peer, headers or {}, stage="rate_limit")
        exchange.finish(exchange.status or 200)
        return exchange.verdict

    assert ask("203.0.113.9") == "refuse"
    assert ask("192.0.2.7") == "pass"
    assert [ask("198.51.100.1") for _ in range(2)] == ["pass", "pass"]
    assert ask("198.51.100.2", {"x-forwarded-for": "192.0.2.200"}) == "pass"
    report = engine.report()
    totals = report["totals"]
    assert (totals["requests"], totals["admitted"], totals["responses"]) == (5, 4, 5)
    assert (totals["denied"], totals["allowlisted"], totals["shadow_limited"]) == (1, 1, 1)
    assert entries(report["shadow_breaches_by_rule"]) == {"watch": 1}
    assert report["breaches_by_rule"] == []
    [warning] = report["warnings"]
    assert list(warning) == list(floodwall.ReportWarning.__annotations__)
    assert (warning["code"], warning["count"]) == ("untrusted_forwarded_header", 1)
    assert "trusted_proxies" in warning["message"]


def test_the_report_at_the_clock_holds_this_minutes_responses() -> None:
    engine, _ = busy_engine()
    minutes = engine.report()["per_minute"]
    # At the clock, the minute dated 2100 lies ahead and is left out; the call and the
    # responses are in the current minute (or two, should a minute turn between them).
    assert 1 <= len(minutes) <= 2
    assert sum(m["requests"] for m in minutes) == 0
    assert sum(m["responses"] for m in minutes) == 3
    assert sum(m["upstream_calls"] for m in minutes) == 1


def test_a_fresh_engine_reports_nothing() -> None:
    report = floodwall.Engine({}).report()
    assert report["per_minute"] == [] and report["peaks"] == []
    assert report["totals"]["requests"] == report["totals"]["responses"] == 0
    assert report["top_endpoints"] == [] and report["status_classes"] == {}


@pytest.mark.parametrize("now_ms", [-1, 1.5, "soon"])
def test_a_bad_report_time_is_a_type_error(now_ms: Any) -> None:
    with pytest.raises(TypeError, match="now_ms"):
        floodwall.Engine({}).report(now_ms=now_ms)


def test_prometheus_renders_the_counters() -> None:
    engine, timed_out = busy_engine()
    lines = engine.prometheus().splitlines()
    for line in [
        "# TYPE floodwall_decisions_total counter",
        'floodwall_decisions_total{outcome="admitted"} 3',
        'floodwall_decisions_total{outcome="rate_limited"} 1',
        'floodwall_decisions_total{outcome="auth_rejected"} 1',
        'floodwall_decisions_total{outcome="failed"} 1',
        'floodwall_rate_limited_total{rule="per-user"} 1',
        'floodwall_auth_rejections_total{reason="bad_signature"} 1',
        'floodwall_decision_errors_total{kind="cost_exceeds_limit"} 1',
        'floodwall_responses_total{class="4xx"} 1',
        "# TYPE floodwall_response_duration_seconds histogram",
        'floodwall_response_duration_seconds_bucket{le="+Inf"} 3',
        "floodwall_response_duration_seconds_count 3",
        f'floodwall_upstream_calls_total{{service="api",upstream="{timed_out}",outcome="timeout"}} 1',
        'floodwall_upstream_in_flight{service="api",upstream="a"} 0',
    ]:
        assert line in lines, line
    assert floodwall.PROMETHEUS_CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("GET", "/", 99, 1.0), ValueError, "status must be an HTTP status from 100 to 999, not 99"),
        (("GET", "/", 1000, 1.0), ValueError, "not 1000"),
        (("GET", "/", -200, 1.0), ValueError, "not -200"),
        (("GET", "/", 2**70, 1.0), ValueError, "from 100 to 999"),
        (("GET", "/", "200", 1.0), TypeError, "status must be an int, not str"),
        (("GET", "/", True, 1.0), TypeError, "status must be an int, not bool"),
        (("GET", "/", 200.0, 1.0), TypeError, "status must be an int, not float"),
        (("GET", "/", 200, -0.5), ValueError, "latency_ms must be a finite number >= 0, not -0.5"),
        (("GET", "/", 200, float("nan")), ValueError, "not NaN"),
        (("GET", "/", 200, float("inf")), ValueError, "not inf"),
        (("GET", "/", 200, "1"), TypeError, "latency_ms must be a number of milliseconds, not str"),
        (("GET", "/", 200, None), TypeError, "latency_ms"),
        ((None, "/", 200, 1.0), TypeError, "method must be a str, not NoneType"),
        (("GET", b"/", 200, 1.0), TypeError, "path must be a str, not bytes"),
        (("GET", "/\udcff", 200, 1.0), TypeError, "path is not valid UTF-8"),
    ],
)
def test_record_response_refuses_bad_arguments_naming_them(
    args: tuple[Any, ...], error: type[Exception], message: str
) -> None:
    engine = floodwall.Engine({})
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        engine.record_response(*args)
    assert engine.report()["totals"]["responses"] == 0, "nothing refused is counted"


def test_record_response_takes_keywords_and_whole_milliseconds() -> None:
    engine = floodwall.Engine({})
    engine.record_response(method="GET", path="/", status=204, latency_ms=2)
    totals = engine.report()["totals"]
    assert (totals["responses"], totals["max_latency_us"]) == (1, 2_000)


def test_responses_recorded_from_many_threads_are_all_counted() -> None:
    engine = floodwall.Engine({})
    threads, each = 4, 2_000

    def record(status: int) -> None:
        for _ in range(each):
            engine.record_response("GET", "/api/orders", status, 1.0)

    workers = [threading.Thread(target=record, args=(200 + 300 * (i % 2),)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    report = engine.report()
    assert report["totals"]["responses"] == threads * each
    assert report["status_classes"] == {"2xx": threads // 2 * each, "5xx": threads // 2 * each}
