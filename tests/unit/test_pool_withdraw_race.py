"""How ``Pool.run`` reads a broken link for a prompt ``withdraw`` is taking out of ComfyUI's queue.

A prefetched prompt that ``withdraw`` deletes can vanish from the run's view (``ServerGone``: "no
longer knows prompt") before the withdraw has finished checking that it never started. That is our
own doing, not a dead server: the run must end ``not_started`` and leave the instance alone. The
two-host chaos run once restarted a healthy instance as ``unresponsive`` here, costing the job it
was running an attempt. Stand-ins for the instance and client: this is the ordering logic alone.
"""

from __future__ import annotations

import asyncio
import functools
from types import SimpleNamespace

import pytest

from cak.errors import ServerGone
from supervisor import pool as pool_module
from supervisor.instance import Claim, Lifetime
from supervisor.job_store import NOT_STARTED
from supervisor.pool import InstanceLost, Pool


class StandInInstance:
    """What ``Pool.run`` asks of an instance; ``fault`` ends the lifetime as the real one does."""

    name = "stand-in-1"

    def __init__(self) -> None:
        self.lifetime = Lifetime()
        self.faults: list[str] = []
        self.stream = object()
        self.client = SimpleNamespace(run=self._run)

    async def _run(self, graph, *, on_event, prompt_id, stream, on_submitted):
        on_submitted()
        await asyncio.sleep(0.01)
        raise ServerGone(f"http://127.0.0.1:1 no longer knows prompt {prompt_id} (the server restarted?)")

    def heartbeat(self, claim, kind) -> None:
        pass

    def job_started(self, claim, timeout) -> None:
        pass

    def job_finished(self, claim) -> None:
        pass

    def fault(self, reason: str, detail: str = "") -> None:
        self.faults.append(reason)
        self.lifetime.end(reason)


def _pool() -> SimpleNamespace:
    stand_in = SimpleNamespace(config=SimpleNamespace(health=SimpleNamespace(job_timeout_s=60)),
                               _lost_reason=Pool._lost_reason)
    stand_in._cause = functools.partial(Pool._cause, stand_in)
    return stand_in


async def _run_with(withdraw_after: float | None, *, behind_another: bool) -> tuple[str, list[str]]:
    """Run one claim whose link breaks; ``behind_another``: a prompt of ours runs ahead of it."""
    instance = StandInInstance()
    claim = Claim(instance, instance.lifetime)  # type: ignore[arg-type]
    if behind_another:  # ComfyUI runs another prompt of ours first, so this one has not started
        ahead = Claim(instance, instance.lifetime)  # type: ignore[arg-type]
        ahead.submitted.set()
        ahead.running = True
        instance.lifetime.claims.append(ahead)
    instance.lifetime.claims.append(claim)
    claim.running = True
    if withdraw_after is not None:
        asyncio.get_running_loop().call_later(withdraw_after, claim.withdrawn.set_result, None)
    with pytest.raises(InstanceLost) as lost:
        await Pool.run(_pool(), claim, {})  # type: ignore[arg-type]
    return lost.value.reason, instance.faults


def test_a_prompt_withdrawn_while_its_run_sees_it_vanish_is_not_started_and_no_fault(monkeypatch) -> None:
    monkeypatch.setattr(pool_module, "LOST_CAUSE_WAIT_S", 2.0)
    reason, faults = asyncio.run(_run_with(withdraw_after=0.2, behind_another=True))
    assert (reason, faults) == (NOT_STARTED, [])


def test_a_prompt_that_vanishes_with_no_withdraw_still_counts_as_an_unresponsive_instance(monkeypatch) -> None:
    monkeypatch.setattr(pool_module, "LOST_CAUSE_WAIT_S", 0.2)
    reason, faults = asyncio.run(_run_with(withdraw_after=None, behind_another=False))
    assert (reason, faults) == ("unresponsive", ["unresponsive"])
    reason, faults = asyncio.run(_run_with(withdraw_after=None, behind_another=True))
    assert (reason, faults) == (NOT_STARTED, ["unresponsive"])  # the waiting prompt's attempt is not counted
