"""The guard in a real ``python -m supervisor up``: a bad ``guard.model_path`` stops the start, the
tiny random-weight model refuses closed, and the event loop keeps answering while it runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from cute_animal_kids.pack_data import DATA_DIR, DATA_DIR_ENV

from cak.install_state import MODELS_DIR, REPO_ROOT
from tests.support.job_service import PACK_PARENT, SupervisorProcess

TINY = MODELS_DIR / "guard" / "cak_tiny_qwen3guard"
# This checkout's pack, whatever the environment's .pth file points at (a shared venv may name another).
PACK_ENV = {"PYTHONPATH": str(PACK_PARENT)}


def _up(config: dict, tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "supervisor.yaml"
    path.write_text(yaml.safe_dump({"output_root": str(tmp_path / "out"), **config}))
    return subprocess.run([sys.executable, "-m", "supervisor", "up", "--config", str(path)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=180, check=False,
                          env={**os.environ, **PACK_ENV, **(env or {})})


@pytest.mark.parametrize("damage", ["missing folder", "truncated weights"])
def test_up_refuses_to_start_with_an_unloadable_guard_checkpoint(tmp_path: Path, damage: str):
    folder = tmp_path / "guard-model"
    if damage == "truncated weights":
        shutil.copytree(TINY, folder)
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:4096])
    result = _up({"guard": {"model_path": str(folder)}}, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "guard.model_path" in result.stderr and str(folder) in result.stderr
    assert "Traceback" not in result.stderr
    assert "starting" not in result.stdout  # no ComfyUI was started


def test_up_refuses_to_start_with_invalid_pack_data(tmp_path: Path):
    data = tmp_path / "pack-data"
    shutil.copytree(DATA_DIR, data)
    policy = yaml.safe_load((data / "guard.yaml").read_text())
    policy["max_new_tokens"] = 10**6
    (data / "guard.yaml").write_text(yaml.safe_dump(policy, allow_unicode=True))
    result = _up({"guard": {"model_path": str(TINY)}}, tmp_path, {DATA_DIR_ENV: str(data)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "guard.yaml: max_new_tokens" in result.stderr and DATA_DIR_ENV in result.stderr
    assert "Traceback" not in result.stderr
    assert "starting" not in result.stdout


@pytest.fixture(scope="module")
def slow_guard_service(tmp_path_factory: pytest.TempPathFactory):
    """A supervisor whose guard is the tiny model with a long token budget (slow for real) and a
    5 s time-out. The pack's data is a copy with only guard.yaml changed."""
    base = tmp_path_factory.mktemp("guard-service")
    data = base / "pack-data"
    shutil.copytree(DATA_DIR, data)
    policy = yaml.safe_load((data / "guard.yaml").read_text())
    # ~9 s of generation on an idle machine of this kind, ~2x the time-out (512 tokens took ~1 s idle
    # and 4 s on a loaded CI run: too close). The tiny model's context is 4096 tokens.
    policy["max_new_tokens"] = 3800
    (data / "guard.yaml").write_text(yaml.safe_dump(policy, allow_unicode=True))
    service = SupervisorProcess(base, guard={"model_path": str(TINY), "timeout_s": 5},
                                env={DATA_DIR_ENV: str(data)})
    try:
        service.start(ready=0)
        deadline = time.monotonic() + 120
        while not service.call("GET", "/readyz")[1]["accepting"]:
            assert time.monotonic() < deadline, service.log_tail()
            time.sleep(0.5)
        yield service
    finally:
        service.stop()


def test_healthz_answers_promptly_while_the_guard_runs_and_the_prompt_is_refused_closed(slow_guard_service):
    service = slow_guard_service
    outcome: dict = {}

    def submit() -> None:
        started = time.monotonic()
        outcome["status"], outcome["body"] = service.call("POST", "/v1/jobs", {"prompt": "a bunny in a hat"},
                                                          timeout=60)
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=submit)
    thread.start()
    time.sleep(0.5)  # the request is in the guard now
    health_times = []
    while thread.is_alive():
        started = time.monotonic()
        status, body = service.call("GET", "/healthz", timeout=30)
        health_times.append(time.monotonic() - started)
        assert (status, body) == (200, {"status": "ok"})
        time.sleep(0.2)
    thread.join()

    assert outcome["seconds"] >= 4.5, outcome  # the guard really ran until its 5 s time-out
    assert len(health_times) >= 10 and max(health_times) < 1.0, health_times
    assert outcome["status"] == 422
    error = outcome["body"]["error"]
    assert (error["code"], error["category"]) == ("unsafe_prompt", "guard_unavailable")
    assert outcome["body"]["job"]["state"] == "rejected"

    metrics = service.request("GET", "/metrics")[2].decode()
    assert 'cak_safety_rejections_total{category="guard_unavailable",stage="guard"} 1.0' in metrics
    assert "cak_guard_latency_seconds_count 1.0" in metrics


def test_the_lexicon_refuses_first_and_the_guard_never_sees_it(slow_guard_service):
    service = slow_guard_service
    before = service.request("GET", "/metrics")[2].decode()
    started = time.monotonic()
    status, body = service.call("POST", "/v1/jobs", {"prompt": "a bunny holding a gun"})
    assert time.monotonic() - started < 3.0  # no 5 s guard time-out
    assert (status, body["error"]["category"]) == (422, "weapons")
    metrics = service.request("GET", "/metrics")[2].decode()
    assert 'cak_safety_rejections_total{category="weapons",stage="lexicon"} 1.0' in metrics
    count = [line for line in metrics.splitlines() if line.startswith("cak_guard_latency_seconds_count")]
    assert count == [line for line in before.splitlines() if line.startswith("cak_guard_latency_seconds_count")]
