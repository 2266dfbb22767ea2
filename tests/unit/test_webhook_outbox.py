"""The webhook outbox in the job store, on both backends: written with the final state, leased."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from supervisor.job_store import (
    REJECTED,
    WEBHOOK_DELIVERED,
    WEBHOOK_PENDING,
    WEBHOOK_WAITING,
)
from supervisor.job_store_sqlite import MIGRATIONS, SqliteJobStore

URL = "https://api.example.com/hooks/a"
REQUEST = {"prompt": "a little bear in a hat", "workflow": "cute_animal_cpu", "webhook": {"url": URL}}


def run(coro):
    return asyncio.run(coro)


async def opened(tmp_path: Path) -> SqliteJobStore:
    """A SQLite store, for the tests of SQLite's own mechanics."""
    store = SqliteJobStore(tmp_path / "jobs.sqlite3", tmp_path / "out", "host-a", 30.0)
    await store.open()
    return store


def outbox(tmp_path: Path, open_store=None) -> list:
    """The outbox rows, read past the store (from the database ``open_store`` used, else SQLite's)."""
    if open_store is not None and open_store.url is not None:
        with psycopg.connect(open_store.url, row_factory=dict_row) as pg:
            return pg.execute("SELECT * FROM webhook_outbox").fetchall()
    db = sqlite3.connect(tmp_path / "jobs.sqlite3")
    db.row_factory = sqlite3.Row
    rows = db.execute("SELECT * FROM webhook_outbox").fetchall()
    db.close()
    return rows


def test_each_final_state_writes_one_event_and_a_job_without_webhook_none(tmp_path, open_store):
    async def scenario():
        store = await open_store()
        plain, _ = await store.submit({"prompt": "no hook", "workflow": "cute_animal_cpu"})
        cancelled, _ = await store.submit(REQUEST)
        waiting = await store.get(cancelled.id)
        await store.cancel(cancelled.id)
        failed, _ = await store.submit({**REQUEST, "seed": 2})
        await store.claim_next("i0")  # the oldest queued: ``plain``
        await store.claim_next("i0")
        await store.finish(failed.id, 1, "failed", "node_error", error="a node failed")
        succeeded, _ = await store.submit({**REQUEST, "seed": 3})
        await store.claim_next("i0")
        folder = store.staging_dir(succeeded.id, 1)
        folder.mkdir(parents=True)
        (folder / "0.png").write_bytes(b"png")
        assert await store.complete(succeeded.id, 1, ["0.png"])
        rejected, _ = await store.submit({**REQUEST, "seed": 4}, state=REJECTED, category="violence_gore",
                                         error="the prompt was judged unsafe for children")
        jobs = [await store.get(job.id) for job in (plain, cancelled, failed, succeeded, rejected)]
        await store.close()
        return waiting, jobs

    waiting, (plain, cancelled, failed, succeeded, rejected) = run(scenario())
    assert plain.webhook is None
    assert waiting.webhook.state == WEBHOOK_WAITING
    assert all(job.webhook.state == WEBHOOK_PENDING and job.webhook.attempts == 0
               for job in (cancelled, failed, succeeded, rejected))
    rows = {row["job_id"]: row for row in outbox(tmp_path, open_store)}
    assert set(rows) == {cancelled.id, failed.id, succeeded.id, rejected.id}
    assert {job_id: row["event"] for job_id, row in rows.items()} == {
        cancelled.id: "job.cancelled", failed.id: "job.failed", succeeded.id: "job.succeeded",
        rejected.id: "job.rejected"}
    assert all(row["url"] == URL and row["id"].startswith("msg_") for row in rows.values())
    assert json.loads(rows[succeeded.id]["payload"])["images"] == [f"/v1/jobs/{succeeded.id}/images/0"]
    rejected_payload = rows[rejected.id]["payload"]
    assert json.loads(rejected_payload)["category"] == "violence_gore"
    assert "bear" not in rejected_payload and "hat" not in rejected_payload  # never the prompt's words


def test_event_and_final_state_are_one_transaction(tmp_path):
    """If the event cannot be written the job does not end either (and it can end later)."""
    async def scenario():
        store = await opened(tmp_path)
        job, _ = await store.submit(REQUEST)
        await store.claim_next("i0")
        sql = store._db.execute  # on the store's own thread, which owns the connection
        await store._call(sql, "CREATE TEMP TRIGGER no_events BEFORE INSERT ON webhook_outbox "
                               "BEGIN SELECT RAISE(ABORT, 'outbox unavailable'); END")
        with pytest.raises(sqlite3.IntegrityError):
            await store.finish(job.id, 1, "failed", "node_error", error="boom")
        during = await store.get(job.id)
        await store._call(sql, "DROP TRIGGER no_events")
        assert await store.finish(job.id, 1, "failed", "node_error", error="boom")
        after = await store.get(job.id)
        await store.close()
        return during, after

    during, after = run(scenario())
    assert during.state == "running" and during.webhook.state == WEBHOOK_WAITING
    assert after.state == "failed" and after.webhook.state == WEBHOOK_PENDING
    assert len(outbox(tmp_path)) == 1


def test_a_lease_gives_each_try_to_one_sender_and_a_dead_senders_lease_runs_out(tmp_path, open_store):
    async def scenario():
        store = await open_store()
        job, _ = await store.submit(REQUEST, state=REJECTED, category="weapons", error="unsafe")
        (first,) = await store.claim_webhooks("host-a", 0.3, 10)
        assert await store.claim_webhooks("host-b", 0.3, 10) == []  # leased to host-a
        await asyncio.sleep(0.4)  # host-a died: its lease runs out
        (second,) = await store.claim_webhooks("host-b", 30, 10)
        assert second.id == first.id and second.attempts == 0  # the same webhook-id
        assert not await store.record_webhook_attempt(first.id, "host-a", WEBHOOK_DELIVERED, 200, None, 0)
        assert await store.record_webhook_attempt(second.id, "host-b", WEBHOOK_PENDING, 500, None,
                                                  time.time() + 0.2)
        assert await store.claim_webhooks("host-b", 30, 10) == []  # not due yet
        due = await store.next_webhook_due()
        await asyncio.sleep(0.3)
        (third,) = await store.claim_webhooks("host-a", 30, 10)
        assert third.id == first.id and third.attempts == 1
        assert await store.record_webhook_attempt(third.id, "host-a", WEBHOOK_DELIVERED, 204, None, 0)
        assert await store.claim_webhooks("host-b", 30, 10) == []
        done = await store.get(job.id)
        await store.close()
        return due, done

    due, done = run(scenario())
    assert due is not None and due > 0
    assert done.webhook.to_json() == {"state": WEBHOOK_DELIVERED, "attempts": 2, "last_status": 204,
                                      "last_error": None}


def test_a_version_1_database_is_migrated_and_keeps_its_jobs(tmp_path):
    db = sqlite3.connect(tmp_path / "jobs.sqlite3")
    db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO schema_migrations VALUES (1, 0)")
    db.execute("INSERT INTO jobs (id, state, request, created_at, updated_at) VALUES "
               "('00000000-0000-4000-8000-000000000001', 'queued', ?, 1, 1)", (json.dumps(REQUEST),))
    db.commit()
    db.close()

    async def scenario():
        store = await opened(tmp_path)
        job = await store.get("00000000-0000-4000-8000-000000000001")
        await store.cancel(job.id)
        claimed = await store.claim_webhooks("host-a", 30, 10)
        await store.close()
        return job, claimed

    job, claimed = run(scenario())
    assert job.state == "queued" and job.webhook.state == WEBHOOK_WAITING
    assert [delivery.event for delivery in claimed] == ["job.cancelled"]


def test_jobs_ended_by_recovery_or_by_lost_attempts_get_their_event_too(tmp_path, open_store):
    async def scenario():
        store = await open_store()
        lost, _ = await store.submit(REQUEST)
        await store.claim_next("i0")
        assert (await store.retry_or_fail(lost.id, 1, "crash", 1)).state == "failed"
        cancelled, _ = await store.submit({**REQUEST, "seed": 9})
        await store.claim_next("i0")
        await store.cancel(cancelled.id)  # running: only requested ...
        await store.close()
        store = await open_store()  # ... the supervisor died; the restart ends it
        jobs = [await store.get(job.id) for job in (lost, cancelled)]
        await store.close()
        return jobs

    lost, cancelled = run(scenario())
    assert (lost.state, cancelled.state) == ("failed", "cancelled")
    events = {row["job_id"]: row["event"] for row in outbox(tmp_path, open_store)}
    assert events == {lost.id: "job.failed", cancelled.id: "job.cancelled"}
