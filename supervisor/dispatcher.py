"""Hands queued jobs to READY instances, one job per instance, and records how each attempt ended.

A lost instance (crash, hang, leak, recycle, restart by request) requeues the job for another
instance until ``max_attempts`` are used up; then it fails listing every attempt's reason.
Deterministic outcomes are final at once: an unsafe prompt or image is ``rejected`` with its
category, a refused graph is ``rejected``, a node error is ``failed``. Images are staged per
attempt and become the job's result in the store's one transaction, so a job that ran twice still
has exactly one result.

The jobs it runs are leased to this supervisor in the store (``supervisor.job_store``): every
``lease_s / 3`` the lease loop renews them, beats this host's heartbeat and requeues other hosts'
expired jobs. A job whose renewal matched nothing was lost (this host was paused or cut off past
its lease, and another host took the job): its ComfyUI is interrupted and, the store's writes being
fenced, it commits nothing. A job whose cancel was asked on another host is interrupted the same
way. While the database is unreachable the running jobs go on and their commits are retried.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cak.comfy_client import ComfyClient
from cak.comfy_process import ComfyProcess
from cak.errors import (
    ComfyError,
    ExecutionFailed,
    Interrupted,
    PromptRejected,
    RunTimeout,
    ServerGone,
    ServerUnreachable,
    UnsafeContent,
    UsageError,
    ValidationFailed,
)
from cak.events import ComfyEvent, RunResult
from cak.model_folders import MODEL_FOLDERS

from .job_events import JobEvents
from .job_request import FieldError, JobRequest
from .job_store import (
    CANCELLED,
    FAILED,
    HOST_LOST,
    NOT_STARTED,
    QUEUED,
    REJECTED,
    RUNNING,
    SUCCEEDED,
    SUPERVISOR_SHUTDOWN,
    Job,
    JobStore,
    StoreUnavailable,
)
from .metrics import ServiceMetrics
from .pool import InstanceLost, Pool, PoolUnavailable
from .workflow_catalog import WorkflowCatalog

log = logging.getLogger("supervisor.jobs")

# An idle dispatcher still looks at the queue this often (jobs may be requeued by a restart).
POLL_INTERVAL_S = 2.0
STORE_RETRY_S = 1.0  # a commit refused by an unreachable database is tried again this often
PROGRESS_INTERVAL_S = 0.5  # progress stored for other hosts at most twice a second per job
T = TypeVar("T")


class JobInstance(Protocol):
    """What an attempt uses of the instance the pool lent it (the pool's ``Claim`` on it)."""

    @property
    def prompt_id(self) -> str: ...  # the id its prompt has in that ComfyUI

    @property
    def name(self) -> str: ...

    @property
    def client(self) -> ComfyClient | None: ...  # None once its process is gone

    @property
    def process(self) -> ComfyProcess: ...  # where its output folder is

    @property
    def started(self) -> bool: ...  # False while its prompt waits in ComfyUI's queue (prefetch)


class RequestKind(Protocol):
    """A kind of stored request other than a workflow (``request["kind"]``), e.g. the ComfyUI door's
    graphs: the graph each attempt runs, and how its result's images are staged."""

    def graph(self, request: dict[str, Any]) -> dict[str, Any]: ...

    async def stage(self, instance: JobInstance, job: Job, attempt: int, result: RunResult) -> list[str]: ...


@dataclass
class _Running:
    job_id: str
    attempt: int
    instance: JobInstance  # the pool's claim (it also has the prompt_id)
    task: asyncio.Task[None]
    interrupted: bool = False  # lease lost or cancel asked elsewhere: interrupted once
    progress_at: float = 0.0  # when its progress was last stored (monotonic)


class Dispatcher:
    def __init__(self, pool: Pool, store: JobStore, catalog: WorkflowCatalog, events: JobEvents,
                 metrics: ServiceMetrics, *, max_attempts: int,
                 host_state: Callable[[], list[dict[str, Any]]] = list, version: str = "") -> None:
        """``host_state()``: the instances for this host's heartbeat row."""
        self.pool = pool
        self.store = store
        self.catalog = catalog
        self.events = events
        self.metrics = metrics
        self.max_attempts = max_attempts
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._running: dict[str, _Running] = {}
        self._unavailable_logged = False
        self._store_down = False
        self._lease_task: asyncio.Task[None] | None = None
        self._progress_writes: set[asyncio.Future[None]] = set()
        self.host_state = host_state
        self.version = version
        self.kinds: dict[str, RequestKind] = {}

    def wake(self) -> None:
        """A job was queued: look at the queue now rather than at the next poll."""
        self._wakeup.set()

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="dispatcher")
        self._lease_task = asyncio.create_task(self._lease_loop(), name="leases")

    async def stop(self, drain_timeout: float, hurry: asyncio.Event | None = None) -> None:
        """Take no new job; give running ones ``drain_timeout`` s (or until ``hurry`` is set), then
        requeue them for next time."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        tasks = [running.task for running in self._running.values()]
        if tasks:
            log.info("waiting up to %.0f s for %d running job(s)", drain_timeout, len(tasks))
            finished = asyncio.ensure_future(asyncio.wait(tasks))
            hurried = asyncio.ensure_future((hurry or asyncio.Event()).wait())
            await asyncio.wait({finished, hurried}, timeout=drain_timeout or None,
                               return_when=asyncio.FIRST_COMPLETED)
            finished.cancel()
            hurried.cancel()
            pending = [task for task in tasks if not task.done()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._lease_task is not None:  # renewed while the running jobs drained
            self._lease_task.cancel()
            await asyncio.gather(self._lease_task, return_exceptions=True)

    def waiting_in_comfy(self, job_id: str) -> bool:
        """A running job whose prompt was prefetched and waits in its ComfyUI's queue (not started)."""
        running = self._running.get(job_id)
        return running is not None and not running.instance.started

    async def cancel(self, job_id: str) -> None:
        """Take a prefetched prompt out of ComfyUI's queue, or interrupt a running one; the job then
        ends ``cancelled``. Once per attempt: the API, a NOTIFY and the lease renewal may all ask."""
        running = self._running.get(job_id)
        if running is None or running.interrupted:
            return
        running.interrupted = True
        if await self.pool.withdraw(running.instance):  # it never started: it never will
            log.info("cancelled before it started", extra={"job_id": job_id, "instance": running.instance.name})
            return
        log.info("interrupting job", extra={"job_id": job_id, "instance": running.instance.name})
        client = running.instance.client
        if client is None:  # the process is gone: the attempt ends as lost, then cancelled
            return
        try:
            await client.interrupt(running.instance.prompt_id)
        except ComfyError as exc:
            log.warning("interrupt failed: %s", exc, extra={"job_id": job_id})

    # ------------------------------------------------------------------ leases

    async def _lease_loop(self) -> None:
        interval = self.store.lease_s / 3
        while True:
            try:
                await self.renew_leases()
                if self._store_down:
                    log.warning("the database is reachable again")
                self._store_down = False
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                if not self._store_down:
                    log.error("%s; running jobs go on, their results are committed once it is back", exc)
                self._store_down = True
            except Exception:
                log.exception("lease renewal failed")
            await asyncio.sleep(interval)

    async def renew_leases(self) -> None:
        """One round: renew held leases, interrupt lost or cancelled jobs, heartbeat, requeue expired."""
        held = {job_id: running.attempt for job_id, running in self._running.items()}
        renewal = await self.store.renew(held)
        for job_id in renewal.lost | renewal.cancel:
            running = self._running.get(job_id)
            if running is None or running.interrupted:
                continue
            if job_id in renewal.lost:
                log.warning("lease lost (this host was silent past jobs.lease_s and another host took the "
                            "job): interrupting it, committing nothing",
                            extra={"job_id": job_id, "instance": running.instance.name})
            await self.cancel(job_id)
        await self.store.heartbeat(self.host_state(), self.version)
        for job in await self.store.requeue_expired(self.max_attempts):
            log.warning("requeued a job whose host stopped renewing its lease (%s): %s", job.attempts[-1].instance
                        if job.attempts else "?", job.state, extra={"job_id": job.id})
            self.metrics.attempts.labels(HOST_LOST).inc()
            if job.state == QUEUED:
                self.events.state(job.id, QUEUED, reason=HOST_LOST)
                self.wake()
            else:
                await self._ended(job, job.state)

    def _progress_written(self, task: asyncio.Future[None]) -> None:
        """Progress is best effort: a database outage only skips it."""
        self._progress_writes.discard(task)
        if not task.cancelled() and task.exception() is not None and not isinstance(task.exception(),
                                                                                    StoreUnavailable):
            log.warning("progress not stored: %s", task.exception())

    async def _stored(self, write: Callable[[], Awaitable[T]]) -> T:
        """A commit of a running job, tried again until the database answers (fencing decides)."""
        while True:
            try:
                return await write()
            except StoreUnavailable as exc:
                log.warning("commit waits for the database: %s", exc)
                await asyncio.sleep(STORE_RETRY_S)

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(POLL_INTERVAL_S):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
            self._wakeup.clear()
            try:
                await self._dispatch_queued()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable:  # the lease loop says so once; the queue is read again next poll
                continue
            except PoolUnavailable as exc:  # jobs wait in the queue until an operator acts
                if not self._unavailable_logged:
                    log.error("jobs are waiting but %s", exc)
                self._unavailable_logged = True
                continue
            except Exception:  # the loop must outlive any single failure (e.g. a full disk)
                log.exception("dispatch failed; retrying in %.0f s", POLL_INTERVAL_S)

    async def _dispatch_queued(self) -> None:
        """Claim queued jobs, each for the instance the pool lends, while any is queued.

        "Any queued?" is asked once, before the first instance is acquired (an idle queue must
        neither hold an instance nor report a pool that cannot serve); after that, the claim says
        it: a burst costs one store call per job, the claim. The look is the newest queued job
        through the (state, created_at) index, not a count of every stored job by state.
        """
        if not await self.store.list(QUEUED, limit=1):
            return
        while True:
            instance = await self.pool.acquire()
            self._unavailable_logged = False
            try:
                job = await self.store.claim_next(instance.name, exclude=self._running.keys())
            except BaseException:
                self.pool.release(instance)
                raise
            if job is None:
                self.pool.release(instance)
                return
            attempt = job.current_attempt.number  # type: ignore[union-attr] - claimed jobs have one
            task = asyncio.create_task(self._run(instance, job, attempt), name=f"job-{job.id}")
            self._track(_Running(job.id, attempt, instance, task))

    def _track(self, running: _Running) -> None:
        """Hold the attempt as this host's until its task ends."""
        self._running[running.job_id] = running
        running.task.add_done_callback(lambda _t: self._attempt_done(running.job_id))

    def _attempt_done(self, job_id: str) -> None:
        """An attempt's task ended; an interrupted one may have left its job queued, which this host
        skipped while winding it down: look at the queue again."""
        running = self._running.pop(job_id, None)
        if running is not None and running.interrupted:
            self.wake()

    # ------------------------------------------------------------------ one attempt

    async def _run(self, instance: JobInstance, job: Job, attempt: int) -> None:
        where = {"job_id": job.id, "instance": instance.name, "attempt": attempt}
        log.debug("job started", extra=where)  # one INFO line per job: its outcome
        self.events.state(job.id, RUNNING, instance=instance.name, attempt=attempt)
        try:
            kind = self.kinds.get(job.request.get("kind", ""))
            graph = kind.graph(job.request) if kind else self.catalog.build(JobRequest.from_json(job.request))
            graph = _saved_apart(graph, f"cak-{job.id}-{attempt}")
            result = await self.pool.run(instance, graph, on_event=self._on_event(job.id, instance, attempt))
            if kind:
                names = await kind.stage(instance, job, attempt, result)
                self.pool.release(instance)
            else:
                # The images are files in the instance's output folder, on this machine: moved into
                # the attempt's staging folder, not downloaded. The slot goes to the next job now.
                output_dir = instance.process.launch.output_dir
                self.pool.release(instance)
                names = await asyncio.to_thread(_stage_files, output_dir, self.store.staging_dir(job.id, attempt),
                                                result.images)
            committed = await self._stored(lambda: self.store.complete(job.id, attempt, names))
            if kind:  # our copy is staged (and now committed or refused): ComfyUI's own copy goes
                await asyncio.to_thread(_remove_outputs, instance.process.launch.output_dir, result.images)
            if committed:
                log.info("job succeeded", extra={**where, "images": len(names)})
                self.metrics.attempts.labels(SUCCEEDED).inc()
                self._succeeded(job)
            else:
                await self._ended_elsewhere(job)
        except InstanceLost as exc:
            await self._retry(job, attempt, exc.reason, where)
        except UnsafeContent as exc:
            category = exc.category or "unspecified"
            self.metrics.safety_rejections.labels(exc.kind, category).inc()
            await self._final(job, attempt, REJECTED, f"unsafe_{exc.kind}", where,
                              error=f"the {exc.kind} was judged unsafe for children", category=category)
        except PromptRejected as exc:
            missing = missing_model_files(exc.node_errors)
            if missing:
                await self._final(job, attempt, REJECTED, "missing_models", where, category="missing_models",
                                  error="model files missing on the server: " + "; ".join(missing))
            else:
                await self._final(job, attempt, REJECTED, "invalid", where, error=str(exc), category="invalid")
        except (ValidationFailed, UsageError, FieldError) as exc:
            await self._final(job, attempt, REJECTED, "invalid", where, error=str(exc), category="invalid")
        except Interrupted as exc:
            current = await self._stored(lambda: self.store.get(job.id))
            if current is not None and current.cancel_requested:
                await self._final(job, attempt, CANCELLED, "cancelled", where)
            else:  # someone else interrupted the instance: not the job's fault
                await self._retry(job, attempt, "interrupted", where, str(exc))
        except ExecutionFailed as exc:
            await self._final(job, attempt, FAILED, "node_error", where, error=str(exc))
        except (ServerGone, ServerUnreachable, RunTimeout) as exc:
            await self._retry(job, attempt, type(exc).__name__, where, with_cause(exc))
        except asyncio.CancelledError:
            # Shutdown: the next start takes the job again (this attempt does not count).
            try:
                await asyncio.shield(self.store.retry_or_fail(job.id, attempt, SUPERVISOR_SHUTDOWN,
                                                              self.max_attempts))
            except StoreUnavailable:  # its lease runs out instead; the next start (or a host) takes it
                pass
            log.info("job requeued for the next start", extra=where)
            raise
        except Exception as exc:
            log.exception("job failed unexpectedly", extra=where)
            await self._final(job, attempt, FAILED, "supervisor_error", where, error=f"internal error: {exc}")
        finally:
            self.pool.release(instance)  # a no-op for an instance that was lost meanwhile

    def _on_event(self, job_id: str, instance: JobInstance, attempt: int) -> Callable[[ComfyEvent], None]:
        def handle(event: ComfyEvent) -> None:
            self.events.comfy_event(job_id, instance.name, attempt, event)
            running = self._running.get(job_id)
            progress = self.events.progress(job_id)
            now = time.monotonic()
            if running is not None and progress is not None and now - running.progress_at >= PROGRESS_INTERVAL_S:
                running.progress_at = now
                task = asyncio.ensure_future(self.store.set_progress(job_id, progress))
                self._progress_writes.add(task)  # held until done: the loop keeps only weak references
                task.add_done_callback(self._progress_written)
        return handle

    async def _retry(self, job: Job, attempt: int, reason: str, where: dict[str, Any],
                     detail: str = "") -> None:
        self.metrics.attempts.labels(reason).inc()
        after = await self._stored(lambda: self.store.retry_or_fail(job.id, attempt, reason, self.max_attempts))
        if after is None:
            return
        outcome = "requeued" if after.state == QUEUED else after.state
        if reason == NOT_STARTED:
            log.info("prompt given back before it started (its instance is draining, restarting or was "
                     "lost, or the job was cancelled): %s", outcome, extra=where)
        else:
            log.warning("instance lost under the job (%s%s): %s", reason, f": {detail}" if detail else "",
                        outcome, extra=where)
        if after.state == QUEUED:
            self.events.state(job.id, QUEUED, reason=reason)
            self.wake()
        else:
            await self._ended(after, after.state)

    async def _final(self, job: Job, attempt: int, state: str, reason: str, where: dict[str, Any], *,
                     error: str | None = None, category: str | None = None) -> None:
        if await self._stored(lambda: self.store.finish(job.id, attempt, state, reason, error=error,
                                                        category=category)):
            log.info("job %s (%s)", state, error or reason, extra=where)
            self.metrics.attempts.labels(reason).inc()
            await self._ended(job, state)
        else:
            await self._ended_elsewhere(job)

    def _succeeded(self, job: Job) -> None:
        """Like ``_ended``, without reading the job back: a success has no error or category."""
        self.metrics.job_duration.labels(SUCCEEDED).observe(max(0.0, time.time() - job.created_at))
        self.events.state(job.id, SUCCEEDED, error=None, category=None)

    async def _ended(self, job: Job, state: str) -> None:
        """A final state: its duration, and the news to whoever follows the job."""
        self.metrics.job_duration.labels(state).observe(max(0.0, time.time() - job.created_at))
        current = await self._stored(lambda: self.store.get(job.id))
        self.events.state(job.id, state, error=current.error if current else None,
                          category=current.category if current else None)

    async def _ended_elsewhere(self, job: Job) -> None:
        """The attempt was no longer current (cancelled meanwhile): report the stored state."""
        current = await self._stored(lambda: self.store.get(job.id))
        if current is not None:
            self.events.state(job.id, current.state, error=current.error, category=current.category)


def missing_model_files(node_errors: dict[str, Any]) -> list[str]:
    """'<file> (put it in models/<folder>/)' once per file ComfyUI did not find, from its node_errors.

    ComfyUI reports a missing model as ``value_not_in_list`` on a loader's input (twice when two
    outputs depend on the loader); ``cak.model_folders.MODEL_FOLDERS`` names the folder it goes in.
    """
    found: dict[str, str] = {}
    for entry in node_errors.values():
        for error in entry.get("errors", []) if isinstance(entry, dict) else []:
            info = error.get("extra_info") or {}
            folder = MODEL_FOLDERS.get(str(info.get("input_name")))
            if error.get("type") == "value_not_in_list" and folder is not None:
                found.setdefault(str(info.get("received_value")), folder)
    return [f"{name} (put it in models/{folder}/)" for name, folder in found.items()]


def with_cause(exc: BaseException) -> str:
    """The short message, and for the log the low-level error it came from (socket, timeout)."""
    cause = exc.__cause__
    return f"{exc} [cause: {type(cause).__name__}: {cause}]" if cause is not None else str(exc)


def _saved_apart(graph: dict[str, Any], folder: str) -> dict[str, Any]:
    """The graph with every save node writing into ``folder`` inside the instance's output folder.

    ComfyUI caches a node whose inputs did not change: the same graph run again on an instance
    (the same request and seed, twice) would report the last run's files, which were moved or
    removed by then, instead of saving new ones. A prefix per attempt makes only the save nodes run
    again (the sampler's result stays cached) and keeps every attempt's files apart.
    """
    changed = dict(graph)
    for node_id, node in graph.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if isinstance(inputs, dict) and isinstance(inputs.get("filename_prefix"), str):
            changed[node_id] = {**node, "inputs": {**inputs, "filename_prefix":
                                                   f"{folder}/{inputs['filename_prefix']}"}}
    return changed


def _prune_folder(root: Path, path: Path) -> None:
    """Remove the (now empty) attempt folder ``_saved_apart`` made for ``path``'s image."""
    folder = path.parent
    if folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:  # not empty (another image of the run is still there) or already gone
            pass


def _remove_outputs(output_dir: Path, images: list[Any]) -> None:
    """Delete the run's files from the instance's output folder (only files inside it)."""
    root = output_dir.resolve()
    for image in images:
        if getattr(image, "type", "output") != "output":
            continue
        path = (root / (image.subfolder or "") / image.filename).resolve()
        if path.is_relative_to(root):
            path.unlink(missing_ok=True)
            _prune_folder(root, path)


def _stage_files(output_dir: Path, folder: Path, images: list[Any]) -> list[str]:
    """Move the run's images from the instance's output folder into ``folder``; their new names.

    A rename when both are on one file system (else a copy, then the original goes), then an fsync:
    ComfyUI wrote the file without one, and the commit that follows must not outlive its data.
    """
    root = output_dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index, image in enumerate(images):
        source = (root / (image.subfolder or "") / image.filename).resolve()
        if not source.is_relative_to(root):
            raise ExecutionFailed("", None, None, "ImageOutsideOutput",
                                  f"ComfyUI named an image outside its output folder: {image.filename}")
        name = f"{index}{Path(image.filename).suffix.lower() or '.png'}"
        target = folder / name
        try:
            os.replace(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.copyfile(source, target)
            source.unlink()
        _prune_folder(root, source)
        with open(target, "rb") as handle:
            os.fsync(handle.fileno())
        names.append(name)
    return names


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
