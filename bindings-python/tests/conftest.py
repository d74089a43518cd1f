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
