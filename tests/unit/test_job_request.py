"""Request validation, id checks, the workflow catalog's limits and the service settings."""

from __future__ import annotations

import pytest

from cak.install_state import WORKFLOWS_DIR
from supervisor.job_request import FieldError, JobRequest, parse_job_request, valid_job_id
from supervisor.settings import TOKEN_ENV, ConfigError, load_settings
from supervisor.workflow_catalog import WorkflowCatalog


def parse(body, allow_graphs: bool = False) -> JobRequest:
    return parse_job_request(body, max_prompt_chars=50, allow_graphs=allow_graphs,
                             default_workflow="cute_animal_cpu")


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def field_of(body, **kwargs) -> str:
    with pytest.raises(FieldError) as info:
        parse(body, **kwargs)
    return info.value.field


def test_a_full_request_round_trips_through_json():
    request = parse({"prompt": "  一只戴帽子的小熊 ", "style": "watercolor", "seed": 7, "width": 64,
                     "height": 96, "steps": 3})
    assert request.prompt == "一只戴帽子的小熊" and request.workflow == "cute_animal_cpu"
    assert request.params == {"style": "watercolor", "seed": 7, "width": 64, "height": 96, "steps": 3}
    assert JobRequest.from_json(request.to_json()) == request


@pytest.mark.parametrize(("body", "field"), [
    ("a string", "body"),
    ({}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"prompt": ["a"]}, "prompt"),
    ({"prompt": "x" * 51}, "prompt"),
    ({"prompt": "a\x00cat"}, "prompt"),
    ({"prompt": "cat", "seed": 1.5}, "seed"),
    ({"prompt": "cat", "seed": 2**64}, "seed"),
    ({"prompt": "cat", "width": False}, "width"),
    ({"prompt": "cat", "height": 8}, "height"),
    ({"prompt": "cat", "steps": 0}, "steps"),
    ({"prompt": "cat", "style": 3}, "style"),
    ({"prompt": "cat", "workflow": "Cute/../x"}, "workflow"),
    ({"prompt": "cat", "extra": 1}, "extra"),
    ({"prompt": "cat", "graph": {"1": {"class_type": "X"}}}, "graph"),
    ({"prompt": "a bunny \ud800"}, "prompt"),
    ({"prompt": "cat", "\udfff": 1}, "body"),
    ({"prompt": "a bunny \u202e tah a ni"}, "prompt"),
    ({"prompt": "\u2066a bunny\u2069"}, "prompt"),
    ({"prompt": "a bunny\u2029"}, "prompt"),
    ({"prompt": "a\u2028bunny"}, "prompt"),
    ({"prompt": "\u200b\u200c\u200d"}, "prompt"),
    ({"prompt": " \u2060\ufeff\u3000 "}, "prompt"),
])
def test_each_bad_field_is_named(body, field):
    assert field_of(body) == field


def test_zero_width_characters_beside_visible_text_are_kept_for_the_gate():
    assert parse({"prompt": "a\u200bbunny"}).prompt == "a\u200bbunny"


def test_graphs_only_when_allowed_and_their_texts_are_checked():
    graph = {"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "a bear", "clip": ["2", 0]}}}
    request = parse({"graph": graph}, allow_graphs=True)
    assert request.workflow == "graph" and list(request.texts()) == ["a bear"]
    assert field_of({"graph": {"1": "not a node"}}, allow_graphs=True) == "graph"
    assert field_of({"graph": graph, "steps": 3}, allow_graphs=True) == "steps"
    graph["1"]["inputs"]["deep"] = nested(40)  # recursion-limit attacks stop at MAX_DEPTH
    assert field_of({"graph": graph}, allow_graphs=True) == "graph"
    graph["1"]["inputs"]["deep"] = nested(20)
    assert parse({"graph": graph}, allow_graphs=True).graph == graph
    graph["1"]["inputs"]["text"] = "a \udc80 bear"  # every string in the body, not only the prompt
    assert field_of({"graph": graph}, allow_graphs=True) == "graph"


@pytest.mark.parametrize(("text", "ok"), [
    ("0b7e4c2a-8f0e-4d55-9a84-2f4f3c1d2e10", True),
    ("0B7E4C2A-8F0E-4D55-9A84-2F4F3C1D2E10", False),
    ("0b7e4c2a8f0e4d559a842f4f3c1d2e10", False),
    ("../../etc/passwd", False),
    ("", False),
])
def test_job_ids_are_canonical_uuids(text, ok):
    assert valid_job_id(text) is ok


def test_catalog_checks_the_workflow_manifest_limits_and_fixes_a_seed():
    catalog = WorkflowCatalog.load(WORKFLOWS_DIR)
    assert "cute_animal_cpu" in catalog.names
    request = parse({"prompt": "a cat", "width": 64})
    seeded = catalog.with_seed(request, None)
    assert isinstance(seeded.params["seed"], int)
    assert catalog.with_seed(request, "key-1") == catalog.with_seed(request, "key-1")
    graph = catalog.build(seeded)
    assert any(node["inputs"].get("width") == 64 for node in graph.values())
    for body, field in [({"prompt": "a cat", "width": 72}, "width"),
                        ({"prompt": "a cat", "style": "gothic"}, "style"),
                        ({"prompt": "a cat", "workflow": "missing"}, "workflow")]:
        with pytest.raises(FieldError) as info:
            catalog.build(parse(body))
        assert info.value.field == field
        assert not info.value.reason.startswith(("parameter ", f"{field}:", ":")), info.value.reason


@pytest.mark.usefixtures("installed_comfyui")
def test_service_settings_defaults_and_key_named_problems(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    settings = load_settings(None)
    assert settings.http.host == "127.0.0.1" and settings.http.loopback and settings.http.token is None
    assert settings.jobs.max_attempts >= 1 and settings.jobs.db_path.name == "jobs.sqlite3"
    assert settings.jobs.keep_images_days == 30  # children's pictures are not kept forever
    bad = tmp_path / "bad.yaml"
    bad.write_text("http: {port: web, token: short, colour: 1}\njobs: {max_attempts: 0, keep_images_days: -1}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(bad)
    text = str(info.value)
    for key in ("http.port", "http.token", "http.colour", "jobs.max_attempts", "jobs.keep_images_days"):
        assert key in text
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment")
    assert load_settings(None).http.token == "from-the-environment"
