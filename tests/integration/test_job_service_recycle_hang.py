"""Two health rules on real supervisors: recycling after ``health.max_jobs`` and the
``health.job_timeout_s`` hang.

- ``max_jobs: 1`` (one instance): after a job the instance restarts with reason ``recycle`` and
  serves the next job; the job it ran is not affected.
- ``job_timeout_s`` (two instances): a job that keeps reporting progress but runs past the limit is
  a ``hang``: the instance is killed and restarted (reason ``hang``) and the job is retried on the
  other instance. Two supervisors, because a first job on a fresh instance (loading the classifier
  and encoders under a loaded CI machine) can itself take longer than a limit short enough to test.
"""

from __future__ import annotations

import pytest

from tests.support.job_service import SupervisorProcess
from tests.support.waiting import wait_until

JOB_TIMEOUT_S = 12
# ~20 s on an idle 2-core machine (100 steps at 1024²), progress every step: only the deadline stops it.
OVER_TIME_JOB = {"width": 1024, "height": 1024, "steps": 100}
QUICK_JOB = {"width": 64, "height": 64, "steps": 2}


pytestmark = pytest.mark.slow


def running(supervisor: SupervisorProcess, ready: int):
    try:
        supervisor.start(ready=ready)
        yield supervisor
    finally:
        supervisor.stop()


@pytest.fixture(scope="module")
def recycling(tmp_path_factory):
    yield from running(SupervisorProcess(tmp_path_factory.mktemp("recycle"), instances=1,
                                         health={"max_jobs": 1}), 1)


@pytest.fixture(scope="module")
def timing_out(tmp_path_factory):
    yield from running(SupervisorProcess(
        tmp_path_factory.mktemp("job-timeout"), instances=2, jobs={"max_attempts": 2},
        health={"job_timeout_s": JOB_TIMEOUT_S, "step_timeout_s": 60}), 2)


def instances(service: SupervisorProcess) -> dict[str, dict]:
    return {instance["name"]: instance for instance in service.get("/v1/instances")["instances"]}


def wait_instance(service: SupervisorProcess, name: str, reason: str, count: int, timeout: float = 300):
    """``name`` once it has restarted ``count`` times for ``reason`` and serves again."""
    def restarted() -> dict | None:
        instance = instances(service)[name]
        return instance if instance["restarts"].get(reason, 0) >= count and instance["state"] == "ready" else None

    return wait_until(restarted, lambda: f"{name}: no restart #{count} for {reason}: {instances(service)[name]}\n"
                      f"{service.log_tail()}", timeout, interval=0.5)


def test_an_instance_recycles_after_max_jobs_and_serves_again(recycling):
    service = recycling
    job = service.wait_job(service.submit(prompt="a small panda", **QUICK_JOB)["id"])
    assert job["state"] == "succeeded", job
    name = job["attempts"][0]["instance"]
    instance = wait_instance(service, name, "recycle", 1)
    assert instance["last_restart_reason"] == "recycle"
    assert len(job["attempts"]) == 1 and job["attempts"][0]["reason"] == "succeeded"
    again = service.wait_job(service.submit(prompt="a small rabbit", **QUICK_JOB)["id"])
    assert again["state"] == "succeeded", again


def test_a_job_past_job_timeout_is_a_hang_and_is_retried_on_the_other_instance(timing_out):
    service = timing_out
    before = {name: i["restarts"].get("hang", 0) for name, i in instances(service).items()}
    job = service.wait_job(service.submit(prompt="a sleepy koala", **OVER_TIME_JOB)["id"])
    first, second = job["attempts"]  # max_attempts 2: both ran past the limit
    assert first["reason"] == "hang" and second["reason"] == "hang", job
    assert first["instance"] != second["instance"]  # retried elsewhere, not on the killed instance
    assert job["state"] == "failed" and "gave up after 2 attempts" in job["error"]
    for attempt in (first, second):
        assert attempt["ended_at"] - attempt["started_at"] < JOB_TIMEOUT_S + 30, attempt
        instance = wait_instance(service, attempt["instance"], "hang", before[attempt["instance"]] + 1)
        assert instance["last_restart_reason"] == "hang"
    assert "past its limit" in service.log_path.read_text()
