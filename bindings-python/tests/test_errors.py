"""The exceptions: one class per group of error kinds, each provoked for real through the API,
with its built-in base, ``.code``, ``.status``, the kind's extra attribute, and a pickling
round trip; and the ``TypeError``/``ValueError`` of bad arguments."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

import floodwall
from conftest import CHALLENGES, JWT_FIXTURES, hs256_auth, mint
from floodwall import (
    AuthError,
    ConfigError,
    CostExceedsLimitError,
    FloodwallError,
    InvalidCostError,
    NoUpstreamError,
    StoreError,
    UnknownRuleError,
    UnknownServiceError,
    UnknownUpstreamError,
)
from floodwall import _floodwall

AUTH_CODES = [code for code in floodwall.ERROR_CODES if code in CHALLENGES]

#: code → (class, the built-in a Python programmer catches, HTTP status)
EXPECTED: dict[str, tuple[type[FloodwallError], type[Exception], int]] = {
    "invalid_config": (ConfigError, ValueError, 503),
    "cost_exceeds_limit": (CostExceedsLimitError, ValueError, 429),
    "invalid_cost": (InvalidCostError, ValueError, 400),
    **{code: (AuthError, Exception, 401) for code in AUTH_CODES},
    "no_upstream_available": (NoUpstreamError, RuntimeError, 503),
    "unknown_rule": (UnknownRuleError, LookupError, 503),
    "unknown_service": (UnknownServiceError, LookupError, 503),
    "unknown_upstream": (UnknownUpstreamError, LookupError, 503),
    "store_unavailable": (StoreError, RuntimeError, 503),
}

PER_USER = {
    "rules": [
        {"name": "per-user", "key": "subject", "algorithm": "fixed_window", "limit": 2,
         "window": "1m"}
    ]
}

SERVICE = {
    "services": {
        "api": {
            "upstreams": [{"name": "a", "url": "http://127.0.0.1:9001"}],
            "breaker": {"window": 10, "min_calls": 2, "failure_rate": 0.5, "open_for": "5m"},
        }
    }
}


def assert_error(error: BaseException, code: str) -> None:
    cls, builtin, status = EXPECTED[code]
    assert type(error) is cls, f"{code}: {type(error).__name__}"
    assert isinstance(error, FloodwallError)
    assert isinstance(error, builtin)
    assert error.code == code
    assert error.status == status
    assert error.message == str(error)
    assert code in repr(error)


def assert_pickles(error: FloodwallError) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert (back.code, back.status, back.message, str(back), back.args) == (
        error.code, error.status, error.message, str(error), error.args
    )
    for attribute in ("field", "www_authenticate", "available_at_ms"):
        assert getattr(back, attribute, None) == getattr(error, attribute, None), attribute


# --- every kind has a class ---------------------------------------------------------------


def test_error_codes_are_the_core_kinds_each_with_a_class_of_its_own() -> None:
    assert len(floodwall.ERROR_CODES) == len(set(floodwall.ERROR_CODES)) == 20
    assert set(_floodwall._error_classes) == set(floodwall.ERROR_CODES)
    assert set(EXPECTED) == set(floodwall.ERROR_CODES), "a kind this test does not know"
    for code in floodwall.ERROR_CODES:
        name = _floodwall._error_classes[code]
        assert name != "FloodwallError", f"{code} falls to the base class"
        assert getattr(floodwall, name) is EXPECTED[code][0], code


def test_auth_kinds_are_the_ones_the_jwt_fixtures_cover(jwt_cases: dict[str, Any]) -> None:
    assert sorted(AUTH_CODES) == sorted(jwt_cases["error_kinds"])


# --- each kind provoked through the API -----------------------------------------------------


@pytest.mark.parametrize(
    "config, field",
    [
        ({"rules": [{"name": "r", "key": "subject", "algorithm": "token_bucket", "capacity": 5,
                     "refill_rate": -2}]}, "rules[0].refill_rate"),
        ({"rules": [{"name": "r", "key": "subject", "algorithm": "fixed_window", "limit": 1,
                     "window": "1m", "bogus": 1}]}, "rules[0].bogus"),
        ({"store": {"kind": "memcached"}}, "store.kind"),
        ({"services": {"api": {"upstreams": [{"url": "http://a", "weight": 0}]}}},
         "services.api.upstreams[0].weight"),
    ],
    ids=["bad-value", "unknown-field", "unknown-store", "bad-weight"],
)
def test_invalid_config_names_the_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        floodwall.Engine.from_dict(config)
    assert_error(caught.value, "invalid_config")
    assert caught.value.field == field
    assert caught.value.message.startswith(f"{field}: ")
    assert_pickles(caught.value)


def test_invalid_config_from_every_source() -> None:
    for build in (
        lambda: floodwall.Engine.from_toml("rules = 5"),
        lambda: floodwall.Engine.from_toml("[[rules]\n"),
        lambda: floodwall.Engine.from_json("{not json"),
        lambda: floodwall.Engine.from_file(JWT_FIXTURES / "no-such-file.toml"),
        lambda: floodwall.Engine.from_dict({"rules": [{"window": object()}]}),
        lambda: floodwall.Engine({"rules": "nope"}),
    ):
        with pytest.raises(ConfigError) as caught:
            build()
        assert_error(caught.value, "invalid_config")
        assert_pickles(caught.value)


def test_authenticating_without_an_auth_section_is_a_config_error() -> None:
    engine = floodwall.Engine.from_dict(PER_USER)
    with pytest.raises(ConfigError) as caught:
        engine.authenticate(mint())
    assert_error(caught.value, "invalid_config")
    assert caught.value.field == "auth"


def test_cost_exceeds_limit_consumes_nothing() -> None:
    engine = floodwall.Engine.from_dict(PER_USER)
    with pytest.raises(CostExceedsLimitError) as caught:
        engine.check(subject="alice", cost=3, now_ms=1_000)
    assert_error(caught.value, "cost_exceeds_limit")
    assert "per-user" in caught.value.message
    assert_pickles(caught.value)
    assert engine.check(subject="alice", cost=2, now_ms=1_000).remaining == 0


def test_an_invalid_cost_is_answered_400_and_counted_not_raised() -> None:
    engine = floodwall.Engine.from_dict(PER_USER)
    for cost in (1.5, -1, float("nan"), 2**53 + 1, 10**400):
        exchange = engine.http("GET", "/", "192.0.2.1", {}, cost=cost, stage="rate_limit")
        assert (exchange.verdict, exchange.status) == ("refuse", 400), cost
        assert b'"code":"invalid_cost"' in exchange.body
    assert engine.report()["errors"] == {"invalid_cost": 5}
    assert engine.key_count == 0, "nothing was consumed"
    error = InvalidCostError("bad cost", code="invalid_cost", status=400)
    assert_error(error, "invalid_cost")
    assert_pickles(error)


@pytest.mark.parametrize("code", AUTH_CODES)
def test_each_auth_kind_from_a_fixture_token(
    code: str, fixture_engine: floodwall.Engine, jwt_cases: dict[str, Any]
) -> None:
    case = next(c for c in jwt_cases["cases"] if c["expect"] == {"error": code})
    with pytest.raises(AuthError) as caught:
        fixture_engine.authenticate("Bearer " + case["token"], now_ms=jwt_cases["now"] * 1000)
    error = caught.value
    assert_error(error, code)
    assert error.www_authenticate == CHALLENGES[code]
    assert_pickles(error)


def test_auth_errors_from_minted_tokens() -> None:
    engine = floodwall.Engine.from_dict({"auth": hs256_auth()})
    for authorization, code in [
        ("", "missing_token"),
        ("Basic dXNlcjpwYXNz", "missing_token"),
        (mint(expires_in=-3600), "expired"),
        (mint(secret="another-secret-of-the-same-length-0123456789"), "bad_signature"),
        (mint(expires_in=None), "missing_claim"),
        (mint(subject=None), "missing_claim"),
        ("Bearer not.a.jwt", "malformed_token"),
    ]:
        with pytest.raises(AuthError) as caught:
            engine.authenticate(authorization)
        assert_error(caught.value, code)
        assert caught.value.www_authenticate == CHALLENGES[code]
        token = authorization.removeprefix("Bearer ")
        if token:
            assert token not in caught.value.www_authenticate


def test_no_upstream_available_says_when_a_breaker_reopens() -> None:
    engine = floodwall.Engine.from_dict(SERVICE)
    for _ in range(2):
        engine.pick("api").finish("failure")
    with pytest.raises(NoUpstreamError) as caught:
        engine.pick("api")
    error = caught.value
    assert_error(error, "no_upstream_available")
    (status,) = engine.upstreams("api")
    assert status.state == "open"
    assert error.available_at_ms is not None
    assert error.available_at_ms == status.open_until_ms
    assert_pickles(error)


def test_no_upstream_available_when_every_upstream_is_down() -> None:
    engine = floodwall.Engine.from_dict(SERVICE)
    engine.set_upstream_down("api", "a")
    with pytest.raises(NoUpstreamError) as caught:
        engine.pick("api")
    assert_error(caught.value, "no_upstream_available")
    assert caught.value.available_at_ms is None
    assert "marked down" in caught.value.message
    assert_pickles(caught.value)


def test_store_unavailable_under_on_error_error() -> None:
    from redis_server import free_port

    engine = floodwall.Engine.from_dict({
        "store": {"kind": "redis", "url": f"redis://127.0.0.1:{free_port()}",
                  "timeout": "200ms", "on_error": "error"},
        **PER_USER,
    })
    for call in (lambda: engine.check(subject="alice"),
                 lambda: engine.check_many([{"subject": "alice"}])[0]):
        try:
            raised: object = call()
        except StoreError as e:
            raised = e
        assert isinstance(raised, StoreError), raised
        assert_error(raised, "store_unavailable")
        assert "unavailable" in raised.message
        assert_pickles(raised)


def test_unknown_service() -> None:
    engine = floodwall.Engine.from_dict(SERVICE)
    for call in (
        lambda: engine.pick("nope"),
        lambda: engine.upstreams("nope"),
        lambda: engine.set_upstream_down("nope", "a"),
        lambda: engine.reset_breaker("nope", "a"),
        lambda: engine.add_upstream("nope", "http://b"),
        lambda: engine.remove_upstream("nope", "a"),
    ):
        with pytest.raises(UnknownServiceError) as caught:
            call()
        assert_error(caught.value, "unknown_service")
        assert "nope" in caught.value.message
        assert_pickles(caught.value)


def test_unknown_upstream() -> None:
    engine = floodwall.Engine.from_dict(SERVICE)
    for call in (
        lambda: engine.set_upstream_down("api", "zz"),
        lambda: engine.reset_breaker("api", "zz"),
        lambda: engine.remove_upstream("api", "zz"),
    ):
        with pytest.raises(UnknownUpstreamError) as caught:
            call()
        assert_error(caught.value, "unknown_upstream")
        assert "zz" in caught.value.message
        assert_pickles(caught.value)


def test_an_exception_built_by_hand_keeps_its_details() -> None:
    error = NoUpstreamError("x", code="no_upstream_available", status=503, available_at_ms=7)
    assert error.available_at_ms == 7
    assert_pickles(error)
    auth = AuthError("y", code="expired", status=401)
    assert auth.www_authenticate == 'Bearer realm="floodwall"'


# --- bad arguments --------------------------------------------------------------------------


def _names(error: BaseException, name: str) -> bool:
    """Whether the message (or a note PyO3 adds) names the argument."""
    text = " ".join([str(error), *getattr(error, "__notes__", [])])
    return name in text


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"subject": 5}, "subject"),
        ({"role": b"admin"}, "role"),
        ({"method": 1.0}, "method"),
        ({"path": ["/"]}, "path"),
        ({"ip": 127}, "ip"),
        ({"headers": 5}, "headers"),
        ({"headers": {"X-Api-Key": 5}}, "headers"),
        ({"headers": {5: "v"}}, "headers"),
        ({"cost": "1"}, "cost"),
        ({"now_ms": "1000"}, "now_ms"),
        ({"subject": "\ud800"}, "subject"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else v,
)
def test_check_with_a_bad_argument_type_names_it(kwargs: dict[str, Any], name: str) -> None:
    engine = floodwall.Engine.from_dict(PER_USER)
    with pytest.raises(TypeError) as caught:
        engine.check(**kwargs)
    assert _names(caught.value, name), (caught.value, getattr(caught.value, "__notes__", None))
    assert engine.key_count == 0, "a refused call consumed nothing"


def test_other_methods_name_their_bad_arguments() -> None:
    engine = floodwall.Engine.from_dict({"auth": hs256_auth(), **PER_USER, **SERVICE})
    for call, name in [
        (lambda: engine.authenticate(5), "authorization"),
        (lambda: engine.authorize(None), "authorization"),
        (lambda: engine.authorize(mint(), path=5), "path"),
        (lambda: engine.pick(5), "service"),
        (lambda: engine.upstreams(None), "service"),
        (lambda: engine.add_upstream("api", "http://b", weight="2"), "weight"),
    ]:
        with pytest.raises(TypeError) as caught:
            call()
        assert _names(caught.value, name), repr(caught.value)


def test_check_many_names_the_unknown_key() -> None:
    engine = floodwall.Engine.from_dict(PER_USER)
    with pytest.raises(ValueError) as caught:
        engine.check_many([{"subject": "a"}, {"subject": "b", "user": "c"}])
    assert not isinstance(caught.value, FloodwallError)
    assert "'user'" in str(caught.value)
    assert "requests[1]" in str(caught.value)
    assert engine.key_count == 0, "nothing of the batch was decided"


@pytest.mark.parametrize(
    "requests, name",
    [
        ([{"subject": "a"}, "subject=b"], "requests[1]"),
        ([{"subject": 5}], "requests[0].subject"),
        ([{"cost": "1"}], "requests[0].cost"),
        ([{"headers": [("a", "b")]}], "requests[0].headers"),
        ([{5: "a"}], "requests[0]"),
        (5, "int"),
    ],
)
def test_check_many_with_a_bad_request_names_it(requests: Any, name: str) -> None:
    engine = floodwall.Engine.from_dict(PER_USER)
    with pytest.raises(TypeError) as caught:
        engine.check_many(requests)
    assert _names(caught.value, name), repr(caught.value)


def test_lease_finish_with_bad_values() -> None:
    engine = floodwall.Engine.from_dict(SERVICE)
    lease = engine.pick("api")
    with pytest.raises(ValueError, match="outcome"):
        lease.finish("ok")
    for latency in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="latency_ms"):
            lease.finish("success", latency)
    assert not lease.finished
    lease.finish("success", 1.0)
