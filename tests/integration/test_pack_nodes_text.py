"""The prompt composer and the text gate inside a real ComfyUI: unsafe text never reaches the encoder."""

from __future__ import annotations

import pytest

from tests.comfy_graphs import cpu_graph
from tests.comfy_server import PromptFailed


def _gated_graph(description: str, prefix: str, seed: int) -> dict:
    """The CPU graph with composer → text gate feeding the positive encoder (as the workflows do)."""
    graph = cpu_graph(seed=seed, prefix=prefix)
    graph["20"] = {"class_type": "CAK_CuteAnimalPrompt", "inputs": {"description": description, "style": "watercolor"}}
    graph["21"] = {"class_type": "CAK_KidsTextSafety", "inputs": {"text": ["20", 0], "negative": ["20", 1]}}
    graph["5"]["inputs"]["text"] = ["21", 0]
    graph["6"]["inputs"]["text"] = ["21", 2]  # the negative waits for the check too
    return graph


def test_safe_chinese_prompt_draws_an_image(comfy):
    entry = comfy.run(_gated_graph("一只戴帽子的小熊", "gate-safe", seed=31))
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
