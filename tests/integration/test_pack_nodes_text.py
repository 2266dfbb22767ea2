"""The prompt composer and the text gate inside a real ComfyUI: unsafe text never reaches the encoder."""

from __future__ import annotations

import pytest
import yaml

from cak.demo import DEMO_PROMPT, cpu_graph
from tests.support.comfy_server import PromptFailed


def _gated_graph(description: str, prefix: str, seed: int) -> dict:
    """The CPU graph with composer → text gate feeding the positive encoder (as the workflows do)."""
    graph = cpu_graph(seed=seed, prefix=prefix)
    graph["20"] = {"class_type": "CAK_CuteAnimalPrompt", "inputs": {"description": description, "style": "watercolor"}}
    graph["21"] = {"class_type": "CAK_KidsTextSafety", "inputs": {"text": ["20", 0], "negative": ["20", 1]}}
    graph["5"]["inputs"]["text"] = ["21", 0]
    graph["6"]["inputs"]["text"] = ["21", 2]  # the negative waits for the check too
    return graph


def test_safe_chinese_prompt_draws_an_image(comfy):
    entry = comfy.run(_gated_graph(DEMO_PROMPT, "gate-safe", seed=31))
    assert len(comfy.image_paths(entry)) == 1


@pytest.mark.parametrize(("description", "category"), [
    ("a bunny holding a ｇｕｎ", "weapons"),
    ("一只小熊在血 腥的森林里", "violence_gore"),
])
def test_unsafe_prompt_fails_with_category_and_no_image(comfy, description, category):
    before = set(comfy.output_dir.rglob("gate-unsafe*"))
    with pytest.raises(PromptFailed) as failure:
        comfy.run(_gated_graph(description, "gate-unsafe", seed=32))
    error = failure.value.error
    assert error["exception_type"].endswith("UnsafePromptError")
    assert f"category: {category}" in error["exception_message"]
    assert "ｇｕｎ" not in error["exception_message"] and "血" not in error["exception_message"]
    assert set(comfy.output_dir.rglob("gate-unsafe*")) == before
    assert "20" in error["executed"]  # the composer ran; no text was encoded before the rejection:
    assert not {"5", "6"} & set(error["executed"])


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("description", [
    "a happy panda eating cake in the garden",   # passes both modes
    "a bunny flying a spaceship",                # outside the kid-safe vocabulary: strict refuses
    "a bunny who wants to k*ll itself",          # unsafe in both modes
])
def test_node_and_supervisor_pre_queue_check_agree(comfy, tmp_path, strict, description):
    """The supervisor (its real config loader, jobs.strict_text_gate) and the node in a real
    ComfyUI (its strict option) reach the same decision on the same text."""
    from supervisor.service import prequeue_decision
    from supervisor.settings import load_settings

    config_file = tmp_path / "supervisor.yaml"
    config_file.write_text(yaml.safe_dump({"jobs": {"strict_text_gate": strict}}))
    jobs = load_settings(config_file).jobs
    expected = prequeue_decision(description, jobs)

    graph = cpu_graph(seed=33, prefix="gate-agree")
    graph["22"] = {"class_type": "PrimitiveString", "inputs": {"value": description}}
    graph["21"] = {"class_type": "CAK_KidsTextSafety", "inputs": {"text": ["22", 0], "strict": strict}}
    graph["5"]["inputs"]["text"] = ["21", 0]
    if expected.safe:
        comfy.run(graph)
        return
    with pytest.raises(PromptFailed) as failure:
        comfy.run(graph)
    assert f"category: {expected.category}" in failure.value.error["exception_message"]
