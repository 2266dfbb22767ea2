"""The launcher never leaves two ComfyUIs on one instance's folders."""

from __future__ import annotations

import asyncio
import time

from cak.comfy_process import ComfyLaunch, ComfyProcess
from cak.install_state import load_state


def test_start_kills_a_stale_comfyui_left_on_the_same_folders(tmp_path):
    # As after a SIGKILLed supervisor: a ComfyUI whose owner is gone still runs on these folders.
    orphan = ComfyProcess(ComfyLaunch(base_dir=tmp_path / "instance"), load_state())
    orphan.start()
    neighbour = ComfyProcess(ComfyLaunch(base_dir=tmp_path / "other"), load_state())
    neighbour.start()
    successor = ComfyProcess(ComfyLaunch(base_dir=tmp_path / "instance"), load_state())
    try:
        successor.start()
        deadline = time.monotonic() + 30
        while orphan.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not orphan.running()
        assert neighbour.running() and successor.running()  # only the stale one was touched
        assert successor.launch.pid_path.read_text().strip() == str(successor.pid)
    finally:
        for process in (successor, neighbour, orphan):
            asyncio.run(process.stop(grace=2))
    assert not successor.launch.pid_path.exists()
