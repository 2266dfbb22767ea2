"""The foundation on a real ComfyUI: our pack loads, the CPU graph draws, set-up is repeatable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from cak.demo import cpu_graph
from cak.install_state import EXTRA_MODEL_PATHS_FILE, REPO_ROOT, STATE_FILE, comfyui_version


def test_object_info_lists_pack_nodes(comfy):
    info = comfy.get_json("/object_info")
    assert "CAK_CuteAnimalPrompt" in info
    node = info["CAK_CuteAnimalPrompt"]
    assert node["category"].startswith("Cute Animal Kids/")
    assert node["display_name"] == "Cute Animal Prompt"


def test_cpu_graph_draws_png_of_requested_size(comfy):
    entry = comfy.run(cpu_graph(width=96, height=64, seed=11, prefix="foundation"))
    assert entry["status"]["status_str"] == "success"
    paths = comfy.image_paths(entry)
    assert len(paths) == 1
    with Image.open(paths[0]) as image:
        assert image.format == "PNG"
        assert image.size == (96, 64)


def test_saved_png_carries_no_prompt_text(comfy):
    entry = comfy.run(cpu_graph(prompt="a secret little otter", seed=12, prefix="nometa"))
    with Image.open(comfy.image_paths(entry)[0]) as image:
        assert "a secret little otter" not in json.dumps(image.info)


def _install(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "install.py"), *args],
                          check=False, capture_output=True, text=True, timeout=600)


def test_install_rerun_changes_nothing():
    before = (STATE_FILE.read_text(), EXTRA_MODEL_PATHS_FILE.read_text())
    result = _install()
    assert result.returncode == 0, result.stdout + result.stderr
    # The version reported is the one the ComfyUI tree declares, and the one recorded.
    state = json.loads(before[0])
    version = comfyui_version(Path(state["comfyui_path"]))
    assert version != "unknown" and version == state["comfyui_version"]
    kind = "embedded" if state["embedded"] else "your own"
    assert f"ComfyUI {version} ({kind}) at {state['comfyui_path']}" in result.stdout.splitlines(), result.stdout
    assert (STATE_FILE.read_text(), EXTRA_MODEL_PATHS_FILE.read_text()) == before
    assert "Collecting" not in result.stdout  # nothing was installed again


def test_install_broken_comfyui_path_is_one_line_reason(tmp_path):
    result = _install("--comfyui", str(tmp_path / "nowhere"))
    assert result.returncode != 0
    failure = [line for line in result.stdout.splitlines() if "failed" in line]
    assert len(failure) == 1 and "no main.py" in failure[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_install_missing_models_folder_is_one_line_reason(tmp_path):
    result = _install("--models", str(tmp_path / "no-models"))
    assert result.returncode != 0
    failure = [line for line in result.stdout.splitlines() if "failed" in line]
    assert len(failure) == 1 and "does not exist" in failure[0]
    assert "Traceback" not in result.stdout + result.stderr
