"""ASGI 3 middleware: the engine's HTTP layer (:meth:`floodwall.Engine.http`) in front of any
ASGI application (Starlette, FastAPI, …)::

    from floodwall import Engine
    from floodwall.asgi import FloodwallMiddleware

    app.add_middleware(FloodwallMiddleware, engine=Engine.from_file("floodwall.toml"))

The engine decides, from the ``[http]`` section, what a request means and how it is answered;
this middleware hands it the request as received — the method, ``scope["raw_path"]`` and the
query string, ``scope["client"]``'s address and the headers the engine reads (a header of
several lines joined by ``,``) — and writes what it answers. Per HTTP request (``lifespan``
and ``websocket`` scopes pass through untouched):

- A skipped path (``http.skip_paths``) reaches the application as if the middleware were not
  there.
- A request the engine refuses is answered with its status, headers and problem body; the
  application is not called.
- A request it lets through reaches the application with ``scope["state"]["floodwall_identity"]``
  (the verified :class:`~floodwall.Identity`, ``None`` when no token was verified) and
  ``scope["state"]["floodwall_decision"]`` (the :class:`~floodwall.Decision`) — in Starlette,
  ``request.state.floodwall_identity`` — and the decision's rate-limit headers are added to the
  response, never replacing a header of the same name the application set.
- Every request not skipped is finished once (:meth:`~floodwall.HttpExchange.finish`): after
  the answer's last body message, with its status (``500`` when the application raised or
  returned before starting a response) and the response headers the rules read. That records
  it in the engine's monitoring and settles the rules that count by response.

On the Redis store the engine's calls run on its worker threads, so the event loop keeps
serving while Redis answers. Start uvicorn with ``proxy_headers=False`` (``--no-proxy-headers``)
and list your proxies in ``http.trusted_proxies``: otherwise uvicorn replaces the client
address with the ``X-Forwarded-For`` one before the engine can judge it. An exception of the
``cost`` callable, or an engine error that is not an answer, propagates (the server answers
``500``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Iterable, MutableMapping, Optional
from urllib.parse import quote

from . import Engine
from ._floodwall import HttpExchange
from ._http import middleware_stage, wait_budget

__all__ = [
    "ASGIApp",
    "DECISION_KEY",
    "IDENTITY_KEY",
    "FloodwallMiddleware",
    "Message",
    "Receive",
    "Scope",
    "Send",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

IDENTITY_KEY = "floodwall_identity"
"""The ``scope["state"]`` key of the verified :class:`~floodwall.Identity` (``None`` when no
token was verified)."""
DECISION_KEY = "floodwall_decision"
"""The ``scope["state"]`` key of the request's :class:`~floodwall.Decision`."""

# RFC 3986 `pchar`s besides the unreserved: kept as they are when a path is re-encoded.
_PATH_SAFE = "/:@!$&'()*+,;="


class FloodwallMiddleware:
    """The engine's HTTP layer in front of ``app``.

    :param engine: the engine whose ``[http]``, ``[auth]`` and rules decide.
    :param authenticate: require a valid bearer token (the engine's ``guard`` stage; the
        engine must have an ``[auth]`` section). When ``False``, requests are only
        rate-limited (the ``rate_limit`` stage: subject rules see no subject).
    :param cost: answers a request's cost (a number) from its ASGI scope; 1 when not given.
    :param max_wait_ms: how many milliseconds a request over its limit may wait for capacity
        instead of being answered 429 (0, the default: answered at once; at most a day). A
        429 whose wait fits in what is left is asked again when the engine says capacity
        comes back (``asyncio.sleep``: the event loop keeps serving) and is not recorded; the
        attempt that is answered is. Rules decided before the token (``before_auth``) count every attempt.
    :param public_paths: moved, like ``skip_paths``, ``trusted_proxies`` and
        ``forwarded_header``, to the engine's ``[http]`` section: giving one raises
        ``TypeError`` naming its field.
    :raises TypeError: an option of the wrong type, or one that moved.
    :raises ValueError: ``max_wait_ms`` below 0 or above a day.
    :raises ValueError: ``authenticate`` is on and the engine has no ``[auth]`` section.
    """

    __slots__ = ("app", "_engine", "_stage", "_cost", "_max_wait_ms")

    def __init__(
        self,
        app: ASGIApp,
        *,
        engine: Engine,
        authenticate: bool = True,
        cost: Optional[Callable[[Scope], float]] = None,
        max_wait_ms: float = 0,
        public_paths: None = None,
        skip_paths: None = None,
        trusted_proxies: None = None,
        forwarded_header: None = None,
    ) -> None:
        moved = dict(
            public_paths=public_paths,
            skip_paths=skip_paths,
            trusted_proxies=trusted_proxies,
            forwarded_header=forwarded_header,
        )
        self._stage = middleware_stage(engine, authenticate, cost, moved)
        self.app = app
        self._engine = engine
        self._cost = cost
        self._max_wait_ms = wait_budget(max_wait_ms)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        engine = self._engine
        client = scope.get("client")
        target = _target(scope)
        peer = client[0] if client else None
        headers = _joined(scope.get("headers", ()), engine._http_request_names())
        cost = 1 if self._cost is None else self._cost(scope)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait_ms / 1000
        while True:
            budget = max(0.0, (deadline - loop.time()) * 1000) if self._max_wait_ms else 0
            exchange = await engine.ahttp(
                scope["method"],
                target,
                peer,
                headers,
                cost=cost,
                stage=self._stage,
                max_wait_ms=budget,
            )
            wait = exchange.retry_in_ms
            if wait is None:
                break
            await asyncio.sleep(wait / 1000)
        verdict = exchange.verdict
        if verdict == "skip":
            await self.app(scope, receive, send)
        elif verdict == "refuse":
            try:
                await send(
                    {
                        "type": "http.response.start",
                        "status": exchange.status,
                        "headers": _encode(exchange.headers),
                    }
                )
                await send({"type": "http.response.body", "body": exchange.body})
            finally:
                await engine.afinish(exchange, exchange.status)
        else:
            state = scope.get("state")
            if state is None:
                state = scope["state"] = {}
            state[IDENTITY_KEY] = exchange.identity
            state[DECISION_KEY] = exchange.decision
            answer = _Answer(send, engine, exchange)
            try:
                await self.app(scope, receive, answer)
            finally:
                await answer.finish()


class _Answer:
    """The ``send`` of a request the engine let through: adds the decision's headers to the
    response's start, keeps its status and the response headers the rules read, and finishes
    the exchange once, after the last body message (or, by :meth:`finish`, when the request
    ends without one)."""

    __slots__ = ("_send", "_engine", "_exchange", "_status", "_read", "_finished")

    def __init__(self, send: Send, engine: Engine, exchange: HttpExchange) -> None:
        self._send = send
        self._engine = engine
        self._exchange = exchange
        self._status = 0
        self._read: Optional[dict[str, str]] = None
        self._finished = False

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._send(self._start(message))
            return
        await self._send(message)
        if (kind == "http.response.body" and not message.get("more_body", False)) or (
            kind == "http.response.pathsend"
        ):
            await self.finish()

    def _start(self, message: Message) -> Message:
        self._status = message["status"]
        own = list(message.get("headers", ()))
        present = {name.lower() for name, _ in own}
        added = [(n, v) for n, v in _encode(self._exchange.headers) if n not in present]
        wanted = self._engine._http_response_names()
        if wanted:
            self._read = _joined(own, wanted)
        if not added:
            return message
        message = dict(message)
        message["headers"] = own + added
        return message

    async def finish(self) -> None:
        """Finishes the exchange, once: with the response's status, or 500 when none was
        started."""
        if self._finished:
            return
        self._finished = True
        await self._engine.afinish(self._exchange, self._status or 500, self._read)


def _target(scope: Scope) -> str:
    """The request target as received: ``raw_path`` (or, when the server gives none, the
    percent-encoded ``path``) and the query string."""
    raw: Optional[bytes] = scope.get("raw_path")
    path = raw.decode("latin-1") if raw is not None else quote(scope["path"], safe=_PATH_SAFE)
    query: bytes = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


def _joined(headers: Iterable[tuple[bytes, bytes]], names: frozenset[str]) -> dict[str, str]:
    """The headers of ``names`` (lower-case) among ``headers``, by name; the values of one
    sent on several lines joined by ``,``."""
    out: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        if name in names:
            value = raw_value.decode("latin-1")
            previous = out.get(name)
            out[name] = value if previous is None else f"{previous},{value}"
    return out


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
