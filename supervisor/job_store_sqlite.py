"""The job store on one SQLite file (one host): the default backend of ``supervisor.job_store``.

A job is claimed, finished and requeued in short ``BEGIN IMMEDIATE`` transactions that check the
job's state, attempt and lease owner first (the rules in ``supervisor.job_store``). One host owns
the file, so its leases are trivially its own; they are kept anyway, so both backends behave the
same. When the supervisor dies, its ``running`` jobs stay in the file and go back to ``queued`` on
the next start. Result images are files under ``output_root/<job id>/``.

sqlite3 blocks, so every statement runs on one dedicated thread that owns the only connection;
the event loop only awaits it.

Durability (WAL with ``synchronous=NORMAL``): a COMMIT reaches the operating system before it
returns, so nothing committed is lost when the supervisor or a ComfyUI crashes or is killed; only
an OS crash or power cut can lose the last commits. A new job is the exception: ``submit`` returns
only once the WAL is on disk (one fsync shared by the submissions made meanwhile), because its
answer (202) promises the job to the client. docs/supervisor.md says what a power cut can redo.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .job_store import (
    CANCELLED,
    FAILED,
    HOST_LOST,
    NOT_COUNTED_REASONS,
    QUEUED,
    RUNNING,
    SCHEMA_VERSION,
    STAGING_DIR,
    STATES,
    SUCCEEDED,
    SUPERVISOR_RESTART,
    TERMINAL_STATES,
    WEBHOOK_EVENTS,
    WEBHOOK_PENDING,
    WEBHOOK_WAITING,
    Attempt,
    Host,
    IdempotencyConflict,
    Job,
    JobStore,
    QueueFull,
    Renewal,
    StoreUnavailable,
    WebhookDelivery,
    WebhookStatus,
)

MIGRATIONS: list[str] = [
    # 1: jobs and their attempts
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN ('queued','running','succeeded','failed','rejected','cancelled')),
        request TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        error TEXT,
        category TEXT,
        images TEXT NOT NULL DEFAULT '[]',
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_state_created ON jobs (state, created_at);
    CREATE TABLE attempts (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        instance TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        reason TEXT,
        PRIMARY KEY (job_id, number)
    );
    """,
    # 2: the webhook outbox: one event per job that asked for one, written in the transaction
    # that gives the job its final state; claimed with a lease so that one host sends each try.
    """
    CREATE TABLE webhook_outbox (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL UNIQUE REFERENCES jobs (id) ON DELETE CASCADE,
        url TEXT NOT NULL,
        event TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending','delivered','failed','gone')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_status INTEGER,
        last_error TEXT,
        next_attempt_at REAL NOT NULL,
        lease_owner TEXT,
        lease_until REAL,
        finished_at REAL
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox (state, next_attempt_at);
    """,
    # 3: leases (this host's), the hosts' heartbeats, the last progress
    """
    ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
    ALTER TABLE jobs ADD COLUMN lease_until REAL;
    ALTER TABLE jobs ADD COLUMN progress TEXT;
    CREATE TABLE hosts (
        name TEXT PRIMARY KEY,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL,
        instances TEXT NOT NULL DEFAULT '[]',
        version TEXT NOT NULL
    );
    """,
]
assert len(MIGRATIONS) == SCHEMA_VERSION

T = TypeVar("T")


class SqliteJobStore(JobStore):
    """Async facade over one SQLite connection living on its own thread."""

    def __init__(self, db_path: Path, output_root: Path, name: str, lease_s: float) -> None:
        super().__init__(output_root, name, lease_s)
        self.db_path = Path(db_path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-store")
        self._sync_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-store-fsync")
        self._conn: sqlite3.Connection | None = None
        self._commits = 0   # transactions that must be on disk before their caller is answered
        self._synced = 0    # of those, how many an fsync of the WAL has covered
        self._syncing: asyncio.Future[None] | None = None
        self._started_at = time.time()

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> int:
        """Create or migrate the schema; requeue jobs a dead supervisor left running (returns how many)."""
        return await self._call(self._open)

    async def close(self) -> None:
        await self._call(self._close)
        self._executor.shutdown(wait=True)
        self._sync_executor.shutdown(wait=True)

    # ------------------------------------------------------------------ writes

    async def submit(self, request: dict[str, Any], idempotency_key: str | None = None, *,
                     state: str = QUEUED, error: str | None = None,
                     category: str | None = None, job_id: str | None = None,
                     on_committed: Callable[[Job, bool], None] | None = None,
                     max_queued: int | None = None) -> tuple[Job, bool]:
        """Store a new job (``rejected`` ones too); returns it and whether it is new, once it is on disk.

        A known idempotency key with the same request returns that job instead. ``job_id`` (a
        UUID): the id the caller chose (the ComfyUI door's prompt ids); a new UUID otherwise.
        ``on_committed(job, created)`` runs between the commit and the fsync (e.g. to wake the
        dispatcher, so the job starts while its row is being written to disk). ``max_queued``:
        ``QueueFull`` when that many jobs are queued already (counted in the insert's transaction).
        """
        job, created = await self._call(self._submit, request, idempotency_key, state, error, category, job_id,
                                        max_queued)
        if on_committed is not None:
            on_committed(job, created)
        if created:
            await self._sync()
        return job, created

    async def _sync(self) -> None:
        """Until every commit so far is on disk: one fsync of the WAL serves every caller waiting."""
        self._commits += 1
        wanted = self._commits
        while self._synced < wanted:
            if self._syncing is None:
                self._syncing = asyncio.ensure_future(self._sync_once())
            await asyncio.shield(self._syncing)

    async def _sync_once(self) -> None:
        covered = self._commits
        try:
            await asyncio.get_running_loop().run_in_executor(self._sync_executor, self._fsync_wal)
            self._synced = max(self._synced, covered)
        finally:
            self._syncing = None

    async def claim_next(self, instance: str, exclude: Collection[str] = ()) -> Job | None:
        """Oldest queued job not in ``exclude`` → running, with a new attempt on ``instance``; None if
        none is queued."""
        return await self._call(self._claim_next, instance, tuple(exclude))

    async def complete(self, job_id: str, attempt: int, images: list[str]) -> bool:
        """Make the attempt's staged images the job's result, once: False if it is no longer current
        (or was cancelled meanwhile: then it ends ``cancelled``).

        ``images`` are file names inside the staging folder. The folder becomes ``<root>/<job id>/``
        in the same transaction that checks and sets the state.
        """
        return await self._call(self._complete, job_id, attempt, images)

    async def finish(self, job_id: str, attempt: int, state: str, reason: str, *,
                     error: str | None = None, category: str | None = None) -> bool:
        """End a running job without images (failed, rejected, cancelled); False if not current."""
        return await self._call(self._finish, job_id, attempt, state, reason, error, category)

    async def retry_or_fail(self, job_id: str, attempt: int, reason: str, max_attempts: int) -> Job | None:
        """Close the attempt with ``reason``; requeue the job, or fail it once attempts are used up.

        Cancelled jobs end as cancelled. Returns the job after the change (None if not current).
        """
        return await self._call(self._retry_or_fail, job_id, attempt, reason, max_attempts)

    async def purge_images(self, finished_before: float) -> int:
        """Delete the pictures of jobs that finished before ``finished_before`` (a Unix time) and
        forget their paths; returns how many jobs lost their images."""
        return await self._call(self._purge_images, finished_before)

    async def cancel(self, job_id: str) -> Job | None:
        """Queued → cancelled; running → cancel requested (the caller interrupts it). None if unknown."""
        return await self._call(self._cancel, job_id)

    # ------------------------------------------------------------------ webhook outbox

    async def claim_webhooks(self, owner: str, lease_s: float, limit: int) -> list[WebhookDelivery]:
        """Up to ``limit`` pending deliveries that are due and not leased, leased to ``owner``.

        A lease keeps other senders (another host on a shared database) off the row while one
        tries it; a sender that dies leaves a lease that simply runs out. (A PostgreSQL store does
        the same in one ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING *``.)
        """
        return await self._call(self._claim_webhooks, owner, lease_s, limit)

    async def record_webhook_attempt(self, delivery_id: str, owner: str, state: str,
                                     status: int | None, error: str | None,
                                     next_attempt_at: float) -> bool:
        """Count one try, end the lease, set the state (``pending`` again: due at ``next_attempt_at``).

        False when ``owner`` no longer holds the lease (it ran out and another sender took the row).
        """
        return await self._call(self._record_webhook_attempt, delivery_id, owner, state, status, error,
                                next_attempt_at)

    async def next_webhook_due(self) -> float | None:
        """When the earliest pending delivery is due (its lease's end if leased); None if none."""
        return await self._call(self._next_webhook_due)

    # ------------------------------------------------------------------ reads

    async def get(self, job_id: str) -> Job | None:
        return await self._call(self._get, job_id)

    async def list(self, state: str | None = None, limit: int = 50) -> list[Job]:
        """Newest first."""
        return await self._call(self._list, state, limit)

    async def list_source(self, source: str, states: tuple[str, ...] = STATES, limit: int = 50) -> list[Job]:
        """Newest first, the jobs whose request says ``"source": source`` (e.g. ``comfy_api``)."""
        return await self._call(self._list_source, source, states, limit)

    async def counts(self) -> dict[str, int]:
        """Number of jobs in each state (every state present)."""
        return await self._call(self._counts)

    async def count(self, state: str) -> int:
        return await self._call(_count_state, self._db, state)

    async def read_image(self, job_id: str, name: str) -> bytes | None:
        folder = (self.output_root / job_id).resolve()
        path = (folder / name).resolve()
        if not path.is_relative_to(folder) or path == folder:
            return None
        try:
            return await asyncio.to_thread(path.read_bytes)
        except OSError:
            return None

    # ------------------------------------------------------------------ leases and hosts

    async def renew(self, held: dict[str, int]) -> Renewal:
        return await self._call(self._renew, held)

    async def requeue_expired(self, max_attempts: int) -> list[Job]:
        return await self._call(self._requeue_expired, max_attempts)

    async def heartbeat(self, instances: list[dict[str, Any]], version: str) -> None:
        await self._call(self._heartbeat, instances, version)

    async def hosts(self) -> list[Host]:
        return await self._call(self._hosts)

    async def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        """One host: its readers get progress from memory (``JobEvents``), never from the file."""

    # ------------------------------------------------------------------ thread side

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("the job store is not open yet (the supervisor is starting or stopping)")
        return self._conn

    def _open(self) -> int:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.output_root.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.db_path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # A commit is in the OS (it survives our crash) when it returns; submit() adds the fsync
        # that makes an accepted job survive a power cut too (see the module docstring).
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        self._conn = conn
        self._migrate()
        shutil.rmtree(self.output_root / STAGING_DIR, ignore_errors=True)
        return self._recover()

    def _fsync_wal(self) -> None:
        """The WAL's frames onto the disk (fsync syncs the file whichever descriptor asks)."""
        wal = self.db_path.with_name(self.db_path.name + "-wal")
        try:
            fd = os.open(wal, os.O_RDONLY)
        except FileNotFoundError:  # checkpointed and removed: everything is in the database file
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _migrate(self) -> None:
        db = self._db
        db.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                   "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
        current = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
        if current > len(MIGRATIONS):
            raise RuntimeError(f"{self.db_path} has schema version {current}, newer than this code "
                               f"({len(MIGRATIONS)}): upgrade the supervisor")
        for version, script in enumerate(MIGRATIONS[current:], current + 1):
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, time.time()))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _recover(self) -> int:
        """Jobs this host left running when it died go back to the queue (cancelled ones end cancelled)."""
        now = time.time()
        with self._transaction() as db:
            mine = "state = ? AND (lease_owner = ? OR lease_owner IS NULL)"  # NULL: left by schema 2
            db.execute(f"UPDATE attempts SET ended_at = ?, reason = ? WHERE ended_at IS NULL AND job_id IN "
                       f"(SELECT id FROM jobs WHERE {mine})", (now, SUPERVISOR_RESTART, RUNNING, self.name))
            cancelled = [row["id"] for row in db.execute(
                f"SELECT id FROM jobs WHERE {mine} AND cancel_requested", (RUNNING, self.name)).fetchall()]
            for job_id in cancelled:
                db.execute("UPDATE jobs SET state = ?, updated_at = ?, finished_at = ? WHERE id = ?",
                           (CANCELLED, now, now, job_id))
                self._enqueue_webhook(db, job_id, now)
            moved = db.execute(f"UPDATE jobs SET state = ?, updated_at = ?, lease_owner = NULL, "
                               f"lease_until = NULL WHERE {mine}", (QUEUED, now, RUNNING, self.name)).rowcount
        return moved

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _submit(self, request: dict[str, Any], key: str | None, state: str, error: str | None,
                category: str | None, chosen_id: str | None, max_queued: int | None) -> tuple[Job, bool]:
        now = time.time()
        job_id = chosen_id or str(uuid.uuid4())
        encoded = json.dumps(request, sort_keys=True, ensure_ascii=False)
        finished = now if state in TERMINAL_STATES else None
        with self._transaction() as db:
            if max_queued is not None and state == QUEUED and _count_state(db, QUEUED) >= max_queued:
                raise QueueFull(f"{max_queued} jobs are queued")
            if key is not None:
                row = db.execute("SELECT id, request FROM jobs WHERE idempotency_key = ?", (key,)).fetchone()
                if row is not None:
                    if row["request"] != encoded:
                        raise IdempotencyConflict(row["id"])
                    return self._get(row["id"]), False  # type: ignore[return-value]
            db.execute(
                "INSERT INTO jobs (id, state, request, idempotency_key, created_at, updated_at, "
                "finished_at, error, category) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, state, encoded, key, now, now, finished, error, category))
            if finished is not None:
                self._enqueue_webhook(db, job_id, now)
        return self._get(job_id), True  # type: ignore[return-value]

    def _claim_next(self, instance: str, exclude: tuple[str, ...]) -> Job | None:
        now = time.time()
        skip = f" AND id NOT IN ({', '.join('?' * len(exclude))})" if exclude else ""
        with self._transaction() as db:
            row = db.execute(f"SELECT id FROM jobs WHERE state = ?{skip} ORDER BY created_at, rowid LIMIT 1",
                             (QUEUED, *exclude)).fetchone()
            if row is None:
                return None
            job_id = row["id"]
            number = db.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM attempts WHERE job_id = ?",
                                (job_id,)).fetchone()[0]
            db.execute("INSERT INTO attempts (job_id, number, instance, started_at) VALUES (?, ?, ?, ?)",
                       (job_id, number, instance, now))
            db.execute("UPDATE jobs SET state = ?, updated_at = ?, started_at = COALESCE(started_at, ?), "
                       "lease_owner = ?, lease_until = ? WHERE id = ?",
                       (RUNNING, now, now, self.name, now + self.lease_s, job_id))
        return self._get(job_id)

    def _is_current(self, db: sqlite3.Connection, job_id: str, attempt: int) -> bool:
        row = db.execute(
            "SELECT 1 FROM jobs j JOIN attempts a ON a.job_id = j.id "
            "WHERE j.id = ? AND j.state = ? AND a.number = ? AND a.ended_at IS NULL AND j.lease_owner = ?",
            (job_id, RUNNING, attempt, self.name)).fetchone()
        return row is not None

    def _close_attempt(self, db: sqlite3.Connection, job_id: str, attempt: int, reason: str,
                       now: float) -> None:
        db.execute("UPDATE attempts SET ended_at = ?, reason = ? WHERE job_id = ? AND number = ?",
                   (now, reason, job_id, attempt))

    def _complete(self, job_id: str, attempt: int, images: list[str]) -> bool:
        staging = self.staging_dir(job_id, attempt)
        final = self.output_root / job_id
        now = time.time()
        renamed = False
        try:
            with self._transaction() as db:
                if not self._is_current(db, job_id, attempt):
                    shutil.rmtree(staging, ignore_errors=True)
                    return False
                if db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]:
                    # Cancelled while the prompt was still being queued: the images are not wanted.
                    self._close_attempt(db, job_id, attempt, CANCELLED, now)
                    db.execute("UPDATE jobs SET state = ?, updated_at = ?, finished_at = ? WHERE id = ?",
                               (CANCELLED, now, now, job_id))
                    self._enqueue_webhook(db, job_id, now)
                    shutil.rmtree(staging, ignore_errors=True)
                    return False
                # A folder here belongs to an attempt whose commit never happened (the supervisor died
                # between the rename and the commit): it is not a result, so it is replaced.
                shutil.rmtree(final, ignore_errors=True)
                os.rename(staging, final)
                renamed = True
                relative = [f"{job_id}/{name}" for name in images]
                self._close_attempt(db, job_id, attempt, SUCCEEDED, now)
                db.execute("UPDATE jobs SET state = ?, images = ?, updated_at = ?, finished_at = ?, "
                           "error = NULL, category = NULL WHERE id = ?",
                           (SUCCEEDED, json.dumps(relative), now, now, job_id))
                self._enqueue_webhook(db, job_id, now)
        except BaseException:
            if renamed:  # the update or the COMMIT failed: the images stay the attempt's, not a result
                os.rename(final, staging)
            raise
        return True

    def _finish(self, job_id: str, attempt: int, state: str, reason: str, error: str | None,
                category: str | None) -> bool:
        if state not in TERMINAL_STATES or state == SUCCEEDED:
            raise ValueError(f"finish() ends a job as failed, rejected or cancelled, not {state}")
        now = time.time()
        with self._transaction() as db:
            if not self._is_current(db, job_id, attempt):
                return False
            self._close_attempt(db, job_id, attempt, reason, now)
            db.execute("UPDATE jobs SET state = ?, error = ?, category = ?, updated_at = ?, finished_at = ? "
                       "WHERE id = ?", (state, error, category, now, now, job_id))
            self._enqueue_webhook(db, job_id, now)
        shutil.rmtree(self.staging_dir(job_id, attempt), ignore_errors=True)
        return True

    def _retry_or_fail(self, job_id: str, attempt: int, reason: str, max_attempts: int) -> Job | None:
        now = time.time()
        with self._transaction() as db:
            if not self._is_current(db, job_id, attempt):
                return None
            self._requeue(db, job_id, attempt, reason, max_attempts, now)
        shutil.rmtree(self.staging_dir(job_id, attempt), ignore_errors=True)
        return self._get(job_id)

    def _requeue(self, db: sqlite3.Connection, job_id: str, attempt: int, reason: str, max_attempts: int,
                 now: float) -> None:
        """Close the attempt; the job back to the queue, or failed/cancelled (inside a transaction)."""
        self._close_attempt(db, job_id, attempt, reason, now)
        cancel = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
        placeholders = ",".join("?" * len(NOT_COUNTED_REASONS))
        rows = db.execute(f"SELECT number, instance, reason FROM attempts WHERE job_id = ? "
                          f"AND reason NOT IN ({placeholders}) ORDER BY number",
                          (job_id, *NOT_COUNTED_REASONS)).fetchall()
        if cancel:
            db.execute("UPDATE jobs SET state = ?, updated_at = ?, finished_at = ? WHERE id = ?",
                       (CANCELLED, now, now, job_id))
            self._enqueue_webhook(db, job_id, now)
        elif reason not in NOT_COUNTED_REASONS and len(rows) >= max_attempts:
            history = "; ".join(f"attempt {r['number']} on {r['instance']}: {r['reason']}" for r in rows)
            db.execute("UPDATE jobs SET state = ?, error = ?, updated_at = ?, finished_at = ? WHERE id = ?",
                       (FAILED, f"gave up after {len(rows)} attempts ({history})", now, now, job_id))
            self._enqueue_webhook(db, job_id, now)
        else:
            db.execute("UPDATE jobs SET state = ?, updated_at = ?, lease_owner = NULL, lease_until = NULL "
                       "WHERE id = ?", (QUEUED, now, job_id))

    def _renew(self, held: dict[str, int]) -> Renewal:
        now = time.time()
        kept: set[str] = set()
        cancel: set[str] = set()
        with self._transaction() as db:
            for job_id, attempt in held.items():
                row = db.execute(
                    "UPDATE jobs SET lease_until = ? WHERE id = ? AND state = ? AND lease_owner = ? AND "
                    "EXISTS (SELECT 1 FROM attempts a WHERE a.job_id = jobs.id AND a.number = ? AND "
                    "a.ended_at IS NULL) RETURNING cancel_requested",
                    (now + self.lease_s, job_id, RUNNING, self.name, attempt)).fetchone()
                if row is not None:
                    kept.add(job_id)
                    if row[0]:
                        cancel.add(job_id)
        return Renewal(frozenset(held) - kept, frozenset(cancel))

    def _requeue_expired(self, max_attempts: int) -> list[Job]:
        now = time.time()
        with self._transaction() as db:
            rows = db.execute(
                "SELECT j.id, a.number FROM jobs j JOIN attempts a ON a.job_id = j.id AND a.ended_at IS NULL "
                "WHERE j.state = ? AND j.lease_until < ? AND j.lease_owner IS NOT ? ",
                (RUNNING, now, self.name)).fetchall()
            for row in rows:
                self._requeue(db, row["id"], row["number"], HOST_LOST, max_attempts, now)
        return [job for row in rows if (job := self._get(row["id"])) is not None]

    def _heartbeat(self, instances: list[dict[str, Any]], version: str) -> None:
        now = time.time()
        with self._transaction() as db:
            db.execute("INSERT INTO hosts (name, started_at, heartbeat_at, instances, version) VALUES "
                       "(?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, "
                       "instances = excluded.instances, version = excluded.version",
                       (self.name, self._started_at, now, json.dumps(instances), version))

    def _hosts(self) -> list[Host]:
        rows = self._db.execute("SELECT * FROM hosts WHERE heartbeat_at > ? ORDER BY name",
                                (time.time() - 3 * self.lease_s,)).fetchall()
        return [Host(r["name"], r["started_at"], r["heartbeat_at"], json.loads(r["instances"]), r["version"])
                for r in rows]

    def _purge_images(self, finished_before: float) -> int:
        rows = self._db.execute("SELECT id FROM jobs WHERE finished_at < ? AND images != '[]'",
                                (finished_before,)).fetchall()
        for row in rows:
            # Rows first: a crash between the two leaves files nobody points at, never a dead link.
            with self._transaction() as db:
                db.execute("UPDATE jobs SET images = '[]', updated_at = ? WHERE id = ?", (time.time(), row["id"]))
            shutil.rmtree(self.output_root / row["id"], ignore_errors=True)
        return len(rows)

    def _cancel(self, job_id: str) -> Job | None:
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            if row["state"] == QUEUED:
                db.execute("UPDATE jobs SET state = ?, updated_at = ?, finished_at = ? WHERE id = ?",
                           (CANCELLED, now, now, job_id))
                self._enqueue_webhook(db, job_id, now)
            elif row["state"] == RUNNING:
                db.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?", (now, job_id))
        return self._get(job_id)

    def _enqueue_webhook(self, db: sqlite3.Connection, job_id: str, now: float) -> None:
        """The job's final-state event into the outbox, if it asked for a webhook.

        Called inside the transaction that sets the final state: both are written, or neither.
        """
        row = db.execute("SELECT request, state, error, category, images FROM jobs WHERE id = ?",
                         (job_id,)).fetchone()
        url = (json.loads(row["request"]).get("webhook") or {}).get("url")
        if url is None or row["state"] not in WEBHOOK_EVENTS:
            return
        images = json.loads(row["images"])
        data = {"job_id": job_id, "state": row["state"], "status_url": f"/v1/jobs/{job_id}",
                "images": [f"/v1/jobs/{job_id}/images/{n}" for n in range(len(images))],
                "error": row["error"], "category": row["category"],
                "attempts": db.execute("SELECT COUNT(*) FROM attempts WHERE job_id = ?", (job_id,)).fetchone()[0]}
        db.execute("INSERT INTO webhook_outbox (id, job_id, url, event, payload, created_at, state, "
                   "next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id) DO NOTHING",
                   (f"msg_{uuid.uuid4().hex}", job_id, url, WEBHOOK_EVENTS[row["state"]],
                    json.dumps(data, ensure_ascii=False), now, WEBHOOK_PENDING, now))

    def _claim_webhooks(self, owner: str, lease_s: float, limit: int) -> list[WebhookDelivery]:
        now = time.time()
        with self._transaction() as db:
            rows = db.execute(
                "SELECT * FROM webhook_outbox WHERE state = ? AND next_attempt_at <= ? "
                "AND (lease_until IS NULL OR lease_until <= ?) ORDER BY next_attempt_at LIMIT ?",
                (WEBHOOK_PENDING, now, now, limit)).fetchall()
            for row in rows:
                db.execute("UPDATE webhook_outbox SET lease_owner = ?, lease_until = ? WHERE id = ?",
                           (owner, now + lease_s, row["id"]))
        return [WebhookDelivery(row["id"], row["job_id"], row["url"], row["event"], json.loads(row["payload"]),
                                row["created_at"], row["attempts"], owner) for row in rows]

    def _record_webhook_attempt(self, delivery_id: str, owner: str, state: str, status: int | None,
                                error: str | None, next_attempt_at: float) -> bool:
        now = time.time()
        finished = None if state == WEBHOOK_PENDING else now
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE webhook_outbox SET attempts = attempts + 1, state = ?, last_status = ?, "
                "last_error = ?, next_attempt_at = ?, lease_owner = NULL, lease_until = NULL, "
                "finished_at = ? WHERE id = ? AND state = ? AND lease_owner = ?",
                (state, status, error, next_attempt_at, finished, delivery_id, WEBHOOK_PENDING,
                 owner)).rowcount
        return changed == 1

    def _next_webhook_due(self) -> float | None:
        row = self._db.execute("SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, 0))) FROM "
                               "webhook_outbox WHERE state = ?", (WEBHOOK_PENDING,)).fetchone()
        return row[0]

    def _get(self, job_id: str) -> Job | None:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        attempts = self._db.execute("SELECT * FROM attempts WHERE job_id = ? ORDER BY number",
                                    (job_id,)).fetchall()
        outbox = self._db.execute("SELECT state, attempts, last_status, last_error FROM webhook_outbox "
                                  "WHERE job_id = ?", (job_id,)).fetchone()
        return _job(row, attempts, outbox)

    def _list(self, state: str | None, limit: int) -> list[Job]:
        if state is None:
            rows = self._db.execute("SELECT id FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT ?",
                                    (limit,)).fetchall()
        else:
            rows = self._db.execute("SELECT id FROM jobs WHERE state = ? ORDER BY created_at DESC, "
                                    "rowid DESC LIMIT ?", (state, limit)).fetchall()
        return [job for row in rows if (job := self._get(row["id"])) is not None]

    def _list_source(self, source: str, states: tuple[str, ...], limit: int) -> list[Job]:
        marks = ",".join("?" * len(states))
        rows = self._db.execute(f"SELECT id FROM jobs WHERE json_extract(request, '$.source') = ? AND state IN "
                                f"({marks}) ORDER BY created_at DESC, rowid DESC LIMIT ?",
                                (source, *states, limit)).fetchall()
        return [job for row in rows if (job := self._get(row["id"])) is not None]

    def _counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for row in self._db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            counts[row["state"]] = row["n"]
        return counts


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any exception): the write lock up front."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except BaseException:
                # A failed COMMIT (disk full, I/O error) can leave the transaction open: end it, or
                # the next BEGIN fails and this connection keeps reading its own uncommitted rows.
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        self.db.execute("ROLLBACK")


def _job(row: sqlite3.Row, attempts: list[sqlite3.Row], outbox: sqlite3.Row | None) -> Job:
    request = json.loads(row["request"])
    webhook = None
    if outbox is not None:
        webhook = WebhookStatus(outbox["state"], outbox["attempts"], outbox["last_status"], outbox["last_error"])
    elif request.get("webhook"):
        webhook = WebhookStatus(WEBHOOK_WAITING)
    return Job(
        id=row["id"], state=row["state"], request=request, webhook=webhook,
        created_at=row["created_at"], updated_at=row["updated_at"], started_at=row["started_at"],
        finished_at=row["finished_at"], error=row["error"], category=row["category"],
        images=json.loads(row["images"]), idempotency_key=row["idempotency_key"],
        cancel_requested=bool(row["cancel_requested"]), lease_owner=row["lease_owner"],
        attempts=[Attempt(a["number"], a["instance"], a["started_at"], a["ended_at"], a["reason"])
                  for a in attempts],
    )


def _count_state(db: sqlite3.Connection, state: str) -> int:
    """Jobs in ``state``: a range of the (state, created_at) index."""
    return db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (state,)).fetchone()[0]
