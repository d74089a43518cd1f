"""ASGI 3 middleware: authenticates each HTTP request's bearer token and applies the engine's
rate limits before the application sees it. Works with any ASGI framework (Starlette,
FastAPI, …) and depends on none::

    from floodwall import Engine
    from floodwall.asgi import FloodwallMiddleware

    app.add_middleware(FloodwallMiddleware, engine=Engine.from_file("floodwall.toml"))
    # or, around any ASGI application:
    app = FloodwallMiddleware(app, engine=engine, public_paths=["/docs*"])

What it guarantees, per HTTP request (``lifespan`` and ``websocket`` pass through untouched):

- A request to a ``skip_paths`` path reaches the application as if the middleware were not
  there.
- Otherwise the application is called only if the token is valid (unless authentication is
  off or the path is public) and every matching limit admits the request. Then
  ``scope["state"]["floodwall_identity"]`` holds the verified :class:`~floodwall.Identity`
  (``None`` when no token was verified) and ``scope["state"]["floodwall_decision"]`` the
  :class:`~floodwall.Decision` — in Starlette, ``request.state.floodwall_identity`` — and the
  decision's ``RateLimit`` headers are added to the response, without replacing a header of
  the same name that the application set.
- A refused token is answered ``401`` with ``WWW-Authenticate`` and a problem body
  (RFC 9457, ``application/problem+json``) whose ``code`` is the error kind; a denied request
  ``429`` with the decision's headers (``Retry-After`` among them) and ``code`` ``rate_limited``;
  a request that costs more than a limit holds ``429`` with ``code`` ``cost_exceeds_limit``.
  No body echoes the token.
- Any other :class:`~floodwall.FloodwallError` (a configuration error, such as an engine whose
  ``[auth]`` section was removed by ``reload_auth(None)``) and any exception of the ``cost``
  callable propagate: the server answers ``500`` and logs it.
- Every HTTP request it does not skip is recorded once in the engine's monitoring
  (:meth:`~floodwall.Engine.record_response`, under its method and ``scope["path"]``): the
  status of the answer — the ``401``/``429`` it writes itself or the application's — and the
  time from the request's arrival at the middleware until the answer's last body message was
  sent. A request whose answer was never started (the application raised, or returned without
  answering) is recorded as the ``500`` the server sends.

The engine is given the method, ``scope["path"]``, the client address, the ``cost`` and the
request's headers (for ``key = "header:…"`` rules; a repeated header's values joined by commas,
as WSGI servers join them, so two ``Authorization`` headers are one malformed token).

On the Redis store the engine's calls run on its worker threads (``Engine.aauthorize``,
``Engine.acheck``), so the event loop keeps serving while Redis answers.

The client address is ``scope["client"]``'s host. Note that uvicorn, by default, already
replaces it with the ``X-Forwarded-For`` address when the peer is ``127.0.0.1``
(``--proxy-headers``, ``--forwarded-allow-ips``); either let uvicorn do that, or start it with
``proxy_headers=False`` and give this middleware ``trusted_proxies``. With
:meth:`Starlette.add_middleware`, the options are validated when Starlette builds its
middleware stack (at startup), not at the ``add_middleware`` call.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable, MutableMapping, Optional

from . import Engine
from ._errors import AuthError, CostExceedsLimitError
from ._floodwall import Identity
from ._http import (
    DEFAULT_FORWARDED_HEADER,
    CostFunction,
    MiddlewareSettings,
    ResponseRecorder,
    auth_problem,
    cost_problem,
    merge_headers,
    rate_limited_problem,
)

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


class FloodwallMiddleware:
    """Authenticates and rate-limits every HTTP request before ``app`` sees it.

    :param engine: the engine whose ``[auth]`` section and rules decide.
    :param authenticate: require a valid bearer token (the engine must have an ``[auth]``
        section). When ``False``, requests are only rate-limited, by address, endpoint and
        header rules (subject rules see no subject).
    :param public_paths: paths (exact, or a prefix ending in ``*``) that need no token; they
        are still rate-limited, with no subject.
    :param skip_paths: paths (same form) the middleware leaves entirely alone, such as health
        checks.
    :param cost: answers a request's cost from its method and path; 1 when not given.
    :param trusted_proxies: addresses or CIDR networks of the proxies whose forwarding header
        is believed; the header of any other peer is ignored.
    :param forwarded_header: the forwarding header: ``X-Forwarded-For``-style, or RFC 7239
        ``Forwarded``.
    :raises ValueError: an option is invalid (a bad CIDR, a path not starting with ``/``, …),
        or ``authenticate`` is on and the engine has no ``[auth]`` section.
    """

    __slots__ = ("app", "_settings")

    def __init__(
        self,
        app: ASGIApp,
        *,
        engine: Engine,
        authenticate: bool = True,
        public_paths: Iterable[str] = (),
        skip_paths: Iterable[str] = (),
        cost: Optional[CostFunction] = None,
        trusted_proxies: Iterable[str] = (),
        forwarded_header: str = DEFAULT_FORWARDED_HEADER,
    ) -> None:
        self.app = app
        self._settings = MiddlewareSettings(
            engine=engine,
            authenticate=authenticate,
            public_paths=public_paths,
            skip_paths=skip_paths,
            cost=cost,
            trusted_proxies=trusted_proxies,
            forwarded_header=forwarded_header,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = self._settings
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if settings.skip_paths.matches(path):
            await self.app(scope, receive, send)
            return
        answer = _Answer(send, settings.engine, scope["method"], path)
        try:
            await self._handle(scope, receive, answer, path)
        finally:
            answer.record()

    async def _handle(self, scope: Scope, receive: Receive, answer: _Answer, path: str) -> None:
        settings = self._settings
        method: str = scope["method"]
        headers = _request_headers(scope)
        client = scope.get("client")
        ip = (
            settings.proxies.client_address(
                client[0] if client else None, headers.get(settings.proxies.header)
            )
            if settings.keys_ip
            else None
        )
        cost = settings.cost_of(method, path)
        engine = settings.engine
        identity: Optional[Identity] = None
        try:
            if settings.authenticates(path):
                authorized = await engine.aauthorize(
                    headers.get("authorization", ""),
                    method=method,
                    path=path,
                    ip=ip,
                    cost=cost,
                    headers=settings.engine_headers(headers),
                )
                identity, decision = authorized.identity, authorized.decision
            else:
                decision = await engine.acheck(
                    method=method, path=path, ip=ip, cost=cost, headers=settings.engine_headers(headers)
                )
        except AuthError as e:
            await _respond(answer, *auth_problem(e))
            return
        except CostExceedsLimitError as e:
            await _respond(answer, *cost_problem(e.code))
            return
        if not decision.allowed:
            await _respond(answer, *rate_limited_problem(decision))
            return
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state[IDENTITY_KEY] = identity
        state[DECISION_KEY] = decision
        answer.added = decision.headers
        await self.app(scope, receive, answer)


class _Answer(ResponseRecorder):
    """The ``send`` an HTTP request is answered through, by the middleware or the
    application: it adds the decision's headers to the response's start (``added``, without
    replacing one the application set) and records the response in the engine once its last
    body message is sent (or, by :meth:`record`, when the request ends without that)."""

    __slots__ = ("_send",)

    def __init__(self, send: Send, engine: Engine, method: str, path: str) -> None:
        super().__init__(engine, method, path)
        self._send = send

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            added = self.added
            if added:
                own = list(message.get("headers", ()))
                extra = merge_headers((name.decode("latin-1") for name, _ in own), added)
                message = dict(message)
                message["headers"] = own + _encode(extra)
            await self._send(message)
            return
        await self._send(message)
        if (kind == "http.response.body" and not message.get("more_body", False)) or (
            kind == "http.response.pathsend"
        ):
            self.record()


def _request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lowercase name; repeated ones joined by commas, as WSGI
    servers do, so that both middlewares key header rules alike."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        previous = headers.get(name)
        headers[name] = value if previous is None else f"{previous},{value}"
    return headers


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def _respond(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _encode(headers)})
    await send({"type": "http.response.body", "body": body})
