"""The checks that watch one live ComfyUI process, each with its own restart reason.

- ``unresponsive``: ``/system_stats`` failed ``probe_failures`` times in a row (e.g. SIGSTOP);
- ``hang``: a job runs and no websocket event came for ``step_timeout_s``, or it passed its deadline.
  ComfyUI's HTTP side keeps answering while its worker thread is stuck, so probes cannot see this;
- ``leak``: the RSS of the process tree (or, on a GPU, torch's reserved memory) passed its limit or
  grew too far over the baseline taken after warm-up;
- idle release: ``POST /free`` after ``idle_free_s`` without work.
Crashes are not polled for: ``Instance`` learns of an exit from the launcher's pidfd wait
(``cak.comfy_process.wait_exit``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cak.comfy_client import ComfyClient
from cak.errors import ComfyError

from .process_watch import ProcessTree
from .settings import HealthSettings

MB = 2**20
# ComfyUI's worker can miss the wake-up of a /free that arrives while it collects garbage (up to
# every 10 s after a prompt); it then acts only after the next prompt. A second /free after this
# many seconds wakes it for sure (unloading what is already unloaded costs nothing).
FREE_REPEAT_AFTER_S = 12.0


class JobTimes(Protocol):
    """What the watchdog reads of the process lifetime it watches (the instance writes it)."""

    job_claimed: bool                # a job holds the instance (between acquire and release)
    job_started_at: float | None     # monotonic time a prompt started, while one runs
    last_event_at: float             # the last websocket event of that prompt
    job_deadline: float | None
    idle_since: float                # when the last job was released


@dataclass(frozen=True)
class WatchdogReport:
    """Where the watchdog's findings go; the instance decides what each means for its state."""

    fault: Callable[[str, str], None]       # (reason, detail): unresponsive or hang, end the process now
    leak: Callable[[str], None]             # (detail): memory over a limit, restart when no job runs
    idle_freed: Callable[[float], None]     # (idle seconds): the models were unloaded by /free
    measured: Callable[[float | None, float | None], None]  # (RSS MB, device MB) just measured


class Watchdog:
    """Probe, heartbeat, memory and idle loops for one process lifetime: measures, reports, decides nothing."""

    def __init__(self, *, url: str, health: HealthSettings, times: JobTimes, report: WatchdogReport,
                 log: logging.Logger | logging.LoggerAdapter, pid: Callable[[], int | None],
                 job_client: Callable[[], ComfyClient | None], on_gpu: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.health = health
        self.times = times
        self.report = report
        self.log = log
        self._pid = pid
        self._job_client = job_client  # /free goes on the jobs' connection, not the probes'
        self.on_gpu = on_gpu
        self.clock = clock  # the monotonic time the ``times`` are in
        # Probes get their own client: their timeout is short, a job's HTTP calls may be slow.
        self.probe_client = ComfyClient(url, request_timeout=health.probe_timeout_s,
                                        connect_timeout=health.probe_timeout_s)
        self.last_stats: dict | None = None
        self.baseline_rss_mb: float | None = None
        self.baseline_device_mb: float | None = None
        self._idle_period = times.idle_since
        self._frees_sent = 0  # idle /free requests sent in the current idle period
        self._tasks: list[asyncio.Task[None]] = []
        self._tree: ProcessTree | None = None

    async def open(self) -> None:
        await self.probe_client.__aenter__()

    def start(self, name: str) -> None:
        loops = [self._probe_loop(), self._heartbeat_loop(), self._memory_loop()]
        if self.health.idle_free_s:
            loops.append(self._idle_loop())
        self._tasks = [asyncio.create_task(loop, name=f"watchdog {name}") for loop in loops]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.probe_client.close()

    # ------------------------------------------------------------------ unresponsive

    async def _probe_loop(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self.health.probe_interval_s)
            try:
                self.last_stats = await self.probe_client.system_stats()
                failures = 0
            except ComfyError as exc:
                failures += 1
                self.log.warning("health probe %d/%d failed: %s", failures, self.health.probe_failures, exc)
                if failures >= self.health.probe_failures:
                    self.report.fault("unresponsive", f"{failures} health probes failed in a row")
                    return

    # ------------------------------------------------------------------ hang

    async def _heartbeat_loop(self) -> None:
        tick = min(1.0, self.health.step_timeout_s / 4)
        times = self.times
        while True:
            await asyncio.sleep(tick)
            if times.job_started_at is None:
                continue
            now = self.clock()
            silence = now - times.last_event_at
            if silence >= self.health.step_timeout_s:
                self.report.fault("hang", f"no progress event for {silence:.0f} s while a job runs")
                return
            if times.job_deadline is not None and now >= times.job_deadline:
                ran = now - times.job_started_at
                self.report.fault("hang", f"job running for {ran:.0f} s, past its limit")
                return

    # ------------------------------------------------------------------ leak

    async def _memory_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health.memory_interval_s)
            await self.check_memory()

    async def measure(self, rescan: bool = True) -> tuple[float | None, float | None]:
        """(RSS of the process tree, device memory) in MB, also reported as ``measured``.

        ``rescan=False`` (after a job): the processes of the tree as the last walk found them.
        """
        pid = self._pid()
        if pid is not None and (self._tree is None or self._tree.pid != pid):
            self._tree = ProcessTree(pid)
        memory = None if pid is None else await asyncio.to_thread(self._tree.memory, rescan)
        rss = None if memory is None else memory.rss_mb
        device = self._device_mem_mb()
        self.report.measured(rss, device)
        return rss, device

    def _device_mem_mb(self) -> float | None:
        """torch's reserved memory on this instance's GPU, from the last probe (None on the CPU).

        ``/system_stats`` reports ``vram_*`` device-wide; ``torch_vram_total`` is what this process's
        torch holds, which is the part a restart gives back.
        """
        if not self.on_gpu or not self.last_stats:
            return None
        devices = self.last_stats.get("devices") or []
        if not devices or devices[0].get("type") != "cuda":
            return None
        return float(devices[0].get("torch_vram_total", 0)) / MB

    async def take_baseline(self) -> None:
        """Memory with the models loaded: what growth is measured against."""
        self.baseline_rss_mb, self.baseline_device_mb = await self.measure()
        self.log.info("memory baseline: RSS %s MB, device %s MB", _mb(self.baseline_rss_mb),
                      _mb(self.baseline_device_mb))

    async def after_job(self) -> None:
        """Check memory between jobs, so a leak restarts before the next job, not during it."""
        if self.baseline_rss_mb is None:
            await self.take_baseline()  # no warm-up: the first job loaded the models
        await self.check_memory(rescan=False)

    async def check_memory(self, rescan: bool = True) -> None:
        rss, device = await self.measure(rescan)
        problem = self.leak(rss, device)
        if problem:
            self.report.leak(problem)

    def leak(self, rss: float | None, device: float | None) -> str | None:
        """What is wrong with these measurements (None when they are within the limits)."""
        health = self.health
        for label, value, limit, baseline, growth in (
                ("RSS", rss, health.max_rss_mb, self.baseline_rss_mb, health.max_rss_growth_mb),
                ("device memory", device, health.max_device_mem_mb, self.baseline_device_mb,
                 health.max_device_mem_growth_mb)):
            if value is None:
                continue
            if limit and value > limit:
                return f"{label} {value:.0f} MB is over the limit of {limit:.0f} MB"
            if growth and baseline is not None and value - baseline > growth:
                return (f"{label} {value:.0f} MB grew {value - baseline:.0f} MB over its baseline "
                        f"of {baseline:.0f} MB (limit {growth:.0f} MB)")
        return None

    # ------------------------------------------------------------------ idle release

    async def _idle_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self.idle_tick()

    async def idle_tick(self) -> None:
        """One look at idleness: a /free when the idle period is long enough (twice at most)."""
        times = self.times
        if times.idle_since != self._idle_period:  # a job ran since: a new idle period
            self._idle_period, self._frees_sent = times.idle_since, 0
        idle = self.clock() - times.idle_since
        due = self.health.idle_free_s + FREE_REPEAT_AFTER_S * self._frees_sent
        if self._frees_sent >= 2 or times.job_claimed or idle < due:
            return
        # At most two attempts per idle period, never retried at once: a request still in
        # flight when the next job starts would unload the models right after that job.
        self._frees_sent += 1
        client = self._job_client()
        if client is None:  # the process is going away
            return
        try:
            await client.free(unload_models=True, free_memory=True)
        except ComfyError as exc:
            self.log.warning("idle /free failed: %s", exc)
            return
        if self._frees_sent == 1:
            self.report.idle_freed(idle)


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
