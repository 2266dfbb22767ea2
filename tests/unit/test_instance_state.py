"""Only ``Instance`` changes its state, along ``TRANSITIONS``; the watchdog reports, the instance decides.

Pure logic on a real ``Instance`` that never launches a process (its config is a stand-in), and a
real ``Watchdog`` whose ComfyUI is a recorder of ``/free`` calls.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest

from cak.install_state import InstallState
from supervisor.instance import TRANSITIONS, Claim, Instance, InvalidTransition, Lifetime
from supervisor.states import InstanceState
from supervisor.watchdog import FREE_REPEAT_AFTER_S, Watchdog, WatchdogReport

S = InstanceState


def make_instance(tmp_path: Path, **health: float) -> tuple[Instance, list[str]]:
    changes: list[str] = []
    config = SimpleNamespace(name="comfy-t", port=0, extra_args=(), cuda_device=None)
    policy = SimpleNamespace(restart=SimpleNamespace(window_s=60.0), max_jobs=0, **health)
    install = InstallState(comfyui_path=str(tmp_path), comfyui_version="test", embedded=True, python="python3",
                           models_dir=str(tmp_path), extra_model_paths="", linked=False)
    instance = Instance(config, policy, tmp_path, install, extra_model_paths=[], keep_metadata=False,  # type: ignore[arg-type]
                        on_change=lambda i: changes.append(i.state.value))
    return instance, changes


def test_a_whole_life_along_the_table_is_allowed_and_each_change_is_announced(tmp_path):
    instance, changes = make_instance(tmp_path)
    path = [S.STARTING, S.READY, S.BUSY, S.READY, S.DRAINING, S.RESTARTING, S.STARTING, S.FAILED, S.STARTING,
            S.READY, S.STOPPED]
    for state in path:
        instance._set_state(state)
        instance._set_state(state)  # staying put is no change
    assert changes == [state.value for state in path]


@pytest.mark.parametrize(("old", "new"), [
    (old, new) for old, new in itertools.product(S, S) if old is not new and new not in TRANSITIONS[old]])
def test_every_change_outside_the_table_raises_and_leaves_the_state(tmp_path, old, new):
    instance, changes = make_instance(tmp_path)
    instance.state = old
    with pytest.raises(InvalidTransition, match=f"{old.value} → {new.value}"):
        instance._set_state(new)
    assert instance.state is old and changes == []


def test_the_table_names_every_state_and_a_busy_instance_cannot_be_claimed_or_skip_starting(tmp_path):
    assert set(TRANSITIONS) == set(S)
    assert S.BUSY not in TRANSITIONS[S.STOPPED] | TRANSITIONS[S.FAILED] | TRANSITIONS[S.RESTARTING]
    assert S.READY not in TRANSITIONS[S.RESTARTING] | TRANSITIONS[S.FAILED]


def test_the_instance_acts_on_reports_about_its_current_process_only(tmp_path):
    async def scenario() -> None:
        instance, changes = make_instance(tmp_path)
        old, current = Lifetime(), Lifetime()
        old_report = instance._watchdog_report(old)
        instance.lifetime = current
        report = instance._watchdog_report(current)
        old_report.leak("RSS over the limit")           # about a process that is gone: dropped
        old_report.measured(999.0, None)
        old_report.idle_freed(30.0)
        assert not current.ended.done() and instance.rss_mb is None and instance.idle_frees == 0
        report.measured(512.0, None)
        report.idle_freed(30.0)
        assert instance.rss_mb == 512.0 and instance.idle_frees == 1
        current.claims.append(Claim(instance, current))  # a job holds it
        instance.state = S.BUSY
        report.leak("RSS over the limit")               # graceful: after the running job
        assert not current.ended.done() and current.pending_reason == "leak" and instance.state is S.DRAINING
        report.fault("hang", "no progress event for 9 s")  # hard: now
        assert await current.ended == "hang"
        assert changes[-1] == S.DRAINING.value

    asyncio.run(scenario())


class RecordingComfy:
    def __init__(self) -> None:
        self.frees = 0

    async def free(self, unload_models: bool, free_memory: bool) -> None:
        assert unload_models and free_memory
        self.frees += 1


def test_the_watchdog_frees_an_idle_instance_twice_at_most_per_idle_period_and_reports_it_once():
    async def scenario() -> tuple[int, list[float]]:
        now = [1000.0]
        life = SimpleNamespace(job_claimed=False, idle_since=now[0])  # the times the watchdog reads
        comfy, freed = RecordingComfy(), []
        report = WatchdogReport(fault=lambda *_: None, leak=lambda _: None, idle_freed=freed.append,
                                measured=lambda *_: None)
        watchdog = Watchdog(url="http://127.0.0.1:9", health=SimpleNamespace(idle_free_s=5.0, probe_timeout_s=1.0),  # type: ignore[arg-type]
                            times=life, report=report, log=SimpleNamespace(warning=print, info=print),  # type: ignore[arg-type]
                            pid=lambda: None, job_client=lambda: comfy, clock=lambda: now[0])

        async def after(seconds: float) -> int:
            now[0] += seconds
            await watchdog.idle_tick()
            return comfy.frees

        try:
            assert await after(4.0) == 0                     # not idle long enough yet
            assert await after(2.0) == 1                     # 6 s idle: the first /free
            assert await after(FREE_REPEAT_AFTER_S - 2) == 1  # the repeat: idle_free_s + FREE_REPEAT_AFTER_S
            assert await after(1.0) == 2                     # the second, and never a third
            assert await after(100.0) == 2 and freed == [6.0]
            life.job_claimed = True                          # nothing while a job holds the instance
            assert await after(100.0) == 2
            life.job_claimed, life.idle_since = False, now[0]  # released: a new idle period
            assert await after(6.0) == 3
            return comfy.frees, freed
        finally:
            await watchdog.probe_client.close()

    frees, freed = asyncio.run(scenario())
    assert frees == 3 and freed == [6.0, 6.0]


def test_leak_measurements_become_a_leak_report_with_the_reason():
    async def scenario() -> list[str]:
        leaks: list[str] = []
        health = SimpleNamespace(probe_timeout_s=1.0, max_rss_mb=0, max_rss_growth_mb=100.0, max_device_mem_mb=0,
                                 max_device_mem_growth_mb=0)
        memory = iter([(1000.0, None), (1000.0, None), (1050.0, None), (1200.0, None)])
        report = WatchdogReport(fault=lambda *_: None, leak=leaks.append, idle_freed=lambda _: None,
                                measured=lambda *_: None)
        watchdog = Watchdog(url="http://127.0.0.1:9", health=health, times=Lifetime(), report=report,  # type: ignore[arg-type]
                            log=SimpleNamespace(info=lambda *a: None), pid=lambda: None,  # type: ignore[arg-type]
                            job_client=lambda: None)

        async def measure(rescan: bool = True) -> tuple[float | None, float | None]:
            return next(memory)

        watchdog.measure = measure  # type: ignore[method-assign]
        try:
            await watchdog.after_job()                  # the first job: its memory is the baseline (and fine)
            await watchdog.check_memory()               # +50 MB: within the growth limit
            await watchdog.check_memory()               # +200 MB: a leak
            return leaks
        finally:
            await watchdog.probe_client.close()

    leaks = asyncio.run(scenario())
    assert leaks == ["RSS 1200 MB grew 200 MB over its baseline of 1000 MB (limit 100 MB)"]
