"""The supervisor itself SIGKILLed with jobs queued and running: after a restart nothing is lost."""

from __future__ import annotations

import pytest

from tests.job_service import SLOW_JOB, SupervisorProcess



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
        assert [supervisor.get(f"/v1/jobs/{j['id']}")["state"] for j in jobs[1:]] == ["queued", "queued"]
        supervisor.record_pids()
        supervisor.kill()
        supervisor.kill_orphans()  # its ComfyUI would otherwise keep running (own process group)

        supervisor.start(ready=1)
        finished = [supervisor.wait_job(job["id"]) for job in jobs]
    finally:
        supervisor.stop()

    assert [job["state"] for job in finished] == ["succeeded"] * 3, finished
    first = finished[0]
    assert [a["reason"] for a in first["attempts"]] == ["supervisor_restart", "succeeded"]
    for job in finished:
        assert len(job["images"]) == 1
        folder = tmp_path / "sup" / "out" / "job-images" / job["id"]
        assert [f.name for f in folder.iterdir()] == ["0.png"]
    assert not any((tmp_path / "sup" / "out" / "job-images" / ".staging").glob("*"))
