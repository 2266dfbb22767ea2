"""The supervisor itself SIGKILLed with jobs queued and running: after a restart nothing is lost."""

from __future__ import annotations

import psutil
import pytest

from supervisor.settings import load_settings
from tests.support.job_service import SLOW_JOB, SupervisorProcess

PREFETCH = min(load_settings().jobs.prefetch, 2)  # the supervisor below runs with the defaults


@pytest.mark.slow
def test_supervisor_killed_and_restarted_finishes_every_job_once(tmp_path):
    supervisor = SupervisorProcess(tmp_path / "sup", instances=1)
    try:
        supervisor.start(ready=1)
        quick = {"width": 64, "height": 64, "steps": 2}
        jobs = [supervisor.submit(prompt=f"a little bear number {n}", seed=n, **(SLOW_JOB if n == 0 else quick))
                for n in range(3)]
        running = supervisor.wait_progress(jobs[0]["id"])
        assert running["attempts"][0]["instance"] == "comfy-1"
        # jobs.prefetch (default 1): that many wait in the instance's ComfyUI queue, claimed (running).
        expected = ["running"] * PREFETCH + ["queued"] * (2 - PREFETCH)
        assert [supervisor.get(f"/v1/jobs/{j['id']}")["state"] for j in jobs[1:]] == expected
        orphans = {i["pid"] for i in supervisor.get("/v1/instances")["instances"] if i["pid"]}
        supervisor.record_pids()  # only for clean-up if the test fails
        supervisor.kill()  # its ComfyUI keeps running (own process group) ...
        assert orphans and all(psutil.pid_exists(pid) for pid in orphans)

        supervisor.start(ready=1)
        # ... until the next supervisor's launcher finds it on the instance's folders and ends it.
        assert not any(psutil.pid_exists(pid) for pid in orphans)
        finished = [supervisor.wait_job(job["id"]) for job in jobs]
    finally:
        supervisor.stop()

    assert [job["state"] for job in finished] == ["succeeded"] * 3, finished
    first = finished[0]
    assert [a["reason"] for a in first["attempts"]] == ["supervisor_restart", "succeeded"]
    for prefetched in finished[1:1 + PREFETCH]:  # claimed when the supervisor died: requeued the same way
        assert [a["reason"] for a in prefetched["attempts"]] == ["supervisor_restart", "succeeded"]
    for job in finished:
        assert len(job["images"]) == 1
        folder = tmp_path / "sup" / "out" / "job-images" / job["id"]
        assert [f.name for f in folder.iterdir()] == ["0.png"]
    assert not any((tmp_path / "sup" / "out" / "job-images" / ".staging").glob("*"))
