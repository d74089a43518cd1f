"""WSGI middleware: authenticates each request's bearer token and applies the engine's rate
limits before the wrapped application sees it. Works with any WSGI framework and depends on
none; in Flask::

    from floodwall import Engine
    from floodwall.wsgi import FloodwallMiddleware

    app.wsgi_app = FloodwallMiddleware(app.wsgi_app, engine=Engine.from_file("floodwall.toml"))

It answers exactly as :class:`floodwall.asgi.FloodwallMiddleware` does, with the same options:

- A request to a ``skip_paths`` path reaches the application as if the middleware were not
  there.
- Otherwise the application is called only if the token is valid (unless authentication is
  off or the path is public) and every matching limit admits the request. Then
  ``environ["floodwall.identity"]`` holds the verified :class:`~floodwall.Identity` (``None``
  when no token was verified) and ``environ["floodwall.decision"]`` the
  :class:`~floodwall.Decision` — in Flask, ``request.environ["floodwall.identity"]`` — and the
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
- Every request it does not skip is recorded once in the engine's monitoring
  (:meth:`~floodwall.Engine.record_response`, under its method and path): the status of the
  answer — the ``401``/``429`` it writes itself, the application's, or ``500`` when the
  application raised before starting one — and the time from the request's arrival at the
  middleware until the answer is through. A body the application hands over whole (a list or
  a tuple) or as the server's ``wsgi.file_wrapper`` is returned as it is, and the response
  recorded then; any other response iterable is returned inside a thin one that passes its
  items and its ``close`` through and records the response when the server closes it (as PEP
  3333 requires a server to do once the body is sent).

The engine's calls block the calling thread: on Redis up to ``store.timeout``, with the
interpreter released, so run a threaded server. The path rules and the engine see
``SCRIPT_NAME + PATH_INFO`` (decoded as UTF-8); the client address is ``REMOTE_ADDR``; the
engine is also given the method, the ``cost`` and the request's headers (for
``key = "header:…"`` rules).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

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

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["DECISION_KEY", "IDENTITY_KEY", "FloodwallMiddleware"]

IDENTITY_KEY = "floodwall.identity"
"""The ``environ`` key of the verified :class:`~floodwall.Identity` (``None`` when no token
was verified)."""
DECISION_KEY = "floodwall.decision"
"""The ``environ`` key of the request's :class:`~floodwall.Decision`."""

_REASONS = {401: "401 Unauthorized", 429: "429 Too Many Requests"}


class FloodwallMiddleware:
    """Authenticates and rate-limits every request before ``app`` sees it.

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

    __slots__ = ("app", "_settings", "_forwarded_key")

    def __init__(
        self,
        app: WSGIApplication,
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
        self._forwarded_key = _environ_key(self._settings.proxies.header)

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        settings = self._settings
        path = _request_path(environ)
        if settings.skip_paths.matches(path):
            return self.app(environ, start_response)
        method: str = environ.get("REQUEST_METHOD", "GET")
        answer = _Answer(start_response, settings.engine, method, path)
        try:
            body = self._handle(environ, answer, method, path)
        except BaseException:
            # The server answers 500 (WSGI sends nothing before the application returns).
            answer.status = 500
            answer.record()
            raise
        return answer.follow(body, environ.get("wsgi.file_wrapper"))

    def _handle(
        self, environ: WSGIEnvironment, answer: _Answer, method: str, path: str
    ) -> Iterable[bytes]:
        settings = self._settings
        headers = _request_headers(environ)
        ip = (
            settings.proxies.client_address(
                environ.get("REMOTE_ADDR") or None, environ.get(self._forwarded_key)
            )
            if settings.keys_ip
            else None
        )
        cost = settings.cost_of(method, path)
        engine = settings.engine
        identity: Optional[Identity] = None
        try:
            if settings.authenticates(path):
                authorized = engine.authorize(
                    environ.get("HTTP_AUTHORIZATION", ""),
                    method=method,
                    path=path,
                    ip=ip,
                    cost=cost,
                    headers=settings.engine_headers(headers),
                )
                identity, decision = authorized.identity, authorized.decision
            else:
                decision = engine.check(
                    method=method, path=path, ip=ip, cost=cost, headers=settings.engine_headers(headers)
                )
        except AuthError as e:
            return _respond(answer, *auth_problem(e))
        except CostExceedsLimitError as e:
            return _respond(answer, *cost_problem(e.code))
        if not decision.allowed:
            return _respond(answer, *rate_limited_problem(decision))
        environ[IDENTITY_KEY] = identity
        environ[DECISION_KEY] = decision
        answer.added = decision.headers
        return self.app(environ, answer)


class _Answer(ResponseRecorder):
    """The ``start_response`` a request is answered through, by the middleware or the
    application: it adds the decision's headers (``added``, without replacing one the
    application set), keeps the status, and records the response in the engine once."""

    __slots__ = ("_start_response",)

    def __init__(
        self, start_response: StartResponse, engine: Engine, method: str, path: str
    ) -> None:
        super().__init__(engine, method, path)
        self._start_response = start_response

    def __call__(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: Optional[OptExcInfo] = None,
        /,
    ) -> Callable[[bytes], object]:
        try:
            self.status = int(status[:3])
        except ValueError:
            self.status = 0
        added = self.added
        if added:
            headers = headers + merge_headers((name for name, _ in headers), added)
        return self._start_response(status, headers, exc_info)

    def follow(self, body: Iterable[bytes], file_wrapper: Any) -> Iterable[bytes]:
        """``body`` as the server gets it: as it is when it is whole (the response recorded
        now), else wrapped so that the response is recorded when the server closes it."""
        if self.status and (
            type(body) in (list, tuple)
            or (isinstance(file_wrapper, type) and isinstance(body, file_wrapper))
        ):
            self.record()
            return body
        return _Recorded(body, self)


class _Recorded:
    """A response iterable that passes the application's through and records the response
    when the server closes it."""

    __slots__ = ("_body", "_answer")

    def __init__(self, body: Iterable[bytes], answer: _Answer) -> None:
        self._body = body
        self._answer = answer

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._answer.record()


def _environ_key(header: str) -> str:
    key = header.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"


def _request_path(environ: WSGIEnvironment) -> str:
    """``SCRIPT_NAME + PATH_INFO`` as text: PEP 3333 servers pass the bytes as latin-1."""
    raw = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    try:
        return str(raw.encode("latin-1").decode("utf-8", "replace"))
    except UnicodeEncodeError:
        return str(raw)


def _request_headers(environ: WSGIEnvironment) -> dict[str, str]:
    """The request's headers by lowercase name, from ``HTTP_*``, ``CONTENT_TYPE`` and
    ``CONTENT_LENGTH``."""
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].lower().replace("_", "-")] = value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers[key.lower().replace("_", "-")] = value
    return headers


def _respond(
    answer: _Answer, status: int, headers: list[tuple[str, str]], body: bytes
) -> list[bytes]:
    answer(_REASONS[status], headers)
    return [body]
