"""WSGI middleware: the engine's HTTP layer (:meth:`floodwall.Engine.http`) in front of any
WSGI application; in Flask::

    from floodwall import Engine
    from floodwall.wsgi import FloodwallMiddleware

    app.wsgi_app = FloodwallMiddleware(app.wsgi_app, engine=Engine.from_file("floodwall.toml"))

It answers exactly as :class:`floodwall.asgi.FloodwallMiddleware` does. The engine is handed
the request as received — the method, the target (``RAW_URI`` or ``REQUEST_URI`` where the
server sets one, else ``SCRIPT_NAME + PATH_INFO`` re-encoded and the query string), the peer
``REMOTE_ADDR`` and the headers it reads — and this middleware writes what it answers:

- A skipped path (``http.skip_paths``) reaches the application as if the middleware were not
  there.
- A request the engine refuses is answered with its status, headers and problem body (no body
  to a ``HEAD``); the application is not called.
- A request it lets through reaches the application with ``environ["floodwall.identity"]``
  (the verified :class:`~floodwall.Identity`, ``None`` when no token was verified) and
  ``environ["floodwall.decision"]`` (the :class:`~floodwall.Decision`), and the decision's
  rate-limit headers are added to the response, never replacing a header of the same name the
  application set.
- Every request not skipped is finished once (:meth:`~floodwall.HttpExchange.finish`), which
  records it and settles the rules that count by response: a refusal at once; a response
  whose body is whole (a list or a tuple, or the server's ``wsgi.file_wrapper``) when the
  application returns it; any other response when the server closes its iterable (as PEP 3333
  requires once the body is sent), through a thin iterable that passes the application's
  items and ``close`` on; ``500`` when the application raised before that.

The engine's calls block the calling thread (on Redis up to ``store.timeout``, with the
interpreter released), so run a threaded server. An exception of the ``cost`` callable, or an
engine error that is not an answer, propagates (the server answers ``500``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional
from urllib.parse import quote

from . import Engine
from ._floodwall import HttpExchange
from ._http import middleware_stage

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["DECISION_KEY", "IDENTITY_KEY", "FloodwallMiddleware"]

IDENTITY_KEY = "floodwall.identity"
"""The ``environ`` key of the verified :class:`~floodwall.Identity` (``None`` when no token
was verified)."""
DECISION_KEY = "floodwall.decision"
"""The ``environ`` key of the request's :class:`~floodwall.Decision`."""

# RFC 3986 `pchar`s besides the unreserved: kept as they are when a path is re-encoded.
_PATH_SAFE = "/:@!$&'()*+,;="


class FloodwallMiddleware:
    """The engine's HTTP layer in front of ``app``.

    :param engine: the engine whose ``[http]``, ``[auth]`` and rules decide.
    :param authenticate: require a valid bearer token (the engine's ``guard`` stage; the
        engine must have an ``[auth]`` section). When ``False``, requests are only
        rate-limited (the ``rate_limit`` stage: subject rules see no subject).
    :param cost: answers a request's cost (a number) from its WSGI environ; 1 when not given.
    :param public_paths: moved, like ``skip_paths``, ``trusted_proxies`` and
        ``forwarded_header``, to the engine's ``[http]`` section: giving one raises
        ``TypeError`` naming its field.
    :raises TypeError: an option of the wrong type, or one that moved.
    :raises ValueError: ``authenticate`` is on and the engine has no ``[auth]`` section.
    """

    __slots__ = ("app", "_engine", "_stage", "_cost")

    def __init__(
        self,
        app: WSGIApplication,
        *,
        engine: Engine,
        authenticate: bool = True,
        cost: Optional[Callable[[WSGIEnvironment], float]] = None,
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

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        engine = self._engine
        method: str = environ.get("REQUEST_METHOD", "GET")
        exchange = engine.http(
            method,
            _target(environ),
            environ.get("REMOTE_ADDR") or None,
            _request_headers(environ, engine._http_request_names()),
            cost=1 if self._cost is None else self._cost(environ),
            stage=self._stage,
        )
        verdict = exchange.verdict
        if verdict == "skip":
            return self.app(environ, start_response)
        if verdict == "refuse":
            try:
                start_response(f"{exchange.status} {exchange.reason}", exchange.headers)
            finally:
                exchange.finish(exchange.status)
            return [] if method == "HEAD" else [exchange.body]
        environ[IDENTITY_KEY] = exchange.identity
        environ[DECISION_KEY] = exchange.decision
        answer = _Answer(start_response, engine, exchange)
        try:
            body = self.app(environ, answer)
        except BaseException:
            # The server answers 500 (WSGI sends nothing before the application returns).
            answer.finish(500)
            raise
        return answer.follow(body, environ.get("wsgi.file_wrapper"))


class _Answer:
    """The ``start_response`` of a request the engine let through: adds the decision's headers,
    keeps the status and the response headers the rules read, and finishes the exchange once."""

    __slots__ = ("_start_response", "_engine", "_exchange", "_status", "_read", "_finished")

    def __init__(
        self, start_response: StartResponse, engine: Engine, exchange: HttpExchange
    ) -> None:
        self._start_response = start_response
        self._engine = engine
        self._exchange = exchange
        self._status = 0
        self._read: Optional[dict[str, str]] = None
        self._finished = False

    def __call__(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: Optional[OptExcInfo] = None,
        /,
    ) -> Callable[[bytes], object]:
        try:
            self._status = int(status[:3])
        except ValueError:
            self._status = 0
        present = {name.lower() for name, _ in headers}
        added = [(n, v) for n, v in self._exchange.headers if n.lower() not in present]
        wanted = self._engine._http_response_names()
        if wanted:
            self._read = _joined(headers, wanted)
        return self._start_response(status, headers + added if added else headers, exc_info)

    def finish(self, status: Optional[int] = None) -> None:
        """Finishes the exchange, once: with ``status``, else the response's (500 when none
        was started)."""
        if self._finished:
            return
        self._finished = True
        self._exchange.finish(status or self._status or 500, self._read)

    def follow(self, body: Iterable[bytes], file_wrapper: Any) -> Iterable[bytes]:
        """``body`` as the server gets it: as it is when it is whole (the exchange finished
        now), else wrapped so that the exchange is finished when the server closes it."""
        if self._status and (
            type(body) in (list, tuple)
            or (isinstance(file_wrapper, type) and isinstance(body, file_wrapper))
        ):
            self.finish()
            return body
        return _Finished(body, self)


class _Finished:
    """A response iterable that passes the application's through and finishes the exchange
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
            self._answer.finish()


def _target(environ: WSGIEnvironment) -> str:
    """The request target as received, where the server keeps it; else rebuilt from the
    decoded path (PEP 3333 passes its bytes as latin-1) and the query string."""
    raw: Optional[str] = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return raw
    path: str = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    try:
        encoded = quote(path.encode("latin-1"), safe=_PATH_SAFE)
    except UnicodeEncodeError:
        encoded = quote(path, safe=_PATH_SAFE)
    query: str = environ.get("QUERY_STRING", "")
    return f"{encoded}?{query}" if query else encoded


def _environ_key(name: str) -> str:
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"


def _request_headers(environ: WSGIEnvironment, names: frozenset[str]) -> dict[str, str]:
    """The request headers the engine reads, by lower-case name (servers join the lines of a
    repeated header by ``,``)."""
    headers: dict[str, str] = {}
    for name in names:
        value = environ.get(_environ_key(name))
        if value is not None:
            headers[name] = value
    return headers


def _joined(headers: list[tuple[str, str]], names: frozenset[str]) -> dict[str, str]:
    """The headers of ``names`` (lower-case) among the response's, by name; the values of one
    set several times joined by ``,``."""
    out: dict[str, str] = {}
    for raw_name, value in headers:
        name = raw_name.lower()
        if name in names:
            previous = out.get(name)
            out[name] = value if previous is None else f"{previous},{value}"
    return out
