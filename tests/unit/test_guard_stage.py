"""The supervisor's guard stage: off the event loop, bounded, timed out closed, cached by normalised text.

The guard here gets an injected generate function (pure logic); the real model's path is covered by
tests/integration/test_guard.py.
"""

from __future__ import annotations

import asyncio
import threading
import time

from cute_animal_kids.guard_model import UNAVAILABLE, Guard

from supervisor.guard_stage import GuardStage, cache_key

SAFE = "Safety: Safe\nCategories: None"


class CountingGenerate:
    """A generate function that sleeps, counts calls and records the most threads inside at once."""

    def __init__(self, answer: str = SAFE, sleep_s: float = 0.0) -> None:
        self.answer, self.sleep_s = answer, sleep_s
        self.calls = 0
        self.inside = 0
        self.most_inside = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> str:
        with self._lock:
            self.calls += 1
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.threads.add(threading.current_thread().name)
        time.sleep(self.sleep_s)
        with self._lock:
            self.inside -= 1
        return self.answer


def _stage(generate: CountingGenerate, **options) -> GuardStage:
    settings = {"timeout_s": 5.0, "max_concurrency": 1, "controversial": "refuse", **options}
    return GuardStage(Guard(generate=generate), **settings)


def test_cache_key_ignores_width_case_and_spacing():
    assert cache_key("  A ｂｕｎｎｙ\tin a HAT ") == cache_key("a bunny in a hat")
    assert cache_key("a bunny") != cache_key("a bear")


def test_checks_run_in_worker_threads_and_verdicts_are_cached():
    generate = CountingGenerate()

    async def scenario():
        stage = _stage(generate)
        first = await stage.check("a bunny in a hat")
        second = await stage.check("A  BUNNY in a hat")
        stage.close()
        return first, second

    first, second = asyncio.run(scenario())
    assert first.safe and second is first
    assert generate.calls == 1
    assert generate.threads and all(name.startswith("guard") for name in generate.threads)


def test_a_slow_guard_times_out_closed_and_is_not_cached():
    generate = CountingGenerate(sleep_s=0.6)

    async def scenario():
        stage = _stage(generate, timeout_s=0.2)
        started = time.monotonic()
        decision = await stage.check("a bunny")
        waited = time.monotonic() - started
        await asyncio.sleep(0.6)  # let the overrunning thread end
        again = await stage.check("a bunny")
        stage.close()
        return decision, waited, again

    decision, waited, again = asyncio.run(scenario())
    assert (decision.safe, decision.category) == (False, UNAVAILABLE)
    assert "longer than 0.2 s" in decision.reason
    assert waited < 0.5
    assert generate.calls == 2 and again.category == UNAVAILABLE  # asked again, not served from cache


def test_concurrency_is_bounded_even_when_calls_time_out():
    generate = CountingGenerate(sleep_s=0.3)

    async def scenario():
        stage = _stage(generate, timeout_s=0.1, max_concurrency=2)
        decisions = await asyncio.gather(*(stage.check(f"bunny {i}") for i in range(6)))
        await asyncio.sleep(1.0)
        stage.close()
        return decisions

    decisions = asyncio.run(scenario())
    assert all(d.category == UNAVAILABLE for d in decisions)
    assert generate.most_inside <= 2


def test_the_event_loop_keeps_running_during_a_check():
    generate = CountingGenerate(sleep_s=0.5)

    async def scenario():
        stage = _stage(generate)
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        ticker = asyncio.create_task(tick())
        decision = await stage.check("a bunny")
        ticker.cancel()
        stage.close()
        return decision, ticks

    decision, ticks = asyncio.run(scenario())
    assert decision.safe
    assert ticks >= 10  # a blocked loop would not have ticked at all during the 0.5 s check
