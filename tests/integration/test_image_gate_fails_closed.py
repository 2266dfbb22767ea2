"""Kids Image Safety fails closed in the node, in a real ComfyUI: a classifier that cannot load or
raises fails the prompt at the gate, and no image of that prompt is saved.

The classifier is broken inside the ComfyUI process by a test-only fault node spliced in before the
gate, so the pack's real node, its real shared classifier and ComfyUI's real executor are tested.
This ComfyUI is its own (the session one must keep a working classifier).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cak.demo import cpu_graph
from tests.support.comfy_server import ComfyTestServer, PromptFailed
from tests.support.supervisor_fixtures import fault_nodes_config


@pytest.fixture(scope="module")
def broken_comfy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gate-fails-closed")
    server = ComfyTestServer(folder, extra_model_paths=[fault_nodes_config(folder)])
    try:
        server.start()
        yield server
    finally:
        server.stop()


def gated_after_fault(mode: str, prefix: str) -> dict:
    graph = cpu_graph(prompt="a cute duck", seed=402, prefix=prefix)
    graph["11"] = {"class_type": "FaultBreakImageClassifier", "inputs": {"images": ["9", 0], "mode": mode}}
    graph["50"] = {"class_type": "CAK_KidsImageSafety",
                   "inputs": {"images": ["11", 0], "action": "replace", "threshold": 1.0}}
    graph["10"]["inputs"]["images"] = ["50", 0]
    return graph


@pytest.mark.parametrize("mode", ["cannot_load", "raises"])
def test_a_broken_classifier_fails_the_prompt_at_the_gate_and_saves_nothing(broken_comfy, mode):
    prefix = f"cak_gate_{mode}"
    # threshold 1.0 + replace: a working classifier would pass every image (scores are < 1).
    with pytest.raises(PromptFailed) as failed:
        broken_comfy.run(gated_after_fault(mode, prefix))
    error = failed.value.error
    assert error["node_type"] == "CAK_KidsImageSafety", error
    assert error["exception_type"].endswith("ImageClassifierUnavailable"), error
    assert not list(Path(broken_comfy.output_dir).rglob(f"{prefix}_*"))
