"""The job service: pool, durable store, dispatcher, live events and metrics, started and drained together.

Submission lives here (not in the HTTP handler) so the API and the ``--demo`` first job take the
same path: fields checked, the child-safety text check before anything is queued, the workflow's
own limits, then one durable row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from cute_animal_kids.text_safety import TextSafetyDecision, check_text, get_checker

from cak.install_state import WORKFLOWS_DIR

from .config import SupervisorConfig
from .dispatcher import Dispatcher
from .job_events import JobEvents
from .job_request import parse_job_request
from .job_store import QUEUED, REJECTED, Job, JobStore
from .metrics import ServiceMetrics
from .pool import Pool
from .service_config import ServiceConfig
from .webhook_delivery import WebhookSender
from .workflow_catalog import WorkflowCatalog

log = logging.getLogger("supervisor.service")
RETENTION_INTERVAL_S = 3600.0


class ServiceUnavailable(Exception):
    """The service takes no new jobs right now (shutting down, or the queue is full)."""


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool  # False: an earlier job with the same idempotency key
    unsafe: TextSafetyDecision | None = None  # set when the text check refused it


class JobService:
    def __init__(self, config: SupervisorConfig, service: ServiceConfig, pool: Pool | None = None) -> None:
        self.config = config
        self.settings = service
        self.pool = pool or Pool(config)
        self.store = JobStore(service.jobs.db_path, service.jobs.images_dir)
        self.events = JobEvents()
        self.metrics = ServiceMetrics(self.pool.snapshot)
        self.catalog = WorkflowCatalog({}, service.jobs.allow_graphs)
        self.dispatcher = Dispatcher(self.pool, self.store, self.catalog, self.events, self.metrics,
                                     max_attempts=service.jobs.max_attempts)
        self.webhooks = WebhookSender(self.store, service.webhooks, self.metrics)
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

    def ready_instances(self) -> int:
        return sum(1 for snap in self.pool.snapshot() if snap.state in ("ready", "busy"))

    async def submit(self, body: Any, idempotency_key: str | None = None) -> Submitted:
        """Check and queue one request; ``FieldError`` for a bad field, ``ServiceUnavailable``."""
        if not self.accepting:
            raise ServiceUnavailable(f"the service is {self._refusal} and takes no new jobs")
        jobs = self.settings.jobs
        request = parse_job_request(body, max_prompt_chars=jobs.max_prompt_chars,
                                    allow_graphs=jobs.allow_graphs, default_workflow=jobs.default_workflow,
                                    webhook_policy=self.settings.webhooks.policy)
        for text in request.texts():
            decision = check_text(text)
            if not decision.safe:
                category = decision.category or "unspecified"
                job, created = await self.store.submit(
                    request.to_json(), idempotency_key, state=REJECTED, category=category,
                    error="the prompt was judged unsafe for children")
                if created:
                    self.metrics.safety_rejections.labels("prompt", category).inc()
                    log.info("prompt rejected before the queue (%s)", category, extra={"job_id": job.id})
                return Submitted(job, created, decision)
        request = self.catalog.with_seed(request, idempotency_key)
        self.catalog.build(request)  # the workflow's own limits, before anything is queued
        if (await self.store.counts())[QUEUED] >= jobs.max_queue:
            raise ServiceUnavailable(f"the queue is full ({jobs.max_queue} jobs): try again later")
        job, created = await self.store.submit(request.to_json(), idempotency_key)
        if created:
            log.info("job queued", extra={"job_id": job.id})
            self.dispatcher.wake()
        return Submitted(job, created)

