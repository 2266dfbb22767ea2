"""The watchdog's hang check with a short step timeout: silence during a job, and the job deadline.

Pure logic: the loop only reads times from the real ``Lifetime`` and reports ``fault``, which is
recorded here, so a broken check fails in about a second instead of at pytest's 600 s limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace

from supervisor.instance import Lifetime
from supervisor.watchdog import Watchdog, WatchdogReport

STEP_TIMEOUT_S = 0.2


def recording_watchdog(life: Lifetime) -> tuple[Watchdog, list[tuple[str, str, float]]]:
    """A watchdog on ``life`` whose fault reports are recorded with their time."""
    faults: list[tuple[str, str, float]] = []
    report = WatchdogReport(fault=lambda reason, detail: faults.append((reason, detail, time.monotonic())),
                            leak=lambda detail: None, idle_freed=lambda idle: None,
                            measured=lambda rss, device: None)
    health = SimpleNamespace(step_timeout_s=STEP_TIMEOUT_S, probe_timeout_s=1.0, idle_free_s=0)
    watchdog = Watchdog(url="http://127.0.0.1:9", health=health, times=life, report=report,  # type: ignore[arg-type]
                        log=logging.getLogger("test"), pid=lambda: None, job_client=lambda: None)
    return watchdog, faults


async def heartbeat(prepare, run_for: float) -> tuple[list[tuple[str, str, float]], float]:
    """Run the hang check for ``run_for`` s (or until it faults); ``prepare(life)`` sets the job up."""
    life = Lifetime()
    watchdog, faults = recording_watchdog(life)
    started = time.monotonic()
    feeder = await prepare(life)
    try:
        await asyncio.wait_for(watchdog._heartbeat_loop(), run_for)
    except TimeoutError:
        pass
    finally:
        if feeder is not None:
            feeder.cancel()
        await watchdog.probe_client.close()
    return faults, started


async def silent_job(life: Lifetime) -> None:
    life.job_started_at = life.last_event_at = time.monotonic()


async def chatty_job_with_deadline(life: Lifetime) -> asyncio.Task[None]:
    life.job_started_at = life.last_event_at = time.monotonic()
    life.job_deadline = life.job_started_at + 1.0

    async def events() -> None:
        while True:
            await asyncio.sleep(STEP_TIMEOUT_S / 4)
            life.last_event_at = time.monotonic()

    return asyncio.create_task(events())


async def no_job(life: Lifetime) -> None:
    life.last_event_at = 0.0  # long silent, but nothing runs


def test_a_silent_job_is_a_hang_soon_after_the_step_timeout() -> None:
    faults, started = asyncio.run(heartbeat(silent_job, 5.0))
    assert [reason for reason, _, _ in faults] == ["hang"] and "no progress event" in faults[0][1]
    assert STEP_TIMEOUT_S <= faults[0][2] - started < STEP_TIMEOUT_S + 1.0


def test_events_keep_a_job_alive_until_its_deadline() -> None:
    faults, started = asyncio.run(heartbeat(chatty_job_with_deadline, 5.0))
    assert [reason for reason, _, _ in faults] == ["hang"] and "past its limit" in faults[0][1]
    assert 1.0 <= faults[0][2] - started < 2.0


def test_no_hang_without_a_running_job() -> None:
    faults, _ = asyncio.run(heartbeat(no_job, 1.0))
    assert faults == []
