"""The job store on PostgreSQL (``jobs.database_url``): one queue shared by every GPU host.

The rules are ``supervisor.job_store``'s; here is how PostgreSQL keeps them with several hosts:

- A claim is ``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1)``: two hosts never
  take one job, and neither waits for the other. Leases run on the database's clock (``now()``),
  so the hosts' clocks do not matter.
- Every fenced write first locks the job's row (``FOR UPDATE``) and checks state, attempt and owner
  in the same transaction, so a host that requeues an expired lease and a host that wakes up to
  complete it are ordered: one of them finds the row changed and commits nothing.
- Results are ``bytea`` rows (``job_images``, one per file), readable by any host.
- State changes and throttled progress are announced with ``NOTIFY cak_jobs`` (a small JSON
  payload, sent at commit); every host LISTENs and feeds other hosts' changes into its own
  ``JobEvents``. The last progress is kept in ``jobs.progress`` for late readers.
- Migrations run at ``open`` in one transaction under ``pg_advisory_xact_lock``: two supervisors
  starting at once apply each version once.
- Connections come from psycopg_pool's ``AsyncConnectionPool`` (checked before use, reconnected
  by the pool); a database that cannot be reached raises ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .job_store import (
    CANCELLED,
    FAILED,
    HOST_LOST,
    NOT_COUNTED_REASONS,
    QUEUED,
    RUNNING,
    SCHEMA_VERSION,
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
    RemoteEvent,
    Renewal,
    StoreUnavailable,
    WebhookDelivery,
    WebhookStatus,
)

log = logging.getLogger("supervisor.store")

CHANNEL = "cak_jobs"
MIGRATION_LOCK = 0x63616B6A  # "cakj": the advisory lock key of schema changes
NOW = "extract(epoch from now())::float8"  # the database's clock, as Unix seconds
CONNECT_TIMEOUT_S = 3.0  # waiting longer for a connection: the database is unavailable
LISTEN_RETRY_S = 1.0
DOWN_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)

MIGRATIONS: list[str] = [
    # 1: jobs and their attempts
    """
    CREATE TABLE jobs (
        id text PRIMARY KEY,
        state text NOT NULL CHECK (state IN ('queued','running','succeeded','failed','rejected','cancelled')),
        request text NOT NULL,
        idempotency_key text UNIQUE,
        created_at float8 NOT NULL,
        updated_at float8 NOT NULL,
        started_at float8,
        finished_at float8,
        error text,
        category text,
        images jsonb NOT NULL DEFAULT '[]',
        cancel_requested boolean NOT NULL DEFAULT false
    );
    CREATE INDEX jobs_state_created ON jobs (state, created_at, id);
    CREATE TABLE attempts (
        job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        number integer NOT NULL,
        instance text NOT NULL,
        started_at float8 NOT NULL,
        ended_at float8,
        reason text,
        PRIMARY KEY (job_id, number)
    );
    """,
    # 2: the webhook outbox (see the SQLite store)
    """
    CREATE TABLE webhook_outbox (
        id text PRIMARY KEY,
        job_id text NOT NULL UNIQUE REFERENCES jobs (id) ON DELETE CASCADE,
        url text NOT NULL,
        event text NOT NULL,
        payload text NOT NULL,
        created_at float8 NOT NULL,
        state text NOT NULL CHECK (state IN ('pending','delivered','failed','gone')),
        attempts integer NOT NULL DEFAULT 0,
        last_status integer,
        last_error text,
        next_attempt_at float8 NOT NULL,
        lease_owner text,
        lease_until float8,
        finished_at float8
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox (state, next_attempt_at);
    """,
    # 3: leases, hosts, the last progress, and the result images in the database
    """
    ALTER TABLE jobs ADD COLUMN lease_owner text, ADD COLUMN lease_until float8, ADD COLUMN progress text;
    CREATE INDEX jobs_running_lease ON jobs (lease_until) WHERE state = 'running';
    CREATE TABLE hosts (
        name text PRIMARY KEY,
        started_at float8 NOT NULL,
        heartbeat_at float8 NOT NULL,
        instances jsonb NOT NULL DEFAULT '[]',
        version text NOT NULL
    );
    CREATE TABLE job_images (
        job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        name text NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (job_id, name)
    );
    """,
]
assert len(MIGRATIONS) == SCHEMA_VERSION


def redacted(url: str) -> str:
    """The URL without its password, for logs and errors."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    return f"postgresql://{parts.get('user', '')}@{parts.get('host', '')}:{parts.get('port', '5432')}/" \
           f"{parts.get('dbname', '')}"


class PostgresJobStore(JobStore):
    """psycopg 3 async over a connection pool; one more connection LISTENs for other hosts."""

    def __init__(self, url: str, output_root: Path, name: str, lease_s: float) -> None:
        super().__init__(output_root, name, lease_s)
        self._url = url
        self.where = redacted(url)
        self._pool: AsyncConnectionPool | None = None
        self._remote: RemoteEvent | None = None
        self._listener: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> int:
        self.output_root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.output_root / ".staging", ignore_errors=True)
        pool = AsyncConnectionPool(self._url, min_size=1, max_size=10, open=False,
                                   kwargs={"row_factory": dict_row},
                                   check=AsyncConnectionPool.check_connection,
                                   reconnect_timeout=365 * 86400)  # never give up: the database returns
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 2)
        except DOWN_ERRORS as exc:
            await pool.close()
            raise StoreUnavailable(f"cannot reach the database {self.where}: {exc}") from exc
        self._pool = pool
        await self._migrate()
        if self._remote is not None:
            self._listener = asyncio.create_task(self._listen(), name="job-store-listen")
        return await self._recover()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        """One transaction on a pooled connection; a lost database as ``StoreUnavailable``."""
        if self._pool is None:
            raise StoreUnavailable("the job store is not open yet (the supervisor is starting or stopping)")
        try:
            async with self._pool.connection(timeout=CONNECT_TIMEOUT_S) as conn, conn.transaction():
                yield conn
        except DOWN_ERRORS as exc:
            raise StoreUnavailable(f"the database {self.where} is unavailable: {exc}") from exc

    async def _migrate(self) -> None:
        async with self._tx() as db:
            await db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await db.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                             "(version integer PRIMARY KEY, applied_at float8 NOT NULL)")
            current = (await (await db.execute(
                "SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")).fetchone())["v"]
            if current > len(MIGRATIONS):
                raise RuntimeError(f"{self.where} has schema version {current}, newer than this code "
                                   f"({len(MIGRATIONS)}): upgrade the supervisor")
            for version, script in enumerate(MIGRATIONS[current:], current + 1):
                for statement in filter(str.strip, script.split(";")):
                    await db.execute(statement)
                await db.execute(f"INSERT INTO schema_migrations VALUES (%s, {NOW})", (version,))

    async def _recover(self) -> int:
        """This host's running jobs (it died under them) back to the queue, cancelled ones cancelled."""
        async with self._tx() as db:
            rows = await (await db.execute(
                "SELECT j.id, a.number FROM jobs j JOIN attempts a ON a.job_id = j.id AND a.ended_at IS NULL "
                "WHERE j.state = %s AND j.lease_owner = %s FOR UPDATE OF j", (RUNNING, self.name))).fetchall()
            for row in rows:
                await self._requeue(db, row["id"], row["number"], SUPERVISOR_RESTART, 1)
        return sum(1 for row in rows)

    # ------------------------------------------------------------------ notifications

    def on_remote_event(self, callback: RemoteEvent) -> None:
        self._remote = callback

    async def _notify(self, db: psycopg.AsyncConnection[Any], job_id: str, state: str,
                      **details: Any) -> None:
        """Tell the other hosts (at commit) that the job changed."""
        payload = json.dumps({"id": job_id, "state": state, "host": self.name, **details},
                             separators=(",", ":"))
        await db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    async def _listen(self) -> None:
        """Other hosts' changes into ``on_remote_event``'s callback; reconnects after an outage."""
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True,
                                                             connect_timeout=int(CONNECT_TIMEOUT_S))
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    async for note in conn.notifies():
                        self._deliver(note.payload)
            except asyncio.CancelledError:
                raise
            except DOWN_ERRORS as exc:
                log.debug("LISTEN connection lost (%s); reconnecting", exc)
            await asyncio.sleep(LISTEN_RETRY_S)

    def _deliver(self, payload: str) -> None:
        try:
            event = json.loads(payload)
        except ValueError:
            return
        if not isinstance(event, dict) or event.get("host") == self.name or self._remote is None:
            return
        details = {key: value for key, value in event.items() if key not in ("id", "state", "host")}
        self._remote(str(event.get("id")), str(event.get("state")), details)

    # ------------------------------------------------------------------ writes

    async def submit(self, request: dict[str, Any], idempotency_key: str | None = None, *,
                     state: str = QUEUED, error: str | None = None,
                     category: str | None = None, job_id: str | None = None,
                     on_committed: Callable[[Job, bool], None] | None = None,
                     max_queued: int | None = None) -> tuple[Job, bool]:
        job_id = job_id or str(uuid.uuid4())
        encoded = json.dumps(request, sort_keys=True, ensure_ascii=False)
        finished = NOW if state in TERMINAL_STATES else "NULL"
        async with self._tx() as db:
            if max_queued is not None and state == QUEUED and await _count_state(db, QUEUED) >= max_queued:
                raise QueueFull(f"{max_queued} jobs are queued")
            row = await (await db.execute(
                f"INSERT INTO jobs (id, state, request, idempotency_key, created_at, updated_at, finished_at, "
                f"error, category) VALUES (%s, %s, %s, %s, {NOW}, {NOW}, {finished}, %s, %s) "
                f"ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
                (job_id, state, encoded, idempotency_key, error, category))).fetchone()
            created = row is not None
            if not created:  # the key is taken (the unique index: on any host)
                old = await (await db.execute("SELECT id, request FROM jobs WHERE idempotency_key = %s",
                                              (idempotency_key,))).fetchone()
                if old["request"] != encoded:
                    raise IdempotencyConflict(old["id"])
                job_id = old["id"]
            elif state in TERMINAL_STATES:
                await self._enqueue_webhook(db, job_id)
            else:  # the other hosts' dispatchers look at the queue now, not at their next poll
                await self._notify(db, job_id, QUEUED)
            job = await self._get(db, job_id)
        assert job is not None
        if on_committed is not None:
            on_committed(job, created)
        return job, created

    async def claim_next(self, instance: str, exclude: Collection[str] = ()) -> Job | None:
        async with self._tx() as db:
            row = await (await db.execute(
                f"UPDATE jobs SET state = %s, updated_at = {NOW}, started_at = COALESCE(started_at, {NOW}), "
                f"lease_owner = %s, lease_until = {NOW} + %s, progress = NULL "
                f"WHERE id = (SELECT id FROM jobs WHERE state = %s AND NOT (id = ANY(%s)) "
                f"ORDER BY created_at, id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id",
                (RUNNING, self.name, self.lease_s, QUEUED, list(exclude)))).fetchone()
            if row is None:
                return None
            await db.execute(
                f"INSERT INTO attempts (job_id, number, instance, started_at) SELECT %s, "
                f"COALESCE(MAX(number), 0) + 1, %s, {NOW} FROM attempts WHERE job_id = %s",
                (row["id"], instance, row["id"]))
            await self._notify(db, row["id"], RUNNING, instance=instance)
            return await self._get(db, row["id"])

    async def _current(self, db: psycopg.AsyncConnection[Any], job_id: str, attempt: int) -> dict[str, Any] | None:
        """The job's row, locked, if ``attempt`` is its open one and this host holds its lease."""
        return await (await db.execute(
            "SELECT j.cancel_requested FROM jobs j JOIN attempts a ON a.job_id = j.id "
            "WHERE j.id = %s AND j.state = %s AND a.number = %s AND a.ended_at IS NULL "
            "AND j.lease_owner = %s FOR UPDATE OF j", (job_id, RUNNING, attempt, self.name))).fetchone()

    async def _close_attempt(self, db: psycopg.AsyncConnection[Any], job_id: str, attempt: int,
                             reason: str) -> None:
        await db.execute(f"UPDATE attempts SET ended_at = {NOW}, reason = %s WHERE job_id = %s AND number = %s",
                         (reason, job_id, attempt))

    async def _end(self, db: psycopg.AsyncConnection[Any], job_id: str, state: str,
                   error: str | None = None, category: str | None = None) -> None:
        """A final state (with its webhook event and its notification)."""
        await db.execute(f"UPDATE jobs SET state = %s, error = %s, category = %s, updated_at = {NOW}, "
                         f"finished_at = {NOW}, lease_owner = NULL, lease_until = NULL WHERE id = %s",
                         (state, error, category, job_id))
        await self._enqueue_webhook(db, job_id)
        await self._notify(db, job_id, state, error=error, category=category)

    async def complete(self, job_id: str, attempt: int, images: list[str]) -> bool:
        staging = self.staging_dir(job_id, attempt)
        files = await asyncio.to_thread(_read_folder, staging)
        async with self._tx() as db:
            current = await self._current(db, job_id, attempt)
            if current is not None and current["cancel_requested"]:
                await self._close_attempt(db, job_id, attempt, CANCELLED)
                await self._end(db, job_id, CANCELLED)
            elif current is not None:
                await db.execute("DELETE FROM job_images WHERE job_id = %s", (job_id,))
                async with db.cursor() as cursor:
                    await cursor.executemany("INSERT INTO job_images (job_id, name, data) VALUES (%s, %s, %s)",
                                             [(job_id, name, data) for name, data in files.items()])
                await self._close_attempt(db, job_id, attempt, SUCCEEDED)
                await db.execute(
                    f"UPDATE jobs SET state = %s, images = %s, updated_at = {NOW}, finished_at = {NOW}, "
                    f"error = NULL, category = NULL, lease_owner = NULL, lease_until = NULL WHERE id = %s",
                    (SUCCEEDED, json.dumps([f"{job_id}/{name}" for name in images]), job_id))
                await self._enqueue_webhook(db, job_id)
                await self._notify(db, job_id, SUCCEEDED)
        await asyncio.to_thread(shutil.rmtree, staging, True)
        return current is not None and not current["cancel_requested"]

    async def finish(self, job_id: str, attempt: int, state: str, reason: str, *,
                     error: str | None = None, category: str | None = None) -> bool:
        if state not in TERMINAL_STATES or state == SUCCEEDED:
            raise ValueError(f"finish() ends a job as failed, rejected or cancelled, not {state}")
        async with self._tx() as db:
            if await self._current(db, job_id, attempt) is None:
                return False
            await self._close_attempt(db, job_id, attempt, reason)
            await self._end(db, job_id, state, error, category)
        await asyncio.to_thread(shutil.rmtree, self.staging_dir(job_id, attempt), True)
        return True

    async def retry_or_fail(self, job_id: str, attempt: int, reason: str, max_attempts: int) -> Job | None:
        async with self._tx() as db:
            if await self._current(db, job_id, attempt) is None:
                return None
            await self._requeue(db, job_id, attempt, reason, max_attempts)
            job = await self._get(db, job_id)
        await asyncio.to_thread(shutil.rmtree, self.staging_dir(job_id, attempt), True)
        return job

    async def _requeue(self, db: psycopg.AsyncConnection[Any], job_id: str, attempt: int, reason: str,
                       max_attempts: int) -> None:
        """Close the attempt; the job back to the queue, or failed/cancelled (row locked by the caller)."""
        await self._close_attempt(db, job_id, attempt, reason)
        job = await (await db.execute("SELECT cancel_requested FROM jobs WHERE id = %s", (job_id,))).fetchone()
        counted = await (await db.execute(
            "SELECT number, instance, reason FROM attempts WHERE job_id = %s AND NOT (reason = ANY(%s)) "
            "ORDER BY number", (job_id, list(NOT_COUNTED_REASONS)))).fetchall()
        if job["cancel_requested"]:
            await self._end(db, job_id, CANCELLED)
        elif reason not in NOT_COUNTED_REASONS and len(counted) >= max_attempts:
            history = "; ".join(f"attempt {r['number']} on {r['instance']}: {r['reason']}" for r in counted)
            await self._end(db, job_id, FAILED, f"gave up after {len(counted)} attempts ({history})")
        else:
            await db.execute(f"UPDATE jobs SET state = %s, updated_at = {NOW}, lease_owner = NULL, "
                             f"lease_until = NULL, progress = NULL WHERE id = %s", (QUEUED, job_id))
            await self._notify(db, job_id, QUEUED, reason=reason)

    async def purge_images(self, finished_before: float) -> int:
        async with self._tx() as db:
            rows = await (await db.execute(
                f"UPDATE jobs SET images = '[]', updated_at = {NOW} WHERE finished_at < %s AND images != '[]' "
                f"RETURNING id", (finished_before,))).fetchall()
            await db.execute("DELETE FROM job_images WHERE job_id = ANY(%s)", ([row["id"] for row in rows],))
        return len(rows)

    async def cancel(self, job_id: str) -> Job | None:
        async with self._tx() as db:
            row = await (await db.execute("SELECT state FROM jobs WHERE id = %s FOR UPDATE",
                                          (job_id,))).fetchone()
            if row is None:
                return None
            if row["state"] == QUEUED:
                await self._end(db, job_id, CANCELLED)
            elif row["state"] == RUNNING:
                await db.execute(f"UPDATE jobs SET cancel_requested = true, updated_at = {NOW} WHERE id = %s",
                                 (job_id,))
                await self._notify(db, job_id, RUNNING, cancel=True)  # its holder interrupts it now
            return await self._get(db, job_id)

    async def _enqueue_webhook(self, db: psycopg.AsyncConnection[Any], job_id: str) -> None:
        """The job's final-state event into the outbox, if it asked for a webhook (same transaction)."""
        row = await (await db.execute("SELECT request, state, error, category, images FROM jobs WHERE id = %s",
                                      (job_id,))).fetchone()
        url = (json.loads(row["request"]).get("webhook") or {}).get("url")
        if url is None or row["state"] not in WEBHOOK_EVENTS:
            return
        count = await (await db.execute("SELECT COUNT(*) AS n FROM attempts WHERE job_id = %s",
                                        (job_id,))).fetchone()
        data = {"job_id": job_id, "state": row["state"], "status_url": f"/v1/jobs/{job_id}",
                "images": [f"/v1/jobs/{job_id}/images/{n}" for n in range(len(row["images"]))],
                "error": row["error"], "category": row["category"], "attempts": count["n"]}
        await db.execute(
            f"INSERT INTO webhook_outbox (id, job_id, url, event, payload, created_at, state, next_attempt_at) "
            f"VALUES (%s, %s, %s, %s, %s, {NOW}, %s, {NOW}) ON CONFLICT (job_id) DO NOTHING",
            (f"msg_{uuid.uuid4().hex}", job_id, url, WEBHOOK_EVENTS[row["state"]],
             json.dumps(data, ensure_ascii=False), WEBHOOK_PENDING))

    # ------------------------------------------------------------------ leases and hosts

    async def renew(self, held: dict[str, int]) -> Renewal:
        if not held:
            return Renewal(frozenset(), frozenset())
        async with self._tx() as db:
            rows = await (await db.execute(
                f"UPDATE jobs j SET lease_until = {NOW} + %s FROM unnest(%s::text[], %s::int[]) AS h(id, attempt) "
                f"WHERE j.id = h.id AND j.state = %s AND j.lease_owner = %s AND EXISTS (SELECT 1 FROM attempts a "
                f"WHERE a.job_id = j.id AND a.number = h.attempt AND a.ended_at IS NULL) "
                f"RETURNING j.id, j.cancel_requested",
                (self.lease_s, list(held), list(held.values()), RUNNING, self.name))).fetchall()
        kept = frozenset(row["id"] for row in rows)
        return Renewal(frozenset(held) - kept, frozenset(row["id"] for row in rows if row["cancel_requested"]))

    async def requeue_expired(self, max_attempts: int) -> list[Job]:
        async with self._tx() as db:
            rows = await (await db.execute(
                f"SELECT j.id, a.number FROM jobs j JOIN attempts a ON a.job_id = j.id AND a.ended_at IS NULL "
                f"WHERE j.state = %s AND j.lease_until < {NOW} AND j.lease_owner IS DISTINCT FROM %s "
                f"FOR UPDATE OF j SKIP LOCKED", (RUNNING, self.name))).fetchall()
            jobs = []
            for row in rows:
                await self._requeue(db, row["id"], row["number"], HOST_LOST, max_attempts)
                jobs.append(await self._get(db, row["id"]))
        return [job for job in jobs if job is not None]

    async def heartbeat(self, instances: list[dict[str, Any]], version: str) -> None:
        async with self._tx() as db:
            await db.execute(
                f"INSERT INTO hosts (name, started_at, heartbeat_at, instances, version) VALUES "
                f"(%s, {NOW}, {NOW}, %s, %s) ON CONFLICT (name) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, "
                f"instances = excluded.instances, version = excluded.version",
                (self.name, json.dumps(instances), version))

    async def hosts(self) -> list[Host]:
        async with self._tx() as db:
            rows = await (await db.execute(
                f"SELECT * FROM hosts WHERE heartbeat_at > {NOW} - %s ORDER BY name",
                (3 * self.lease_s,))).fetchall()
        return [Host(r["name"], r["started_at"], r["heartbeat_at"], r["instances"], r["version"]) for r in rows]

    async def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        async with self._tx() as db:
            changed = await db.execute("UPDATE jobs SET progress = %s WHERE id = %s AND state = %s "
                                       "AND lease_owner = %s", (json.dumps(progress), job_id, RUNNING, self.name))
            if changed.rowcount:
                await self._notify(db, job_id, RUNNING, progress=progress)

    # ------------------------------------------------------------------ webhook outbox

    async def claim_webhooks(self, owner: str, lease_s: float, limit: int) -> list[WebhookDelivery]:
        async with self._tx() as db:
            rows = await (await db.execute(
                f"UPDATE webhook_outbox SET lease_owner = %s, lease_until = {NOW} + %s WHERE id IN "
                f"(SELECT id FROM webhook_outbox WHERE state = %s AND next_attempt_at <= {NOW} AND "
                f"(lease_until IS NULL OR lease_until <= {NOW}) ORDER BY next_attempt_at LIMIT %s "
                f"FOR UPDATE SKIP LOCKED) RETURNING *", (owner, lease_s, WEBHOOK_PENDING, limit))).fetchall()
        rows.sort(key=lambda row: row["next_attempt_at"])
        return [WebhookDelivery(row["id"], row["job_id"], row["url"], row["event"], json.loads(row["payload"]),
                                row["created_at"], row["attempts"], owner) for row in rows]

    async def record_webhook_attempt(self, delivery_id: str, owner: str, state: str,
                                     status: int | None, error: str | None,
                                     next_attempt_at: float) -> bool:
        finished = "NULL" if state == WEBHOOK_PENDING else NOW
        async with self._tx() as db:
            changed = await db.execute(
                f"UPDATE webhook_outbox SET attempts = attempts + 1, state = %s, last_status = %s, "
                f"last_error = %s, next_attempt_at = %s, lease_owner = NULL, lease_until = NULL, "
                f"finished_at = {finished} WHERE id = %s AND state = %s AND lease_owner = %s",
                (state, status, error, next_attempt_at, delivery_id, WEBHOOK_PENDING, owner))
        return changed.rowcount == 1

    async def next_webhook_due(self) -> float | None:
        async with self._tx() as db:
            row = await (await db.execute(
                "SELECT MIN(GREATEST(next_attempt_at, COALESCE(lease_until, 0))) AS due FROM webhook_outbox "
                "WHERE state = %s", (WEBHOOK_PENDING,))).fetchone()
        return row["due"]

    # ------------------------------------------------------------------ reads

    async def get(self, job_id: str) -> Job | None:
        async with self._tx() as db:
            return await self._get(db, job_id)

    async def _get(self, db: psycopg.AsyncConnection[Any], job_id: str) -> Job | None:
        row = await (await db.execute("SELECT * FROM jobs WHERE id = %s", (job_id,))).fetchone()
        if row is None:
            return None
        attempts = await (await db.execute("SELECT * FROM attempts WHERE job_id = %s ORDER BY number",
                                           (job_id,))).fetchall()
        outbox = await (await db.execute("SELECT state, attempts, last_status, last_error FROM webhook_outbox "
                                         "WHERE job_id = %s", (job_id,))).fetchone()
        return _job(row, attempts, outbox)

    async def _jobs(self, query: str, params: tuple[Any, ...]) -> list[Job]:
        async with self._tx() as db:
            rows = await (await db.execute(query, params)).fetchall()
            return [job for row in rows if (job := await self._get(db, row["id"])) is not None]

    async def list(self, state: str | None = None, limit: int = 50) -> list[Job]:
        if state is None:
            return await self._jobs("SELECT id FROM jobs ORDER BY created_at DESC, id DESC LIMIT %s", (limit,))
        return await self._jobs("SELECT id FROM jobs WHERE state = %s ORDER BY created_at DESC, id DESC LIMIT %s",
                                (state, limit))

    async def list_source(self, source: str, states: tuple[str, ...] = STATES, limit: int = 50) -> list[Job]:
        return await self._jobs("SELECT id FROM jobs WHERE request::jsonb->>'source' = %s AND state = ANY(%s) "
                                "ORDER BY created_at DESC, id DESC LIMIT %s", (source, list(states), limit))

    async def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        async with self._tx() as db:
            for row in await (await db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")).fetchall():
                counts[row["state"]] = row["n"]
        return counts

    async def count(self, state: str) -> int:
        async with self._tx() as db:
            return await _count_state(db, state)

    async def read_image(self, job_id: str, name: str) -> bytes | None:
        async with self._tx() as db:
            row = await (await db.execute("SELECT data FROM job_images WHERE job_id = %s AND name = %s",
                                          (job_id, name))).fetchone()
        return None if row is None else bytes(row["data"])


def _read_folder(folder: Path) -> dict[str, bytes]:
    """Every staged file of an attempt (images, and the door's outputs.json), by name."""
    if not folder.is_dir():
        return {}
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def _job(row: dict[str, Any], attempts: list[dict[str, Any]], outbox: dict[str, Any] | None) -> Job:
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
        images=list(row["images"]), idempotency_key=row["idempotency_key"],
        cancel_requested=bool(row["cancel_requested"]), lease_owner=row["lease_owner"],
        progress=json.loads(row["progress"]) if row["progress"] else None,
        attempts=[Attempt(a["number"], a["instance"], a["started_at"], a["ended_at"], a["reason"])
                  for a in attempts],
    )


async def _count_state(db: psycopg.AsyncConnection[Any], state: str) -> int:
    """Jobs in ``state``: a range of the (state, created_at) index."""
    row = await (await db.execute("SELECT COUNT(*) AS n FROM jobs WHERE state = %s", (state,))).fetchone()
    return int(row["n"])
