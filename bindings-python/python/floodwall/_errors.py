"""The exceptions floodwall raises: one hierarchy under :class:`FloodwallError`.

Every exception carries the core's error kind as ``.code`` (the same snake_case name in Rust, C,
Python and Node; all of them are in ``floodwall.ERROR_CODES``) and the HTTP status a server
should answer with as ``.status``. The classes also subclass the built-in exception a Python
programmer would catch: a configuration error is a ``ValueError``, an unknown service a
``LookupError``.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "FloodwallError",
    "ConfigError",
    "CostExceedsLimitError",
    "InvalidCostError",
    "AuthError",
    "NoUpstreamError",
    "UnknownRuleError",
    "UnknownServiceError",
    "UnknownUpstreamError",
    "StoreError",
]


class FloodwallError(Exception):
    """Base class of every error the engine reports."""

    code: str
    """The error kind's stable name (``expired``, ``invalid_config`` …)."""
    status: int
    """The HTTP status a server should answer with."""
    message: str
    """The engine's message (for configuration errors, after the field path)."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int,
        field: Optional[str] = None,
        www_authenticate: Optional[str] = None,
        available_at_ms: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self._field = field
        self._www_authenticate = www_authenticate
        self._available_at_ms = available_at_ms

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (
            _rebuild,
            (
                type(self),
                self.message,
                self.code,
                self.status,
                self._field,
                self._www_authenticate,
                self._available_at_ms,
            ),
        )


def _rebuild(
    cls: type[FloodwallError],
    message: str,
    code: str,
    status: int,
    field: Optional[str],
    www_authenticate: Optional[str],
    available_at_ms: Optional[int],
) -> FloodwallError:
    return cls(
        message,
        code=code,
        status=status,
        field=field,
        www_authenticate=www_authenticate,
        available_at_ms=available_at_ms,
    )


class ConfigError(FloodwallError, ValueError):
    """The configuration could not be read or is invalid (``invalid_config``)."""

    @property
    def field(self) -> Optional[str]:
        """The path of the field at fault, e.g. ``rules[1].refill_rate``."""
        return self._field


class CostExceedsLimitError(FloodwallError, ValueError):
    """The request's cost is larger than a matching limit: it can never be admitted
    (``cost_exceeds_limit``). Nothing was consumed."""


class InvalidCostError(FloodwallError, ValueError):
    """The request's cost is not an integer from 0 to 2^53 (``invalid_cost``; ``.status``
    400). :meth:`Engine.http <floodwall.Engine.http>` answers such a request with that 400
    itself, and counts it among the report's ``errors``."""


class AuthError(FloodwallError):
    """The bearer token was refused. ``.code`` says why (``missing_token``, ``expired``,
    ``bad_signature`` …); ``.status`` is 401."""

    @property
    def www_authenticate(self) -> str:
        """The ``WWW-Authenticate`` value to send with the 401 (RFC 6750 §3); it never echoes
        the token."""
        return self._www_authenticate or 'Bearer realm="floodwall"'


class NoUpstreamError(FloodwallError, RuntimeError):
    """No upstream of the service can take a call now (``no_upstream_available``)."""

    @property
    def available_at_ms(self) -> Optional[int]:
        """When the first breaker may let a call through again (ms since the Unix epoch);
        ``None`` when every upstream is marked down."""
        return self._available_at_ms


class UnknownRuleError(FloodwallError, LookupError):
    """No rule of that name is configured (``unknown_rule``): per-key administration names one."""


class UnknownServiceError(FloodwallError, LookupError):
    """No service of that name is configured (``unknown_service``)."""


class UnknownUpstreamError(FloodwallError, LookupError):
    """The service has no upstream of that name (``unknown_upstream``)."""


class StoreError(FloodwallError, RuntimeError):
    """The shared store (Redis) failed or timed out and the configuration's
    ``store.on_error = "error"`` asks for the failure rather than a decision
    (``store_unavailable``; ``.status`` 503). With the other policies a check never raises
    this: it decides in-process (``fallback``), admits (``allow``) or denies (``deny``), and
    ``Decision.store`` says so."""
