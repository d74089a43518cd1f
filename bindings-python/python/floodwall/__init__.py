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

HTTP: ``engine.http(method, target, peer, headers)`` is the engine's HTTP layer — path
normalisation, client addresses behind trusted proxies, public and skipped paths, allow and
deny lists, and the 400/401/403/429/503 answers, configured in the ``[http]`` section — and
answers an :class:`HttpExchange` to finish once the response is. The ASGI and WSGI
middlewares (``floodwall.asgi``, ``floodwall.wsgi``) are adapters over it.

Monitoring: the engine records every decision, refused token and upstream call itself, and
every response whose exchange is finished (the middlewares finish each one;
``engine.record_response`` records others). ``engine.report()`` answers a :class:`Report` dict
(traffic per minute and its peaks, top endpoints, breaches, upstream failures, latency
percentiles, warnings) and ``engine.prometheus()`` the counters in the Prometheus text format
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
from ._access import AccessList, AccessLists
from ._errors import (
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
from ._floodwall import (
    ERROR_CODES,
    PROMETHEUS_CONTENT_TYPE,
    Authorized,
    BreakerEvent,
    Decision,
    HttpExchange,
    Identity,
    KeyStatus,
    Layer,
    Lease,
    UpstreamStatus,
)
from ._monitor import (
    LatencyHistogram,
    MinuteCounts,
    Report,
    ReportWarning,
    SinkStats,
    StoreHealth,
    TopEntry,
)

__version__: str = _floodwall.__version__

__all__ = [
    "ERROR_CODES",
    "PROMETHEUS_CONTENT_TYPE",
    "AccessList",
    "AccessLists",
    "AuthError",
    "Authorized",
    "BreakerEvent",
    "ConfigError",
    "CostExceedsLimitError",
    "Decision",
    "Engine",
    "FloodwallError",
    "HttpExchange",
    "Identity",
    "InvalidCostError",
    "KeyStatus",
    "LatencyHistogram",
    "Layer",
    "Lease",
    "MinuteCounts",
    "NoUpstreamError",
    "Report",
    "ReportWarning",
    "SinkStats",
    "StoreError",
    "StoreHealth",
    "TopEntry",
    "UnknownRuleError",
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
            status=503,
        ) from e


class Engine(_floodwall.Engine):
    """The traffic-control engine: rules, a store, keys and services from one configuration.

    Build it with :meth:`from_file`, :meth:`from_toml`, :meth:`from_json` or
    :meth:`from_dict` (``Engine(config)`` is ``from_dict``). One engine is meant to be shared
    by every thread and task of a process; all of its methods are thread-safe.
    """

    __slots__ = ("_executor", "_executor_lock", "_request_names", "_response_names")

    def __new__(cls, config: Optional[Mapping[str, Any]] = None) -> Engine:
        return super().__new__(cls, _to_json(config or {}, "the configuration"), "json")

    def __init__(self, config: Optional[Mapping[str, Any]] = None) -> None:
        self._setup()

    def _setup(self) -> None:
        self._executor: Optional[ThreadPoolExecutor] = None
        self._executor_lock = threading.Lock()
        self._request_names: Optional[frozenset[str]] = None
        self._response_names: Optional[frozenset[str]] = None

    @classmethod
    def _build(cls, source: str, format: Literal["toml", "json", "file"]) -> Engine:
        engine = _floodwall.Engine.__new__(cls, source, format)
        engine._setup()
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

    def reload(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Puts a whole new configuration (a dict: the TOML schema's structure) in force while
        the engine serves — rules, ``http``, ``headers``, ``auth``, services, the monitor's
        stream — all at once. A rule whose limits are unchanged keeps its counts; a changed
        rule starts afresh; unchanged upstreams keep their breakers. Answers what it did:
        ``{"rules": [{"name", "change"}], "upstreams": {"kept", "started", "removed"},
        "auth_changed", "generations"}`` (``change`` is ``unchanged``, ``kept``,
        ``restarted``, ``added`` or ``removed``). On error — a :class:`ConfigError` naming the
        field — nothing changes."""
        if not isinstance(config, Mapping):
            raise TypeError(
                f"reload(): config must be a mapping (the configuration), not {type(config).__name__}"
            )
        return self._reloaded(_to_json(config, "the configuration"), "json")

    def reload_toml(self, text: str) -> dict[str, Any]:
        """:meth:`reload` from TOML configuration text."""
        return self._reloaded(text, "toml")

    def reload_json(self, text: str) -> dict[str, Any]:
        """:meth:`reload` from JSON configuration text."""
        return self._reloaded(text, "json")

    def reload_file(self, path: Union[str, os.PathLike[str]]) -> dict[str, Any]:
        """:meth:`reload` from a configuration file (JSON if it ends in ``.json``, TOML
        otherwise); relative key files in it resolve against its directory."""
        return self._reloaded(os.fspath(path), "file")

    def _reloaded(self, source: str, format: Literal["toml", "json", "file"]) -> dict[str, Any]:
        summary: dict[str, Any] = json.loads(self._reload(source, format))
        # The headers the rules and lists read may have changed.
        self._request_names = None
        self._response_names = None
        return summary

    def reload_auth(self, auth: Optional[Mapping[str, Any]]) -> None:
        """Replaces the ``[auth]`` section (a dict of its fields) while the engine serves, or
        removes it with ``None`` (said explicitly): keys rotate, key sets are re-read, the token
        cache starts empty. Anything but a mapping or ``None`` is a ``TypeError`` and changes
        nothing; on any other error the running keys are kept."""
        if auth is not None and not isinstance(auth, Mapping):
            raise TypeError(
                "reload_auth(): auth must be a mapping (the [auth] section) or None to remove "
                f"it, not {type(auth).__name__}"
            )
        self._reload_auth_json(None if auth is None else _to_json(auth, "auth"))

    def set_access_lists(self, lists: Mapping[str, Any]) -> None:
        """Replaces the allow and deny lists while the engine serves: a dict shaped as
        :meth:`access_lists` answers (``{"allow": {...}, "deny": {...}}``, any field left out
        empty). Requests decided from then on see the new lists. On error — a
        :class:`ConfigError` naming the entry (``deny.addresses[2]``) — the lists in force are
        kept."""
        if not isinstance(lists, Mapping):
            raise TypeError(
                "set_access_lists(): the lists must be a mapping {'allow': ..., 'deny': ...}, "
                f"not {type(lists).__name__}"
            )
        self._set_access_lists_json(_to_json(lists, "the access lists"))
        self._request_names = None

    def _http_request_names(self) -> frozenset[str]:
        """:attr:`http_headers` as a set, kept until :meth:`set_access_lists`."""
        names = self._request_names
        if names is None:
            names = self._request_names = frozenset(self.http_headers)
        return names

    def _http_response_names(self) -> frozenset[str]:
        """:attr:`http_response_headers` as a set (the rules never change)."""
        names = self._response_names
        if names is None:
            names = self._response_names = frozenset(self.http_response_headers)
        return names

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

    async def aacquire(
        self,
        *,
        max_wait_ms: int,
        subject: Optional[str] = None,
        role: Optional[str] = None,
        method: Optional[str] = None,
        path: Optional[str] = None,
        ip: Optional[str] = None,
        cost: int = 1,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Decision:
        """:meth:`acquire` for asyncio: the wait runs on a worker thread of the engine's pool,
        so the event loop keeps serving (waiters beyond the pool's size queue for a thread)."""
        result: Decision = await self._offload(
            self.acquire,
            max_wait_ms=max_wait_ms,
            subject=subject,
            role=role,
            method=method,
            path=path,
            ip=ip,
            cost=cost,
            headers=headers,
        )
        return result

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

    async def ahttp(
        self,
        method: str,
        target: str,
        peer: Optional[str],
        headers: Mapping[str, str],
        *,
        cost: float = 1,
        stage: Literal["guard", "authenticate", "rate_limit"] = "guard",
        caller: Optional[tuple[str, Optional[str]]] = None,
        after_authenticate: bool = False,
        max_wait_ms: Optional[float] = None,
    ) -> HttpExchange:
        """:meth:`http` for asyncio: on Redis it runs on a worker thread, so the event loop
        keeps serving while it waits; on the memory store it runs inline."""
        call = functools.partial(
            self.http,
            method,
            target,
            peer,
            headers,
            cost=cost,
            stage=stage,
            caller=caller,
            after_authenticate=after_authenticate,
            max_wait_ms=max_wait_ms,
        )
        if not self.may_wait:
            return call()
        result: HttpExchange = await self._offload(call)
        return result

    async def afinish(
        self,
        exchange: HttpExchange,
        status: int,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        """:meth:`HttpExchange.finish` for asyncio: on a worker thread when the exchange
        writes to the shared store (``exchange.touches_store``), inline otherwise."""
        if not exchange.touches_store:
            exchange.finish(status, headers)
            return
        await self._offload(exchange.finish, status, headers)

    def close(self) -> None:
        """Stops the worker threads of the async variants (the engine stays usable; they
        start again when needed)."""
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
