"""floodwall: the hot-path decisions of an API gateway — JWT authentication, layered rate
limits by role, circuit breakers and load balancing — made in microseconds by a Rust engine.

>>> from floodwall import Engine
>>> engine = Engine.from_dict({"rules": [{"name": "per-user", "key": "subject",
...     "algorithm": "fixed_window", "limit": 2, "window": "1m"}]})
>>> engine.check(subject="alice", now_ms=60_000).remaining
1

Blocking and asyncio: ``check`` on the memory store never waits, and keeps the interpreter
(it takes less time than releasing it). On Redis it may wait up to ``store.timeout``, with the
interpreter released so that other threads run. ``authenticate`` and ``authorize`` release it
while a signature is verified. From asyncio, ``await engine.acheck(...)`` and
``await engine.aauthorize(...)`` run a call that may wait on the network on the engine's worker
threads, so the event loop keeps serving; work that cannot wait runs inline, since handing it
to a thread would cost more than doing it.

Monitoring: the engine records every decision, refused token and upstream call itself, and
the ASGI and WSGI middlewares record every response they answer or pass on
(``engine.record_response``). ``engine.report()`` answers a :class:`Report` dict (traffic per
minute and its peaks, top endpoints, breaches, upstream failures, latency percentiles) and
``engine.prometheus()`` the counters in the Prometheus text format
(``PROMETHEUS_CONTENT_TYPE``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Literal, Mapping, Optional, Union

from . import _floodwall
from ._errors import (
    AuthError,
    ConfigError,
    CostExceedsLimitError,
    FloodwallError,
    NoUpstreamError,
    StoreError,
    UnknownServiceError,
    UnknownUpstreamError,
)
from ._floodwall import (
    ERROR_CODES,
    PROMETHEUS_CONTENT_TYPE,
    Authorized,
    BreakerEvent,
    Decision,
    Identity,
    Layer,
    Lease,
    UpstreamStatus,
)
from ._monitor import LatencyHistogram, MinuteCounts, Report, SinkStats, TopEntry

__version__: str = _floodwall.__version__

__all__ = [
    "ERROR_CODES",
    "PROMETHEUS_CONTENT_TYPE",
    "AuthError",
    "Authorized",
    "BreakerEvent",
    "ConfigError",
    "CostExceedsLimitError",
    "Decision",
    "Engine",
    "FloodwallError",
    "Identity",
    "LatencyHistogram",
    "Layer",
    "Lease",
    "MinuteCounts",
    "NoUpstreamError",
    "Report",
    "SinkStats",
    "StoreError",
    "TopEntry",
    "UnknownServiceError",
    "UnknownUpstreamError",
    "UpstreamStatus",
    "__version__",
]

#: Worker threads per engine for the async variants; each runs one call that waits on Redis,
#: and the engine pipelines concurrent calls on one connection.
DEFAULT_ASYNC_WORKERS = 32


def _to_json(config: Mapping[str, Any], what: str) -> str:
    try:
        return json.dumps(config)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"{what} must hold only JSON values (str, int, float, bool, None, list, dict): {e}",
            code="invalid_config",
            status=500,
        ) from e


class Engine(_floodwall.Engine):
    """The traffic-control engine: rules, a store, keys and services from one configuration.

    Build it with :meth:`from_file`, :meth:`from_toml`, :meth:`from_json` or
    :meth:`from_dict` (``Engine(config)`` is ``from_dict``). One engine is meant to be shared
    by every thread and task of a process; all of its methods are thread-safe.
    """

    __slots__ = ("_executor", "_executor_lock")

    def __new__(cls, config: Optional[Mapping[str, Any]] = None) -> Engine:
        return super().__new__(cls, _to_json(config or {}, "the configuration"), "json")

    def __init__(self, config: Optional[Mapping[str, Any]] = None) -> None:
        self._executor: Optional[ThreadPoolExecutor] = None
        self._executor_lock = threading.Lock()

    @classmethod
    def _build(cls, source: str, format: Literal["toml", "json", "file"]) -> Engine:
        engine = _floodwall.Engine.__new__(cls, source, format)
        engine._executor = None
        engine._executor_lock = threading.Lock()
        return engine

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> Engine:
        """An engine from a configuration as a dict: the TOML schema's structure."""
        return cls._build(_to_json(config, "the configuration"), "json")

    @classmethod
    def from_toml(cls, text: str) -> Engine:
        """An engine from TOML configuration text."""
        return cls._build(text, "toml")

    @classmethod
    def from_json(cls, text: str) -> Engine:
        """An engine from JSON configuration text."""
        return cls._build(text, "json")

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike[str]]) -> Engine:
        """An engine from a configuration file: JSON if it ends in ``.json``, TOML otherwise.
        Relative key files in it resolve against its directory."""
        return cls._build(os.fspath(path), "file")

    def reload_auth(self, auth: Optional[Mapping[str, Any]]) -> None:
        """Replaces the ``[auth]`` section (a dict of its fields) while the engine serves, or
        removes it with ``None``: keys rotate, key sets are re-read, the token cache starts
        empty. On error the running keys are kept."""
        self._reload_auth_json(None if auth is None else _to_json(auth, "auth"))

    def _worker_pool(self) -> ThreadPoolExecutor:
        executor = self._executor
        if executor is None:
            with self._executor_lock:
                executor = self._executor
                if executor is None:
                    executor = ThreadPoolExecutor(
                        max_workers=DEFAULT_ASYNC_WORKERS, thread_name_prefix="floodwall"
                    )
                    self._executor = executor
        return executor

    async def _offload(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._worker_pool(), functools.partial(call, *args, **kwargs)
        )

    async def acheck(
        self,
        *,
        subject: Optional[str] = None,
        role: Optional[str] = None,
        method: Optional[str] = None,
        path: Optional[str] = None,
        ip: Optional[str] = None,
        cost: int = 1,
        headers: Optional[Mapping[str, str]] = None,
        now_ms: Optional[int] = None,
    ) -> Decision:
        """:meth:`check` for asyncio: on Redis it runs on a worker thread, so the event loop
        keeps serving while it waits; on the memory store it runs inline."""
        kwargs = dict(
            subject=subject,
            role=role,
            method=method,
            path=path,
            ip=ip,
            cost=cost,
            headers=headers,
            now_ms=now_ms,
        )
        if not self.may_wait:
            return self.check(**kwargs)  # type: ignore[arg-type]
        result: Decision = await self._offload(self.check, **kwargs)
        return result

    async def acheck_many(
        self, requests: Iterable[Mapping[str, Any]]
    ) -> list[Union[Decision, FloodwallError]]:
        """:meth:`check_many` for asyncio (on a worker thread when the store is Redis)."""
        if not self.may_wait:
            return self.check_many(requests)
        result: list[Union[Decision, FloodwallError]] = await self._offload(
            self.check_many, list(requests)
        )
        return result

    async def aauthenticate(
        self, authorization: str, *, now_ms: Optional[int] = None
    ) -> Identity:
        """:meth:`authenticate` for asyncio. Verification never waits on the network (key
        sets are read when the engine is built), so it runs inline."""
        return self.authenticate(authorization, now_ms=now_ms)

    async def aauthorize(
        self,
        authorization: str,
        *,
        method: Optional[str] = None,
        path: Optional[str] = None,
        ip: Optional[str] = None,
        cost: int = 1,
        headers: Optional[Mapping[str, str]] = None,
        now_ms: Optional[int] = None,
    ) -> Authorized:
        """:meth:`authorize` for asyncio: on Redis it runs on a worker thread; on the memory
        store inline."""
        kwargs = dict(
            method=method, path=path, ip=ip, cost=cost, headers=headers, now_ms=now_ms
        )
        if not self.may_wait:
            return self.authorize(authorization, **kwargs)  # type: ignore[arg-type]
        result: Authorized = await self._offload(self.authorize, authorization, **kwargs)
        return result

    def close(self) -> None:
        """Stops the worker threads of the async variants (the engine stays usable; they
        start again when needed)."""
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
