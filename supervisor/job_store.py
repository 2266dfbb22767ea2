"""The durable job queue's one interface, with two backends the rest of the supervisor cannot tell apart.

``supervisor.job_store_sqlite`` (the default: one file, one host) and ``supervisor.job_store_postgres``
(``jobs.database_url``: one PostgreSQL shared by every GPU host) keep the same records, the same
schema version numbers and the same rules:

- A job is a row; each time an instance takes it an attempt row is opened and later closed with a
  reason. A claim is a **lease** held by this supervisor (``name``) until ``lease_until`` on the
  database's clock; the dispatcher renews the leases it holds every ``lease_s / 3``.
- Completion is **fenced**: ``complete``/``finish``/``retry_or_fail`` commit only while the job is
  ``running`` and its current attempt and lease owner are the caller's, so a job that ran twice (or
  a host that woke up after its lease ran out) still gets exactly one result.
- Any supervisor requeues the expired leases of other hosts (``host_lost``, counted like a lost
  instance); at start a supervisor requeues its own running jobs (``supervisor_restart``, not counted).
- A job that asked for a webhook gets its event row in ``webhook_outbox`` in the same transaction as
  its final state, so an event is never lost nor sent for a state that was rolled back.
- A database that cannot be reached raises ``StoreUnavailable`` (the API answers 503; the dispatcher
  retries its commits until it is back).

The images of a result are read with ``read_image`` (files for SQLite, ``bytea`` rows for
PostgreSQL); an attempt stages its files in ``staging_dir`` on this host before ``complete``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .states import TERMINAL_STATES, AttemptReason, JobState

# Short names for the members, as the backends' queries use them.
QUEUED, RUNNING, SUCCEEDED, FAILED, REJECTED, CANCELLED = (
    JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.REJECTED,
    JobState.CANCELLED)
STATES = tuple(JobState)
__all__ = ["STATES", "TERMINAL_STATES", "JobState"]  # re-exported for the API and the dispatcher

# Attempt reasons that say nothing about the job itself: they do not use up its attempts.
SUPERVISOR_RESTART = AttemptReason.SUPERVISOR_RESTART
SUPERVISOR_SHUTDOWN = AttemptReason.SUPERVISOR_SHUTDOWN
NOT_STARTED = AttemptReason.NOT_STARTED  # a prefetched prompt that never left its instance's queue
NOT_COUNTED_REASONS = (SUPERVISOR_RESTART, SUPERVISOR_SHUTDOWN, NOT_STARTED)
HOST_LOST = AttemptReason.HOST_LOST  # another host's lease ran out under the job: counted

SCHEMA_VERSION = 3  # both backends: 1 jobs + attempts, 2 webhook outbox, 3 leases, hosts, progress
STAGING_DIR = ".staging"

# Webhook delivery states (``waiting``: the job has a webhook but no final state yet).
WEBHOOK_WAITING, WEBHOOK_PENDING, WEBHOOK_DELIVERED, WEBHOOK_FAILED, WEBHOOK_GONE = (
    "waiting", "pending", "delivered", "failed", "gone")
WEBHOOK_EVENTS = {SUCCEEDED: "job.succeeded", FAILED: "job.failed", REJECTED: "job.rejected",
                  CANCELLED: "job.cancelled"}


class IdempotencyConflict(Exception):
    """The idempotency key is already used by a job with a different request."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"idempotency key already used by job {job_id} with a different request")
        self.job_id = job_id


class QueueFull(Exception):
    """``max_queued`` jobs are already queued: the new one was not stored."""


class StoreUnavailable(Exception):
    """The database cannot be reached right now (the pool reconnects by itself)."""


@dataclass(frozen=True)
class Attempt:
    number: int
    instance: str
    started_at: float
    ended_at: float | None
    reason: str | None  # None while the attempt runs

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "instance": self.instance, "started_at": self.started_at,
                "ended_at": self.ended_at, "reason": self.reason}


@dataclass(frozen=True)
class WebhookStatus:
    """Where a job's webhook stands: what ``GET /v1/jobs/{id}`` shows."""

    state: str
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "attempts": self.attempts, "last_status": self.last_status,
                "last_error": self.last_error}


@dataclass(frozen=True)
class WebhookDelivery:
    """One outbox row claimed for a delivery try (its lease, in the row, is ``owner``'s for a while)."""

    id: str  # the ``webhook-id``: the same on every try
    job_id: str
    url: str
    event: str
    payload: dict[str, Any]
    created_at: float
    attempts: int  # tries made before this one
    owner: str


@dataclass(frozen=True)
class Job:
    id: str
    state: str
    request: dict[str, Any]
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    category: str | None = None
    images: list[str] = field(default_factory=list)  # "<job id>/<name>": read with read_image
    attempts: list[Attempt] = field(default_factory=list)
    idempotency_key: str | None = None
    cancel_requested: bool = False
    webhook: WebhookStatus | None = None  # None: the request asked for no webhook
    lease_owner: str | None = None  # the supervisor whose attempt runs it (while running)
    progress: dict[str, Any] | None = None  # the last progress event stored (PostgreSQL)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def current_attempt(self) -> Attempt | None:
        """The open attempt of a running job."""
        if self.attempts and self.attempts[-1].ended_at is None:
            return self.attempts[-1]
        return None


@dataclass(frozen=True)
class Renewal:
    """What one lease renewal found: leases this host lost, and held jobs whose cancel was asked."""

    lost: frozenset[str]  # job ids: the lease ran out and the job moved on; interrupt, commit nothing
    cancel: frozenset[str]  # job ids still held whose cancel was requested (maybe on another host)


@dataclass(frozen=True)
class Host:
    """A supervisor sharing the store, as its last heartbeat left it."""

    name: str
    started_at: float
    heartbeat_at: float
    instances: list[dict[str, Any]]
    version: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "started_at": self.started_at, "heartbeat_at": self.heartbeat_at,
                "instances": self.instances, "version": self.version}


# (job id, state, details) of a change made by another host; fed into the local JobEvents.
RemoteEvent = Callable[[str, str, dict[str, Any]], None]


class JobStore(ABC):
    """The queue: jobs, attempts, leases, results, webhook outbox, hosts. Every method is async."""

    def __init__(self, output_root: Path, name: str, lease_s: float) -> None:
        self.output_root = Path(output_root)  # this host's folder: staging (and SQLite's results)
        self.name = name
        self.lease_s = lease_s

    def staging_dir(self, job_id: str, attempt: int) -> Path:
        """Where an attempt writes its images before they become the job's result."""
        return self.output_root / STAGING_DIR / f"{job_id}.{attempt}"

    # ------------------------------------------------------------------ lifecycle

    @abstractmethod
    async def open(self) -> int:
        """Create or migrate the schema; requeue the jobs this host left running (returns how many)."""

    @abstractmethod
    async def close(self) -> None: ...

    # ------------------------------------------------------------------ writes

    @abstractmethod
    async def submit(self, request: dict[str, Any], idempotency_key: str | None = None, *,
                     state: str = QUEUED, error: str | None = None,
                     category: str | None = None, job_id: str | None = None,
                     on_committed: Callable[[Job, bool], None] | None = None,
                     max_queued: int | None = None) -> tuple[Job, bool]:
        """Store a new job (``rejected`` ones too); returns it and whether it is new, once it is durable.

        A known idempotency key with the same request returns that job instead (across hosts: a
        unique index). ``job_id`` (a UUID): the id the caller chose (the ComfyUI door's prompt ids).
        ``on_committed(job, created)`` runs right after the commit (e.g. to wake the dispatcher).
        ``max_queued``: ``QueueFull`` when that many jobs are queued already, counted in the same
        transaction as the insert (one store call per submission, not a count and then a submit).
        """

    @abstractmethod
    async def claim_next(self, instance: str, exclude: Collection[str] = ()) -> Job | None:
        """Oldest queued job → running, leased to this host, with a new attempt on ``instance``.

        ``exclude``: jobs this host is still winding down (a lost lease being interrupted); one host
        never runs two attempts of one job at once, so such a job waits for another host or for the
        old attempt to end."""

    @abstractmethod
    async def complete(self, job_id: str, attempt: int, images: list[str]) -> bool:
        """Make the attempt's staged files (``images``: names in ``staging_dir``) the job's result,
        fenced: False if the attempt or the lease is no longer this host's (or the job was cancelled
        meanwhile: then it ends ``cancelled``)."""

    @abstractmethod
    async def finish(self, job_id: str, attempt: int, state: str, reason: str, *,
                     error: str | None = None, category: str | None = None) -> bool:
        """End a running job without images (failed, rejected, cancelled); False if not current."""

    @abstractmethod
    async def retry_or_fail(self, job_id: str, attempt: int, reason: str, max_attempts: int) -> Job | None:
        """Close the attempt with ``reason``; requeue the job, or fail it once attempts are used up.

        Cancelled jobs end as cancelled. Returns the job after the change (None if not current).
        """

    @abstractmethod
    async def purge_images(self, finished_before: float) -> int:
        """Delete the pictures of jobs that finished before ``finished_before`` (a Unix time);
        returns how many jobs lost their images."""

    @abstractmethod
    async def cancel(self, job_id: str) -> Job | None:
        """Queued → cancelled; running → cancel requested (its holder interrupts it). None if unknown."""

    # ------------------------------------------------------------------ leases and hosts

    @abstractmethod
    async def renew(self, held: dict[str, int]) -> Renewal:
        """Extend the leases of ``held`` (job id → attempt) by ``lease_s`` in one statement."""

    @abstractmethod
    async def requeue_expired(self, max_attempts: int) -> list[Job]:
        """Requeue (or fail) the jobs of other hosts whose lease ran out (``host_lost``)."""

    @abstractmethod
    async def heartbeat(self, instances: list[dict[str, Any]], version: str) -> None:
        """This host's row in ``hosts``: alive now (database clock), with these instances."""

    @abstractmethod
    async def hosts(self) -> list[Host]:
        """The hosts whose heartbeat is younger than three leases, by name."""

    @abstractmethod
    async def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        """The job's latest progress, for readers on other hosts (a no-op for one host)."""

    def on_remote_event(self, callback: RemoteEvent) -> None:  # noqa: B027 - one host: nothing to follow
        """Have changes made by other hosts reported (PostgreSQL's LISTEN); one host has none."""

    # ------------------------------------------------------------------ webhook outbox

    @abstractmethod
    async def claim_webhooks(self, owner: str, lease_s: float, limit: int) -> list[WebhookDelivery]:
        """Up to ``limit`` pending deliveries that are due and not leased, leased to ``owner``."""

    @abstractmethod
    async def record_webhook_attempt(self, delivery_id: str, owner: str, state: str,
                                     status: int | None, error: str | None,
                                     next_attempt_at: float) -> bool:
        """Count one try, end the lease, set the state (``pending`` again: due at ``next_attempt_at``).

        False when ``owner`` no longer holds the lease (it ran out and another sender took the row).
        """

    @abstractmethod
    async def next_webhook_due(self) -> float | None:
        """When the earliest pending delivery is due (its lease's end if leased); None if none."""

    # ------------------------------------------------------------------ reads

    @abstractmethod
    async def get(self, job_id: str) -> Job | None: ...

    @abstractmethod
    async def list(self, state: str | None = None, limit: int = 50) -> list[Job]:
        """Newest first."""

    @abstractmethod
    async def list_source(self, source: str, states: tuple[str, ...] = STATES, limit: int = 50) -> list[Job]:
        """Newest first, the jobs whose request says ``"source": source`` (e.g. ``comfy_api``)."""

    @abstractmethod
    async def counts(self) -> dict[str, int]:
        """Number of jobs in each state (every state present)."""

    @abstractmethod
    async def count(self, state: str) -> int:
        """Number of jobs in ``state``: a range of the (state, created_at) index, not a scan of the
        whole history (the queue-full check on every submit)."""

    @abstractmethod
    async def read_image(self, job_id: str, name: str) -> bytes | None:
        """A file of the job's result (``name`` as in ``images`` after the ``/``); None if gone."""


def open_store(settings: Any) -> JobStore:
    """The backend ``settings.jobs.database_url`` asks for (null: SQLite at ``jobs.db_path``)."""
    jobs = settings.jobs
    if jobs.database_url:
        from .job_store_postgres import PostgresJobStore
        return PostgresJobStore(jobs.database_url, jobs.images_dir, settings.name, jobs.lease_s)
    from .job_store_sqlite import SqliteJobStore
    return SqliteJobStore(jobs.db_path, jobs.images_dir, settings.name, jobs.lease_s)
