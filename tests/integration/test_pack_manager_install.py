"""The Manager path: the pack folder alone, copied into a clean ComfyUI's ``custom_nodes/`` (what
ComfyUI-Manager, ``comfy node install`` or a ``git clone`` do), plus its ``requirements.txt``, is
enough - no repository, no ``extra_model_paths``, no install.py.

A second copy of the embedded ComfyUI is made in a temporary folder with only the pack folder in
its ``custom_nodes/``; it is started on its own port, and ``/object_info`` must list every node of
the pack with its full schema, and the text gate must pass a safe prompt and stop an unsafe one.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import pytest

from cak.demo import DEMO_PROMPT
from cak.install_state import PACK_DIR, REPO_ROOT, load_state
from tests.support.comfy_server import ComfyTestServer, PromptFailed
from tests.support.pack_checks import declared_node_ids, pack_nodes, schema_problems

pytestmark = pytest.mark.slow  # it starts a second ComfyUI

COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "extra_model_paths.yaml", "user", "output",
                                     "temp", "input")


@pytest.fixture(scope="module")
def clean_comfy(tmp_path_factory: pytest.TempPathFactory):
    """A fresh ComfyUI tree with only the pack folder copied in, running without our settings."""
    root = tmp_path_factory.mktemp("manager-path")
    state = load_state()
    tree = root / "ComfyUI"
    shutil.copytree(state.comfyui_path, tree, ignore=COPY_IGNORE, symlinks=False)
    for entry in (tree / "custom_nodes").iterdir():  # whatever else that tree held: not ours
        if entry.name != "example_node.py.example":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    shutil.copytree(PACK_DIR, tree / "custom_nodes" / PACK_DIR.name, ignore=COPY_IGNORE)
    assert not (tree / "extra_model_paths.yaml").exists()
    # The pack's own requirements.txt installs with nothing else: no index needed when they are in.
    pip = subprocess.run([state.python, "-m", "pip", "install", "--no-index", "-r",
                          str(tree / "custom_nodes" / PACK_DIR.name / "requirements.txt")],
                         capture_output=True, text=True, timeout=300, check=False)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    server = ComfyTestServer(root / "run")
    server.process.state = dataclasses.replace(state, comfyui_path=str(tree), extra_model_paths="")
    assert "--extra-model-paths-config" not in server.process.command()
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    yield server, tree
    server.stop()


def test_object_info_lists_every_pack_node(clean_comfy):
    server, tree = clean_comfy
    log = server.launch.log_path.read_text()
    # Loaded from the copy, not from this repository.
    assert str(tree / "custom_nodes" / PACK_DIR.name) in log and str(REPO_ROOT / "custom_nodes") not in log
    assert not [line for line in log.splitlines() if "IMPORT FAILED" in line and PACK_DIR.name in line]
    nodes = pack_nodes(server.get_json("/object_info"))
    assert set(nodes) == declared_node_ids(), sorted(nodes)
    assert [p for node_id, node in nodes.items() for p in schema_problems(node_id, node)] == []
    assert server.get_json("/workflow_templates")[PACK_DIR.name]


def _gate_graph(description: str) -> dict:
    """Composer → text gate → a preview of its report: pack nodes only, no model files needed."""
    return {
        "1": {"class_type": "CAK_CuteAnimalPrompt", "inputs": {"description": description, "style": "crayon"}},
        "2": {"class_type": "CAK_KidsTextSafety", "inputs": {"text": ["1", 0], "negative": ["1", 1]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
    }


def test_text_gate_runs_in_the_clean_comfyui(clean_comfy):
    server, _ = clean_comfy
    entry = server.run(_gate_graph(DEMO_PROMPT))
    assert entry["status"]["status_str"] == "success"
    (report,) = entry["outputs"]["3"]["text"]
    assert json.loads(report)["safe"] is True
    with pytest.raises(PromptFailed) as failure:
        server.run(_gate_graph("a bunny holding a gun"))
    assert failure.value.error["exception_type"].endswith("UnsafePromptError")
    assert "category: weapons" in failure.value.error["exception_message"]
