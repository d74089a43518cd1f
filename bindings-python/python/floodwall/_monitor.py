"""The shape of :meth:`floodwall.Engine.report`: the monitoring report every binding gives
(the JSON of the core's ``floodwall::monitor::Report``, keys in snake_case), as typed dicts.

Counts are totals since the engine started (``totals``) or one minute's (``per_minute``,
``peaks``); latencies are in microseconds, the percentiles estimated from a histogram. Top
lists are bounded (``[monitor] top`` entries): each entry's ``count`` is an upper bound, and
``error`` says how much of it may belong to keys it replaced (0: exact).
"""

from __future__ import annotations

from typing import Literal, Optional, TypedDict

__all__ = ["LatencyHistogram", "MinuteCounts", "Report", "ReportWarning", "SinkStats", "TopEntry"]


class MinuteCounts(TypedDict):
    """One minute's counters (in ``totals``, everything's)."""

    start_ms: int
    """The minute's start, in ms since the Unix epoch (0 in the totals)."""
    requests: int
    """Decisions taken: one per request the engine was asked about."""
    admitted: int
    rate_limited: int
    auth_rejected: int
    failed: int
    """Decisions that failed, e.g. ``store_unavailable``."""
    denied: int
    """Requests a deny list refused (403)."""
    shadow_limited: int
    """Admitted requests a rule in shadow mode would have denied."""
    allowlisted: int
    """Admitted requests an allow list let skip the limits."""
    blocked: int
    """Rate-limited requests whose key was blocked after denials (``block_for``)."""
    upstream_calls: int
    upstream_failures: int
    """Upstream calls that failed or timed out."""
    breaker_trips: int
    responses: int
    """Responses recorded (each finished ``HttpExchange``, and ``record_response``)."""
    client_errors: int
    """… with a 4xx status."""
    server_errors: int
    """… with a 5xx status."""
    latency_p50_us: int
    latency_p99_us: int
    mean_latency_us: int
    max_latency_us: int


class TopEntry(TypedDict):
    """One key of a top list."""

    key: str
    count: int
    """How many times it was counted (an upper bound)."""
    error: int
    """How much of ``count`` may belong to keys it replaced (0: exact)."""


class LatencyHistogram(TypedDict):
    """The response-latency histogram of everything recorded."""

    bounds_us: list[int]
    """Upper bounds of the buckets (µs); a last, unbounded bucket follows."""
    counts: list[int]
    """Responses per bucket (not cumulative): one more than ``bounds_us``."""
    sum_us: int
    count: int


class SinkStats(TypedDict):
    """The Redis Streams sink's counters."""

    stream: str
    written: int
    dropped: int
    """Events dropped: the queue was full, or a batch could not be written."""
    queued: int
    errors: int
    """Batches that failed."""
    last_error: Optional[str]


class StoreHealth(TypedDict):
    """Where the engine's store stands (``engine.store_health``)."""

    state: Literal["ok", "degraded", "failing"]
    """``ok``; ``degraded`` while Redis is failing and the in-process fallback decides;
    ``failing`` while it is failing and ``on_error`` answers alone."""
    since_ms: int
    """Since when (ms since the Unix epoch)."""
    reason: Optional[str]
    """Why it is not ``ok``, in words."""
    reason_kind: Optional[
        Literal["timeout", "refused", "out_of_memory", "noscript", "cluster_down", "error"]
    ]
    """The kind of that reason."""


class ReportWarning(TypedDict):
    """Something that looks wrong with how the engine is set up, seen while serving."""

    code: str
    """A stable name, e.g. ``untrusted_forwarded_header`` (a forwarding header arrived while
    no proxy is trusted)."""
    message: str
    """What it means and what to do."""
    count: int
    """How many times it was seen."""
    first_seen_ms: int
    """When it was first seen (ms since the Unix epoch)."""


class Report(TypedDict):
    """What :meth:`floodwall.Engine.report` answers."""

    generated_at_ms: int
    horizon_minutes: int
    """How many minutes ``per_minute`` covers."""
    source: Literal["memory", "stream"]
    store_kind: Optional[Literal["memory", "redis", "redis_cluster", "redis_sentinel"]]
    store_failure: Optional[str]
    """Why the shared store is failing now (decisions fall back); None when it is not."""
    per_minute: list[MinuteCounts]
    """Every minute of the horizon that saw traffic, oldest first."""
    peaks: list[MinuteCounts]
    """The busiest minutes (by decisions, then responses), busiest first."""
    totals: MinuteCounts
    top_endpoints: list[TopEntry]
    """The most requested endpoints, ``METHOD /path``."""
    top_subjects: list[TopEntry]
    """The callers (verified subjects) with the most decisions."""
    breaches_by_subject: list[TopEntry]
    breaches_by_role: list[TopEntry]
    breaches_by_endpoint: list[TopEntry]
    breaches_by_rule: list[TopEntry]
    shadow_breaches_by_rule: list[TopEntry]
    """Admitted requests by the rule in shadow mode that would have denied them."""
    auth_rejections: dict[str, int]
    """Refused tokens by error kind (``expired``, ``bad_signature`` …)."""
    errors: dict[str, int]
    """Failed decisions by error kind."""
    upstream_failures: list[TopEntry]
    """Failed or timed-out upstream calls by ``service/upstream``."""
    breaker_trips: list[TopEntry]
    """Breaker trips by ``service/upstream``."""
    stores: dict[str, int]
    """Decisions by the store that made them (``memory``, ``redis``, ``fallback``,
    ``unavailable``)."""
    status_classes: dict[str, int]
    """Responses by status class (``2xx``, ``4xx`` …)."""
    response_latency: LatencyHistogram
    sink: Optional[SinkStats]
    """The Redis Streams sink's counters; None without one."""
    warnings: list[ReportWarning]
    """What looks wrong with how the engine is set up, each once."""
