"""A second SIGTERM/Ctrl-C while ``up`` drains stops at once: running jobs go back to the queue.

A real supervisor with a long ``jobs.drain_timeout_s``: the first signal starts the drain (the job
would be allowed to finish), the second one must requeue the running job right away, with an
attempt that does not count (``supervisor_shutdown``), and the process must exit.
"""

from __future__ import annotations

import signal
import sqlite3
import time

import pytest

from tests.support.job_service import SLOW_JOB, SupervisorProcess

DRAIN_TIMEOUT_S = 600


@pytest.fixture
def service(tmp_path):
    supervisor = SupervisorProcess(tmp_path, instances=1, jobs={"drain_timeout_s": DRAIN_TIMEOUT_S})
    try:
        supervisor.start(ready=1)
        yield supervisor
    finally:
        supervisor.stop()


def wait_log(service: SupervisorProcess, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in service.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{service.log_tail()}"
        time.sleep(0.1)


def test_second_signal_during_the_drain_requeues_the_running_job_at_once(service):
    job = service.submit(prompt="a patient tortoise", **SLOW_JOB)
    service.wait_progress(job["id"])
    service.record_pids()
    service.popen.send_signal(signal.SIGTERM)
    wait_log(service, "Ctrl-C again stops at once")
    started = time.monotonic()
    service.popen.send_signal(signal.SIGTERM)
    assert service.popen.wait(timeout=120) == 0, service.log_tail()
    assert time.monotonic() - started < 60  # not the 600 s drain, not the job's end
    assert "stopping now: running jobs go back to the queue" in service.log_path.read_text()
    with sqlite3.connect(service.base_dir / "out" / "jobs.sqlite3") as db:
        state = db.execute("SELECT state FROM jobs WHERE id = ?", (job["id"],)).fetchone()[0]
        reasons = [row[0] for row in db.execute("SELECT reason FROM attempts WHERE job_id = ? ORDER BY number",
                                                (job["id"],))]
    assert state == "queued" and reasons == ["supervisor_shutdown"]
