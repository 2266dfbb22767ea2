"""Slow runner tests that start their own ComfyUI: a server killed mid-run, and `demo`."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cak.errors import EXIT_SERVER
from cak.install_state import REPO_ROOT, VAR_DIR
from tests.support.comfy_server import ComfyTestServer


@pytest.mark.slow
def test_server_killed_mid_run_exits_with_server_gone(tmp_path: Path):
    server = ComfyTestServer(tmp_path / "comfyui").start()
    try:
        command = [sys.executable, "-m", "runner", "run", "cute_animal_cpu", "--server", server.url,
                   "--set", "width=1024", "--set", "height=1024", "--set", "steps=60",
                   "--out", str(tmp_path / "out")]
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = []
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("[1/"):  # the first `executing` event
                server.process.signal_group(signal.SIGKILL)
                break
        stdout, rest = proc.communicate(timeout=300)
        stderr = "".join(seen) + rest
        assert proc.returncode == EXIT_SERVER, stderr
        errors = [line for line in stderr.splitlines() if line.startswith("runner: error:")]
        assert len(errors) == 1 and "went away" in errors[0], stderr
        assert "Traceback" not in stderr and stdout == ""
    finally:
        server.stop()


@pytest.mark.slow
def test_demo_starts_comfyui_draws_and_stops(tmp_path: Path):
    demo = subprocess.Popen([sys.executable, "-m", "runner", "demo", "--out", str(tmp_path)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = demo.communicate(timeout=600)
    assert demo.returncode == 0, stderr
    image = Path(stdout.strip())
    assert image.is_file() and image.parent == tmp_path.resolve()
    assert "this takes 10-40 s" in stderr and "stopping ComfyUI" in stderr
    assert not (VAR_DIR / "demo" / str(demo.pid)).exists()  # ComfyUI's folders are not left behind
