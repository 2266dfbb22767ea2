"""The README's run command: `python -m supervisor up --demo` shows a first job through, keeps serving,
and drains cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from cak.comfy_process import free_port
from cak.install_state import REPO_ROOT


@pytest.mark.slow
def test_up_demo_runs_a_first_job_then_serves_and_drains(tmp_path):
    port = free_port()
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump({"output_root": str(tmp_path / "out"), "http": {"port": port}}))
    log_path = tmp_path / "demo.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "supervisor", "up", "--demo", "--config", str(config)],
                                   cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600  # only ends a hang; nothing is timed
        while time.monotonic() < deadline and process.poll() is None:
            text = log_path.read_text(errors="replace")
            if "serving on" in text:
                break
            time.sleep(0.5)
        text = log_path.read_text(errors="replace")
        assert "serving on" in text, text[-3000:]
        image = Path(next(line.split("image saved at ", 1)[1].strip()
                          for line in text.splitlines() if "demo: image saved at " in line))
        assert image.is_file() and image.read_bytes().startswith(b"\x89PNG")
        assert f"http://127.0.0.1:{port}" in text
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/instances", timeout=30) as response:
            instances = json.load(response)["instances"]
        assert [i["name"] for i in instances] == ["comfy-1", "comfy-2"]
        pids = [i["pid"] for i in instances if i["pid"]]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
    assert code == 0 and "stopped." in log_path.read_text()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
