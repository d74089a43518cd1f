"""The balancer and breakers from Python: ``pick`` by strategy and weight, ``Lease`` (finish and
the context manager), breakers opening, probing and resetting, events, and the run-time changes
(``set_upstream_down``, ``add_upstream``, ``remove_upstream``) — as ``core/tests/balance.rs``
and ``breaker.rs`` check them in Rust."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections import Counter
from typing import Any

import pytest

import floodwall
from conftest import wait_until
from floodwall import ConfigError, Lease, NoUpstreamError, UpstreamStatus


def engine_with(upstreams: list[dict[str, Any]], **service: Any) -> floodwall.Engine:
    return floodwall.Engine({"services": {"api": {"upstreams": upstreams, **service}}})


def picks(engine: floodwall.Engine, n: int, service: str = "api") -> list[str]:
    names = []
    for _ in range(n):
        with engine.pick(service) as lease:
            names.append(lease.upstream)
    return names


def status(engine: floodwall.Engine, name: str, service: str = "api") -> UpstreamStatus:
    return next(u for u in engine.upstreams(service) if u.name == name)


FLAKY = {
    "upstreams": [{"name": "bad", "url": "http://bad"}, {"name": "good", "url": "http://good"}],
    "breaker": {"window": 10, "min_calls": 4, "failure_rate": 0.5, "open_for": "5m",
                "half_open_calls": 2},
}


# --- strategies ------------------------------------------------------------------------------


def test_round_robin_goes_round_in_order() -> None:
    engine = engine_with([{"name": n, "url": f"http://{n}"} for n in "abc"])
    assert picks(engine, 9) == list("abcabcabc")


def test_smooth_round_robin_is_exact_to_the_weights_over_each_cycle() -> None:
    engine = engine_with([
        {"name": "a", "url": "http://a", "weight": 5},
        {"name": "b", "url": "http://b", "weight": 1},
        {"name": "c", "url": "http://c", "weight": 1},
    ])
    sequence = picks(engine, 7 * 20)
    assert "".join(sequence[:7]) == "aabacaa", "nginx's smooth order, not five a in a row"
    for start in range(0, len(sequence), 7):
        assert Counter(sequence[start:start + 7]) == {"a": 5, "b": 1, "c": 1}


def test_least_connections_prefers_the_upstream_with_fewer_calls_in_flight() -> None:
    engine = engine_with(
        [{"name": "slow", "url": "http://slow"}, {"name": "fast", "url": "http://fast"}],
        strategy="least_connections",
    )
    held = [engine.pick("api") for _ in range(2)]
    assert sorted(lease.upstream for lease in held) == ["fast", "slow"]
    slow = next(lease for lease in held if lease.upstream == "slow")
    next(lease for lease in held if lease.upstream == "fast").finish("success")
    assert picks(engine, 20) == ["fast"] * 20, "slow has a call in flight"
    assert status(engine, "slow").in_flight == 1
    slow.finish("success")
    assert status(engine, "slow").in_flight == 0


def test_p2c_never_picks_the_loaded_upstream_of_two() -> None:
    engine = engine_with([{"url": "http://a"}, {"url": "http://b"}], strategy="p2c")
    held = engine.pick("api")
    other = {"http://a": "http://b", "http://b": "http://a"}[held.upstream]
    assert Counter(picks(engine, 50)) == {other: 50}
    held.finish("success")


def test_upstreams_are_named_by_their_url_by_default() -> None:
    engine = engine_with([{"url": "http://127.0.0.1:9001"}])
    lease = engine.pick("api")
    assert (lease.service, lease.upstream, lease.url) == (
        "api", "http://127.0.0.1:9001", "http://127.0.0.1:9001"
    )
    lease.finish("success")


# --- leases ----------------------------------------------------------------------------------


def test_lease_fields_and_repr() -> None:
    engine = engine_with([{"name": "a", "url": "http://a", "weight": 3}])
    lease = engine.pick("api")
    assert isinstance(lease, Lease)
    assert (lease.service, lease.upstream, lease.url) == ("api", "a", "http://a")
    assert lease.is_probe is False
    assert lease.finished is False
    assert repr(lease) == (
        "Lease(service='api', upstream='a', url='http://a', is_probe=False, finished=False)"
    )
    (a,) = engine.upstreams("api")
    assert (a.name, a.url, a.weight, a.down, a.state, a.in_flight) == (
        "a", "http://a", 3, False, "closed", 1
    )
    assert a.open_until_ms is None
    lease.finish("success", 12.5)
    assert lease.finished is True
    assert "finished=True" in repr(lease)
    (a,) = engine.upstreams("api")
    assert (a.in_flight, a.calls, a.successes, a.failures, a.timeouts) == (0, 1, 1, 0, 0)
    assert a.mean_latency_ms == pytest.approx(12.5)
    assert a.max_latency_ms == pytest.approx(12.5)
    assert repr(a) == (
        "UpstreamStatus(name='a', url='http://a', state='closed', down=False, in_flight=0, "
        "calls=1, failures=0, open_until_ms=None)"
    )


def test_lease_as_a_context_manager_records_the_outcome() -> None:
    engine = engine_with([{"name": "a", "url": "http://a"}])

    with engine.pick("api") as lease:
        assert isinstance(lease, Lease)
        assert status(engine, "a").in_flight == 1
    assert lease.finished

    with pytest.raises(ValueError, match="boom"):
        with engine.pick("api"):
            raise ValueError("boom")

    with pytest.raises(TimeoutError):
        with engine.pick("api"):
            raise TimeoutError

    with pytest.raises(asyncio.TimeoutError):
        with engine.pick("api"):
            raise asyncio.TimeoutError

    class UpstreamTimedOut(TimeoutError):
        pass

    with pytest.raises(UpstreamTimedOut):
        with engine.pick("api"):
            raise UpstreamTimedOut

    a = status(engine, "a")
    assert (a.calls, a.successes, a.failures, a.timeouts, a.in_flight) == (5, 1, 1, 3, 0)
    assert a.calls == a.successes + a.failures + a.timeouts


def test_upstream_status_counts_timeouts_apart_from_failures() -> None:
    """``failures`` and ``timeouts`` are separate counts, as in the core, the C and the Node
    bindings."""
    engine = engine_with([{"name": "a", "url": "http://a"}])
    engine.pick("api").finish("timeout")
    engine.pick("api").finish("failure")
    a = status(engine, "a")
    assert (a.failures, a.timeouts, a.calls) == (1, 1, 2)


def test_a_lease_finished_inside_its_with_block_is_not_counted_twice() -> None:
    engine = engine_with([{"name": "a", "url": "http://a"}])
    with engine.pick("api") as lease:
        lease.finish("failure", 3.0)
    with pytest.raises(KeyError):
        with engine.pick("api") as lease:
            lease.finish("success")
            raise KeyError("after finishing")
    a = status(engine, "a")
    assert (a.calls, a.successes, a.failures) == (2, 1, 1)


def test_finishing_twice_raises() -> None:
    engine = engine_with([{"name": "a", "url": "http://a"}])
    lease = engine.pick("api")
    lease.finish("success")
    with pytest.raises(RuntimeError, match="already finished"):
        lease.finish("success")
    with pytest.raises(RuntimeError):
        lease.finish("failure")
    with engine.pick("api") as second:
        pass
    with pytest.raises(RuntimeError):
        second.finish("success")
    assert status(engine, "a").calls == 2


def test_a_bad_outcome_is_a_value_error_and_leaves_the_lease_open() -> None:
    engine = engine_with([{"name": "a", "url": "http://a"}])
    lease = engine.pick("api")
    for outcome in ("ok", "SUCCESS", ""):
        with pytest.raises(ValueError, match="outcome"):
            lease.finish(outcome)  # type: ignore[arg-type]
    assert not lease.finished
    lease.finish("timeout", 100)
    a = status(engine, "a")
    assert (a.calls, a.timeouts) == (1, 1)


def test_a_lease_dropped_unfinished_counts_as_a_failure() -> None:
    engine = engine_with([{"name": "a", "url": "http://a"}])
    lease = engine.pick("api")
    assert status(engine, "a").in_flight == 1
    del lease
    gc.collect()
    a = status(engine, "a")
    assert (a.in_flight, a.calls, a.failures) == (0, 1, 1)


def test_leases_finish_from_other_threads() -> None:
    engine = engine_with([{"name": n, "url": f"http://{n}"} for n in "ab"])
    leases = [engine.pick("api") for _ in range(40)]
    threads = [
        threading.Thread(target=lambda part=leases[i::4]: [l.finish("success") for l in part])
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(lease.finished for lease in leases)
    assert [(u.calls, u.in_flight) for u in engine.upstreams("api")] == [(20, 0), (20, 0)]


def test_a_lease_finished_by_racing_threads_is_finished_once() -> None:
    engine = engine_with([{"name": "a", "url": "http://a"}])
    for _ in range(20):
        lease = engine.pick("api")
        barrier = threading.Barrier(4, timeout=30)
        outcomes: list[str] = []

        def finish(lease: Lease = lease) -> None:
            barrier.wait()
            try:
                lease.finish("success")
                outcomes.append("finished")
            except RuntimeError:
                outcomes.append("refused")

        threads = [threading.Thread(target=finish) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(outcomes) == ["finished", "refused", "refused", "refused"]
    a = status(engine, "a")
    assert (a.calls, a.successes, a.in_flight) == (20, 20, 0)


# --- breakers --------------------------------------------------------------------------------


def run_calls(engine: floodwall.Engine, n: int) -> list[str]:
    """``n`` calls where ``bad`` fails and everything else succeeds."""
    names = []
    for _ in range(n):
        lease = engine.pick("api")
        names.append(lease.upstream)
        lease.finish("failure" if lease.upstream == "bad" else "success", 1.0)
    return names


def test_a_failing_upstream_is_skipped_once_its_breaker_opens() -> None:
    engine = floodwall.Engine({"services": {"api": FLAKY}})
    assert run_calls(engine, 8) == ["bad", "good"] * 4
    bad = status(engine, "bad")
    assert bad.state == "open"
    assert bad.failure_rate == 0.0, "the window starts afresh when the breaker opens"
    assert bad.open_until_ms is not None
    assert (bad.calls, bad.failures) == (4, 4)
    assert run_calls(engine, 30) == ["good"] * 30
    assert status(engine, "good").state == "closed"

    (event,) = engine.breaker_events()
    assert (event.service, event.upstream, event.from_state, event.to_state) == (
        "api", "bad", "closed", "open"
    )
    assert event.seq >= 1
    assert event.failure_rate == 1.0
    assert event.slow_call_rate == 0.0
    assert event.at_ms < bad.open_until_ms
    assert repr(event) == (
        f"BreakerEvent(seq={event.seq}, service='api', upstream='bad', from_state='closed', "
        f"to_state='open', at_ms={event.at_ms})"
    )
    assert engine.breaker_events(after=event.seq) == []


def test_no_upstream_error_when_every_breaker_is_open() -> None:
    engine = floodwall.Engine({"services": {"api": {
        **FLAKY, "upstreams": [{"name": "bad", "url": "http://bad"}]}}})
    run_calls(engine, 4)
    with pytest.raises(NoUpstreamError) as caught:
        engine.pick("api")
    assert caught.value.status == 503
    assert caught.value.available_at_ms == status(engine, "bad").open_until_ms
    assert "bad (open for" in caught.value.message


def test_reset_breaker_closes_it_at_once() -> None:
    engine = floodwall.Engine({"services": {"api": FLAKY}})
    run_calls(engine, 8)
    assert status(engine, "bad").state == "open"
    engine.reset_breaker("api", "bad")
    bad = status(engine, "bad")
    assert (bad.state, bad.open_until_ms, bad.failure_rate) == ("closed", None, 0.0)
    assert bad.calls == 4, "statistics are kept"
    assert "bad" in picks(engine, 2)
    opened, closed = engine.breaker_events()
    assert closed.seq > opened.seq
    assert (closed.from_state, closed.to_state, closed.upstream) == ("open", "closed", "bad")
    assert [(e.seq, e.to_state) for e in engine.breaker_events(after=opened.seq)] == [
        (closed.seq, "closed")
    ]
    engine.reset_breaker("api", "good")
    assert len(engine.breaker_events()) == 2, "resetting a closed breaker changes nothing"


def test_an_open_breaker_lets_probes_through_after_open_for() -> None:
    engine = floodwall.Engine({"services": {"api": {
        "upstreams": [{"name": "only", "url": "http://only"}],
        "breaker": {"window": 10, "min_calls": 2, "failure_rate": 0.5, "open_for": "100ms",
                    "half_open_calls": 1},
    }}})
    for _ in range(2):
        engine.pick("api").finish("failure")
    assert status(engine, "only").state == "open"
    assert wait_until(lambda: status(engine, "only").state == "half_open"), "never half-open"
    probe = engine.pick("api")
    assert probe.is_probe
    with pytest.raises(NoUpstreamError):
        engine.pick("api")  # the one probe slot is taken
    probe.finish("success", 1.0)
    assert status(engine, "only").state == "closed"
    assert [(e.from_state, e.to_state) for e in engine.breaker_events()] == [
        ("closed", "open"), ("open", "half_open"), ("half_open", "closed")
    ]
    with engine.pick("api") as lease:
        assert not lease.is_probe


# --- run-time changes ------------------------------------------------------------------------


def test_set_upstream_down_and_up() -> None:
    engine = engine_with([{"name": n, "url": f"http://{n}"} for n in "ab"])
    engine.set_upstream_down("api", "a")
    assert status(engine, "a").down is True
    assert picks(engine, 6) == ["b"] * 6
    engine.set_upstream_down("api", "b", True)
    with pytest.raises(NoUpstreamError) as caught:
        engine.pick("api")
    assert caught.value.available_at_ms is None
    engine.set_upstream_down("api", "a", down=False)
    assert status(engine, "a").down is False
    assert picks(engine, 3) == ["a"] * 3
    engine.set_upstream_down("api", "b", False)
    assert sorted(picks(engine, 4)) == ["a", "a", "b", "b"]


def test_add_upstream() -> None:
    engine = engine_with([{"name": "a", "url": "http://a"}])
    engine.add_upstream("api", "http://b", name="b", weight=2)
    engine.add_upstream("api", "http://c")
    assert [(u.name, u.url, u.weight) for u in engine.upstreams("api")] == [
        ("a", "http://a", 1), ("b", "http://b", 2), ("http://c", "http://c", 1)
    ]
    assert Counter(picks(engine, 8)) == {"a": 2, "b": 4, "http://c": 2}
    with pytest.raises(ConfigError) as caught:
        engine.add_upstream("api", "http://other", name="b")
    assert caught.value.field == "upstream.name"
    with pytest.raises(ConfigError) as caught:
        engine.add_upstream("api", "http://d", weight=0)
    assert caught.value.field == "upstream.weight"
    with pytest.raises(ConfigError):
        engine.add_upstream("api", "")
    assert len(engine.upstreams("api")) == 3


def test_remove_upstream() -> None:
    engine = engine_with([{"name": n, "url": f"http://{n}"} for n in "ab"])
    in_flight = engine.pick("api")
    assert in_flight.upstream == "a"
    engine.remove_upstream("api", "a")
    assert [u.name for u in engine.upstreams("api")] == ["b"]
    assert picks(engine, 4) == ["b"] * 4
    in_flight.finish("success")  # a lease on a removed upstream finishes normally
    with pytest.raises(ConfigError, match="last upstream"):
        engine.remove_upstream("api", "b")
    with pytest.raises(floodwall.UnknownUpstreamError):
        engine.remove_upstream("api", "a")
    engine.add_upstream("api", "http://a2", name="a")
    assert status(engine, "a").calls == 0, "a new upstream under an old name starts afresh"


def test_services_are_independent() -> None:
    engine = floodwall.Engine({"services": {
        "orders": {"upstreams": [{"name": "o", "url": "http://o"}]},
        "users": {"upstreams": [{"name": "u", "url": "http://u"}]},
    }})
    assert picks(engine, 2, "orders") == ["o", "o"]
    assert picks(engine, 2, "users") == ["u", "u"]
    engine.set_upstream_down("orders", "o")
    assert picks(engine, 1, "users") == ["u"]
    with pytest.raises(floodwall.UnknownUpstreamError):
        engine.set_upstream_down("users", "o")
