"""The job service: pool, durable store, dispatcher, live events and metrics, started and drained together.

Submission lives here (not in the HTTP handler) so the API and the ``--demo`` first job take the
same path: fields checked, the child-safety text check before anything is queued, the workflow's
own limits, then one durable row. The child-safety check has two stages: the lexicon
(``check_text``, always) and, when ``guard`` is configured, the Qwen3Guard model on what the lexicon
passed (``guard_stage``, off the event loop; docs/safety.md).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cute_animal_kids.guard_model import UNAVAILABLE as GUARD_UNAVAILABLE
from cute_animal_kids.guard_model import Guard, GuardDecision
from cute_animal_kids.text_safety import TextSafetyDecision, check_text, get_checker

from cak.install_state import WORKFLOWS_DIR

from .dispatcher import Dispatcher
from .guard_stage import GuardStage
from .job_events import JobEvents
from .job_request import parse_job_request
from .job_store import QUEUED, REJECTED, Job, QueueFull, open_store
from .metrics import ServiceMetrics
from .pool import Pool
from .settings import JobsSettings, Settings
from .states import SERVING_STATES
from .webhook_delivery import WebhookSender
from .workflow_catalog import WorkflowCatalog

log = logging.getLogger("supervisor.service")
RETENTION_INTERVAL_S = 3600.0



def prequeue_decision(text: str, jobs: JobsSettings) -> TextSafetyDecision:
    """The text gate's decision before a job is queued (the workflow's KidsTextSafety node makes
    the same call, with its ``strict`` option set like ``jobs.strict_text_gate``)."""
    return check_text(text, strict=jobs.strict_text_gate)


class ServiceUnavailable(Exception):
    """The service takes no new jobs right now (shutting down, or the queue is full)."""


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool  # False: an earlier job with the same idempotency key
    unsafe: TextSafetyDecision | GuardDecision | None = None  # set when a safety stage refused it


UNSAFE_ERROR = "the prompt was judged unsafe for children"
GUARD_UNAVAILABLE_ERROR = "the safety guard could not judge the prompt, so it was refused; try again later"


class JobService:
    def __init__(self, settings: Settings, pool: Pool | None = None, guard: Guard | None = None) -> None:
        """``guard``: the loaded guard model (``guard_stage.load_guard``) when ``guard`` is configured."""
        self.settings = settings
        self.pool = pool or Pool(settings, prefetch=settings.jobs.prefetch)
        self.store = open_store(settings)
        self.events = JobEvents()
        self.store.on_remote_event(self._remote_event)
        self.metrics = ServiceMetrics(self.pool.snapshot)
        self.catalog = WorkflowCatalog({}, settings.jobs.allow_graphs)
        self.dispatcher = Dispatcher(self.pool, self.store, self.catalog, self.events, self.metrics,
                                     max_attempts=settings.jobs.max_attempts, host_state=self.instances_json,
                                     version=importlib.metadata.version("cute-animal-kids"))
        self.guard: GuardStage | None = None
        if guard is not None and settings.guard is not None:
            self.guard = GuardStage(guard, timeout_s=settings.guard.timeout_s,
                                    max_concurrency=settings.guard.max_concurrency,
                                    controversial=settings.guard.controversial,
                                    latency=self.metrics.guard_latency)
        self.webhooks = WebhookSender(self.store, settings.webhooks, self.metrics)
        self.accepting = False
        self._refusal = "starting"  # why no job is taken while ``accepting`` is False
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Open the queue (requeueing what a dead supervisor left running), start instances, dispatch."""
        recovered = await self.store.open()
        if recovered:
            log.warning("requeued %d job(s) left running by the previous supervisor", recovered)
        self.webhooks.start()  # pending deliveries go out while the instances start
        self.catalog.workflows = (await asyncio.to_thread(
            WorkflowCatalog.load, WORKFLOWS_DIR, self.settings.jobs.allow_graphs)).workflows
        await asyncio.to_thread(get_checker)  # loads the word lists once, off the event loop
        self.accepting = True  # jobs wait in the durable queue while the instances start
        if self.settings.jobs.keep_images_days:
            self.in_background(self._retention_loop(), "image retention")
        await self.pool.start()
        self.dispatcher.start()

    async def _retention_loop(self) -> None:
        """Delete pictures older than ``jobs.keep_images_days``: at start, then every hour."""
        days = self.settings.jobs.keep_images_days
        while True:
            purged = await self.store.purge_images(time.time() - days * 86400)
            if purged:
                log.info("deleted the pictures of %d job(s) finished over %d days ago", purged, days)
            await asyncio.sleep(RETENTION_INTERVAL_S)

    async def stop(self, hurry: asyncio.Event | None = None) -> None:
        """Stop accepting, let running jobs finish (or requeue them at once when ``hurry`` is set),
        stop the instances."""
        self.accepting, self._refusal = False, "shutting down"
        await self.dispatcher.stop(self.settings.jobs.drain_timeout_s, hurry)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.pool.stop()
        if self.guard is not None:
            self.guard.close()
        await self.webhooks.stop()
        await self.store.close()

    def in_background(self, coro: Any, name: str) -> None:
        """Run an operator action (restart, drain) without holding the HTTP request open."""
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed: %s", task.get_name(), task.exception())

    async def _safety_check(self, texts: Iterable[str]
                            ) -> tuple[str, TextSafetyDecision | GuardDecision] | None:
        """``(stage, decision)`` of the first refusal, or None: the lexicon on every text first (cheap,
        exact), then the guard on each text the lexicon passed."""
        texts = list(texts)
        for text in texts:
            decision = prequeue_decision(text, self.settings.jobs)
            if not decision.safe:
                return "lexicon", decision
        if self.guard is not None:
            for text in texts:
                verdict = await self.guard.check(text)
                if not verdict.safe:
                    return "guard", verdict
        return None

    def instances_json(self) -> list[dict[str, Any]]:
        """This host's instances as ``GET /v1/instances`` and the hosts table show them."""
        return [{
            "name": snap.name, "url": snap.url, "state": snap.state, "pid": snap.pid,
            "rss_mb": snap.rss_mb, "device_mem_mb": snap.device_mem_mb, "jobs_run": snap.jobs_run,
            "restarts": dict(snap.restarts), "last_restart_reason": snap.last_restart_reason,
            "started_at": snap.started_at,
        } for snap in self.pool.snapshot()]

    def _remote_event(self, job_id: str, state: str, details: dict[str, Any]) -> None:
        """A change another host made (PostgreSQL's NOTIFY): to this host's listeners of the job; a
        queued job wakes the dispatcher; a cancel asked elsewhere interrupts the job if it runs here
        (the lease renewal would find it too, a little later)."""
        progress = details.get("progress")
        if isinstance(progress, dict):
            self.events.publish(job_id, progress)
        elif details.get("cancel"):
            self.in_background(self.dispatcher.cancel(job_id), f"cancel {job_id}")
        else:
            self.events.state(job_id, state, **details)
            if state == QUEUED:
                self.dispatcher.wake()

    def ready_instances(self) -> int:
        return sum(1 for snap in self.pool.snapshot() if snap.state in SERVING_STATES)

    async def submit(self, body: Any, idempotency_key: str | None = None) -> Submitted:
        """Check and queue one request; ``FieldError`` for a bad field, ``ServiceUnavailable``."""
        if not self.accepting:
            raise ServiceUnavailable(f"the service is {self._refusal} and takes no new jobs")
        jobs = self.settings.jobs
        request = parse_job_request(body, max_prompt_chars=jobs.max_prompt_chars,
                                    allow_graphs=jobs.allow_graphs, default_workflow=jobs.default_workflow,
                                    webhook_policy=self.settings.webhooks.policy)
        refused = await self._safety_check(request.texts())
        if refused is not None:
            stage, decision = refused
            category = decision.category or "unspecified"
            error = GUARD_UNAVAILABLE_ERROR if category == GUARD_UNAVAILABLE else UNSAFE_ERROR
            job, created = await self.store.submit(
                request.to_json(), idempotency_key, state=REJECTED, category=category, error=error)
            if created:
                self.metrics.safety_rejections.labels(stage, category).inc()
                log.info("prompt rejected before the queue (%s: %s)", stage, category,
                         extra={"job_id": job.id})
            return Submitted(job, created, decision)
        request = self.catalog.with_seed(request, idempotency_key)
        self.catalog.build(request)  # the workflow's own limits, before anything is queued
        try:
            job, created = await self.store.submit(request.to_json(), idempotency_key,
                                                   on_committed=self._queued, max_queued=jobs.max_queue)
        except QueueFull:
            raise ServiceUnavailable(f"the queue is full ({jobs.max_queue} jobs): try again later") from None
        return Submitted(job, created)

    def _queued(self, job: Job, created: bool) -> None:
        if created:
            log.debug("job queued", extra={"job_id": job.id})  # one INFO line per job: its outcome
            self.dispatcher.wake()

