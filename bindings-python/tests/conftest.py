"""Shared fixtures: a Redis server for the session, paths to the repository's fixtures."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from redis_server import RedisServer

REPO = pathlib.Path(__file__).resolve().parents[2]
VECTORS = REPO / "tests" / "vectors"
JWT_FIXTURES = REPO / "tests" / "fixtures" / "jwt"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One ``redis-server`` for the session; tests use distinct key prefixes."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


# --- Fixtures of the core-API tests (test_vectors, test_errors, test_auth, test_engine,
# test_balance, test_async, test_http, test_redis): the JWT fixtures, token minting, Redis store
# sections, the event-loop ticker.

import asyncio  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any, Callable, Optional  # noqa: E402

import jwt as pyjwt  # noqa: E402

#: The variable the fixtures' `hmac-env` key reads its secret from.
HMAC_SECRET_ENV = "FLOODWALL_TEST_HMAC_SECRET"
#: An HMAC secret for tokens minted by the tests (HS256 needs at least 32 bytes).
TEST_SECRET = "floodwall-python-tests-hmac-secret-0123456789"
#: The `WWW-Authenticate` value of each authentication kind (the core's fixed descriptions).
CHALLENGES = {
    "missing_token": 'Bearer realm="floodwall"',
    **{
        kind: f'Bearer realm="floodwall", error="invalid_token", error_description="{text}"'
        for kind, text in {
            "malformed_token": "The access token is malformed",
            "token_too_large": "The access token is too large",
            "algorithm_not_allowed": "The access token is signed with an algorithm that is not accepted",
            "unknown_key": "The access token is signed by an unknown key",
            "bad_signature": "The access token signature is invalid",
            "expired": "The access token expired",
            "not_yet_valid": "The access token is not valid yet",
            "wrong_issuer": "The access token issuer is not accepted",
            "wrong_audience": "The access token audience is not accepted",
            "missing_claim": "The access token lacks a required claim",
            "invalid_claim": "The access token has a claim of the wrong type",
        }.items()
    },
}


def load_jwt_cases() -> dict[str, Any]:
    """`tests/fixtures/jwt/cases.json`: `now` (seconds), `config`, `cases`."""
    return json.loads((JWT_FIXTURES / "cases.json").read_text())


@pytest.fixture(scope="session")
def jwt_cases() -> dict[str, Any]:
    return load_jwt_cases()


@pytest.fixture
def fixture_engine(monkeypatch: pytest.MonkeyPatch, jwt_cases: dict[str, Any]) -> Any:
    """An engine from `tests/fixtures/jwt/floodwall.toml`, with the `hmac-env` secret set."""
    import floodwall

    monkeypatch.setenv(HMAC_SECRET_ENV, jwt_cases["config"]["env"][HMAC_SECRET_ENV])
    return floodwall.Engine.from_file(JWT_FIXTURES / "floodwall.toml")


def mint(
    subject: Optional[str] = "alice",
    *,
    role: Optional[str] = None,
    secret: str = TEST_SECRET,
    kid: Optional[str] = None,
    expires_in: Optional[float] = 3600,
    now: Optional[float] = None,
    **claims: Any,
) -> str:
    """An ``Authorization`` value (``Bearer <HS256 JWT>``) minted by PyJWT: ``sub`` and, with
    ``role``, a ``role`` claim; ``exp`` ``expires_in`` seconds after ``now`` (the wall clock by
    default)."""
    now = time.time() if now is None else now
    payload: dict[str, Any] = dict(claims)
    if subject is not None:
        payload["sub"] = subject
    if role is not None:
        payload["role"] = role
    if expires_in is not None:
        payload["exp"] = int(now + expires_in)
    headers = {"kid": kid} if kid is not None else None
    return "Bearer " + pyjwt.encode(payload, secret, algorithm="HS256", headers=headers)


def hs256_auth(secret: str = TEST_SECRET, **fields: Any) -> dict[str, Any]:
    """An ``[auth]`` section accepting HS256 tokens signed with ``secret``, roles from the
    ``role`` claim."""
    return {
        "algorithms": ["HS256"],
        "keys": [{"secret": secret}],
        "role_claim": "role",
        **fields,
    }


@pytest.fixture
def redis_store(redis_server: RedisServer) -> Callable[..., dict[str, Any]]:
    """Makes a ``[store]`` section on the session's Redis with a prefix no other test uses;
    keyword arguments override its fields."""

    def make(**fields: Any) -> dict[str, Any]:
        return {
            "kind": "redis",
            "url": redis_server.url,
            "prefix": f"py-{uuid.uuid4().hex[:12]}:",
            "timeout": "2s",
            **fields,
        }

    return make


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A ``redis-server`` of the test's own, for tests that kill or restart it."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


async def ticks_while(awaitable_or_call: Any) -> tuple[Any, int]:
    """Runs a ticker coroutine (``asyncio.sleep(0.01)`` in a bounded loop) beside
    ``awaitable_or_call`` (a coroutine, or a callable run on the loop); returns its result and
    how many times the ticker ticked while it was pending."""
    state = {"pending": True, "ticks": 0}

    async def ticker() -> None:
        for _ in range(6_000):
            await asyncio.sleep(0.01)
            if not state["pending"]:
                return
            state["ticks"] += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker is running
    try:
        if asyncio.iscoroutine(awaitable_or_call):
            result = await awaitable_or_call
        else:
            result = awaitable_or_call()
    finally:
        state["pending"] = False
    ticks = state["ticks"]
    await asyncio.wait_for(task, timeout=30)
    return result, ticks


def wait_until(condition: Callable[[], bool], *, attempts: int = 500, pause: float = 0.02) -> bool:
    """Polls ``condition`` at most ``attempts`` times, ``pause`` seconds apart."""
    for _ in range(attempts):
        if condition():
            return True
        time.sleep(pause)
    return condition()
