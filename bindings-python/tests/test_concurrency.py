"""``concurrency`` rules from Python: a decision holds its places until ``release()``, the end
of a ``with`` block, or until it is freed; from asyncio too."""

from __future__ import annotations

import asyncio
import gc

import floodwall

RULES = {
    "rules": [
        {"name": "in-flight", "key": "subject", "algorithm": "concurrency", "limit": 2},
    ]
}


def test_a_decision_holds_until_released_or_freed() -> None:
    engine = floodwall.Engine.from_dict(RULES)
    first = engine.check(subject="alice")
    second = engine.check(subject="alice")
    assert first.allowed and second.allowed and first.holds
    third = engine.check(subject="alice")
    assert not third.allowed and not third.holds
    first.release()
    assert not first.holds
    first.release()  # a second release gives back nothing more
    with engine.check(subject="alice") as again:
        assert again.allowed and again.holds
        assert not engine.check(subject="alice").allowed
    assert not again.holds
    del second
    gc.collect()
    both = [engine.check(subject="alice") for _ in range(2)]
    assert all(d.allowed for d in both)


def test_acheck_holds_as_check_does() -> None:
    engine = floodwall.Engine.from_dict(RULES)

    async def main() -> None:
        held = await engine.acheck(subject="bob")
        other = await engine.acheck(subject="bob")
        assert held.holds and other.holds
        assert not (await engine.acheck(subject="bob")).allowed
        held.release()
        assert (await engine.acheck(subject="bob")).allowed

    asyncio.run(main())


def test_acquire_waits_for_a_place_released_on_another_thread() -> None:
    import threading

    engine = floodwall.Engine.from_dict(RULES)
    held = [engine.check(subject="carol") for _ in range(2)]
    assert all(d.holds for d in held)
    timer = threading.Timer(0.05, held[0].release)
    timer.start()
    waited = engine.acquire(subject="carol", max_wait_ms=5000)
    timer.join()
    assert waited.allowed and waited.holds
    # Nothing frees up within a millisecond: the denial comes back.
    assert not engine.acquire(subject="carol", max_wait_ms=1).allowed


def test_aacquire_waits_for_the_next_window() -> None:
    engine = floodwall.Engine.from_dict(
        {"rules": [{"name": "r", "key": "subject", "algorithm": "fixed_window", "limit": 1, "window": "100ms"}]}
    )

    async def main() -> None:
        assert engine.check(subject="dave").allowed
        waited = await engine.aacquire(subject="dave", max_wait_ms=5000)
        assert waited.allowed

    asyncio.run(main())
