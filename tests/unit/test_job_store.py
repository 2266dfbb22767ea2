"""The durable job store on both backends (a real SQLite file, a real PostgreSQL server): claims,
retries, one result, leases and fencing, recovery, migrations, outages."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from supervisor.job_store import (
    CANCELLED,
    FAILED,
    QUEUED,
    REJECTED,
    RUNNING,
    SCHEMA_VERSION,
    SUCCEEDED,
    SUPERVISOR_RESTART,
    SUPERVISOR_SHUTDOWN,
    IdempotencyConflict,
    JobStore,
    QueueFull,
)
from supervisor.job_store_sqlite import SqliteJobStore

REQUEST = {"prompt": "a little bear in a hat", "workflow": "cute_animal_cpu"}


def run(coro):
    return asyncio.run(coro)


async def opened(tmp_path: Path) -> SqliteJobStore:
    """A SQLite store, for the tests of SQLite's own mechanics."""
    store = SqliteJobStore(tmp_path / "jobs.sqlite3", tmp_path / "out", "host-a", 30.0)
    await store.open()
    return store


async def open_and_close(tmp_path: Path) -> None:
    await (await opened(tmp_path)).close()


def stage(store: JobStore, job_id: str, attempt: int, name: str = "0.png", data: bytes = b"png") -> None:
    folder = store.staging_dir(job_id, attempt)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def test_submit_claim_complete_gives_one_result(tmp_path, open_store):
    async def scenario():
        store = await open_store()
        job, created = await store.submit(REQUEST)
        assert created and job.state == QUEUED and job.request == REQUEST
        claimed = await store.claim_next("i0")
        assert claimed.id == job.id and claimed.state == RUNNING
        assert claimed.current_attempt.number == 1 and claimed.current_attempt.instance == "i0"
        stage(store, job.id, 1)
        assert await store.complete(job.id, 1, ["0.png"])
        # The same attempt (or a stale one) cannot deliver a second result.
        stage(store, job.id, 1, data=b"other")
        assert not await store.complete(job.id, 1, ["0.png"])
        done = await store.get(job.id)
        data = await store.read_image(job.id, "0.png")
        await store.close()
        return done, data

    done, data = run(scenario())
    assert done.state == SUCCEEDED and done.images == [f"{done.id}/0.png"]
    assert data == b"png"
    assert done.attempts[0].reason == SUCCEEDED and done.attempts[0].ended_at is not None
    assert not (tmp_path / "out" / ".staging" / f"{done.id}.1").exists()


def test_claim_order_is_oldest_first_and_empty_queue_gives_none(tmp_path, open_store):
    async def scenario():
        store = await open_store()
        first, _ = await store.submit({"prompt": "one"})
        second, _ = await store.submit({"prompt": "two"})
        got = [await store.claim_next("a"), await store.claim_next("b"), await store.claim_next("c")]
        await store.close()
        return first, second, got

    first, second, got = run(scenario())
    assert [got[0].id, got[1].id, got[2]] == [first.id, second.id, None]


def test_lost_instance_requeues_until_attempts_are_used_up(tmp_path, open_store):
    async def scenario():
        store = await open_store()
        job, _ = await store.submit(REQUEST)
        states = []
        for number, instance in enumerate(("i0", "i1", "i0"), 1):
            await store.claim_next(instance)
            after = await store.retry_or_fail(job.id, number, "crash", max_attempts=3)
            states.append(after.state)
        await store.close()
        return states, after

    states, after = run(scenario())
    assert states == [QUEUED, QUEUED, FAILED]
    assert [a.reason for a in after.attempts] == ["crash"] * 3
    assert "attempt 1 on i0: crash" in after.error and "attempt 3 on i0: crash" in after.error


def test_stale_attempt_cannot_change_a_requeued_job(tmp_path, open_store):
    async def scenario():
        store = await open_store()
        job, _ = await store.submit(REQUEST)
        await store.claim_next("i0")
        await store.retry_or_fail(job.id, 1, "hang", max_attempts=3)
        await store.claim_next("i1")
        stale = [await store.finish(job.id, 1, FAILED, "error", error="late"),
                 await store.retry_or_fail(job.id, 1, "crash", 3)]
        stage(store, job.id, 2)
        ok = await store.complete(job.id, 2, ["0.png"])
        final = await store.get(job.id)
        await store.close()
        return stale, ok, final

    stale, ok, final = run(scenario())
    assert stale == [False, None] and ok
    assert final.state == SUCCEEDED and [a.reason for a in final.attempts] == ["hang", SUCCEEDED]


def test_stale_attempt_cannot_complete_while_a_later_attempt_runs(tmp_path, open_store):
    """The one-result fence on complete(): attempt 1 (its instance presumed lost) delivers late."""
    async def scenario():
        store = await open_store()
        job, _ = await store.submit(REQUEST)
        await store.claim_next("i0")
        await store.retry_or_fail(job.id, 1, "unresponsive", max_attempts=3)
        await store.claim_next("i1")
        stage(store, job.id, 1, data=b"stale")
        stale = await store.complete(job.id, 1, ["0.png"])
        running = await store.get(job.id)
        stage(store, job.id, 2, data=b"fresh")
        ok = await store.complete(job.id, 2, ["0.png"])
        data = await store.read_image(job.id, "0.png")
        await store.close()
        return stale, running, ok, data

    stale, running, ok, data = run(scenario())
    assert stale is False and ok is True
    assert running.state == RUNNING and running.images == [] and running.current_attempt.number == 2
    assert data == b"fresh"
    assert not (tmp_path / "out" / ".staging" / f"{running.id}.1").exists()


class CommitFails:
    """A real connection whose next COMMIT fails, as on a full disk or an I/O error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.armed = True

    def execute(self, sql: str, *args):
        if sql == "COMMIT" and self.armed:
            self.armed = False
            raise sqlite3.OperationalError("disk I/O error")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self.conn, name)


def test_a_failed_commit_rolls_back_and_keeps_the_staged_images(tmp_path):
    async def scenario():
        store = await opened(tmp_path)
        job, _ = await store.submit(REQUEST)
        await store.claim_next("i0")
        stage(store, job.id, 1)
        real, store._conn = store._conn, CommitFails(store._conn)
        with pytest.raises(sqlite3.OperationalError):
            await store.complete(job.id, 1, ["0.png"])
        store._conn = real
        after_failure = await store.get(job.id)
        staged = (store.staging_dir(job.id, 1) / "0.png").exists()
        ok = await store.complete(job.id, 1, ["0.png"])  # the next write works on the same connection
        await store.close()
        return after_failure, staged, ok

    after_failure, staged, ok = run(scenario())
    assert after_failure.state == RUNNING and after_failure.current_attempt.number == 1
    assert after_failure.images == [] and staged and ok


async def reopen_and_claim(open_store, job_id: str):
    """The next supervisor's view (same name): the job as recovered, and what it claims first."""
    store = await open_store()
    job = await store.get(job_id)
    again = await store.claim_next("i1")
    await store.close()
    return job, again


def test_reopen_requeues_running_jobs_and_closes_their_attempts(tmp_path, open_store):
    async def first_life():
        store = await open_store()
        job, _ = await store.submit(REQUEST)
        await store.claim_next("i0")
        stage(store, job.id, 1)  # half-written images of the dead supervisor
        # No close(): the process "dies" with the attempt open.
        await store.close()  # the process "dies" with the attempt open (close() changes no row)
        return job.id

    job, again = run(reopen_and_claim(open_store, run(first_life())))
    assert job.state == QUEUED
    assert job.attempts[0].reason == SUPERVISOR_RESTART
    assert again.id == job.id and again.current_attempt.number == 2
    assert not (tmp_path / "out" / ".staging").exists() or not any((tmp_path / "out" / ".staging").iterdir())


def test_reopen_ends_a_running_job_whose_cancel_was_requested(tmp_path, open_store):
    async def first_life():
        store = await open_store()
        job, _ = await store.submit(REQUEST)
        await store.claim_next("i0")
        await store.cancel(job.id)  # DELETE while running: the interrupt never landed
        await store.close()  # the supervisor dies here
        return job.id

    job, again = run(reopen_and_claim(open_store, run(first_life())))
    assert job.state == CANCELLED and job.finished_at is not None
    assert again is None  # not run a second time


def test_supervisor_restarts_do_not_use_up_attempts(tmp_path, open_store):
    async def scenario():
        store = await open_store()
        job, _ = await store.submit(REQUEST)
        await store.claim_next("i0")
        after = await store.retry_or_fail(job.id, 1, SUPERVISOR_RESTART, max_attempts=1)
        await store.close()
        return after

    assert run(scenario()).state == QUEUED


def test_restart_and_shutdown_attempts_are_not_counted_when_a_real_fault_follows(tmp_path, open_store):
    async def scenario():
        store = await open_store()
        job, _ = await store.submit(REQUEST)
        states = []
        for number, reason in enumerate((SUPERVISOR_RESTART, SUPERVISOR_SHUTDOWN, "crash", "hang"), 1):
            await store.claim_next("i0")
            states.append((await store.retry_or_fail(job.id, number, reason, max_attempts=2)).state)
        final = await store.get(job.id)
        await store.close()
        return states, final

    states, final = run(scenario())
    assert states == [QUEUED, QUEUED, QUEUED, FAILED]  # 2 counted faults of 4 attempts
    assert final.error.startswith("gave up after 2 attempts")
    assert "supervisor_" not in final.error


def test_leftover_final_folder_of_an_uncommitted_attempt_is_replaced(tmp_path):
    async def scenario():
        store = await opened(tmp_path)
        job, _ = await store.submit(REQUEST)
        await store.claim_next("i0")
        leftover = tmp_path / "out" / job.id
        leftover.mkdir(parents=True)
        (leftover / "0.png").write_bytes(b"old")
        stage(store, job.id, 1, data=b"new")
        await store.complete(job.id, 1, ["0.png"])
        await store.close()
        return leftover

    assert (run(scenario()) / "0.png").read_bytes() == b"new"


def test_idempotency_key_returns_the_same_job_and_refuses_a_different_request(tmp_path, open_store):
    async def scenario():
        store = await open_store()
        first, created1 = await store.submit(REQUEST, "key-1")
        second, created2 = await store.submit(REQUEST, "key-1")
        with pytest.raises(IdempotencyConflict):
            await store.submit({"prompt": "something else"}, "key-1")
        await store.close()
        return first, created1, second, created2

    first, created1, second, created2 = run(scenario())
    assert created1 and not created2 and first.id == second.id


def test_max_queued_refuses_a_new_queued_job_and_stores_nothing(tmp_path, open_store):
    async def scenario():
        store = await open_store()
        await store.submit(REQUEST, max_queued=2)
        await store.submit(REQUEST, max_queued=2)
        with pytest.raises(QueueFull):
            await store.submit(REQUEST, max_queued=2)
        rejected, _ = await store.submit(REQUEST, state=REJECTED, error="unsafe", max_queued=2)  # not queued
        queued_before = await store.count(QUEUED)
        await store.claim_next("i0")  # one fewer queued: room again
        third, created = await store.submit(REQUEST, max_queued=2)
        counts = await store.counts()
        await store.close()
        return rejected, queued_before, created, counts

    rejected, queued_before, created, counts = run(scenario())
    assert rejected.state == REJECTED and queued_before == 2 and created
    assert counts[QUEUED] == 2 and counts[RUNNING] == 1 and counts[REJECTED] == 1


def test_cancel_queued_and_running(tmp_path, open_store):
    async def scenario():
        store = await open_store()
        queued, _ = await store.submit({"prompt": "q"})
        running, _ = await store.submit({"prompt": "r"})
        cancelled = await store.cancel(queued.id)
        await store.claim_next("i0")  # takes "running" (the queued one is gone)
        requested = await store.cancel(running.id)
        await store.finish(running.id, 1, CANCELLED, "cancelled")
        after = await store.get(running.id)
        unknown = await store.cancel("00000000-0000-4000-8000-000000000000")
        await store.close()
        return cancelled, requested, after, unknown

    cancelled, requested, after, unknown = run(scenario())
    assert cancelled.state == CANCELLED
    assert requested.state == RUNNING and requested.cancel_requested
    assert after.state == CANCELLED and unknown is None


def test_rejected_submission_list_and_counts(tmp_path, open_store):
    async def scenario():
        store = await open_store()
        await store.submit({"prompt": "ok"})
        rejected, _ = await store.submit({"prompt": "bad"}, state=REJECTED, error="unsafe", category="violence")
        listed = await store.list(REJECTED)
        counts = await store.counts()
        counts_by_state = {state: await store.count(state) for state in counts}
        await store.close()
        return rejected, listed, counts, counts_by_state

    rejected, listed, counts, counts_by_state = run(scenario())
    assert counts_by_state == counts
    assert rejected.state == REJECTED and rejected.category == "violence" and rejected.finished_at
    assert [job.id for job in listed] == [rejected.id]
    assert counts[QUEUED] == 1 and counts[REJECTED] == 1 and counts[SUCCEEDED] == 0


def test_schema_is_versioned_and_wal(tmp_path):
    run(open_and_close(tmp_path))
    db = sqlite3.connect(tmp_path / "jobs.sqlite3")
    assert db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_newer_schema_is_refused(tmp_path):
    run(open_and_close(tmp_path))
    db = sqlite3.connect(tmp_path / "jobs.sqlite3")
    db.execute("INSERT INTO schema_migrations VALUES (99, 0)")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="newer than this code"):
        run(opened(tmp_path))


def test_statements_run_off_the_event_loop_thread(tmp_path):
    async def scenario():
        store = await opened(tmp_path)
        seen = await store._call(lambda: threading.current_thread().name)
        await store.close()
        return seen

    assert run(scenario()).startswith("job-store")


def test_purge_images_deletes_old_pictures_and_their_paths_only(tmp_path, open_store):
    async def scenario():
        store = await open_store()
        old, _ = await store.submit(REQUEST)
        new, _ = await store.submit({"prompt": "a newer bear"})
        for job in (old, new):
            await store.claim_next("i0")
            stage(store, job.id, 1)
            assert await store.complete(job.id, 1, ["0.png"])
        cutoff = (await store.get(new.id)).finished_at  # old finished before it, new does not count
        purged = await store.purge_images(cutoff)
        again = await store.purge_images(cutoff)
        after = [await store.get(job.id) for job in (old, new)]
        data = [await store.read_image(job.id, "0.png") for job in (old, new)]
        await store.close()
        return purged, again, after, data

    purged, again, (old, new), data = run(scenario())
    assert (purged, again) == (1, 0)
    assert old.images == [] and old.state == SUCCEEDED and data == [None, b"png"]
