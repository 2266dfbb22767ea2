"""The image safety gate and the memory nodes/route in a real ComfyUI on the small CPU models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from cute_animal_kids.placeholder_image import placeholder_pil
from PIL import Image

from cak.demo import cpu_graph
from tests.support.cartoon_animals import draw_animal
from tests.support.comfy_server import PromptFailed

MEMORY_ROUTE = "/cute_animal_kids/memory"
GATE, REPORT = "50", "51"


def gate_defaults(comfy) -> tuple[str, float]:
    """The node's defaults as ComfyUI publishes them (they come from data/image_safety.yaml)."""
    required = comfy.get_json("/object_info/CAK_KidsImageSafety")["CAK_KidsImageSafety"]["input"]["required"]
    return required["action"][1]["default"], required["threshold"][1]["default"]


def gated(graph: dict, image: list, action: str, threshold: float) -> dict:
    """``graph`` with the gate between ``image`` and SaveImage (node 10), and the report previewed."""
    graph[GATE] = {"class_type": "CAK_KidsImageSafety",
                   "inputs": {"images": image, "action": action, "threshold": threshold}}
    graph[REPORT] = {"class_type": "PreviewAny", "inputs": {"source": [GATE, 1]}}
    graph["10"]["inputs"]["images"] = [GATE, 0]
    return graph


def report_of(entry: dict) -> dict:
    return json.loads(entry["outputs"][REPORT]["text"][0])


def saved_pixels(comfy, entry: dict) -> np.ndarray:
    (path,) = comfy.image_paths(entry)
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def loaded_models(comfy) -> dict[str, list[dict]]:
    by_kind: dict[str, list[dict]] = {}
    for model in comfy.get_json(MEMORY_ROUTE)["models"]:
        by_kind.setdefault(model["kind"], []).append(model)
    return by_kind


@pytest.mark.parametrize("name", ["cat photo", "drawn cartoon cat"])
def test_gate_passes_safe_pictures_at_default_threshold(comfy, name: str) -> None:
    picture = Image.fromarray(skimage.data.chelsea()) if name == "cat photo" else draw_animal("orange cat")
    file_name = f"cak_safe_{name.replace(' ', '_')}.png"
    comfy.input_dir.mkdir(parents=True, exist_ok=True)
    picture.save(comfy.input_dir / file_name)
    action, threshold = gate_defaults(comfy)
    assert (action, threshold) == ("replace", 0.5)

    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": file_name}},
             "10": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cak_safe"}}}
    entry = comfy.run(gated(graph, ["1", 0], action, threshold))

    (verdict,) = report_of(entry)["images"]
    assert verdict["decision"] == "pass", verdict
    assert verdict["score"] < 0.1
    original = np.asarray(picture.convert("RGB"), dtype=np.int16)
    assert np.abs(saved_pixels(comfy, entry) - original).max() <= 1  # SaveImage truncates 255*x


def test_threshold_zero_replace_swaps_in_the_placeholder(comfy) -> None:
    graph = cpu_graph(prompt="a cute owl", width=96, height=64, seed=301, prefix="cak_replaced")
    entry = comfy.run(gated(graph, ["9", 0], "replace", 0.0))

    (verdict,) = report_of(entry)["images"]
    assert verdict["decision"] == "replaced"
    assert verdict["category"] == "nsfw"
    assert ">= threshold 0" in verdict["reason"]
    pixels = saved_pixels(comfy, entry)
    assert pixels.shape == (64, 96, 3)
    expected = np.asarray(placeholder_pil(96, 64), dtype=np.int16)
    assert np.abs(pixels - expected).max() <= 1  # SaveImage truncates 255*x to uint8


def test_threshold_zero_block_fails_the_prompt_and_saves_nothing(comfy) -> None:
    prefix = "cak_blocked"
    graph = cpu_graph(prompt="a cute duck", seed=302, prefix=prefix)
    with pytest.raises(PromptFailed) as failed:
        comfy.run(gated(graph, ["9", 0], "block", 0.0))

    error = failed.value.error
    assert error["node_type"] == "CAK_KidsImageSafety"
    assert error["exception_type"].endswith("UnsafeImageError")
    assert "blocked by Kids Image Safety (category: nsfw" in error["exception_message"]
    assert not list(Path(comfy.output_dir).rglob(f"{prefix}_*"))


def test_nan_threshold_fails_closed(comfy) -> None:
    """ComfyUI's range check lets NaN through (JSON ``NaN`` parses); ``score >= NaN`` would pass all."""
    prefix = "cak_nan"
    graph = cpu_graph(prompt="a cute duck", seed=302, prefix=prefix)
    with pytest.raises(PromptFailed) as failed:
        comfy.run(gated(graph, ["9", 0], "replace", float("nan")))
    assert failed.value.error["node_type"] == "CAK_KidsImageSafety"
    assert "threshold must be within 0..1" in failed.value.error["exception_message"]
    assert not list(Path(comfy.output_dir).rglob(f"{prefix}_*"))


def test_offload_text_encoder_keeps_the_diffusion_model(comfy) -> None:
    # Control: a plain run leaves the text encoder loaded, so its absence below means something.
    comfy.run(cpu_graph(prompt="a cute hedgehog", seed=303, prefix="cak_mem"))
    before = loaded_models(comfy)
    assert before.get("text_encoder") and before.get("diffusion_model"), before

    graph = cpu_graph(prompt="a cute hedgehog with a scarf", seed=304, prefix="cak_mem")
    graph["20"] = {"class_type": "CAK_OffloadTextEncoder",
                   "inputs": {"conditioning": ["5", 0], "negative": ["6", 0], "clip": ["2", 0]}}
    graph["8"]["inputs"]["positive"] = ["20", 0]
    graph["8"]["inputs"]["negative"] = ["20", 1]
    comfy.run(graph)

    after = loaded_models(comfy)
    assert "text_encoder" not in after, after
    (diffusion,) = after["diffusion_model"]
    assert diffusion["class_name"] == "SD3" and diffusion["loaded_bytes"] > 0
    assert after.get("vae"), after


def test_free_memory_unloads_everything(comfy) -> None:
    comfy.run(cpu_graph(prompt="a cute seal", seed=305, prefix="cak_mem"))
    assert loaded_models(comfy), "control: models are loaded after a plain run"

    graph = cpu_graph(prompt="a cute seal in the snow", seed=306, prefix="cak_free")
    graph["21"] = {"class_type": "CAK_FreeMemory",
                   "inputs": {"value": ["9", 0], "unload_models": True, "drop_cached_outputs": False}}
    graph["10"]["inputs"]["images"] = ["21", 0]
    entry = comfy.run(graph)

    assert len(comfy.image_paths(entry)) == 1  # the value passed through to SaveImage
    assert loaded_models(comfy) == {}


def cached_nodes(entry: dict) -> list[str]:
    return [node for kind, data in entry["status"]["messages"] if kind == "execution_cached"
            for node in data["nodes"]]


def test_free_memory_can_drop_cached_outputs(comfy) -> None:
    plain = cpu_graph(prompt="a cute lamb", seed=307, prefix="cak_cache")
    comfy.run(plain)
    assert "1" in cached_nodes(comfy.run(plain)), "control: a repeated graph reuses cached outputs"

    graph = cpu_graph(prompt="a cute lamb", seed=308, prefix="cak_cache")
    graph["21"] = {"class_type": "CAK_FreeMemory",
                   "inputs": {"value": ["9", 0], "unload_models": False, "drop_cached_outputs": True}}
    graph["10"]["inputs"]["images"] = ["21", 0]
    comfy.run(graph)

    assert cached_nodes(comfy.run(plain)) == []


def test_memory_route_reports_process_and_device(comfy) -> None:
    report = comfy.get_json(MEMORY_ROUTE)
    assert report["process"]["rss_bytes"] > 100 * 2**20
    assert report["device"]["type"] == "cpu"
    assert 0 < report["device"]["free_bytes"] <= report["device"]["total_bytes"]
    assert comfy.get_json("/api" + MEMORY_ROUTE)["process"]["pid"] == report["process"]["pid"]
