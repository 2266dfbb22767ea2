"""The ComfyUI door's pure rules: ComfyUI's 400 shapes, the deny list, the text check, the output
rewrite, the settings and the token forms clients send."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

from cak.object_info import ObjectInfo
from supervisor.comfy_door import COOKIE, ComfyDoor, job_id_for
from supervisor.comfy_door_editor import PassPolicy, unprefixed
from supervisor.comfy_door_graph import (
    GraphRefused,
    NodeRules,
    check_prompt,
    check_texts,
    graph_to_run,
    output_kinds,
    public_extra_data,
)
from supervisor.comfy_door_history import HiddenHistory
from supervisor.settings import ConfigError, load_settings

INFO = ObjectInfo({
    "Text": {"input": {"required": {"text": ["STRING", {}], "size": ["INT", {"min": 16, "max": 64}]}},
             "input_order": {"required": ["text", "size"]}, "output": ["IMAGE"], "output_name": ["IMAGE"],
             "name": "Text", "display_name": "Text", "output_node": False},
    "SaveImage": {"input": {"required": {"images": ["IMAGE", {}], "filename_prefix": ["STRING", {}]}},
                  "output": [], "output_name": [], "name": "SaveImage", "display_name": "Save",
                  "output_node": True},
    "SaveImageWebsocket": {"input": {"required": {"images": ["IMAGE", {}]}}, "output": [], "output_name": [],
                           "name": "SaveImageWebsocket", "display_name": "WS", "output_node": True},
    "SaveLatent": {"input": {"required": {}}, "output": [], "output_name": [], "name": "SaveLatent",
                   "display_name": "Save latent", "output_node": True},
})
RULES = NodeRules(deny=frozenset({"SaveLatent"}))


def graph(text: str = "a bear", size: int = 32) -> dict:
    return {"1": {"class_type": "Text", "inputs": {"text": text, "size": size}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}


def refusal(prompt: object) -> dict:
    with pytest.raises(GraphRefused) as caught:
        check_prompt(prompt, INFO, RULES)
    return caught.value.body


def test_a_good_graph_names_its_outputs() -> None:
    assert check_prompt(graph(), INFO, RULES) == ["2"]


def test_comfyui_400_shapes() -> None:
    assert refusal({})["error"]["type"] == "invalid_prompt"
    assert refusal({"1": {"class_type": "Nope", "inputs": {}}})["error"]["details"] == "Node ID '#1'"
    assert refusal({"1": {"class_type": "Text", "inputs": {"text": "a", "size": 32}}})["error"]["type"] \
        == "prompt_no_outputs"
    body = refusal(graph(size=8))
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["1"]["class_type"] == "Text"
    assert body["node_errors"]["1"]["dependent_outputs"] == ["2"]
    assert "minimum" in body["node_errors"]["1"]["errors"][0]["message"]


def test_denied_and_not_allowed_nodes() -> None:
    prompt = {**graph(), "3": {"class_type": "SaveLatent", "inputs": {}}}
    assert refusal(prompt)["node_errors"]["3"]["errors"][0]["type"] == "node_not_allowed"
    only = NodeRules(deny=frozenset(), allow=frozenset({"Text"}))
    with pytest.raises(GraphRefused) as caught:
        check_prompt(graph(), INFO, only)
    assert list(caught.value.body["node_errors"]) == ["2"]


def test_every_text_input_is_checked_and_the_category_named() -> None:
    seen = []

    def check(text: str) -> tuple[bool, str | None]:
        seen.append(text)
        return (text != "bad", "violence")

    check_texts(graph(), ["2"], check)
    assert sorted(seen) == ["a bear", "x"]
    with pytest.raises(GraphRefused) as caught:
        check_texts(graph("bad"), ["2"], check)
    error = caught.value.body["node_errors"]["1"]["errors"][0]
    assert error["type"] == "unsafe_text" and error["extra_info"] == {"input_name": "text", "category": "violence"}
    assert "violence" in error["message"]


def test_every_image_output_becomes_a_saved_file() -> None:
    prompt = {**graph(), "ws": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
              "p": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    run = graph_to_run(prompt)
    assert {run[n]["class_type"] for n in ("2", "ws", "p")} == {"SaveImage"}
    assert run["ws"]["inputs"]["images"] == ["1", 0]
    assert prompt["ws"]["class_type"] == "SaveImageWebsocket"  # the stored prompt is untouched
    assert output_kinds(prompt) == {"2": "output", "ws": "websocket", "p": "temp"}


def test_sensitive_extra_data_is_dropped() -> None:
    assert public_extra_data({"api_key_comfy_org": "k", "auth_token_comfy_org": "t", "x": 1}) == {"x": 1}


def test_prompt_ids_map_to_stable_job_ids() -> None:
    uid = "0b1d3c9e-3f5a-4a57-9a55-0c6f3b1f1e2a"
    assert job_id_for(uid) == uid
    assert job_id_for("my-prompt") == job_id_for("my-prompt") != job_id_for("other")


@pytest.mark.usefixtures("installed_comfyui")
def test_settings_off_defaults_and_errors() -> None:
    assert load_settings().comfy_api is None
    assert load_settings(overrides={"comfy_api": None}).comfy_api is None
    config = load_settings(overrides={"comfy_api": {"port": 0}}).comfy_api
    assert config is not None and "SaveLatent" in config.deny_nodes and config.image_gate.action == "replace"
    assert load_settings(overrides={"comfy_api": {}}).comfy_api is not None  # {}: on, with the defaults
    assert config.editor is True and load_settings(overrides={"comfy_api": {"editor": False}}).comfy_api.editor is False
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={"comfy_api": {"port": "x", "colour": 1, "image_gate": {"action": "maybe"},
                                               "editor": "yes"}})
    keys = sorted(problem.split(":")[0] for problem in caught.value.problems)
    assert keys == ["comfy_api.colour", "comfy_api.editor", "comfy_api.image_gate.action", "comfy_api.port"]


@pytest.mark.parametrize(("headers", "query", "ok"), [
    ({}, "", False),
    ({"Authorization": "Bearer secret-token"}, "", True),
    ({"Authorization": "Bearer wrong-token"}, "", False),
    ({"Authorization": "Basic " + base64.b64encode(b"user:secret-token").decode()}, "", True),
    ({"Authorization": "Basic " + base64.b64encode(b"secret-token:").decode()}, "", True),
    ({"Authorization": "Basic " + base64.b64encode(b"user:nope").decode()}, "", False),
    ({"Authorization": "Basic !!!"}, "", False),
    ({}, "?token=secret-token", True),
    ({}, "?token=", False),
    ({"Cookie": f"{COOKIE}=secret-token"}, "", False),  # the cookie holds an HMAC, never the token
    ({"Cookie": f"{COOKIE}=" + "0" * 64}, "", False),
])
def test_token_forms_clients_send(headers: dict, query: str, ok: bool) -> None:
    door = ComfyDoor.__new__(ComfyDoor)
    door.token = "secret-token"
    assert door._authorised(make_mocked_request("GET", "/prompt" + query, headers=headers)) is ok


def test_the_editor_cookie_is_an_hmac_of_the_token_and_opens_the_door() -> None:
    door = ComfyDoor.__new__(ComfyDoor)
    door.token = "secret-token"
    value = door._cookie_value()
    assert "secret-token" not in value
    assert door._authorised(make_mocked_request("GET", "/api/settings", headers={"Cookie": f"{COOKIE}={value}"}))
    door.token = "another-token"
    assert not door._authorised(make_mocked_request("GET", "/", headers={"Cookie": f"{COOKIE}={value}"}))


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/", None), ("GET", "/assets/index.js", None), ("GET", "/api/settings", None),
    ("POST", "/api/settings/Comfy.TutorialCompleted", None), ("POST", "/userdata/workflows%2Fa.json", None),
    ("DELETE", "/api/userdata/workflows%2Fa.json", None), ("POST", "/api/users", None),
    ("GET", "/internal/logs", 404), ("GET", "/api/internal/folder_paths", 404), ("POST", "/api/free", 404),
    ("POST", "/upload/image", 405), ("POST", "/api/settingsX", 405), ("PUT", "/extensions/x.js", 405),
])
def test_what_the_editor_pass_through_lets_by(method: str, path: str, status: int | None) -> None:
    assert PassPolicy.load().refusal(method, path) == status


def test_api_prefix_is_stripped_once() -> None:
    assert [unprefixed(p) for p in ("/api", "/api/x", "/apix", "/x/api")] == ["/", "/x", "/apix", "/x/api"]


def test_hidden_history_is_kept_in_its_file(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    first = HiddenHistory(path)
    first.load()  # no file yet: nothing hidden
    asyncio.run(first.delete(["a", "b"]))
    again = HiddenHistory(path)
    again.load()
    assert again.hides("a", time.time()) and not again.hides("c", time.time())
    asyncio.run(again.clear())
    after = HiddenHistory(path)
    after.load()
    assert after.deleted == set() and after.hides("c", time.time() - 1) and not after.hides("c", time.time() + 1)
    assert not after.hides("c", None)


def test_an_unreadable_history_file_hides_nothing(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    path.write_text("{not json")
    history = HiddenHistory(path)
    history.load()
    assert not history.hides("a", 0.0) and history.cleared_at is None
