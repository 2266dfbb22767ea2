"""A pool of supervised ComfyUI instances: the Python API the job service builds on.

The pool hands out READY instances one job at a time (``acquire`` → ``run`` → ``release``), runs
prompts through the runner's ``ComfyClient`` while feeding each instance's hang heartbeat, and turns
an instance dying under a job into ``InstanceLost`` with the reason, so the caller can retry the job
elsewhere. Deterministic failures (``PromptRejected``, ``ExecutionFailed``, ``UnsafeContent``,
``Interrupted``) pass through unchanged: running them again would fail again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from cak.comfy_client import EventHandler
from cak.errors import NotComfyUI, RunTimeout, ServerGone, ServerUnreachable
from cak.events import ComfyEvent, RunResult
from cak.install_state import load_state

from .instance import Claim, Instance, InstanceSnapshot
from .job_store import NOT_STARTED  # a prefetched prompt lost before it ran: its attempt is not counted
from .settings import Settings
from .states import SERVING_STATES, InstanceState

logger = logging.getLogger("supervisor.pool")

# After a broken connection, how long to wait for the exit watch or the probes to name the cause.
LOST_CAUSE_WAIT_S = 3.0


class InstanceLost(Exception):
    """The instance went away under the job (crash, unresponsive, hang, or shutdown); retry elsewhere."""

    def __init__(self, reason: str, instance: str) -> None:
        self.reason = reason
        self.instance = instance
        super().__init__(f"instance {instance} was lost during the job ({reason})")


class PoolUnavailable(Exception):
    """No instance can become READY without an operator (all FAILED, drained or stopped)."""


class Pool:
    """N supervised ComfyUI instances (see the module docstring)."""

    def __init__(self, config: Settings, *, extra_model_paths: Iterable[Path] = (),
                 on_change: Callable[[InstanceSnapshot], None] | None = None, prefetch: int = 0) -> None:
        """``prefetch``: jobs an instance may hold in its ComfyUI's queue behind the running one
        (0: one job at a time)."""
        self.config = config
        self.prefetch = prefetch
        self._on_change = on_change
        install = dataclasses.replace(load_state(), comfyui_path=str(config.comfyui_path))
        paths = list(extra_model_paths)
        if config.model_folders:
            paths.append(config.output_root / "model_folders.yaml")
        self.instances: dict[str, Instance] = {
            spec.name: Instance(spec, config.health, config.output_root / spec.name, install,
                                extra_model_paths=paths, keep_metadata=config.keep_metadata,
                                on_change=self._instance_changed, prefetch=prefetch)
            for spec in config.instances
        }
        self._changed = asyncio.Event()
        self._stopped = False

    # ------------------------------------------------------------------ start and stop

    async def start(self) -> None:
        """Launch every instance; returns once all are launched (``wait_ready`` waits for READY)."""
        self.config.output_root.mkdir(parents=True, exist_ok=True)
        if self.config.model_folders:
            self._write_model_folders()
        for instance in self.instances.values():
            await instance.start()

    def _write_model_folders(self) -> None:
        """ComfyUI's extra-model-paths format: one section, a type per key, paths one per line."""
        lines = ["# Written by the supervisor from model_folders in its config.", "cak_supervisor:"]
        for kind, folders in self.config.model_folders.items():
            lines.append(f"  {kind}: |")
            lines += [f"    {folder}" for folder in folders]
        (self.config.output_root / "model_folders.yaml").write_text("\n".join(lines) + "\n")

    async def stop(self) -> None:
        """Stop every instance and its process group; no ComfyUI process is left behind."""
        self._stopped = True
        await asyncio.gather(*(instance.stop() for instance in self.instances.values()))
        self._notify()

    async def wait_ready(self, count: int = 1, timeout: float = 300) -> None:
        """Until ``count`` instances serve (READY or BUSY); ``TimeoutError`` or ``PoolUnavailable``."""
        async def serving() -> None:
            while True:
                up = sum(i.state in SERVING_STATES
                         for i in self.instances.values())
                if up >= count:
                    return
                if self._could_serve() < count:
                    raise PoolUnavailable(f"only {self._could_serve()} instances can serve, {count} needed")
                await self._changed.wait()

        async with asyncio.timeout(timeout):
            await serving()

    # ------------------------------------------------------------------ jobs

    async def acquire(self, timeout: float | None = None, *, name: str | None = None) -> Claim:
        """A claim on a READY instance, now BUSY with the caller's job: the one with fewest jobs
        run, or ``name``. With ``prefetch``, when none is READY, a BUSY one with room in its queue.

        The claim has the instance's ``name`` and ``client``; pass it to ``run`` and ``release``.
        ``TimeoutError`` after ``timeout``; ``PoolUnavailable`` when no instance (or ``name``) can serve.
        """
        wanted = list(self.instances.values()) if name is None else [self._get(name)]

        async def pick() -> Claim:
            while True:
                ready = [i for i in wanted if i.state is InstanceState.READY]
                if ready:
                    return min(ready, key=lambda i: i.jobs_run).claim()
                busy = [i for i in wanted if i.can_prefetch()]
                if busy:
                    return min(busy, key=lambda i: (len(i.lifetime.claims), i.jobs_run)).claim()
                if self._could_serve(wanted) == 0:
                    raise PoolUnavailable("no instance can take jobs: " + self._describe())
                await self._changed.wait()

        async with asyncio.timeout(timeout):
            return await pick()

    async def run(self, claim: Claim, graph: dict, *, on_event: EventHandler | None = None,
                  timeout: float | None = None) -> RunResult:
        """Run ``graph`` on an acquired instance, streaming its events to ``on_event``.

        ``timeout`` replaces ``health.job_timeout_s`` for this job; passing it, like a silence of
        ``step_timeout_s``, is a ``hang``: the instance is killed and ``InstanceLost`` raised. A
        prompt that was still waiting in ComfyUI's queue when its instance went away, or that
        ``withdraw`` took back out of it, raises ``InstanceLost("not_started")``.
        """
        instance, life = claim.instance, claim.life
        if life.ended.done():
            raise InstanceLost(self._lost_reason(claim, life.ended.result()), instance.name)
        if claim.withdrawn.done():
            raise InstanceLost(NOT_STARTED, instance.name)
        client, stream = claim.client, claim.stream
        if client is None or stream is None:
            raise InstanceLost("crash", instance.name)

        async def relay(event: ComfyEvent) -> None:
            instance.heartbeat(claim, event.type)
            if on_event is not None:
                result = on_event(event)
                if inspect.isawaitable(result):
                    await result

        instance.job_started(claim, timeout if timeout is not None else self.config.health.job_timeout_s)
        job = asyncio.create_task(client.run(graph, on_event=relay, prompt_id=claim.prompt_id, stream=stream,
                                             on_submitted=claim.submitted.set),
                                  name=f"job on {instance.name}")
        try:
            await asyncio.wait({job, life.ended, claim.withdrawn}, return_when=asyncio.FIRST_COMPLETED)
            if not job.done():
                job.cancel()
                await asyncio.gather(job, return_exceptions=True)
                if claim.withdrawn.done() and not life.ended.done():
                    raise InstanceLost(NOT_STARTED, instance.name)
                raise InstanceLost(self._lost_reason(claim, life.ended.result()), instance.name)
            try:
                return job.result()
            except (ServerGone, ServerUnreachable, RunTimeout, NotComfyUI) as exc:
                reason = await self._cause(claim, exc)
                raise InstanceLost(self._lost_reason(claim, reason), instance.name) from exc
        finally:
            if not job.done():
                job.cancel()  # the caller was cancelled
            instance.job_finished(claim)

    @staticmethod
    def _lost_reason(claim: Claim, reason: str) -> str:
        """The instance's reason for a prompt that had started; ``not_started`` for one still queued."""
        return reason if claim.started else NOT_STARTED

    async def _cause(self, claim: Claim, exc: Exception) -> str:
        """Why the link broke: ``not_started`` when ``withdraw`` took the prompt out of ComfyUI's queue
        (the run may see it vanish before the withdraw has finished checking), else what the exit
        watch or the probes say, else the link counts as unresponsive."""
        life = claim.life
        await asyncio.wait({life.ended, claim.withdrawn}, timeout=LOST_CAUSE_WAIT_S,
                           return_when=asyncio.FIRST_COMPLETED)
        if claim.withdrawn.done() and not life.ended.done():
            return NOT_STARTED
        if not life.ended.done():
            claim.instance.fault("unresponsive", f"the job's connection failed: {exc}")
        return life.ended.result()

    async def withdraw(self, claim: Claim) -> bool:
        """Take a prompt that has not started out of its ComfyUI's queue (cancel, drain); True if it
        never ran (its ``run`` raises ``InstanceLost("not_started")``), False if it had started."""
        return await claim.instance.withdraw(claim)

    def release(self, claim: Claim) -> None:
        """The caller is done with the claim: READY again, or the restart that was waiting."""
        claim.instance.release(claim)

    # ------------------------------------------------------------------ operator actions

    async def restart(self, name: str, reason: str = "request") -> None:
        """Restart ``name`` (after its running job); also brings back a FAILED or drained instance.

        Returns once the restart is requested; ``wait_ready`` tells when it serves again.
        """
        instance = self._get(name)
        instance.undrain()
        instance.request_restart(reason)

    async def drain(self, name: str) -> None:
        """``name`` takes no new jobs (the running one finishes; no restart) until ``restart``."""
        self._get(name).drain()

    def snapshot(self) -> list[InstanceSnapshot]:
        return [instance.snapshot() for instance in self.instances.values()]

    # ------------------------------------------------------------------ internals

    def _get(self, name: str) -> Instance:
        try:
            return self.instances[name]
        except KeyError:
            raise KeyError(f"no instance named {name!r} (have: {', '.join(self.instances)})") from None

    def _could_serve(self, instances: Iterable[Instance] | None = None) -> int:
        """Instances that serve, or will without an operator."""
        if self._stopped:
            return 0
        return sum(i.state not in (InstanceState.FAILED, InstanceState.STOPPED) and not i.drained
                   for i in (self.instances.values() if instances is None else instances))

    def _describe(self) -> str:
        return ", ".join(f"{i.name} {i.state.value}{' (drained)' if i.drained else ''}"
                         for i in self.instances.values())

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _instance_changed(self, instance: Instance) -> None:
        self._notify()
        if self._on_change is not None:
            try:
                self._on_change(instance.snapshot())
            except Exception:  # an observer's bug must not stop the supervision
                logger.exception("on_change callback failed for %s", instance.name)
