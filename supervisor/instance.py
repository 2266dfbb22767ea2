"""One supervised ComfyUI instance: its process lifetimes, its state, and why it restarted.

A ``Lifetime`` is one process from launch to stop; it ends with a reason (``crash``, ``hang``,
``leak``, …) and the supervising task decides, through the restart policy, whether and when the
next one starts. Hard faults end a lifetime at once; graceful reasons (leak, recycle, request) wait
for the running job to be released. States: STARTING → READY ⇄ BUSY → DRAINING → RESTARTING, and
FAILED after too many fault restarts in the window (until a restart is requested); ``TRANSITIONS``
lists every allowed change, and any other raises ``InvalidTransition`` (a bug, not a condition).
The watchdog only measures and reports (``WatchdogReport``): this class alone changes its state.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cak.comfy_client import ComfyClient, PromptStream
from cak.comfy_process import ComfyLaunch, ComfyProcess, ComfyStartError, wait_exit
from cak.errors import ComfyError, RunTimeout
from cak.install_state import InstallState

from .restart_policy import RestartPolicy
from .settings import HealthSettings, InstanceSettings
from .states import InstanceState
from .warmup import warmup_graph
from .watchdog import Watchdog, WatchdogReport

logger = logging.getLogger("supervisor.instance")

SHUTDOWN = "shutdown"  # a lifetime ended by Pool.stop: not a restart


_S = InstanceState
# Every allowed state change (staying in the same state is always allowed, and is no change).
TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    _S.STOPPED: frozenset({_S.STARTING}),
    _S.STARTING: frozenset({_S.READY, _S.DRAINING, _S.RESTARTING, _S.FAILED, _S.STOPPED}),
    _S.READY: frozenset({_S.BUSY, _S.DRAINING, _S.RESTARTING, _S.FAILED, _S.STOPPED}),
    _S.BUSY: frozenset({_S.READY, _S.DRAINING, _S.RESTARTING, _S.FAILED, _S.STOPPED}),
    _S.DRAINING: frozenset({_S.READY, _S.RESTARTING, _S.FAILED, _S.STOPPED}),
    _S.RESTARTING: frozenset({_S.STARTING, _S.STOPPED}),
    _S.FAILED: frozenset({_S.STARTING, _S.STOPPED}),
}
_PER_JOB_STATES = frozenset({_S.READY, _S.BUSY})  # the change every job makes, logged at DEBUG


class InvalidTransition(RuntimeError):
    """An instance was asked to change state in a way ``TRANSITIONS`` does not allow: a bug."""


@dataclass(frozen=True)
class InstanceSnapshot:
    """What an instance looks like right now (for status pages, metrics and ``on_change``)."""

    name: str
    state: InstanceState
    url: str
    pid: int | None
    rss_mb: float | None
    device_mem_mb: float | None
    jobs_run: int
    restarts: dict[str, int]
    last_restart_reason: str | None
    started_at: float | None  # wall-clock time the current process was launched
    idle_frees: int
    drained: bool


class InstanceLog(logging.LoggerAdapter):
    """Puts the instance name in every record (``record.instance``) and in front of the message."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs.setdefault("extra", {})["instance"] = self.extra["instance"]
        return f"[{self.extra['instance']}] {msg}", kwargs


@dataclass(eq=False)
class Claim:
    """One job's hold on an instance, from ``acquire`` to ``release``.

    With prefetch an instance holds several: the prompt ComfyUI runs and the ones waiting behind it
    in ComfyUI's own queue. Only a claim whose prompt *started* is a job (``max_jobs``, memory
    check, a counted attempt when the instance is lost); ``withdrawn`` resolves once a prompt that
    never started was taken back out of ComfyUI's queue (drain, graceful restart, cancel).
    """

    instance: Instance
    life: Lifetime
    prompt_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    submitted: asyncio.Event = field(default_factory=asyncio.Event)  # POST /prompt answered
    ran: bool = False            # Pool.run was called for it
    running: bool = False        # Pool.run follows its prompt
    executing: bool = False      # ComfyUI said execution_start for it
    done_in_comfy: bool = False  # ComfyUI said it ended (success, error, interrupted)
    started_at_loss: bool | None = None  # decided when the process went away under it
    deadline: float | None = None
    timeout: float | None = None
    withdrawn: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())

    # What a job needs of its instance (the dispatcher and the ComfyUI door use these).
    @property
    def name(self) -> str:
        return self.instance.name

    @property
    def client(self) -> ComfyClient | None:
        return self.instance.client if self.life is self.instance.lifetime else None

    @property
    def stream(self) -> PromptStream | None:
        """The instance's one websocket, on which the prompt's events arrive."""
        return self.instance.stream if self.life is self.instance.lifetime else None

    @property
    def process(self) -> ComfyProcess:
        return self.instance.process

    @property
    def state(self) -> InstanceState:
        return self.instance.state

    @property
    def started(self) -> bool:
        """ComfyUI runs (or ran) this prompt: it said so, or nothing of ours is ahead of it."""
        if self.started_at_loss is not None:
            return self.started_at_loss
        if self.executing or self.done_in_comfy:
            return True
        if not self.submitted.is_set():
            return False
        ahead = self.life.claims[:self.life.claims.index(self)] if self in self.life.claims else []
        return not any(other.submitted.is_set() and other.running and not other.done_in_comfy
                       for other in ahead)


class Lifetime:
    """One process from launch to stop; ``ended`` resolves with the reason it must go."""

    def __init__(self) -> None:
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pending_reason: str | None = None  # graceful restart waiting for the jobs to end
        self.claims: list[Claim] = []           # between acquire and release, oldest first
        self.job_started_at: float | None = None  # since when a prompt of ours is in ComfyUI (Pool.run)
        self.last_event_at = 0.0
        self.job_deadline: float | None = None  # the earliest deadline of a started prompt
        self.jobs = 0
        self.checks_running = 0  # memory checks after a job still under way
        self.idle_since = time.monotonic()

    @property
    def job_claimed(self) -> bool:
        return bool(self.claims)

    def end(self, reason: str) -> bool:
        """Decide the reason (the first one wins); False if it was already decided.

        Which held prompts had started is fixed here, at once: a prompt still waiting in ComfyUI's
        queue goes back to ours without using up an attempt.
        """
        if self.ended.done():
            return False
        for claim in self.claims:
            claim.started_at_loss = claim.started
        self.ended.set_result(reason)
        return True

    def update_job_clock(self) -> None:
        """``job_started_at`` / ``job_deadline`` for the watchdog, from the claims Pool.run follows.

        A prompt queued behind another one in ComfyUI is not silent: the running one's events keep
        the instance's heartbeat, and its own deadline starts when it starts.
        """
        running = [claim for claim in self.claims if claim.running]
        if not running:
            self.job_started_at = self.job_deadline = None
            return
        if self.job_started_at is None:
            self.job_started_at = self.last_event_at = time.monotonic()
        deadlines = [claim.deadline for claim in running if claim.deadline is not None]
        self.job_deadline = min(deadlines) if deadlines else None


class Instance:
    """A ComfyUI process kept alive by a supervising task (see the module docstring)."""

    def __init__(self, config: InstanceSettings, health: HealthSettings, base_dir: Path, install: InstallState, *,
                 extra_model_paths: list[Path], keep_metadata: bool,
                 on_change: Callable[[Instance], None], prefetch: int = 0) -> None:
        """``prefetch``: how many jobs may wait in this ComfyUI's own queue behind the running one."""
        self.config = config
        self.name = config.name
        self.health = health
        self.prefetch = prefetch
        self.process = ComfyProcess(ComfyLaunch(
            base_dir=base_dir, port=config.port or 0, extra_args=list(config.extra_args),
            extra_model_paths=list(extra_model_paths), cuda_device=config.cuda_device,
            keep_metadata=keep_metadata), install)
        self.policy = RestartPolicy(health.restart)
        self.log = InstanceLog(logger, {"instance": self.name})
        self.state = InstanceState.STOPPED
        self.lifetime: Lifetime | None = None
        self.client: ComfyClient | None = None  # for jobs; open while the process serves
        self.stream: PromptStream | None = None  # every job's events, one socket while the process serves
        self.watchdog: Watchdog | None = None
        self.jobs_run = 0
        self.restarts: Counter[str] = Counter()
        self.last_restart_reason: str | None = None
        self.started_at: float | None = None
        self.rss_mb: float | None = None
        self.device_mem_mb: float | None = None
        self.idle_frees = 0
        self.drained = False
        self._on_change = on_change
        self._stopping = False
        self._revive = asyncio.Event()
        self._launched = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._after_job_task: asyncio.Task[None] | None = None  # referenced so it is not collected
        self._withdraw_tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ views

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process.running() else None

    def snapshot(self) -> InstanceSnapshot:
        return InstanceSnapshot(
            name=self.name, state=self.state, url=self.url, pid=self.pid,
            rss_mb=None if self.rss_mb is None else round(self.rss_mb, 1),
            device_mem_mb=None if self.device_mem_mb is None else round(self.device_mem_mb, 1),
            jobs_run=self.jobs_run, restarts=dict(self.restarts),
            last_restart_reason=self.last_restart_reason,
            started_at=self.started_at, idle_frees=self.idle_frees, drained=self.drained,
        )

    def _set_state(self, state: InstanceState) -> None:
        if state is self.state:
            return
        if state not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"instance {self.name}: {self.state.value} → {state.value} is not allowed")
        # READY ↔ BUSY happens at every job: not worth an INFO line (a write) each time.
        per_job = {self.state, state} == _PER_JOB_STATES
        self.log.log(logging.DEBUG if per_job else logging.INFO, "%s → %s", self.state.value, state.value)
        self.state = state
        self.changed()

    def changed(self) -> None:
        self._on_change(self)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Start supervising; returns once the first process has been launched (or failed to)."""
        self._task = asyncio.create_task(self._supervise(), name=f"instance {self.name}")
        await self._launched.wait()

    async def stop(self) -> None:
        """End the current process (a running job is lost with reason ``shutdown``) and stay down."""
        self._stopping = True
        self._revive.set()
        if self.lifetime is not None:
            self.lifetime.end(SHUTDOWN)
        if self._task is not None:
            await self._task
        self._set_state(InstanceState.STOPPED)

    async def _supervise(self) -> None:
        while not self._stopping:
            try:
                reason = await self._live()
            except Exception:  # a bug here must not leave the instance unsupervised
                self.log.exception("supervision failed; treating it as a crash")
                self._launched.set()
                reason = "crash"
            if self._stopping:
                return
            self.restarts[reason] += 1
            self.last_restart_reason = reason
            decision = self.policy.decide(reason, time.monotonic())
            if decision.give_up:
                self.log.error("%d fault restarts within %g s: FAILED until a restart is requested",
                               decision.faults_in_window, self.health.restart.window_s)
                self._set_state(InstanceState.FAILED)
                self._revive.clear()
                await self._revive.wait()
                self.policy.reset()
                continue
            self._set_state(InstanceState.RESTARTING)
            if decision.delay_s:
                self.log.warning("restart (%s) in %.1f s (%d faults in the window)", reason,
                                 decision.delay_s, decision.faults_in_window)
                await self._sleep_unless_stopping(decision.delay_s)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        self._revive.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._revive.wait()
        except TimeoutError:
            pass

    async def _live(self) -> str:
        """One process: launch, become READY, serve until a reason to end comes, stop it."""
        life = self.lifetime = Lifetime()
        self._set_state(InstanceState.STARTING)
        exit_watch: asyncio.Task[None] | None = None
        try:
            try:
                self.process.start()
            except OSError as exc:
                self.log.error("cannot launch ComfyUI: %s", exc)
                life.end("crash")
            else:
                self.started_at = time.time()
                self.log.info("launched pid %d on %s (log %s)", self.process.pid, self.url,
                              self.process.launch.log_path)
                exit_watch = asyncio.create_task(self._watch_exit(life))
            self._launched.set()
            if not life.ended.done() and await self._become_ready(life):
                life.idle_since = time.monotonic()
                self.watchdog.start(self.name)
                self._set_state(InstanceState.DRAINING if self.drained else InstanceState.READY)
            reason = await life.ended
            self._log_end(reason)
            return reason
        finally:
            if exit_watch is not None:
                exit_watch.cancel()
            await self._shut_down_process(life)

    def _log_end(self, reason: str) -> None:
        if reason == SHUTDOWN:
            self.log.info("stopping")
        else:
            self.log.warning("restarting: %s", reason)

    async def _shut_down_process(self, life: Lifetime) -> None:
        if self.watchdog is not None:
            await self.watchdog.stop()
            self.watchdog = None
        if self.stream is not None:
            await self.stream.close()
            self.stream = None
        if self.client is not None:
            await self.client.close()
            self.client = None
        started = self.state is InstanceState.STARTING
        await self.process.stop(grace=self.health.kill_grace_s)
        if started and self.config.port is None:
            self.process.port = 0  # the auto-picked port may be what failed: pick again next time
        self.rss_mb = self.device_mem_mb = None

    async def _watch_exit(self, life: Lifetime) -> None:
        popen = self.process.popen
        assert popen is not None
        code = await wait_exit(popen)
        if not life.ended.done():
            self.log.error("ComfyUI exited with code %s; log tail:\n%s", code, self.process.log_tail(8))
            life.end("crash")

    async def _become_ready(self, life: Lifetime) -> bool:
        """Wait for ``/system_stats``, then the warm-up; on failure end ``life`` and say False."""
        answered = asyncio.create_task(self.process.wait_ready(self.health.start_timeout_s))
        await asyncio.wait({answered, life.ended}, return_when=asyncio.FIRST_COMPLETED)
        if life.ended.done():
            answered.cancel()
            return False
        try:
            answered.result()
        except ComfyStartError as exc:
            self.log.error("%s", exc)
            life.end("unresponsive" if self.process.running() else "crash")
            return False
        self.client = ComfyClient(self.url)
        await self.client.__aenter__()
        self.watchdog = Watchdog(url=self.url, health=self.health, times=life, report=self._watchdog_report(life),
                                 log=self.log, pid=lambda: self.pid, job_client=lambda: self.client,
                                 on_gpu=self.config.cuda_device is not None)
        await self.watchdog.open()
        if not await self._open_stream(life):
            return False
        if self.health.warmup and not await self._warm_up(life):
            return False
        if self.health.warmup:
            await self.watchdog.take_baseline()
        return not life.ended.done()

    async def _open_stream(self, life: Lifetime) -> bool:
        """The one websocket every job of this process follows (it reconnects by itself if dropped)."""
        assert self.client is not None
        stream = PromptStream(self.client)
        try:
            await stream.open()
        except ComfyError as exc:
            self.log.error("cannot open the event socket: %s", exc)
            life.end("unresponsive" if self.process.running() else "crash")
            return False
        self.stream = stream
        return True

    async def _warm_up(self, life: Lifetime) -> bool:
        graph = warmup_graph(self.health.warmup_graph)
        started = time.monotonic()
        run = asyncio.create_task(self.client.run(graph, timeout=self.health.warmup_timeout_s,
                                                  step_timeout=self.health.step_timeout_s, stream=self.stream))
        await asyncio.wait({run, life.ended}, return_when=asyncio.FIRST_COMPLETED)
        if life.ended.done():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            return False
        try:
            run.result()
        except RunTimeout as exc:
            self.log.error("warm-up stuck: %s", exc)
            life.end("hang")
            return False
        except ComfyError as exc:
            self.log.error("warm-up failed: %s", exc)
            life.end("warmup" if self.process.running() else "crash")
            return False
        self.log.info("warm-up done in %.1f s", time.monotonic() - started)
        return True

    # ------------------------------------------------------------------ what the watchdog reports

    def _watchdog_report(self, life: Lifetime) -> WatchdogReport:
        """The watchdog's findings about ``life``; dropped once that process is no longer current."""
        def fault(reason: str, detail: str) -> None:
            if life.end(reason):
                self.log.error("%s: %s", reason, detail)

        def leak(detail: str) -> None:
            if life is self.lifetime:
                self.request_restart("leak", detail)

        def idle_freed(idle_s: float) -> None:
            if life is self.lifetime:
                self.idle_frees += 1
                self.log.info("idle for %.0f s: sent /free (unload models, drop cached outputs)", idle_s)
                self.changed()

        def measured(rss_mb: float | None, device_mb: float | None) -> None:
            if life is self.lifetime:
                self.rss_mb, self.device_mem_mb = rss_mb, device_mb

        return WatchdogReport(fault=fault, leak=leak, idle_freed=idle_freed, measured=measured)

    # ------------------------------------------------------------------ faults and restarts

    def fault(self, reason: str, detail: str = "") -> None:
        """A hard fault (crash, unresponsive, hang): the process is killed and restarted now."""
        life = self.lifetime
        if life is not None and life.end(reason):
            self.log.error("%s: %s", reason, detail or "detected")

    def request_restart(self, reason: str, detail: str = "") -> None:
        """A graceful restart (leak, recycle, request): after the running job, or now when idle."""
        if self.state is InstanceState.FAILED:
            self.log.info("restart requested while FAILED: trying again")
            self._revive.set()
            return
        life = self.lifetime
        if life is None or life.ended.done():
            return
        if life.job_claimed:
            if life.pending_reason is None:
                life.pending_reason = reason
                # INFO: the one WARNING is "restarting: <reason>" when the restart happens.
                self.log.info("%s: %s; restart after the current job", reason, detail or "requested")
                self._set_state(InstanceState.DRAINING)
                self._withdraw_waiting(life)
            return
        self.log.info("%s: %s", reason, detail or "requested")
        life.end(reason)

    def drain(self) -> None:
        """Take no more jobs (the running one finishes) until a restart is requested."""
        self.drained = True
        if self.state is InstanceState.READY:
            self._set_state(InstanceState.DRAINING)
        elif self.lifetime is not None and not self.lifetime.ended.done():
            self._withdraw_waiting(self.lifetime)  # prefetched prompts run elsewhere
        self.changed()

    def undrain(self) -> None:
        self.drained = False

    # ------------------------------------------------------------------ jobs (called by the pool)

    def can_prefetch(self) -> bool:
        """A BUSY instance may take one more job into ComfyUI's queue behind the running one."""
        life = self.lifetime
        if (self.state is not InstanceState.BUSY or life is None or life.ended.done() or self.drained
                or life.pending_reason is not None or not life.claims or len(life.claims) > self.prefetch):
            return False
        return not self.health.max_jobs or life.jobs + len(life.claims) < self.health.max_jobs

    def claim(self) -> Claim:
        """READY → BUSY for one job, or one more job on a BUSY instance (``can_prefetch``)."""
        assert self.lifetime is not None
        assert self.state is InstanceState.READY or self.can_prefetch()
        life = self.lifetime
        claim = Claim(self, life)
        life.claims.append(claim)
        self._set_state(InstanceState.BUSY)
        self.changed()
        return claim

    def job_started(self, claim: Claim, timeout: float) -> None:
        """Pool.run follows ``claim``'s prompt; its deadline runs from now if nothing is ahead of it,
        else from its ``execution_start``."""
        head = not any(other.running and not other.done_in_comfy for other in claim.life.claims)
        claim.ran = claim.running = True
        claim.timeout = timeout
        if head:
            claim.deadline = time.monotonic() + timeout
        claim.life.update_job_clock()

    def heartbeat(self, claim: Claim, event_type: str) -> None:
        """An event of one of this instance's prompts: ComfyUI's worker is alive."""
        life = claim.life
        now = life.last_event_at = time.monotonic()
        if event_type == "execution_start" and not claim.executing:
            claim.executing = True
            claim.deadline = now + (claim.timeout or 0.0)
            life.update_job_clock()
        elif event_type in ("execution_success", "execution_error", "execution_interrupted"):
            claim.done_in_comfy = True

    def job_finished(self, claim: Claim) -> None:
        claim.running = False
        claim.life.update_job_clock()

    async def withdraw(self, claim: Claim) -> bool:
        """Take a prompt that has not started back out of ComfyUI's queue (``POST /queue`` delete).

        True when it never ran and never will (``claim.withdrawn`` resolves, so its ``Pool.run``
        raises ``InstanceLost("not_started")``); False when it had started or its process is gone.
        """
        if claim.withdrawn.done():
            return True
        if claim.started or claim.life.ended.done():
            return False
        if not claim.ran:  # Pool.run not called yet: it will not submit the prompt
            claim.withdrawn.set_result(None)
            return True
        await self._until_submitted(claim)
        client = claim.client
        if client is None or claim.started or not claim.running:
            return False
        try:
            await client.delete_queued(claim.prompt_id)
            # ComfyUI moves a prompt pending → running → history under one lock: looked at in this
            # order after the delete, a prompt found nowhere was deleted before it started.
            queue = await client.queue()
            listed = {str(item[1]) for key in ("queue_running", "queue_pending") for item in queue.get(key, [])
                      if isinstance(item, list) and len(item) > 1}
            if claim.prompt_id in listed or await client.history(claim.prompt_id) is not None:
                return False
        except ComfyError as exc:
            self.log.warning("could not take prompt %s out of the queue: %s", claim.prompt_id, exc)
            return False
        if claim.withdrawn.done() or claim.life.ended.done():
            return claim.withdrawn.done()
        claim.withdrawn.set_result(None)
        self.log.info("prompt %s taken back out of ComfyUI's queue (it never started)", claim.prompt_id)
        return True

    async def _until_submitted(self, claim: Claim) -> None:
        """Until the prompt's POST /prompt was answered or its run ended (a delete sent earlier is lost)."""
        while claim.running and not claim.submitted.is_set() and not claim.life.ended.done():
            try:
                async with asyncio.timeout(0.05):
                    await claim.submitted.wait()
            except TimeoutError:
                pass

    def _withdraw_waiting(self, life: Lifetime) -> None:
        """Drain or a graceful restart: the prompts waiting behind the running one go back to our queue."""
        waiting = [claim for claim in life.claims if not claim.started]
        if waiting:
            task = asyncio.create_task(self._withdraw_all(waiting), name=f"withdraw {self.name}")
            self._withdraw_tasks.add(task)
            task.add_done_callback(self._withdraw_tasks.discard)

    async def _withdraw_all(self, claims: list[Claim]) -> None:
        for claim in claims:
            await self.withdraw(claim)

    def release(self, claim: Claim | None = None) -> None:
        """The job is over: check memory and job count, then READY (or restart if one is due).

        Without ``claim``: the oldest one (one job at a time, as before prefetch).
        """
        life = self.lifetime if claim is None else claim.life
        if life is None:
            return
        if claim is None:
            if not life.claims:
                return
            claim = life.claims[0]
        if claim not in life.claims:
            return  # released already
        counted = claim.ran and claim.started and not claim.withdrawn.done()
        life.claims.remove(claim)
        if life is not self.lifetime or life.ended.done():
            return  # its process is already gone; the new one was never claimed
        life.update_job_clock()
        if not life.claims:
            life.idle_since = time.monotonic()
        if counted:
            life.jobs += 1
            self.jobs_run += 1
            life.checks_running += 1
            self._after_job_task = asyncio.create_task(self._after_job(life), name=f"after job {self.name}")
        elif not life.claims and not life.checks_running:
            # acquired, then given back without a prompt that ran: nothing to check
            self._back_in_service(life)
        self.changed()

    async def _after_job(self, life: Lifetime) -> None:
        try:
            if self.watchdog is not None:
                await self.watchdog.after_job()
        finally:
            life.checks_running -= 1
        if not life.ended.done() and not life.claims and not life.checks_running:
            self._back_in_service(life)

    def _back_in_service(self, life: Lifetime) -> None:
        """READY (or DRAINING), unless a restart is due now that no job runs."""
        if life.pending_reason is not None:
            self.log.warning("job done: restarting (%s)", life.pending_reason)
            life.end(life.pending_reason)
        elif self.health.max_jobs and life.jobs >= self.health.max_jobs:
            self.log.info("%d jobs run: recycling", life.jobs)
            life.end("recycle")
        else:
            self._set_state(InstanceState.DRAINING if self.drained else InstanceState.READY)
