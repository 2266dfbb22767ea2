"""Two real supervisors on one real PostgreSQL job store: one queue, whatever happens to a host.

Each host (``host-a``, ``host-b``: ``tests/support/job_service.host_pair``) has one CPU ComfyUI named
after it (``host-a-cpu``), so an attempt's instance tells which host ran it, and a 4 s lease, so a
lost host is noticed quickly. Hosts are killed and frozen with their ComfyUI (``kill_host``,
``pause_host``); the database is crashed with ``pg_ctl stop -m immediate``. Nothing is timed: the
waits' limits only stop a hang.
"""

from __future__ import annotations

import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.job_service import SLOW_JOB, SupervisorProcess, host_pair
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # two hosts, each job run twice: long under load

LEASE_S = 4
QUICK = {"width": 128, "height": 128, "steps": 4}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
START_TIMEOUT_S = 900  # two ComfyUI starting on a loaded 2-core machine; only stops a hang


@pytest.fixture
def pair(tmp_path: Path, postgres_url: str) -> Iterator[list[SupervisorProcess]]:
    """Two fresh hosts on this test's own database (the tests below break one of them)."""
    hosts = host_pair(tmp_path, postgres_url, lease_s=LEASE_S)
    try:
        for host in hosts:
            host.start(ready=1, timeout=START_TIMEOUT_S)
        yield hosts
    finally:
        for host in hosts:
            host.stop()


def host_of(job: dict[str, Any], hosts: list[SupervisorProcess]) -> SupervisorProcess:
    """The host whose instance holds the job's last attempt."""
    instance = job["attempts"][-1]["instance"]
    return next(host for host in hosts if instance == f"{host.name}-cpu")


def wait_running(hosts: list[SupervisorProcess], job_id: str) -> SupervisorProcess:
    """The host running ``job_id`` once its sampler has reported a step there."""
    job = wait_until(lambda: (lambda j: j if j["state"] == "running" and j["attempts"] else None)(
        hosts[0].get(f"/v1/jobs/{job_id}")), f"job {job_id} never started", 600)
    runner = host_of(job, hosts)
    runner.wait_progress(job_id)
    return runner


def succeeded_attempts(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in job["attempts"] if a["reason"] == "succeeded"]


def read_events(host: SupervisorProcess, job_id: str, into: list[tuple[str, dict[str, Any]]]) -> None:
    """The job's event stream on ``host`` until the service ends it (after the final state)."""
    request = urllib.request.Request(f"{host.url}/v1/jobs/{job_id}/events")
    with urllib.request.urlopen(request, timeout=600) as response:
        name = None
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: ") and name:
                into.append((name, json.loads(line[len("data: "):])))


def assert_one_result_everywhere(hosts: list[SupervisorProcess], job_id: str) -> dict[str, Any]:
    """Succeeded once, and every host serves the same job and the same PNG."""
    views = [host.wait_job(job_id) for host in hosts]
    job = views[0]
    assert job["state"] == "succeeded", (job["state"], job.get("error"), job["attempts"])
    assert len(succeeded_attempts(job)) == 1 and len(job["images"]) == 1, job
    assert all(view["attempts"] == job["attempts"] and view["images"] == job["images"] for view in views)
    images = []
    for host in hosts:
        status, _, body = host.request("GET", job["images"][0])
        assert status == 200 and body.startswith(PNG_SIGNATURE), (host.name, status)
        images.append(body)
    assert images[0] == images[1]
    return job


# ---------------------------------------------------------------------- both hosts serve one queue


def test_jobs_from_either_host_run_on_both_and_every_host_serves_them(pair):
    a, b = pair
    listed = wait_until(lambda: (lambda names: names if names == ["host-a", "host-b"] else None)(
        sorted(h["name"] for h in a.get("/v1/hosts")["hosts"])), "both hosts never listed", 120)
    assert listed == sorted(h["name"] for h in b.get("/v1/hosts")["hosts"])

    # One stream per host for a job only one of them runs: the other hears it through the database.
    watched = a.submit(prompt="a little bear on a swing", seed=99, width=192, height=192, steps=12)
    streams: dict[str, list[tuple[str, dict[str, Any]]]] = {a.name: [], b.name: []}
    readers = [threading.Thread(target=read_events, args=(host, watched["id"], streams[host.name]), daemon=True)
               for host in pair]
    for reader in readers:
        reader.start()
    jobs = [watched] + [pair[n % 2].submit(prompt=f"a small duck number {n}", seed=n, **QUICK) for n in range(8)]
    finished = [assert_one_result_everywhere(pair, job["id"]) for job in jobs]
    for reader in readers:
        reader.join(120)
        assert not reader.is_alive()

    ran_on = {host_of(job, pair).name for job in finished}
    assert ran_on == {"host-a", "host-b"}, [job["attempts"] for job in finished]
    runner = host_of(finished[0], pair).name
    for name, events in streams.items():
        states = [data["state"] for kind, data in events if kind == "state"]
        assert states[-1] == "succeeded", (name, events)
        assert "running" in states or any(kind == "progress" for kind, _ in events), (name, runner, events)
    other = next(name for name in streams if name != runner)
    assert any(kind == "progress" for kind, _ in streams[other]), (other, streams[other])


def test_cancel_on_one_host_stops_the_job_on_the_other(pair):
    job = pair[0].submit(prompt="a sleepy kitten on a cushion", seed=5, **SLOW_JOB)
    runner = wait_running(pair, job["id"])
    other = next(host for host in pair if host is not runner)
    status, _ = other.call("DELETE", f"/v1/jobs/{job['id']}")
    assert status == 202
    ended = other.wait_job(job["id"])
    assert ended["state"] == "cancelled" and not ended["images"], ended
    assert ended["attempts"][-1]["instance"] == f"{runner.name}-cpu"
    # The runner's ComfyUI was interrupted, not left sampling: it is idle and takes the next job.
    for url in runner.instance_urls():
        wait_until(lambda url=url: not _comfy(url, "/queue")["queue_running"], f"{url} still runs the job", 300)
    after = [runner.submit(prompt=f"a happy duck {n}", seed=n, **QUICK) for n in range(2)]
    for next_job in after:
        assert_one_result_everywhere(pair, next_job["id"])


def test_the_same_idempotency_key_on_both_hosts_is_one_job(pair):
    a, b = pair
    body = {"prompt": "two penguins building a snowman", "seed": 3, **QUICK}
    key = {"Idempotency-Key": f"hosts-{uuid.uuid4()}"}
    first = a.call("POST", "/v1/jobs", body, headers=key)
    again = b.request("POST", "/v1/jobs", body, headers=key)
    assert first[0] == 202 and again[0] == 202, (first, again[0])
    assert json.loads(again[2])["id"] == first[1]["id"] and again[1]["Idempotent-Replayed"] == "true"
    assert b.call("POST", "/v1/jobs", {**body, "seed": 4}, headers=key)[0] == 409

    # Both at once, one request on each host: still one job (the unique index, not luck).
    race_key = {"Idempotency-Key": f"hosts-race-{uuid.uuid4()}"}
    answers: list[tuple[int, Any]] = []
    senders = [threading.Thread(target=lambda h=host: answers.append(h.call("POST", "/v1/jobs", body,
                                                                               headers=race_key)))
               for host in pair]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(60)
    assert [status for status, _ in answers] == [202, 202], answers
    assert answers[0][1]["id"] == answers[1][1]["id"]
    for job_id in {first[1]["id"], answers[0][1]["id"]}:
        assert_one_result_everywhere(pair, job_id)


# ---------------------------------------------------------------------- a host lost


def test_a_killed_host_s_jobs_finish_on_the_other_host(pair):
    a, b = pair
    jobs = [a.submit(prompt="a little fox reading a book", seed=11, **SLOW_JOB)]
    victim = wait_running(pair, jobs[0]["id"])
    survivor = next(host for host in pair if host is not victim)
    jobs += [victim.submit(prompt=f"a small panda number {n}", seed=n, **QUICK) for n in range(3)]
    victim.kill_host()  # supervisor and ComfyUI at once; never restarted

    finished = [survivor.wait_job(job["id"]) for job in jobs]
    for job in finished:
        assert job["state"] == "succeeded", (job["state"], job.get("error"), job["attempts"])
        assert len(succeeded_attempts(job)) == 1 and len(job["images"]) == 1, job
        assert job["attempts"][-1]["instance"] == f"{survivor.name}-cpu"
        status, _, body = survivor.request("GET", job["images"][0])
        assert status == 200 and body.startswith(PNG_SIGNATURE)
    lost = finished[0]["attempts"]
    assert [a["reason"] for a in lost] == ["host_lost", "succeeded"], lost
    assert lost[0]["instance"] == f"{victim.name}-cpu"
    wait_until(lambda: [h["name"] for h in survivor.get("/v1/hosts")["hosts"]] == [survivor.name],
               f"{victim.name} still listed as live", 120)


def test_a_frozen_host_wakes_up_commits_nothing_and_interrupts_its_comfyui(pair):
    job = pair[0].submit(prompt="a happy duck in rain boots", seed=21, **SLOW_JOB)
    victim = wait_running(pair, job["id"])
    survivor = next(host for host in pair if host is not victim)
    comfy_urls = victim.instance_urls()
    victim.pause_host()  # past its lease: the survivor takes the job over
    done = survivor.wait_job(job["id"])
    assert done["state"] == "succeeded", done
    assert [a["reason"] for a in done["attempts"]] == ["host_lost", "succeeded"], done["attempts"]
    assert done["attempts"][-1]["instance"] == f"{survivor.name}-cpu"

    victim.resume_host()
    # Its ComfyUI was still mid-job: the woken supervisor finds its lease gone and interrupts it. Its
    # own decision, from its log: under load the freeze also outlasts health.step_timeout_s, and the
    # watchdog's hang restart would end that ComfyUI even without the interrupt.
    wait_until(lambda: _logged_lease_lost(victim, job["id"]), f"{victim.name} never noticed its lease was gone:\n"
               f"{victim.log_tail()}", 300)
    for url in comfy_urls:
        wait_until(lambda url=url: _comfy_idle(url), f"{url} was not interrupted:\n{victim.log_tail()}", 300)
        finished = [entry["status"] for entry in _comfy(url, "/history").values()]
        assert not any(status.get("status_str") == "success" for status in finished), finished
    victim.wait_ready(1)  # and it serves again: it takes new jobs
    after = survivor.get(f"/v1/jobs/{job['id']}")
    assert after["attempts"] == done["attempts"] and after["images"] == done["images"], after
    assert not list((victim.base_dir / "out").rglob("*.png")), "the woken host kept a result"
    assert_one_result_everywhere(pair, job["id"])


# ---------------------------------------------------------------------- the database lost


def test_database_crash_answers_503_then_every_job_finishes(pair, postgres_server):
    a, b = pair
    jobs = [pair[n % 2].submit(prompt=f"a sleepy kitten number {n}", seed=n, **(SLOW_JOB if n == 0 else QUICK))
            for n in range(4)]
    wait_running(pair, jobs[0]["id"])
    postgres_server.stop(mode="immediate")
    try:
        for host in pair:
            status, body = wait_until(lambda host=host: _unavailable(host, "GET", f"/v1/jobs/{jobs[0]['id']}"),
                                      f"{host.name} never answered 503", 300)
            assert body["error"]["code"] == "database_unavailable", body
        status, body = wait_until(lambda: _unavailable(a, "POST", "/v1/jobs", {"prompt": "a small panda", **QUICK}),
                                  "a submission during the outage was not refused with 503", 300)
        assert body["error"]["code"] == "database_unavailable", (status, body)
    finally:
        postgres_server.start()
    for host in pair:  # each reconnects by itself: 503 until its pool has a connection again
        wait_until(lambda host=host: host.call("GET", f"/v1/jobs/{jobs[0]['id']}")[0] == 200,
                   f"{host.name} never reconnected:\n{host.log_tail()}", 300)
    for job in jobs:  # an outage longer than the lease may cost an attempt (host_lost), never the job
        assert_one_result_everywhere(pair, job["id"])
    listed = b.get("/v1/jobs?limit=100")["jobs"]
    assert {job["id"] for job in jobs} <= {job["id"] for job in listed}


def _logged_lease_lost(host: SupervisorProcess, job_id: str) -> bool:
    for line in host.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and job_id in line:
            record = json.loads(line)
            if record.get("job_id") == job_id and "lease lost" in record.get("message", ""):
                return True
    return False


def _comfy(url: str, path: str) -> Any:
    with urllib.request.urlopen(url + path, timeout=30) as response:
        return json.loads(response.read())


def _comfy_idle(url: str) -> bool:
    """Nothing running or waiting there (a ComfyUI being restarted is not idle yet)."""
    try:
        queue = _comfy(url, "/queue")
    except (OSError, ValueError):
        return False
    return not queue["queue_running"] and not queue["queue_pending"]


def _unavailable(host: SupervisorProcess, method: str, path: str, body: Any = None) -> tuple[int, Any] | None:
    """The answer when it is a 503; None for any other answer, or none in time (a pool still waiting)."""
    try:
        answer = host.call(method, path, body, timeout=60)
    except OSError:
        return None
    return answer if answer[0] == 503 else None
