"""Which held prompt of an instance has started (pure logic of ``Claim`` / ``Lifetime``, issue 17).

With prefetch an instance holds the prompt ComfyUI runs and the ones queued behind it. Only a
started one is a job (a counted attempt when the instance is lost, ``max_jobs``); the decision is
fixed the moment the process goes away, whatever the runs' tasks do afterwards.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from supervisor.instance import Claim, Lifetime


def held(life: Lifetime, count: int) -> list[Claim]:
    instance = SimpleNamespace(name="comfy-test", lifetime=life, client=None)
    claims = [Claim(instance, life) for _ in range(count)]  # type: ignore[arg-type]
    life.claims.extend(claims)
    for claim in claims:  # Pool.run follows each, ComfyUI has queued each
        claim.ran = claim.running = True
        claim.submitted.set()
    return claims


def test_a_prompt_queued_behind_a_running_one_has_not_started_until_that_one_ends() -> None:
    async def check() -> None:
        life = Lifetime()
        running, waiting = held(life, 2)
        assert running.started and not waiting.started
        running.done_in_comfy = True  # execution_success: ComfyUI takes the next one at once
        assert waiting.started

    asyncio.run(check())


def test_an_execution_start_event_means_started_whatever_is_ahead() -> None:
    async def check() -> None:
        life = Lifetime()
        _, waiting = held(life, 2)
        waiting.executing = True
        assert waiting.started

    asyncio.run(check())


def test_a_prompt_not_yet_queued_in_comfyui_has_not_started() -> None:
    async def check() -> None:
        life = Lifetime()
        (claim,) = held(life, 1)
        claim.submitted.clear()
        assert not claim.started

    asyncio.run(check())


def test_the_loss_fixes_who_started_before_the_runs_wind_down() -> None:
    async def check() -> None:
        life = Lifetime()
        running, waiting = held(life, 2)
        assert life.end("crash")
        running.running = False  # the running prompt's Pool.run ends first ...
        assert running.started and not waiting.started  # ... the queued one still never started
        assert not life.end("hang") and life.ended.result() == "crash"

    asyncio.run(check())


def test_the_job_clock_ignores_the_deadline_of_a_prompt_that_waits() -> None:
    async def check() -> None:
        life = Lifetime()
        running, waiting = held(life, 2)
        running.deadline, waiting.deadline = 100.0, None
        life.update_job_clock()
        assert life.job_started_at is not None and life.job_deadline == 100.0
        running.running = waiting.running = False
        life.update_job_clock()
        assert life.job_started_at is None and life.job_deadline is None

    asyncio.run(check())
