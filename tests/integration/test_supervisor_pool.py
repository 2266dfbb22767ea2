"""The self-healing pool on real ComfyUI processes: each fault is detected with its own reason.

One pool serves the whole module: instances ``a`` and ``b`` carry the fault nodes and take turns
being broken, ``bad`` gets a flag ComfyUI refuses and must end FAILED while the others serve.
"""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.request

import pytest

from cak.demo import cpu_graph
from cak.errors import PromptRejected
from cak.install_state import REPO_ROOT
from supervisor.metrics import ServiceMetrics
from supervisor.pool import InstanceLost
from supervisor.states import InstanceState
from tests.support.promql import alert_rules, evaluate, scrape_samples
from tests.support.supervisor_fixtures import (
    PoolHarness,
    comfy_processes_under,
    fault_graph,
    fault_nodes_config,
    pool_config,
)

pytestmark = pytest.mark.slow

STEP_TIMEOUT_S = 15
LEAK_MB = 300
GROWTH_LIMIT_MB = 450  # one leaky job stays under it, two go over
IDLE_FREE_S = 6
BAD_MAX_RESTARTS = 5


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    root = tmp_path_factory.mktemp("supervisor-pool")
    config = pool_config(
        root / "instances",
        [{"name": "a"}, {"name": "b"}, {"name": "bad", "extra_args": ["--no-such-flag"]}],
        warmup=True, probe_interval_s=1, probe_timeout_s=3, probe_failures=3,
        step_timeout_s=STEP_TIMEOUT_S, job_timeout_s=600, memory_interval_s=2,
        max_rss_growth_mb=GROWTH_LIMIT_MB, idle_free_s=IDLE_FREE_S, kill_grace_s=5,
        restart={"backoff_initial_s": 0.2, "backoff_factor": 2, "backoff_max_s": 1,
                 "max_restarts": BAD_MAX_RESTARTS, "window_s": 600},
    )
    harness = PoolHarness(config, [fault_nodes_config(root)])
    try:
        harness.call(harness.pool.start())
        harness.call(harness.pool.wait_ready(2, timeout=400))
        yield harness
    finally:
        harness.close()


def _ready_again(harness: PoolHarness, name: str, reason: str, count: int = 1):
    return harness.wait_until(name, lambda s: s.restarts.get(reason, 0) >= count and s.state == "ready",
                              what=f"restart #{count} for {reason} and READY")


def _run_on(harness: PoolHarness, name: str, graph: dict):
    """Acquire ``name``, run ``graph``, release; returns the result or raises what ``run`` raised."""
    pool = harness.pool

    async def job():
        instance = await pool.acquire(timeout=300, name=name)
        try:
            return await pool.run(instance, graph)
        finally:
            pool.release(instance)

    return harness.call(job())


def _memory_route(harness: PoolHarness, name: str) -> dict:
    url = harness.snapshot(name).url + "/cute_animal_kids/memory"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def test_pool_serves_jobs(harness):
    result = _run_on(harness, "a", cpu_graph(seed=101, prefix="pool"))
    assert len(result.images) == 1
    snap = harness.wait_until("a", lambda s: s.state == "ready", what="READY after the job")
    assert snap.jobs_run == 1 and snap.pid and snap.rss_mb and not snap.restarts


def test_crash_loop_backs_off_then_fails_while_others_serve(harness):
    snap = harness.wait_until("bad", lambda s: s.state == "failed", what="FAILED")
    assert snap.restarts == {"crash": BAD_MAX_RESTARTS + 1}
    assert snap.pid is None
    log = "\n".join(harness.log.messages("bad"))
    delays = [float(m) for m in re.findall(r"restart \(crash\) in ([\d.]+) s", log)]
    assert delays == [0.2, 0.4, 0.8, 1.0]  # first restart at once, then doubling up to backoff_max_s
    assert len(_run_on(harness, "b", cpu_graph(seed=102)).images) == 1


def test_shipped_alerts_fire_for_the_failed_instance_on_a_real_scrape(harness):
    harness.wait_until("bad", lambda s: s.state == InstanceState.FAILED, what="FAILED")
    metrics = ServiceMetrics(harness.pool.snapshot)
    samples = scrape_samples(harness.run_sync(metrics.render).decode())
    rules = alert_rules(REPO_ROOT / "deploy" / "prometheus" / "cute-animal-kids.rules.yml")
    firing = evaluate(rules["CakInstanceFailed"], samples)
    assert {dict(labels)["instance"] for labels in firing} == {"bad"}
    assert evaluate(rules["CakNoInstanceServing"], samples) == {}  # a and b serve


def test_sigkill_is_a_crash_and_the_instance_comes_back(harness):
    before = harness.snapshot("a")
    os.kill(before.pid, signal.SIGKILL)
    snap = _ready_again(harness, "a", "crash")
    assert snap.pid != before.pid and snap.last_restart_reason == "crash"
    assert len(_run_on(harness, "a", cpu_graph(seed=103)).images) == 1


def test_sigstop_is_unresponsive(harness):
    before = harness.snapshot("b")
    os.kill(before.pid, signal.SIGSTOP)
    snap = _ready_again(harness, "b", "unresponsive")
    assert snap.pid != before.pid and snap.last_restart_reason == "unresponsive"
    assert "health probe 3/3 failed" in "\n".join(harness.log.messages("b"))


def test_crash_during_job_is_reported_lost(harness):
    before = harness.snapshot("b").restarts.get("crash", 0)
    with pytest.raises(InstanceLost) as info:
        _run_on(harness, "b", fault_graph("Crash", seed=104))
    assert (info.value.reason, info.value.instance) == ("crash", "b")
    _ready_again(harness, "b", "crash", before + 1)


def test_hang_without_progress_is_killed_after_step_timeout(harness):
    before = harness.snapshot("a")
    with pytest.raises(InstanceLost) as info:
        _run_on(harness, "a", fault_graph("Hang", seed=105, seconds=3600.0))
    assert (info.value.reason, info.value.instance) == ("hang", "a")
    snap = _ready_again(harness, "a", "hang")
    assert snap.pid != before.pid
    assert any("no progress event for" in m for m in harness.log.messages("a"))
    assert len(_run_on(harness, "a", cpu_graph(seed=106)).images) == 1


def test_leak_restarts_between_jobs_without_cutting_one_short(harness):
    before = harness.snapshot("b")
    first = _run_on(harness, "b", fault_graph("Leak", seed=107, megabytes=LEAK_MB))
    assert len(first.images) == 1
    after_first = harness.wait_until("b", lambda s: s.state == "ready", what="READY after one leaky job")
    assert after_first.pid == before.pid and after_first.restarts.get("leak", 0) == 0
    second = _run_on(harness, "b", fault_graph("Leak", seed=108, megabytes=LEAK_MB))
    assert len(second.images) == 1  # the job that crossed the limit finished normally
    snap = _ready_again(harness, "b", "leak")
    assert snap.pid != before.pid and snap.last_restart_reason == "leak"
    assert any("grew" in m and "over its baseline" in m for m in harness.log.messages("b"))


def test_idle_instance_frees_its_models(harness):
    _run_on(harness, "a", cpu_graph(seed=109))
    frees = harness.snapshot("a").idle_frees
    assert _memory_route(harness, "a")["models"], "models should be loaded right after a job"
    harness.wait_until("a", lambda s: s.idle_frees > frees, timeout=120, what="idle /free")
    harness.wait_until("a", lambda s: not _memory_route(harness, "a")["models"], timeout=60,
                       what="models unloaded after /free")


def test_drain_then_requested_restart(harness):
    pool = harness.pool
    harness.call(pool.drain("b"))
    assert harness.snapshot("b").state == "draining"
    jobs = harness.snapshot("a").jobs_run
    instance = harness.call(pool.acquire(timeout=60))
    assert instance.name == "a"  # b takes no jobs, bad is FAILED
    harness.run_sync(lambda: pool.release(instance))
    snap = harness.snapshot("a")
    assert snap.state == "ready" and snap.jobs_run == jobs  # given back without a prompt: no job
    before = harness.snapshot("b")
    harness.call(pool.restart("b"))
    snap = _ready_again(harness, "b", "request")
    assert snap.pid != before.pid and not snap.drained


def test_deterministic_failures_pass_through(harness):
    graph = cpu_graph(seed=110)
    graph["1"]["inputs"]["unet_name"] = "no_such_model.safetensors"
    with pytest.raises(PromptRejected):
        _run_on(harness, "a", graph)
    snap = harness.wait_until("a", lambda s: s.state != "busy", what="job released")
    assert snap.state == "ready" and snap.restarts == {"crash": 1, "hang": 1}  # no restart for it


def test_stop_leaves_no_comfyui_process(harness):
    root = harness.config.output_root
    assert len(comfy_processes_under(root)) == 2  # a and b; bad is FAILED
    harness.call(harness.pool.stop())
    assert comfy_processes_under(root) == []
    assert {s.state for s in harness.run_sync(harness.pool.snapshot)} == {"stopped"}
