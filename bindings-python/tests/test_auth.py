"""JWT authentication through the binding: the 129 fixture tokens of ``tests/fixtures/jwt``
(as ``tests/jwt_fixtures.rs`` runs them), the ``Identity`` a token gives, ``authorize`` (the
decision keyed on the token's subject and role) and key rotation with ``reload_auth``."""

from __future__ import annotations

import time
from typing import Any

import jwt as pyjwt
import pytest

import floodwall
from conftest import CHALLENGES, JWT_FIXTURES, TEST_SECRET, hs256_auth, load_jwt_cases, mint
from floodwall import AuthError, ConfigError

FIXTURES = load_jwt_cases()
NOW_MS = FIXTURES["now"] * 1000

ROLE_LIMITS = {
    "rules": [
        {
            "name": "per-user",
            "key": "subject",
            "algorithm": "fixed_window",
            "limit": 2,
            "window": "1m",
            "roles": {"premium": {"limit": 5}},
        }
    ]
}


def test_there_are_129_fixture_cases_covering_every_auth_kind() -> None:
    assert len(FIXTURES["cases"]) == 129
    kinds = {c["expect"]["error"] for c in FIXTURES["cases"] if "error" in c["expect"]}
    assert kinds == set(CHALLENGES)
    assert sum("ok" in c["expect"] for c in FIXTURES["cases"]) > 0


@pytest.mark.parametrize("case", [pytest.param(c, id=c["name"]) for c in FIXTURES["cases"]])
def test_fixture_token(case: dict[str, Any], fixture_engine: floodwall.Engine) -> None:
    authorization = "Bearer " + case["token"]
    label = f"{case['name']} ({case['minted_by']}; {case['why']})"
    if "ok" in case["expect"]:
        identity = fixture_engine.authenticate(authorization, now_ms=NOW_MS)
        want = case["expect"]["ok"]
        assert (identity.subject, identity.role) == (want["subject"], want["role"]), label
    else:
        with pytest.raises(AuthError) as caught:
            fixture_engine.authenticate(authorization, now_ms=NOW_MS)
        kind = case["expect"]["error"]
        assert caught.value.code == kind, f"{label}: {caught.value!r}"
        assert caught.value.status == 401
        assert caught.value.www_authenticate == CHALLENGES[kind], label


def test_the_env_secret_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOODWALL_TEST_HMAC_SECRET", raising=False)
    with pytest.raises(ConfigError) as caught:
        floodwall.Engine.from_file(JWT_FIXTURES / "floodwall.toml")
    assert caught.value.field is not None
    assert caught.value.field.endswith(".secret_env")
    assert "FLOODWALL_TEST_HMAC_SECRET" in caught.value.message


def test_a_token_is_judged_at_the_time_given(fixture_engine: floodwall.Engine) -> None:
    case = next(c for c in FIXTURES["cases"] if c["name"] == "pyjwt_hs256_hmac_1")
    authorization = "Bearer " + case["token"]
    exp_ms = pyjwt.decode(case["token"], options={"verify_signature": False})["exp"] * 1000
    assert fixture_engine.authenticate(authorization, now_ms=exp_ms + 29_000).subject == "user-1"
    with pytest.raises(AuthError) as caught:
        fixture_engine.authenticate(authorization, now_ms=exp_ms + 31_000)
    assert caught.value.code == "expired", "30 s of leeway, then expired"


# --- Identity ----------------------------------------------------------------------------


def test_identity_fields(fixture_engine: floodwall.Engine) -> None:
    case = next(c for c in FIXTURES["cases"] if c["name"] == "pyjwt_hs256_hmac_1")
    payload = pyjwt.decode(case["token"], options={"verify_signature": False})
    identity = fixture_engine.authenticate("Bearer " + case["token"], now_ms=NOW_MS)
    assert identity.subject == "user-1"
    assert identity.role == "free", "the default role: the token carries none"
    assert identity.key_id == "hmac-1"
    assert identity.algorithm == "HS256"
    assert identity.expires_at_ms == payload["exp"] * 1000
    assert identity.claims == payload
    assert identity.claim("tenant") == "acme"
    assert identity.claim("no-such-claim") is None
    assert repr(identity) == (
        f"Identity(subject='user-1', role='free', algorithm='HS256', key_id='hmac-1', "
        f"expires_at_ms={payload['exp'] * 1000})"
    )


def test_identity_claims_by_dotted_path(fixture_engine: floodwall.Engine) -> None:
    case = next(c for c in FIXTURES["cases"] if c["name"] == "role_list_gold_maps_to_premium")
    identity = fixture_engine.authenticate("Bearer " + case["token"], now_ms=NOW_MS)
    assert identity.role == "premium", "gold maps to premium"
    assert identity.claim("realm_access.roles") == ["gold"]
    assert identity.claim("realm_access") == {"roles": ["gold"]}
    assert identity.claim("realm_access.nothing") is None


def test_claims_keep_their_json_types_and_are_a_fresh_dict() -> None:
    engine = floodwall.Engine.from_dict({"auth": hs256_auth(require_exp=False)})
    claims = {
        "n": 7,
        "big": 2**63 + 1,
        "x": 1.5,
        "flag": True,
        "none": None,
        "list": [1, "two", {"three": 3}],
        "a.b": "dotted name",
    }
    identity = engine.authenticate(mint("carol", expires_in=None, **claims))
    for name, value in claims.items():
        assert identity.claim(name) == value, name
        assert type(identity.claims[name]) is type(value), name
    assert identity.claim("list") == [1, "two", {"three": 3}]
    assert identity.expires_at_ms is None
    assert identity.key_id is None
    assert identity.role is None
    first = identity.claims
    first["n"] = 8
    assert identity.claims["n"] == 7, "claims is a new dict on every read"


def test_identity_is_immutable() -> None:
    engine = floodwall.Engine.from_dict({"auth": hs256_auth()})
    identity = engine.authenticate(mint("dave"))
    with pytest.raises(AttributeError):
        identity.subject = "eve"  # type: ignore[misc]


def test_the_same_token_again_gives_the_same_identity() -> None:
    engine = floodwall.Engine.from_dict({"auth": hs256_auth(cache={"max_entries": 10})})
    token = mint("frank", role="premium")
    first, second = engine.authenticate(token), engine.authenticate(token)
    assert (first.subject, first.role) == (second.subject, second.role) == ("frank", "premium")


# --- authorize ---------------------------------------------------------------------------


def test_authorize_decides_under_the_tokens_subject_and_role() -> None:
    engine = floodwall.Engine.from_dict({"auth": hs256_auth(), **ROLE_LIMITS})
    premium, free = mint("alice", role="premium"), mint("bob", role="free")
    at = 60_000

    admitted = []
    for _ in range(7):
        result = engine.authorize(premium, path="/api", now_ms=at)
        assert isinstance(result, floodwall.Authorized)
        assert result.identity.subject == "alice"
        assert result.identity.role == "premium"
        assert result.decision.limit == 5
        assert result.allowed is result.decision.allowed
        admitted.append(result.allowed)
    assert admitted == [True] * 5 + [False] * 2

    admitted = [engine.authorize(free, now_ms=at).allowed for _ in range(3)]
    assert admitted == [True, True, False], "bob draws from his own counter, limit 2"

    # The counter is the subject's: a check naming alice and premium finds it spent.
    denied = engine.check(subject="alice", role="premium", now_ms=at)
    assert not denied.allowed
    assert denied.headers["Retry-After"] == "60"
    # A token's subject and role replace nothing the caller could pass: authorize has no
    # subject or role argument.
    with pytest.raises(TypeError):
        engine.authorize(free, subject="alice")  # type: ignore[call-arg]


def test_authorize_repr_and_layers() -> None:
    engine = floodwall.Engine.from_dict({"auth": hs256_auth(), **ROLE_LIMITS})
    result = engine.authorize(mint("alice", role="premium"), now_ms=60_000)
    assert repr(result) == f"Authorized(identity={result.identity!r}, decision={result.decision!r})"
    assert [layer.limit for layer in result.decision.layers] == [5]
    assert result.decision.store == "memory"


def test_a_refused_token_consumes_nothing() -> None:
    engine = floodwall.Engine.from_dict({"auth": hs256_auth(), **ROLE_LIMITS})
    for _ in range(5):
        with pytest.raises(AuthError) as caught:
            engine.authorize(mint("alice", expires_in=-3600), now_ms=60_000)
        assert caught.value.code == "expired"
    assert engine.key_count == 0


def test_authorize_judges_the_token_at_the_engines_clock() -> None:
    """``now_ms`` dates the rate-limit decision only: it cannot revive an expired token."""
    engine = floodwall.Engine.from_dict({"auth": hs256_auth(), **ROLE_LIMITS})
    issued = time.time() - 7200
    expired = mint("alice", now=issued, expires_in=3600)
    with pytest.raises(AuthError) as caught:
        engine.authorize(expired, now_ms=int(issued * 1000))
    assert caught.value.code == "expired"


def test_authorize_cost_over_the_limit() -> None:
    engine = floodwall.Engine.from_dict({"auth": hs256_auth(), **ROLE_LIMITS})
    with pytest.raises(floodwall.CostExceedsLimitError):
        engine.authorize(mint("bob"), cost=3, now_ms=60_000)
    assert engine.authorize(mint("alice", role="premium"), cost=3, now_ms=60_000).allowed


# --- reload_auth ---------------------------------------------------------------------------

NEW_SECRET = "the-rotated-secret-of-floodwall-python-tests-987654"


@pytest.mark.parametrize("cache", [None, {"max_entries": 100}], ids=["no-cache", "cache"])
def test_reload_auth_rotates_keys(cache: Any) -> None:
    fields = {} if cache is None else {"cache": cache}
    engine = floodwall.Engine.from_dict({"auth": hs256_auth(**fields), **ROLE_LIMITS})
    old = mint("alice", role="premium")
    new = mint("alice", role="premium", secret=NEW_SECRET)
    assert engine.authenticate(old).subject == "alice"
    with pytest.raises(AuthError):
        engine.authenticate(new)

    engine.reload_auth(hs256_auth(NEW_SECRET, **fields))
    with pytest.raises(AuthError) as caught:
        engine.authenticate(old)
    assert caught.value.code == "bad_signature"
    with pytest.raises(AuthError):
        engine.authorize(old)
    assert engine.authenticate(new).role == "premium"
    assert engine.authorize(new, now_ms=60_000).decision.limit == 5


def test_reload_auth_with_kids() -> None:
    engine = floodwall.Engine.from_dict(
        {"auth": {"algorithms": ["HS256"], "keys": [{"kid": "k1", "secret": TEST_SECRET}]}}
    )
    old = mint("alice", kid="k1")
    assert engine.authenticate(old).key_id == "k1"
    engine.reload_auth(
        {"algorithms": ["HS256"], "keys": [{"kid": "k2", "secret": NEW_SECRET}]}
    )
    with pytest.raises(AuthError) as caught:
        engine.authenticate(old)
    assert caught.value.code == "unknown_key"
    assert engine.authenticate(mint("alice", kid="k2", secret=NEW_SECRET)).key_id == "k2"


def test_a_failed_reload_keeps_the_running_keys() -> None:
    engine = floodwall.Engine.from_dict({"auth": hs256_auth()})
    token = mint("alice")
    with pytest.raises(ConfigError) as caught:
        engine.reload_auth({"algorithms": ["HS256"], "keys": [{"secret": "too short"}]})
    assert caught.value.field is not None and caught.value.field.startswith("auth.keys[0]")
    with pytest.raises(ConfigError):
        engine.reload_auth({"algorithms": ["HS256"], "keys": [], "bogus": True})
    with pytest.raises(ConfigError):
        engine.reload_auth({"algorithms": ["HS256"], "keys": [{"secret": object()}]})
    assert engine.authenticate(token).subject == "alice"


@pytest.mark.parametrize("wrong", ["auth", 0, False, ["HS256"], ("a",)])
def test_a_wrong_argument_to_reload_auth_is_a_type_error_and_keeps_authentication(
    wrong: Any,
) -> None:
    engine = floodwall.Engine.from_dict({"auth": hs256_auth()})
    with pytest.raises(TypeError, match=r"reload_auth\(\): auth must be a mapping"):
        engine.reload_auth(wrong)
    with pytest.raises(TypeError):
        engine.reload_auth()  # type: ignore[call-arg]
    assert engine.has_auth
    assert engine.authenticate(mint("alice")).subject == "alice"


def test_reload_auth_none_removes_authentication() -> None:
    engine = floodwall.Engine.from_dict({"auth": hs256_auth()})
    engine.reload_auth(None)
    with pytest.raises(ConfigError) as caught:
        engine.authenticate(mint("alice"))
    assert caught.value.field == "auth"
    engine.reload_auth(hs256_auth())
    assert engine.authenticate(mint("alice")).subject == "alice"


def test_reload_auth_resolves_key_files_against_the_configuration_file(
    monkeypatch: pytest.MonkeyPatch, jwt_cases: dict[str, Any], tmp_path: Any
) -> None:
    monkeypatch.setenv("FLOODWALL_TEST_HMAC_SECRET", jwt_cases["config"]["env"]["FLOODWALL_TEST_HMAC_SECRET"])
    engine = floodwall.Engine.from_file(JWT_FIXTURES / "floodwall.toml")
    monkeypatch.chdir(tmp_path)
    engine.reload_auth(
        {"algorithms": ["RS256"], "keys": [{"kid": "rsa-2", "pem_file": "keys/rsa-2.pub.pem"}]}
    )
    private = (JWT_FIXTURES / "keys" / "rsa-2.key.pem").read_text()
    token = pyjwt.encode(
        {"sub": "grace", "exp": int(time.time()) + 3600}, private, algorithm="RS256",
        headers={"kid": "rsa-2"},
    )
    identity = engine.authenticate("Bearer " + token)
    assert (identity.subject, identity.algorithm, identity.key_id) == ("grace", "RS256", "rsa-2")


# --- asyncio -----------------------------------------------------------------------------


async def test_aauthenticate_and_aauthorize_match_the_sync_calls() -> None:
    config = {"auth": hs256_auth(), **ROLE_LIMITS}
    sync_engine, async_engine = floodwall.Engine(config), floodwall.Engine(config)
    token = mint("alice", role="premium")
    identity = await async_engine.aauthenticate(token)
    assert repr(identity) == repr(sync_engine.authenticate(token))
    for _ in range(7):
        got = await async_engine.aauthorize(token, path="/x", now_ms=60_000)
        want = sync_engine.authorize(token, path="/x", now_ms=60_000)
        assert repr(got) == repr(want)
        assert got.decision.headers == want.decision.headers
    with pytest.raises(AuthError) as caught:
        await async_engine.aauthenticate("Bearer nope")
    assert caught.value.code == "malformed_token"
