"""Leases, fencing, hosts and outages of the job store, on both backends (tests.support.plugin's
``open_store``: several store objects on one queue stand for several supervisors)."""

from __future__ import annotations

import asyncio
import time
import uuid
from types import SimpleNamespace

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from supervisor.api import create_app
from supervisor.job_store import (
    FAILED,
    HOST_LOST,
    QUEUED,
    RUNNING,
    SCHEMA_VERSION,
    SUCCEEDED,
    SUPERVISOR_RESTART,
    StoreUnavailable,
)
from supervisor.job_store_postgres import PostgresJobStore

REQUEST = {"prompt": "a little bear in a hat", "workflow": "cute_animal_cpu"}
SHORT_LEASE_S = 0.3


def run(coro):
    return asyncio.run(coro)


def stage(store, job_id: str, attempt: int, data: bytes) -> None:
    folder = store.staging_dir(job_id, attempt)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "0.png").write_bytes(data)


async def requeued_by(store, max_attempts: int = 3) -> list:
    """What ``store`` requeued once the other host's lease ran out (polled: the lease is short)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        moved = await store.requeue_expired(max_attempts)
        if moved:
            return moved
        await asyncio.sleep(SHORT_LEASE_S / 3)
    raise TimeoutError("the expired lease was never requeued")


def test_a_host_that_lost_its_lease_commits_nothing_and_the_job_has_one_result(tmp_path, open_store):
    async def scenario():
        a = await open_store("host-a", lease_s=SHORT_LEASE_S)
        b = await open_store("host-b", lease_s=30)
        job, _ = await a.submit(REQUEST)
        await a.claim_next("a0")  # host-a then pauses (SIGSTOP) past its lease
        (moved,) = await requeued_by(b)
        assert (await b.claim_next("b0")).current_attempt.number == 2
        stage(a, job.id, 1, b"from a")  # host-a wakes up and tries to deliver
        late = [await a.complete(job.id, 1, ["0.png"]),
                await a.finish(job.id, 1, FAILED, "node_error", error="late"),
                await a.retry_or_fail(job.id, 1, "crash", 3)]
        renewal = await a.renew({job.id: 1})
        stage(b, job.id, 2, b"from b")
        won = await b.complete(job.id, 2, ["0.png"])
        final = await b.get(job.id)
        image = await a.read_image(job.id, "0.png")
        await a.close()
        await b.close()
        return moved, late, renewal, won, final, image

    moved, late, renewal, won, final, image = run(scenario())
    assert moved.state == QUEUED and moved.attempts[0].reason == HOST_LOST
    assert late == [False, False, None]
    assert renewal.lost == {final.id}
    assert won and final.state == SUCCEEDED and image == b"from b"
    assert [a.reason for a in final.attempts] == [HOST_LOST, SUCCEEDED]


def test_host_lost_is_counted_like_a_lost_instance(tmp_path, open_store):
    async def scenario():
        a = await open_store("host-a", lease_s=SHORT_LEASE_S)
        b = await open_store("host-b")
        job, _ = await a.submit(REQUEST)
        await a.claim_next("a0")
        (after,) = await requeued_by(b, max_attempts=1)
        await a.close()
        await b.close()
        return after

    after = run(scenario())
    assert after.state == FAILED and "attempt 1 on a0: host_lost" in after.error


def test_a_live_lease_is_renewed_and_never_requeued_by_another_host(tmp_path, open_store):
    async def scenario():
        a = await open_store("host-a", lease_s=SHORT_LEASE_S * 4)
        b = await open_store("host-b")
        job, _ = await a.submit(REQUEST)
        await a.claim_next("a0")
        requeued = []
        for _ in range(6):  # about two leases long, renewed every third of one
            renewal = await a.renew({job.id: 1})
            assert not renewal.lost
            requeued += await b.requeue_expired(3)
            await asyncio.sleep(SHORT_LEASE_S)
        state = (await b.get(job.id)).state
        await a.close()
        await b.close()
        return requeued, state

    requeued, state = run(scenario())
    assert requeued == [] and state == RUNNING


def test_a_restart_requeues_only_its_own_running_jobs_uncounted(tmp_path, open_store):
    async def scenario():
        a = await open_store("host-a")
        b = await open_store("host-b")
        mine, _ = await a.submit(REQUEST)
        theirs, _ = await a.submit({"prompt": "a fox"})
        await a.claim_next("a0")
        await b.claim_next("b0")
        await a.close()  # host-a dies and comes back
        a = await open_store("host-a")
        jobs = [await a.get(mine.id), await a.get(theirs.id)]
        await a.close()
        await b.close()
        return jobs

    mine, theirs = run(scenario())
    assert mine.state == QUEUED and mine.attempts[0].reason == SUPERVISOR_RESTART
    assert theirs.state == RUNNING and theirs.lease_owner == "host-b"


def test_a_cancel_asked_on_another_host_reaches_the_holder_at_its_renewal(tmp_path, open_store):
    async def scenario():
        a = await open_store("host-a")
        b = await open_store("host-b")
        job, _ = await a.submit(REQUEST)
        await a.claim_next("a0")
        before = await a.renew({job.id: 1})
        await b.cancel(job.id)
        after = await a.renew({job.id: 1})
        await a.close()
        await b.close()
        return job.id, before, after

    job_id, before, after = run(scenario())
    assert before.cancel == frozenset() and after.cancel == {job_id} and not after.lost


def test_one_idempotency_key_submitted_on_two_hosts_at_once_is_one_job(tmp_path, open_store):
    async def scenario():
        a = await open_store("host-a")
        b = await open_store("host-b")
        results = await asyncio.gather(*(store.submit(REQUEST, "same-key") for store in (a, b, a, b)))
        counts = await a.counts()
        await a.close()
        await b.close()
        return results, counts

    results, counts = run(scenario())
    assert len({job.id for job, _ in results}) == 1 and sum(created for _, created in results) == 1
    assert counts[QUEUED] == 1


def test_hosts_are_listed_by_heartbeat(tmp_path, open_store):
    async def scenario():
        a = await open_store("host-a")
        b = await open_store("host-b")
        await a.heartbeat([{"name": "comfy-1", "state": "ready"}], "0.1.0")
        await b.heartbeat([], "0.1.0")
        hosts = await a.hosts()
        await a.close()
        await b.close()
        return hosts

    hosts = run(scenario())
    assert [host.name for host in hosts] == ["host-a", "host-b"]
    assert hosts[0].instances == [{"name": "comfy-1", "state": "ready"}] and hosts[0].heartbeat_at > 0


@pytest.fixture
def pg_store_url(postgres_server):
    postgres_server.ensure_running()
    yield postgres_server.new_database()
    postgres_server.ensure_running()  # a test that failed with the server stopped


def test_stores_migrating_one_new_database_at_once_apply_each_version_once(tmp_path, pg_store_url):
    async def scenario():
        stores = [PostgresJobStore(pg_store_url, tmp_path / f"out{n}", f"host-{n}", 30) for n in range(4)]
        await asyncio.gather(*(store.open() for store in stores))  # each under the advisory lock
        job, _ = await stores[0].submit(REQUEST)
        seen = [await store.get(job.id) for store in stores]
        for store in stores:
            await store.close()
        return seen

    assert all(job is not None for job in run(scenario()))
    versions = psycopg.connect(pg_store_url).execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert [row[0] for row in versions] == list(range(1, SCHEMA_VERSION + 1))


def test_an_unreachable_database_is_store_unavailable_until_it_is_back(tmp_path, postgres_server, pg_store_url):
    async def scenario():
        store = PostgresJobStore(pg_store_url, tmp_path / "out", "host-a", 30)
        await store.open()
        job, _ = await store.submit(REQUEST)
        postgres_server.stop("immediate")
        with pytest.raises(StoreUnavailable) as refused:
            await store.get(job.id)
        postgres_server.start()
        deadline = time.monotonic() + 120
        while True:  # the pool reconnects by itself
            try:
                again = await store.get(job.id)
                break
            except StoreUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        await store.close()
        return refused.value, again

    refused, again = run(scenario())
    assert again.state == QUEUED
    assert "unavailable" in str(refused) and "postgres@127.0.0.1" in str(refused)


def test_the_api_answers_503_database_unavailable_while_the_database_is_down(tmp_path, postgres_server,
                                                                            pg_store_url):
    async def scenario():
        store = PostgresJobStore(pg_store_url, tmp_path / "out", "host-a", 30)
        await store.open()
        http = SimpleNamespace(token=None, max_body_bytes=65536, list_limit=100)
        service = SimpleNamespace(settings=SimpleNamespace(http=http), store=store)
        client = TestClient(TestServer(create_app(service)))  # type: ignore[arg-type]
        await client.start_server()
        try:
            postgres_server.stop("immediate")
            answers = []
            for path in (f"/v1/jobs/{uuid.uuid4()}", "/v1/jobs", "/v1/hosts"):
                response = await client.get(path)
                answers.append((response.status, (await response.json())["error"]["code"],
                                response.headers.get("Retry-After")))
        finally:
            await client.close()
            postgres_server.start()
            await store.close()
        return answers

    assert run(scenario()) == [(503, "database_unavailable", "5")] * 3


def test_the_password_of_the_url_is_never_in_an_error(tmp_path):
    async def scenario():
        store = PostgresJobStore("postgresql://cak:s3cret-pw@127.0.0.1:1/cak", tmp_path / "out", "host-a", 30)
        with pytest.raises(StoreUnavailable) as refused:
            await store.open()
        return str(refused.value)

    message = run(scenario())
    assert "s3cret-pw" not in message and "cak@127.0.0.1:1/cak" in message


def test_other_hosts_hear_state_changes_and_progress_through_notify(tmp_path, pg_store_url):
    async def scenario():
        a = PostgresJobStore(pg_store_url, tmp_path / "a", "host-a", 30)
        b = PostgresJobStore(pg_store_url, tmp_path / "b", "host-b", 30)
        heard_by_a: list = []
        heard_by_b: list = []
        a.on_remote_event(lambda *event: heard_by_a.append(event))
        b.on_remote_event(lambda *event: heard_by_b.append(event))
        await a.open()
        await b.open()
        await asyncio.sleep(0.5)  # both LISTEN connections are up (a NOTIFY is never replayed)
        job, _ = await a.submit(REQUEST)
        await a.claim_next("a0")
        progress = {"type": "progress", "instance": "a0", "attempt": 1, "node": "3", "value": 2, "max": 4,
                    "fraction": 0.5}
        await a.set_progress(job.id, progress)
        stage(a, job.id, 1, b"png")
        await a.complete(job.id, 1, ["0.png"])
        deadline = time.monotonic() + 60
        while len(heard_by_b) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await a.close()
        await b.close()
        return job.id, heard_by_a, heard_by_b, progress

    job_id, heard_by_a, heard_by_b, progress = run(scenario())
    assert heard_by_a == []  # a host does not hear itself: its own JobEvents already has the news
    assert [(event[0], event[1]) for event in heard_by_b] == [
        (job_id, QUEUED), (job_id, RUNNING), (job_id, RUNNING), (job_id, SUCCEEDED)]
    assert heard_by_b[2][2] == {"progress": progress}


def test_late_readers_on_other_hosts_get_the_last_progress_from_the_row(tmp_path, pg_store_url):
    async def scenario():
        a = PostgresJobStore(pg_store_url, tmp_path / "a", "host-a", 30)
        b = PostgresJobStore(pg_store_url, tmp_path / "b", "host-b", 30)
        await a.open()
        await b.open()
        job, _ = await a.submit(REQUEST)
        await a.claim_next("a0")
        await a.set_progress(job.id, {"type": "progress", "value": 1, "max": 4})
        seen = await b.get(job.id)
        await a.close()
        await b.close()
        return seen

    seen = run(scenario())
    assert seen.progress == {"type": "progress", "value": 1, "max": 4} and seen.lease_owner == "host-a"


def test_a_cancel_asked_on_one_host_is_announced_to_the_holder_at_once(tmp_path, pg_store_url):
    async def scenario():
        a = PostgresJobStore(pg_store_url, tmp_path / "a", "host-a", 30)
        b = PostgresJobStore(pg_store_url, tmp_path / "b", "host-b", 30)
        heard_by_a: list = []
        a.on_remote_event(lambda *event: heard_by_a.append(event))
        await a.open()
        await b.open()
        job, _ = await a.submit(REQUEST)
        await a.claim_next("a0")
        await asyncio.sleep(0.5)  # a's LISTEN connection is up
        await b.cancel(job.id)
        deadline = time.monotonic() + 60
        while not heard_by_a and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await a.close()
        await b.close()
        return job.id, heard_by_a

    job_id, heard = run(scenario())
    assert heard == [(job_id, RUNNING, {"cancel": True})]
