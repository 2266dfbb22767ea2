"""Prefetch (``jobs.prefetch: 1``, issue 17) on a real supervisor with two CPU instances.

While both instances run a slow job, the next job is claimed by one of them and waits in that
ComfyUI's own queue. The guarantees around such a prefetched prompt:

- SIGKILL of the instance that holds a running and a prefetched job: both finish elsewhere, each
  once; the running one's attempt is closed ``crash`` (counted), the prefetched one's
  ``not_started`` (it never ran);
- cancelling a prefetched job takes its prompt out of ComfyUI's queue: it never runs there;
- draining an instance gives its prefetched job back: it runs on the other instance.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from typing import Any

import pytest

from tests.support.job_service import SLOW_JOB, SupervisorProcess
from tests.support.waiting import wait_until

QUICK_JOB = {"width": 64, "height": 64, "steps": 2}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    # A long step timeout: these tests kill, cancel and drain on purpose, and a loaded machine must
    # not add a hang restart of its own.
    supervisor = SupervisorProcess(tmp_path_factory.mktemp("prefetch"), instances=2, jobs={"prefetch": 1},
                                   health={"step_timeout_s": 600})
    try:
        supervisor.start(ready=2)
        yield supervisor
    finally:
        supervisor.stop()


def instances(service: SupervisorProcess) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in service.get("/v1/instances")["instances"]}


def claimed_on(service: SupervisorProcess, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """The job once an instance has claimed it (its open attempt names the instance)."""
    def claimed() -> dict[str, Any] | None:
        job = service.get(f"/v1/jobs/{job_id}")
        assert job["state"] in ("queued", "running"), job
        open_attempt = job["attempts"] and job["attempts"][-1]["ended_at"] is None
        return job if job["state"] == "running" and open_attempt else None

    return wait_until(claimed, lambda: f"job {job_id} never claimed:\n{service.log_tail()}", timeout, interval=0.1)


def both_busy_with_slow_jobs(service: SupervisorProcess, label: str) -> dict[str, str]:
    """One slow job running on each instance; {instance name: job id}."""
    jobs = [service.submit(prompt=f"a slow {label} bear {n}", **SLOW_JOB)["id"] for n in range(2)]
    by_instance = {}
    for job_id in jobs:
        job = service.wait_progress(job_id)
        by_instance[job["attempts"][-1]["instance"]] = job_id
    assert len(by_instance) == 2, by_instance  # one on each: an idle instance is chosen before prefetching
    return by_instance


def prefetched(service: SupervisorProcess, prompt: str, seed: int) -> tuple[str, str]:
    """Submit a quick job while both instances are busy: (job id, the instance it waits on)."""
    job_id = service.submit(prompt=prompt, seed=seed, **QUICK_JOB)["id"]
    job = claimed_on(service, job_id)
    assert job["progress"] is None, job  # claimed, but ComfyUI has not started it
    return job_id, job["attempts"][-1]["instance"]


def comfy_history_seeds(url: str) -> set[int]:
    """The seeds of every prompt this ComfyUI ran (its /history), from the graphs it kept."""
    with urllib.request.urlopen(f"{url}/history", timeout=30) as response:
        history = json.load(response)
    seeds = set()
    for entry in history.values():
        for node in entry["prompt"][2].values():
            if "seed" in node.get("inputs", {}):
                seeds.add(node["inputs"]["seed"])
    return seeds


def test_sigkill_with_a_running_and_a_prefetched_job_both_finish_elsewhere_once(service):
    by_instance = both_busy_with_slow_jobs(service, "koala")
    waiting, victim = prefetched(service, "a waiting kitten", seed=9101)
    running = by_instance[victim]
    pid = instances(service)[victim]["pid"]
    os.kill(pid, signal.SIGKILL)

    for job_id in (running, waiting):
        done = service.wait_job(job_id)
        assert done["state"] == "succeeded", done
        first, *rest = done["attempts"]
        assert first["instance"] == victim
        assert [a["reason"] for a in rest] == ["succeeded"], done  # ran to completion once
    assert service.get(f"/v1/jobs/{running}")["attempts"][0]["reason"] == "crash"
    assert service.get(f"/v1/jobs/{waiting}")["attempts"][0]["reason"] == "not_started"
    assert service.wait_job(by_instance[next(n for n in by_instance if n != victim)])["state"] == "succeeded"


def test_cancelling_a_prefetched_job_takes_it_out_of_comfyui_s_queue(service):
    service.wait_ready(2)
    by_instance = both_busy_with_slow_jobs(service, "otter")
    seed = 9202
    waiting, holder = prefetched(service, "a waiting puppy", seed=seed)
    assert service.call("DELETE", f"/v1/jobs/{waiting}")[0] == 202
    done = service.wait_job(waiting)
    assert done["state"] == "cancelled" and done["images"] == [], done
    assert [a["reason"] for a in done["attempts"]] == ["not_started"], done
    # The slow job ahead of it ends normally, and ComfyUI never ran the cancelled prompt.
    ahead = service.wait_job(by_instance[holder])
    assert ahead["state"] == "succeeded" and len(ahead["attempts"]) == 1, ahead
    time.sleep(1.0)  # had it still been queued, ComfyUI would have started it right after
    assert seed not in comfy_history_seeds(instances(service)[holder]["url"])
    for job_id in by_instance.values():
        service.wait_job(job_id)


def test_drain_gives_the_prefetched_job_back_and_it_runs_elsewhere(service):
    service.wait_ready(2)
    by_instance = both_busy_with_slow_jobs(service, "panda")
    waiting, holder = prefetched(service, "a resting duckling", seed=9303)
    assert service.call("POST", f"/v1/instances/{holder}/drain")[0] == 202
    done = service.wait_job(waiting)
    assert done["state"] == "succeeded", done
    first, second = done["attempts"]
    assert (first["instance"], first["reason"]) == (holder, "not_started"), done
    assert second["instance"] != holder and second["reason"] == "succeeded", done
    ahead = service.wait_job(by_instance[holder])  # the drained instance's running job finishes there
    assert ahead["state"] == "succeeded" and [a["instance"] for a in ahead["attempts"]] == [holder], ahead
    assert instances(service)[holder]["state"] == "draining"
    assert service.call("POST", f"/v1/instances/{holder}/restart")[0] == 202
    for job_id in by_instance.values():
        service.wait_job(job_id)
