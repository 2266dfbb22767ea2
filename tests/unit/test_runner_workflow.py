"""Manifests, parameter filling, the production/CPU comparison and UI→API rules (no server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cute_animal_kids.prompt_composer import style_names

from cak.errors import UsageError
from cak.install_state import WORKFLOWS_DIR
from cak.object_info import ObjectInfo
from cak.workflow import Workflow, parse_assignments
from runner.ui_convert import ConversionError, ui_to_api

WORKFLOWS = ("cute_animal_cpu", "cute_animal_qwen_image", "cute_animal_qwen_image_fast")

# (class_type, input) pairs where production and CPU graphs may differ: model files, loader
# options, and the size/steps defaults each manifest sets for its models.
ALLOWED_DIFFERENCES = {
    ("UNETLoader", "unet_name"), ("CLIPLoader", "clip_name"), ("CLIPLoader", "type"),
    ("VAELoader", "vae_name"), ("EmptySD3LatentImage", "width"), ("EmptySD3LatentImage", "height"),
    ("KSampler", "steps"),
    # The CPU graph has no LoRA loader (no CPU LoRA file): the sampler shift takes the model directly.
    ("ModelSamplingAuraFlow", "model"),
}
PRODUCTION_ONLY_NODES = {"LoraLoaderModelOnly"}


@pytest.mark.parametrize("name", WORKFLOWS)
def test_api_file_holds_the_manifest_defaults(name):
    workflow = Workflow.load(name)
    for parameter in workflow.parameters.values():
        for target in parameter.targets:
            assert workflow.graph[target.node]["inputs"][target.input] == parameter.default, parameter.name


@pytest.mark.parametrize("name", WORKFLOWS)
def test_style_choices_are_the_packs_styles(name):
    assert list(Workflow.load(name).parameters["style"].choices) == style_names()


def test_production_and_cpu_graphs_differ_only_where_allowed():
    production = Workflow.load("cute_animal_qwen_image").graph
    cpu = Workflow.load("cute_animal_cpu").graph
    extra = {production[n]["class_type"] for n in set(production) - set(cpu)}
    assert extra == PRODUCTION_ONLY_NODES and not set(cpu) - set(production)
    differences = set()
    for node_id, node in cpu.items():
        other = production[node_id]
        assert node["class_type"] == other["class_type"], node_id
        for name in set(node["inputs"]) | set(other["inputs"]):
            if node["inputs"].get(name) != other["inputs"].get(name):
                differences.add((node["class_type"], name))
    assert differences <= ALLOWED_DIFFERENCES, differences - ALLOWED_DIFFERENCES
    assert set(Workflow.load("cute_animal_qwen_image").parameters) - set(Workflow.load("cute_animal_cpu").parameters) \
        == {"lora", "lora_strength"}


def test_fast_variant_is_production_with_the_lightning_lora_at_8_steps():
    production = Workflow.load("cute_animal_qwen_image")
    fast = Workflow.load("cute_animal_qwen_image_fast")
    differences = {(node_id, name, fast.graph[node_id]["inputs"][name])
                   for node_id, node in production.graph.items() for name, value in node["inputs"].items()
                   if fast.graph[node_id]["inputs"][name] != value}
    assert set(fast.graph) == set(production.graph)
    assert all(fast.graph[n]["class_type"] == production.graph[n]["class_type"] for n in production.graph)
    assert differences == {("4", "strength_model", 1.0), ("12", "steps", 8), ("12", "cfg", 1.0)}
    assert fast.graph["4"]["inputs"]["lora_name"] == "Qwen-Image-Lightning-8steps-V1.0.safetensors"
    # The LoRA is the point of the variant: no parameter can switch it off or swap it.
    assert set(production.parameters) - set(fast.parameters) == {"lora", "lora_strength"}
    assert fast.build()["4"]["inputs"]["strength_model"] == 1.0


def test_fast_variant_names_the_lora_download_in_the_editor_file():
    ui = json.loads((WORKFLOWS_DIR / "cute_animal_qwen_image_fast.ui.json").read_text())
    (lora,) = [node for node in ui["nodes"] if node["type"] == "LoraLoaderModelOnly"]
    (model,) = lora["properties"]["models"]
    assert model == {"name": "Qwen-Image-Lightning-8steps-V1.0.safetensors", "directory": "loras",
                     "url": "https://huggingface.co/lightx2v/Qwen-Image-Lightning/resolve/main/"
                            "Qwen-Image-Lightning-8steps-V1.0.safetensors"}


def test_lora_is_left_out_at_strength_zero():
    workflow = Workflow.load("cute_animal_qwen_image")
    graph = workflow.build()
    assert "4" not in graph and graph["5"]["inputs"]["model"] == ["1", 0]
    graph = workflow.build({"lora_strength": "0.8", "lora": "my_style.safetensors"})
    assert graph["4"]["inputs"] == {"lora_name": "my_style.safetensors", "strength_model": 0.8, "model": ["1", 0]}
    assert graph["5"]["inputs"]["model"] == ["4", 0]


def test_parameters_are_filled_and_checked():
    workflow = Workflow.load("cute_animal_cpu")
    graph = workflow.build(parse_assignments(["prompt=一只戴帽子的小熊 = 好", "seed=7", "width=96", "style=crayon"]))
    assert graph["6"]["inputs"] == {"description": "一只戴帽子的小熊 = 好", "style": "crayon"}
    assert graph["12"]["inputs"]["seed"] == 7 and graph["11"]["inputs"]["width"] == 96
    assert workflow.graph["12"]["inputs"]["seed"] == 42  # the loaded graph is not changed


@pytest.mark.parametrize(("values", "message"), [
    ({"sed": "7"}, "unknown parameter 'sed'"),
    ({"seed": "seven"}, "is not a valid int"),
    ({"seed": "-1"}, "below the minimum 0"),
    ({"steps": "1000"}, "above the maximum 100"),
    ({"width": "100"}, "not a multiple of 16"),
    ({"style": "gothic"}, "is not one of picture_book"),
    ({"prompt": "  "}, "at least 1 character$"),
    ({"prompt": "x" * 301}, "at most 300 allowed"),
    ({"seed": True}, "is not a valid int"),
])
def test_bad_values_are_one_line_errors(values, message):
    with pytest.raises(UsageError, match=message) as caught:
        Workflow.load("cute_animal_cpu").build(values)
    assert "\n" not in str(caught.value)


def test_bad_workflow_files(tmp_path: Path):
    with pytest.raises(UsageError, match="no workflow named 'nope'"):
        Workflow.load("nope")
    broken = tmp_path / "broken.api.json"
    broken.write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        Workflow.load(broken)
    ui = tmp_path / "edited.json"
    ui.write_text((WORKFLOWS_DIR / "cute_animal_cpu.ui.json").read_text())
    with pytest.raises(UsageError, match="UI-format workflow: convert it first"):
        Workflow.load(ui)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"api: {WORKFLOWS_DIR / 'cute_animal_cpu.api.json'}\nparameters:\n"
                        "  seed: {type: int, default: 1, targets: [{node: '99', input: seed}]}\n")
    with pytest.raises(UsageError, match="target node 99 is not in the API graph"):
        Workflow.load(manifest)
    manifest.write_text("api: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        Workflow.load(manifest)


# --------------------------------------------------------------------------- UI → API rules

OBJECT_INFO = ObjectInfo({
    "Source": {"input": {"required": {"seed": ["INT", {"min": 0, "max": 9, "control_after_generate": True}],
                                      "mode": [["a", "b"]]}},
               "input_order": {"required": ["seed", "mode"]}, "output": ["MODEL"], "output_name": ["MODEL"]},
    "Filter": {"input": {"required": {"model": ["MODEL"], "strength": ["FLOAT", {}]}},
               "input_order": {"required": ["model", "strength"]}, "output": ["MODEL"], "output_name": ["MODEL"]},
    "Sink": {"input": {"required": {"model": ["MODEL"], "text": ["STRING", {}], "count": ["INT", {}]}},
             "input_order": {"required": ["model", "text", "count"]}, "output": [], "output_name": [],
             "output_node": True},
})


def ui_node(node_id: int, kind: str, widgets: list | None = None, inputs: list | None = None,
            mode: int = 0) -> dict:
    return {"id": node_id, "type": kind, "mode": mode, "inputs": inputs or [], "outputs": [],
            "widgets_values": widgets}


def test_ui_conversion_rules():
    workflow = {
        "nodes": [
            ui_node(1, "Source", [5, "randomize", "b"]),
            ui_node(2, "Filter", [0.5], [{"name": "model", "type": "MODEL", "link": 1}], mode=4),  # bypassed
            ui_node(3, "Reroute", None, [{"name": "", "type": "*", "link": 2}]),
            ui_node(4, "PrimitiveNode", ["from a primitive"]),
            ui_node(5, "Sink", ["typed text", 3], [
                {"name": "model", "type": "MODEL", "link": 3},
                {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": 4}]),
            ui_node(6, "Sink", ["muted", 1], [{"name": "model", "type": "MODEL", "link": None}], mode=2),
            ui_node(7, "Note", ["just a note"]),
        ],
        "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "MODEL"], [3, 3, 0, 5, 0, "MODEL"],
                  [4, 4, 0, 5, 1, "STRING"]],
        "groups": [{"title": "layout only"}],
    }
    graph = ui_to_api(workflow, OBJECT_INFO)
    assert set(graph) == {"1", "5"}
    assert graph["1"]["inputs"] == {"seed": 5, "mode": "b"}  # "randomize" is the control widget
    assert graph["5"]["inputs"] == {"model": ["1", 0], "text": "from a primitive", "count": 3}


def test_ui_conversion_errors():
    with pytest.raises(ConversionError, match="class Missing is not on this server"):
        ui_to_api({"nodes": [ui_node(1, "Missing", [])], "links": []}, OBJECT_INFO)
    with pytest.raises(ConversionError, match="link 9 is not in the workflow's link list"):
        ui_to_api({"nodes": [ui_node(1, "Sink", ["", 1], [{"name": "model", "type": "MODEL", "link": 9}])],
                   "links": []}, OBJECT_INFO)
    with pytest.raises(ConversionError, match="API-format files need no conversion"):
        ui_to_api(json.loads((WORKFLOWS_DIR / "cute_animal_cpu.api.json").read_text()), OBJECT_INFO)
