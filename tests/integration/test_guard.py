"""Kids Guard on real parts: install.py's tiny random-weight Qwen3Guard checkpoint loaded and run by
transformers on the CPU, a broken checkpoint, and the CAK_KidsGuard node in a real ComfyUI.

Random weights answer with garbage, so every real run here must end in a guard_unavailable refusal:
that is the guard failing closed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cute_animal_kids.guard_model import (
    UNAVAILABLE,
    Guard,
    GuardModel,
    GuardOutputError,
    GuardUnavailable,
    parse_output,
    shared_model,
    unload_shared,
)

from cak.demo import DEMO_PROMPT, cpu_graph
from cak.install_state import MODELS_DIR
from tests.support.comfy_server import PromptFailed

TINY = MODELS_DIR / "guard" / "cak_tiny_qwen3guard"


@pytest.fixture(scope="module")
def tiny_model() -> GuardModel:
    if not (TINY / "config.json").is_file():
        pytest.fail(f"{TINY} is missing: run python3 install.py")
    model = GuardModel(TINY)
    model.load()
    return model


def test_tiny_checkpoint_loads_and_generates_with_its_chat_template(tiny_model):
    tokenizer, _model = tiny_model._loaded  # the real objects transformers built
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "a bunny in a hat"}], tokenize=False)
    assert "USER: a bunny in a hat" in prompt and prompt.rstrip().endswith("</think>")
    answer = tiny_model.generate("a bunny in a hat")
    assert isinstance(answer, str) and answer.strip()
    assert len(tokenizer(answer)["input_ids"]) <= tiny_model.max_new_tokens + 1


def test_garbage_from_the_real_model_is_refused_guard_unavailable(tiny_model):
    answer = tiny_model.generate(DEMO_PROMPT)
    with pytest.raises(GuardOutputError):
        parse_output(answer)
    decision = Guard(tiny_model).check(DEMO_PROMPT)
    assert (decision.safe, decision.category) == (False, UNAVAILABLE)
    assert "not a verdict" in decision.reason


@pytest.mark.parametrize("damage", ["truncated weights", "no tokenizer", "no folder"])
def test_broken_checkpoint_is_refused_guard_unavailable(tmp_path: Path, damage: str):
    folder = tmp_path / "broken"
    if damage != "no folder":
        shutil.copytree(TINY, folder)
    if damage == "truncated weights":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:4096])
    elif damage == "no tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            (folder / name).unlink(missing_ok=True)
    model = GuardModel(folder)
    with pytest.raises(GuardUnavailable, match="cannot load the guard model"):
        model.load()
    assert Guard(model).check("a bunny").category == UNAVAILABLE


def test_free_memory_unloads_shared_guard_models():
    model = shared_model(TINY)
    model.load()
    assert model.loaded
    assert unload_shared() == ["Qwen3Guard (cak_tiny_qwen3guard)"]
    assert not model.loaded and unload_shared() == []


# --------------------------------------------------------------------------- the node


def _guarded_graph(description: str, prefix: str, seed: int) -> dict:
    """The CPU graph with composer -> Kids Guard feeding the positive encoder."""
    graph = cpu_graph(seed=seed, prefix=prefix)
    graph["20"] = {"class_type": "CAK_CuteAnimalPrompt", "inputs": {"description": description, "style": "watercolor"}}
    graph["22"] = {"class_type": "CAK_KidsGuard", "inputs": {
        "text": ["20", 0], "model": TINY.name, "controversial": "refuse", "device": "cpu"}}
    graph["5"]["inputs"]["text"] = ["22", 0]
    return graph


def test_node_lists_the_guard_folder_checkpoints(comfy):
    info = comfy.get_json("/object_info/CAK_KidsGuard")["CAK_KidsGuard"]
    assert info["display_name"] == "Kids Guard (Qwen3Guard)"
    assert info["category"] == "Cute Animal Kids/Safety"
    kind, spec = info["input"]["required"]["model"]
    options = kind if isinstance(kind, list) else spec["options"]  # the V1 list form or V3's COMBO
    assert TINY.name in options


def test_node_with_the_tiny_model_refuses_closed_and_draws_nothing(comfy):
    before = set(comfy.output_dir.rglob("guard-tiny*"))
    with pytest.raises(PromptFailed) as failure:
        comfy.run(_guarded_graph("a little bear in a hat", "guard-tiny", seed=41), timeout=240)
    error = failure.value.error
    assert error["exception_type"].endswith("UnsafePromptError")
    assert f"category: {UNAVAILABLE}" in error["exception_message"]
    assert set(comfy.output_dir.rglob("guard-tiny*")) == before
    assert "5" not in error["executed"]  # the positive prompt was never encoded
