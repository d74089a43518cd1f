"""The shape of :meth:`floodwall.Engine.access_lists`: the ``[http]`` section's allow and deny
lists (the JSON of the core's ``floodwall::http::AccessLists``), as typed dicts.
:meth:`~floodwall.Engine.set_access_lists` takes the same shape, any field left out empty.
"""

from __future__ import annotations

from typing import TypedDict

__all__ = ["AccessList", "AccessLists"]


class AccessList(TypedDict):
    """One list: a request is on it when any entry names it."""

    addresses: list[str]
    """Client addresses or networks (``192.0.2.7``, ``10.0.0.0/8``, ``2001:db8::/32``)."""
    subjects: list[str]
    """Verified subjects."""
    roles: list[str]
    """Roles of verified callers."""
    headers: dict[str, list[str]]
    """Request header values by header name; values compare exactly, names
    case-insensitively."""


class AccessLists(TypedDict):
    """Both lists."""

    allow: AccessList
    """Callers that skip every limit (they still need a valid token)."""
    deny: AccessList
    """Callers answered 403 ``access_denied``."""
