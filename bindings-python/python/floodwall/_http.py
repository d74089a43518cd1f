"""What the ASGI and WSGI middlewares share, so that both give the same answer to the same
request: the validated options, the client-address rule, path matching, and the bodies and
header lists of the responses the middlewares write themselves.

The client address is the socket peer unless the peer is a trusted proxy; only then is the
forwarding header read, walking from its right end past the trusted proxies, and any entry on
that walk that is not an address makes the peer the answer. A caller that is not a trusted
proxy therefore cannot choose the address it is limited by.

A problem body (RFC 9457) never echoes the request: its ``detail`` is a fixed sentence chosen by
the error kind.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from time import perf_counter
from typing import Any, Callable, Iterable, Optional, Union

from . import Engine
from ._errors import AuthError
from ._floodwall import Decision

__all__ = [
    "AUTH_DETAILS",
    "DEFAULT_FORWARDED_HEADER",
    "PROBLEM_CONTENT_TYPE",
    "CostFunction",
    "MiddlewareSettings",
    "PathSet",
    "TrustedProxies",
    "auth_problem",
    "cost_problem",
    "merge_headers",
    "rate_limited_problem",
]

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

CostFunction = Callable[[str, str], int]
"""Answers a request's cost from its method and path (the units its rules count)."""

DEFAULT_FORWARDED_HEADER = "x-forwarded-for"
PROBLEM_CONTENT_TYPE = "application/problem+json"

AUTH_DETAILS: dict[str, str] = {
    "missing_token": "The request carries no bearer token in its Authorization header.",
    "malformed_token": "The bearer token is not a well-formed JWT.",
    "token_too_large": "The bearer token is larger than this server accepts.",
    "algorithm_not_allowed": "The bearer token is signed with an algorithm this server does "
    "not accept.",
    "unknown_key": "The bearer token names a signing key this server does not know.",
    "bad_signature": "The bearer token's signature is not valid.",
    "expired": "The bearer token has expired.",
    "not_yet_valid": "The bearer token is not valid yet.",
    "wrong_issuer": "The bearer token comes from an issuer this server does not accept.",
    "wrong_audience": "The bearer token is meant for another audience.",
    "missing_claim": "The bearer token lacks a claim this server requires.",
    "invalid_claim": "A claim of the bearer token has a value this server does not accept.",
}
"""The ``detail`` of a 401's problem body by error kind: one fixed sentence each, so that
nothing of the token is ever sent back."""

_AUTH_DETAIL_FALLBACK = "The bearer token was refused."

_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_DOT_SEGMENT = re.compile(r"(?:^|/)\.{1,2}(?:/|$)")


def _strings(value: Iterable[str], option: str) -> list[str]:
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{option} must be a collection of strings, not one string: {value!r}")
    items = list(value)
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{option} must hold strings, not {item!r}")
    return items


class PathSet:
    """Request paths given as exact paths (``/health``) or prefixes ending in ``*``
    (``/public/*`` matches ``/public/`` and everything under it, not ``/public``).

    A path with a ``.`` or ``..`` segment never matches: what such a path reaches depends on
    who normalises it, so it is never exempted from authentication or limits.
    """

    __slots__ = ("_exact", "_prefixes")

    def __init__(self, paths: Iterable[str], option: str) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        for path in _strings(paths, option):
            if not path.startswith("/"):
                raise ValueError(f"{option}: {path!r} must start with '/'")
            if "*" in path[:-1]:
                raise ValueError(f"{option}: {path!r} may hold '*' only as its last character")
            if path.endswith("*"):
                prefixes.append(path[:-1])
            else:
                exact.add(path)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)

    def __bool__(self) -> bool:
        return bool(self._exact or self._prefixes)

    def matches(self, path: str) -> bool:
        """Whether ``path`` is one of the paths or under one of the prefixes."""
        if path not in self._exact and not path.startswith(self._prefixes):
            return False
        return _DOT_SEGMENT.search(path) is None


def _parse_address(text: str) -> Optional[IPAddress]:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _parse_node(text: str) -> Optional[IPAddress]:
    """One entry of a forwarding header: an address, optionally bracketed (IPv6) and followed
    by a port, as proxies write them (``192.0.2.7``, ``192.0.2.7:4711``, ``[2001:db8::1]:80``).
    """
    node = text.strip()
    if len(node) >= 2 and node[0] == '"' and node[-1] == '"':
        node = node[1:-1]
    if node.startswith("["):
        end = node.find("]")
        if end < 0 or (end + 1 < len(node) and not _is_port(node[end + 1 :])):
            return None
        address = _parse_address(node[1:end])
        return address if isinstance(address, ipaddress.IPv6Address) else None
    if node.count(":") == 1:
        host, _, port = node.partition(":")
        if not _is_port(":" + port):
            return None
        address = _parse_address(host)
        return address if isinstance(address, ipaddress.IPv4Address) else None
    return _parse_address(node)


def _is_port(text: str) -> bool:
    return len(text) > 1 and text[0] == ":" and text[1:].isdigit() and text[1:].isascii()


def _forwarded_for(element: str) -> Optional[str]:
    """The ``for=`` parameter of one RFC 7239 ``Forwarded`` element, or None."""
    for pair in element.split(";"):
        name, sep, value = pair.partition("=")
        if sep and name.strip().lower() == "for":
            return value
    return None


class TrustedProxies:
    """The proxies whose forwarding header is believed, and the rule that answers a request's
    client address from its socket peer and that header.

    ``forwarded_header`` is ``X-Forwarded-For``-style (comma-separated addresses, the nearest
    proxy's peer last) unless it is ``forwarded``, which is read as RFC 7239 (the ``for=`` of
    each element). Addresses are answered in canonical form, an IPv4-mapped IPv6 address as
    the IPv4 address, so that spellings of one address share its limits. ``header`` is the
    forwarding header's name, lowercased.
    """

    __slots__ = ("_networks", "header", "_rfc7239")

    def __init__(self, proxies: Iterable[str], header: str = DEFAULT_FORWARDED_HEADER) -> None:
        networks: list[IPNetwork] = []
        for proxy in _strings(proxies, "trusted_proxies"):
            try:
                network = ipaddress.ip_network(proxy.strip(), strict=True)
            except ValueError as e:
                raise ValueError(
                    f"trusted_proxies: {proxy!r} is not an IP address or CIDR network ({e})"
                ) from e
            networks.append(network)
        if not isinstance(header, str) or not _HEADER_NAME.fullmatch(header):
            raise ValueError(f"forwarded_header: {header!r} is not an HTTP header name")
        self._networks = tuple(networks)
        self.header = header.lower()
        self._rfc7239 = self.header == "forwarded"

    def __bool__(self) -> bool:
        return bool(self._networks)

    def _trusts(self, address: IPAddress) -> bool:
        return any(address in network for network in self._networks)

    def client_address(self, peer: Optional[str], forwarded: Optional[str]) -> Optional[str]:
        """The client address of a request whose socket peer is ``peer`` (None when the server
        does not know it) and whose forwarding header is ``forwarded`` (all of its lines joined
        by commas; None when absent). A peer that is not an IP address (a Unix socket) is
        answered as it is, and never trusted."""
        if peer is None:
            return None
        peer_address = _parse_address(peer)
        if peer_address is None:
            return peer
        if not forwarded or not self._networks or not self._trusts(peer_address):
            return str(peer_address)
        client: Optional[IPAddress] = None
        for entry in reversed(forwarded.split(",")):
            if self._rfc7239:
                node = _forwarded_for(entry)
                address = None if node is None else _parse_node(node)
            else:
                address = _parse_node(entry)
            if address is None:
                return str(peer_address)
            client = address
            if not self._trusts(address):
                break
        return str(client if client is not None else peer_address)


class MiddlewareSettings:
    """The options of both middlewares, validated once when the middleware is built."""

    __slots__ = (
        "engine",
        "authenticate",
        "public_paths",
        "skip_paths",
        "cost",
        "proxies",
        "key_headers",
        "keys_ip",
    )

    def __init__(
        self,
        *,
        engine: Engine,
        authenticate: bool,
        public_paths: Iterable[str],
        skip_paths: Iterable[str],
        cost: Optional[CostFunction],
        trusted_proxies: Iterable[str],
        forwarded_header: str,
    ) -> None:
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be a floodwall.Engine, not {type(engine).__name__}")
        if not isinstance(authenticate, bool):
            raise TypeError(f"authenticate must be True or False, not {authenticate!r}")
        if cost is not None and not callable(cost):
            raise TypeError(f"cost must be a callable (method, path) -> int, not {cost!r}")
        if authenticate:
            _require_auth(engine)
        self.engine = engine
        self.authenticate = authenticate
        self.public_paths = PathSet(public_paths, "public_paths")
        self.skip_paths = PathSet(skip_paths, "skip_paths")
        self.cost = cost
        self.proxies = TrustedProxies(trusted_proxies, forwarded_header)
        # What the engine's rules key on: only those headers are handed over, and the client
        # address (trusted-proxy walk included) is worked out only when a rule keys on it.
        self.key_headers = engine.key_headers
        self.keys_ip = engine.keys_ip

    def engine_headers(self, headers: dict[str, str]) -> Optional[dict[str, str]]:
        """The request headers some rule is keyed on; ``None`` when no rule keys on one."""
        if not self.key_headers:
            return None
        return {name: headers[name] for name in self.key_headers if name in headers}

    def cost_of(self, method: str, path: str) -> int:
        """The request's cost: the ``cost`` option's answer, 1 without one."""
        return 1 if self.cost is None else self.cost(method, path)

    def authenticates(self, path: str) -> bool:
        """Whether a request to ``path`` must carry a valid bearer token."""
        return self.authenticate and not self.public_paths.matches(path)


def _require_auth(engine: Engine) -> None:
    if not engine.has_auth:
        raise ValueError(
            "authenticate=True needs an engine configured with an [auth] section "
            "(or pass authenticate=False)"
        )


def _problem(status: int, title: str, detail: str, code: str, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode()


def auth_problem(error: AuthError) -> tuple[int, list[tuple[str, str]], bytes]:
    """The 401 answered for a refused token: status, headers, body."""
    detail = AUTH_DETAILS.get(error.code, _AUTH_DETAIL_FALLBACK)
    body = _problem(401, "Unauthorized", detail, error.code)
    return 401, _problem_headers(body, [("WWW-Authenticate", error.www_authenticate)]), body


def rate_limited_problem(decision: Decision) -> tuple[int, list[tuple[str, str]], bytes]:
    """The 429 answered for a denied request: status, the decision's headers (with
    ``Retry-After``), body."""
    retry_s = math.ceil(decision.retry_after_ms / 1000)
    body = _problem(
        429,
        "Too Many Requests",
        f"The rate limit is exhausted; retry in {retry_s} s.",
        "rate_limited",
        rule=decision.rule,
        retry_after_ms=decision.retry_after_ms,
    )
    return 429, _problem_headers(body, list(decision.headers.items())), body


def cost_problem(code: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """The 429 answered for a request that costs more than a limit holds: it can never be
    admitted, so no ``Retry-After``."""
    body = _problem(
        429,
        "Too Many Requests",
        "The request costs more than a rate limit allows; it can never be admitted.",
        code,
    )
    return 429, _problem_headers(body, []), body


def _problem_headers(body: bytes, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    headers.append(("Content-Type", PROBLEM_CONTENT_TYPE))
    headers.append(("Content-Length", str(len(body))))
    return headers


def merge_headers(own: Iterable[str], added: dict[str, str]) -> list[tuple[str, str]]:
    """The headers of ``added`` whose names (compared case-insensitively) are not in ``own``:
    the decision's headers, never replacing one the application set itself."""
    present = {name.lower() for name in own}
    return [(name, value) for name, value in added.items() if name.lower() not in present]


class ResponseRecorder:
    """What both middlewares' answer objects share: the decision's headers to add
    (``added``), the response's ``status`` once started, and :meth:`record`, which reports
    the response to the engine exactly once, timed from this object's creation (the
    request's arrival)."""

    __slots__ = ("_engine", "_method", "_path", "_started", "status", "added", "_done")

    def __init__(self, engine: Engine, method: str, path: str) -> None:
        self._engine = engine
        self._method = method
        self._path = path
        self._started = perf_counter()
        self.status = 0
        self.added: Optional[dict[str, str]] = None
        self._done = False

    def record(self) -> None:
        """Records the response, once: its status, or 500 when none was started."""
        if self._done:
            return
        self._done = True
        status = self.status or 500
        if 100 <= status <= 999:
            elapsed_ms = (perf_counter() - self._started) * 1000.0
            self._engine.record_response(self._method, self._path, status, elapsed_ms)
