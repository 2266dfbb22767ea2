"""``jobs.max_queue`` on a real supervisor: a full queue answers 503 and takes jobs again once it drains.

One CPU instance busy with a slow job, a queue of at most two: the third waiting job is refused
with a reason and nothing is stored for it; after the slow job is cancelled the queue empties and
a new job is taken.
"""

from __future__ import annotations

import pytest

from tests.support.job_service import SLOW_JOB, SupervisorProcess
from tests.support.waiting import wait_until

QUICK_JOB = {"width": 64, "height": 64, "steps": 1}


@pytest.fixture
def service(tmp_path):
    supervisor = SupervisorProcess(tmp_path, instances=1, jobs={"max_queue": 2, "prefetch": 0})  # no job waits inside ComfyUI
    try:
        supervisor.start(ready=1)
        yield supervisor
    finally:
        supervisor.stop()


def test_a_full_queue_is_503_and_takes_jobs_again_once_it_drains(service):
    slow = service.submit(prompt="a sleepy kitten on a cushion", **SLOW_JOB)
    wait_until(lambda: service.get(f"/v1/jobs/{slow['id']}")["state"] == "running", "the slow job never ran")
    waiting = [service.submit(prompt=f"a small duck number {n}", **QUICK_JOB) for n in range(2)]
    before = [job["id"] for job in service.get("/v1/jobs?limit=100")["jobs"]]

    status, headers, body = service.request("POST", "/v1/jobs", {"prompt": "one duck too many", **QUICK_JOB})
    assert status == 503, body
    assert b'"unavailable"' in body and b"queue is full" in body
    assert [job["id"] for job in service.get("/v1/jobs?limit=100")["jobs"]] == before  # nothing stored

    assert service.call("DELETE", f"/v1/jobs/{slow['id']}")[0] == 202
    for job in waiting:
        assert service.wait_job(job["id"])["state"] == "succeeded"
    after = service.submit(prompt="a duck that waited its turn", **QUICK_JOB)
    assert service.wait_job(after["id"])["state"] == "succeeded"
