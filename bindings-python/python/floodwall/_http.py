"""What the ASGI and WSGI middlewares share: their options, checked once.

Everything else about a request and its answer — the path's normal form, the client address
behind trusted proxies, public and skipped paths, allow and deny lists, the bodies and headers
of the 400/401/403/429/503 answers — is the engine's (:meth:`floodwall.Engine.http`,
configured in the ``[http]`` section), so that every host answers alike. The middlewares only
translate their framework's request and write the engine's answer.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Mapping, Optional

from . import Engine

__all__ = ["MAX_WAIT_MS", "MOVED_OPTIONS", "middleware_stage", "wait_budget"]

MOVED_OPTIONS = ("public_paths", "skip_paths", "trusted_proxies", "forwarded_header")
"""Options of earlier versions that are now fields of the engine's ``[http]`` section."""

MAX_WAIT_MS = 86_400_000
"""The longest ``max_wait_ms`` a middleware takes: a day."""


def wait_budget(max_wait_ms: object) -> float:
    """Checks a middleware's ``max_wait_ms`` (a number of milliseconds from 0 to a day)."""
    if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)):
        raise TypeError(
            f"max_wait_ms must be a number of milliseconds, not {type(max_wait_ms).__name__}"
        )
    if not 0 <= max_wait_ms <= MAX_WAIT_MS:
        raise ValueError(f"max_wait_ms must be from 0 to {MAX_WAIT_MS}, not {max_wait_ms!r}")
    return float(max_wait_ms)


def middleware_stage(
    engine: Engine,
    authenticate: bool,
    cost: Optional[Callable[[Any], float]],
    moved: Mapping[str, object],
) -> Literal["guard", "rate_limit"]:
    """Checks a middleware's options (``moved``: the values given for :data:`MOVED_OPTIONS`,
    which must be ``None``) and answers the stage of :meth:`~floodwall.Engine.http` it runs:
    ``guard`` (the token, the lists and every rule) when it authenticates, else
    ``rate_limit``."""
    for name in MOVED_OPTIONS:
        if moved.get(name) is not None:
            raise TypeError(
                f"FloodwallMiddleware no longer takes {name}=: it moved to the engine's "
                f"configuration, the [http] section's {name} (http.{name})"
            )
    if not isinstance(engine, Engine):
        raise TypeError(f"engine must be a floodwall.Engine, not {type(engine).__name__}")
    if not isinstance(authenticate, bool):
        raise TypeError(f"authenticate must be True or False, not {authenticate!r}")
    if cost is not None and not callable(cost):
        raise TypeError(f"cost must be a callable answering a request's cost, not {cost!r}")
    if not authenticate:
        return "rate_limit"
    if not engine.has_auth:
        raise ValueError(
            "authenticate=True needs an engine configured with an [auth] section "
            "(or pass authenticate=False)"
        )
    return "guard"
