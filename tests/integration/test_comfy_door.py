"""The ComfyUI door on a real pool: ComfyUI's own example clients, a raw websocket, the safety refusals.

ComfyUI's ``script_examples`` clients run unmodified in their client code: the copy only gets the
door's address instead of 127.0.0.1:8188, the example's graph (which needs an SD1.5 checkpoint
this machine does not have) swapped for the same-shaped graph on the small CPU models (node ids 3,
6 and 9 kept, because the scripts set ``prompt["3"]`` and ``prompt["6"]``), and two lines at the
end that write the images it received to a folder, so the test can look at them.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import websocket
import yaml
from PIL import Image

from cak.comfy_process import free_port
from cak.install_state import REPO_ROOT
from cak.cpu_models import DIFFUSION_MODEL, TEXT_ENCODER, VAE
from tests.support.job_service import SupervisorProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(900)
EXAMPLES = Path(__file__).resolve().parents[2] / "var" / "comfyui" / "script_examples"


def example_graph(output: str = "SaveImage", prompt: str = "a cute bear", seed: int = 1) -> dict[str, Any]:
    """The examples' graph shape (3 KSampler, 6/7 text, 8 decode, 9 output) on the small CPU models."""
    out_inputs: dict[str, Any] = {"images": ["8", 0]}
    if output == "SaveImage":
        out_inputs["filename_prefix"] = "ComfyUI"
    nine = "save_image_websocket_node" if output == "SaveImageWebsocket" else "9"
    return {
        "3": {"class_type": "KSampler", "inputs": {
            "cfg": 2.5, "denoise": 1, "latent_image": ["5", 0], "model": ["12", 0], "negative": ["7", 0],
            "positive": ["6", 0], "sampler_name": "euler", "scheduler": "simple", "seed": seed, "steps": 2}},
        "4": {"class_type": "UNETLoader", "inputs": {"unet_name": DIFFUSION_MODEL, "weight_dtype": "default"}},
        "10": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT_ENCODER, "type": "sd3"}},
        "11": {"class_type": "VAELoader", "inputs": {"vae_name": VAE}},
        "12": {"class_type": "ModelSamplingAuraFlow", "inputs": {"model": ["4", 0], "shift": 3.1}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"batch_size": 1, "height": 64, "width": 64}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["10", 0], "text": prompt}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["10", 0], "text": "blurry"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["11", 0]}},
        nine: {"class_type": output, "inputs": out_inputs},
    }


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("door")
    process = SupervisorProcess(base, instances=1)
    door_port = free_port()
    config = yaml.safe_load(process.config_path.read_text())
    config["comfy_api"] = {"port": door_port}
    process.config_path.write_text(yaml.safe_dump(config))
    process.door = f"127.0.0.1:{door_port}"  # type: ignore[attr-defined]
    process.start()
    try:
        yield process
    finally:
        process.stop()


def door_call(pool: SupervisorProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{pool.door}{path}", data=data, method=method)  # type: ignore[attr-defined]
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


def prepare_example(pool: SupervisorProcess, name: str, graph: dict[str, Any], tmp_path: Path, *,
                    save: bool = True) -> tuple[Path, Path]:
    """A copy of one of ComfyUI's example clients aimed at the door; (the script, where it saves images)."""
    source = (EXAMPLES / name).read_text().replace("127.0.0.1:8188", pool.door)  # type: ignore[attr-defined]
    source, swapped = re.subn(r'prompt_text = """.*?"""', lambda _m: f"prompt_text = {json.dumps(json.dumps(graph))}",
                              source, count=1, flags=re.DOTALL)
    assert swapped == 1
    received = tmp_path / "received"
    received.mkdir()
    if save:
        source += (f"\nfor _node, _datas in images.items():\n    for _i, _data in enumerate(_datas):\n"
                   f"        open({str(received)!r} + f'/{{_node}}_{{_i}}.png', 'wb').write(_data)\n")
    script = tmp_path / name
    script.write_text(source)
    return script, received


def run_example(pool: SupervisorProcess, name: str, graph: dict[str, Any], tmp_path: Path) -> Path:
    """Run one of ComfyUI's example clients against the door; the folder of images it received."""
    script, received = prepare_example(pool, name, graph, tmp_path)
    done = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return received


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def test_websockets_example_gets_its_images(pool: SupervisorProcess, tmp_path: Path) -> None:
    received = run_example(pool, "websockets_api_example.py", example_graph(), tmp_path)
    files = sorted(received.iterdir())
    assert [f.name for f in files] == ["9_0.png"]
    assert png_size(files[0].read_bytes()) == (64, 64)
    jobs = pool.get("/v1/jobs")["jobs"]
    door_jobs = [j for j in jobs if j["request"].get("source") == "comfy_api"]
    assert door_jobs and door_jobs[0]["state"] == "succeeded"


def test_websocket_images_example_gets_binary_images(pool: SupervisorProcess, tmp_path: Path) -> None:
    received = run_example(pool, "websockets_api_example_ws_images.py", example_graph("SaveImageWebsocket"),
                           tmp_path)
    files = sorted(received.iterdir())
    assert [f.name for f in files] == ["save_image_websocket_node_0.png"]
    assert png_size(files[0].read_bytes()) == (64, 64)


def test_basic_example_queues_a_prompt_that_runs(pool: SupervisorProcess, tmp_path: Path) -> None:
    before = set(door_call(pool, "GET", "/history")[1])
    script, _ = prepare_example(pool, "basic_api_example.py", example_graph(), tmp_path, save=False)
    done = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    status, queue = door_call(pool, "GET", "/queue")
    assert status == 200 and set(queue) == {"queue_running", "queue_pending"}
    for _ in range(600):
        history = door_call(pool, "GET", "/history")[1]
        new = set(history) - before
        if new:
            entry = history[new.pop()]
            assert entry["status"]["status_str"] == "success"
            image = entry["outputs"]["9"]["images"][0]
            status, data = door_call(pool, "GET", "/view?" + urllib.parse.urlencode(image))
            assert status == 200 and png_size(data) == (64, 64)
            return
        time.sleep(0.5)
    pytest.fail("the basic example's prompt never reached /history")


def _connect(pool: SupervisorProcess, client_id: str) -> websocket.WebSocket:
    ws = websocket.WebSocket()
    ws.connect(f"ws://{pool.door}/ws?clientId={client_id}", timeout=120)  # type: ignore[attr-defined]
    first = json.loads(ws.recv())
    assert first["type"] == "status" and first["data"]["sid"] == client_id
    return ws


def test_message_order_history_rule_and_isolation(pool: SupervisorProcess) -> None:
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    ws, ws_other = _connect(pool, mine), _connect(pool, other)
    prompt_id = str(uuid.uuid4())
    status, answer = door_call(pool, "POST", "/prompt", {"prompt": example_graph(seed=7), "client_id": mine,
                                                          "prompt_id": prompt_id})
    assert status == 200 and answer["prompt_id"] == prompt_id and answer["node_errors"] == {}
    types: list[str] = []
    history_at_end = None
    while True:
        frame = ws.recv()
        assert isinstance(frame, str), "no binary frame without a SaveImageWebsocket output"
        message = json.loads(frame)
        types.append(message["type"])
        data = message["data"]
        if message["type"] == "status":
            assert data["status"]["exec_info"]["queue_remaining"] >= (0 if "execution_success" in types else 1)
            continue
        assert data["prompt_id"] == prompt_id
        if message["type"] == "executing" and data["node"] is None:
            history_at_end = door_call(pool, "GET", f"/history/{prompt_id}")[1]
            break
    assert types.index("execution_start") < types.index("executing") < types.index("executed") \
        < types.index("execution_success")
    assert "progress" in types
    assert history_at_end[prompt_id]["outputs"]["9"]["images"], "history holds the outputs at node: null"
    # The other client saw only status frames.
    ws_other.settimeout(2)
    seen = []
    try:
        while True:
            seen.append(json.loads(ws_other.recv())["type"])
    except websocket.WebSocketTimeoutException:
        pass
    assert set(seen) <= {"status"}
    # The same prompt_id again is the same prompt (idempotent), not a second run.
    status, again = door_call(pool, "POST", "/prompt", {"prompt": example_graph(seed=7), "client_id": mine,
                                                         "prompt_id": prompt_id})
    assert status == 200 and again["prompt_id"] == prompt_id
    assert pool.get(f"/v1/jobs/{prompt_id}")["state"] == "succeeded"
    ws.close()
    ws_other.close()


def test_the_same_graph_twice_gets_an_image_each_time(pool: SupervisorProcess) -> None:
    """One instance, one graph run twice: ComfyUI's cache must not hand the second run the first
    run's (already removed) files."""
    graph = example_graph(prompt="a round little hamster", seed=42)
    images = []
    for _ in range(2):
        status, answer = door_call(pool, "POST", "/prompt", {"prompt": graph})
        assert status == 200, answer
        prompt_id = answer["prompt_id"]
        entry = wait_until(lambda pid=prompt_id: door_call(pool, "GET", f"/history/{pid}")[1].get(pid),
                           f"prompt {prompt_id} never reached /history", 600)
        assert entry["status"]["status_str"] == "success", entry["status"]
        image = entry["outputs"]["9"]["images"][0]
        status, data = door_call(pool, "GET", "/view?" + urllib.parse.urlencode(image))
        assert status == 200 and png_size(data) == (64, 64)
        images.append(data)
    assert images[0] == images[1]  # the same graph and seed: the same picture, saved again


def test_third_party_client_comfy_api_simplified_runs_the_workflow(pool: SupervisorProcess, tmp_path: Path) -> None:
    """comfy-api-simplified (PyPI), as its README drives ComfyUI: edit the API workflow by node title,
    queue it, wait on the websocket, fetch the images through /history and /view; an unsafe
    description is refused at POST /prompt (its ComfyApiError), so nothing runs."""
    from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper
    from comfy_api_simplified.exceptions import ComfyApiError

    api = ComfyApiWrapper(f"http://{pool.door}/")  # type: ignore[attr-defined]
    workflow = ComfyWorkflowWrapper(str(REPO_ROOT / "workflows" / "cute_animal_cpu.api.json"))
    workflow.set_node_param("Cute Animal Prompt", "description", "a bunny with a red scarf")
    workflow.set_node_param("KSampler", "steps", 2)
    images = api.queue_and_wait_images(workflow, "Save Image")
    assert len(images) == 1 and all(data.startswith(b"\x89PNG") for data in images.values()), list(images)
    assert api.get_queue() == {"queue_running": [], "queue_pending": []}
    jobs = pool.get("/v1/jobs?limit=100")["jobs"]
    assert any(job["request"].get("source") == "comfy_api" and job["state"] == "succeeded" for job in jobs)
    workflow.set_node_param("Cute Animal Prompt", "description", "a bunny covered in blood")
    with pytest.raises(ComfyApiError, match="400"):
        api.queue_prompt(workflow)


def test_unsafe_text_in_any_input_is_refused_before_the_queue(pool: SupervisorProcess) -> None:
    graph = example_graph()
    graph["7"]["inputs"]["text"] = "a naked child"
    prompt_id = str(uuid.uuid4())
    status, body = door_call(pool, "POST", "/prompt", {"prompt": graph, "prompt_id": prompt_id})
    assert status == 400
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    error = body["node_errors"]["7"]["errors"][0]
    assert error["type"] == "unsafe_text" and error["extra_info"]["input_name"] == "text"
    assert error["extra_info"]["category"] in error["message"]
    job = pool.get(f"/v1/jobs/{prompt_id}")
    assert job["state"] == "rejected" and job["attempts"] == []


def test_denied_node_and_bad_graph_get_comfyui_400(pool: SupervisorProcess) -> None:
    graph = example_graph()
    graph["20"] = {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "x"}}
    status, body = door_call(pool, "POST", "/prompt", {"prompt": graph})
    assert status == 400 and body["node_errors"]["20"]["errors"][0]["type"] == "node_not_allowed"
    graph = example_graph()
    graph["5"]["inputs"]["width"] = 7
    status, body = door_call(pool, "POST", "/prompt", {"prompt": graph})
    assert status == 400 and "5" in body["node_errors"]
    status, body = door_call(pool, "POST", "/prompt", {"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}})
    assert status == 400 and body["error"]["type"] == "invalid_prompt"
    status, body = door_call(pool, "POST", "/api/prompt", {})
    assert status == 400 and body["error"]["type"] == "no_prompt"


def test_malformed_queue_history_requests_are_a_400_or_the_default_never_a_500(pool: SupervisorProcess) -> None:
    """A ``delete`` that is not a list is the client's mistake (ComfyUI itself answers 500), and query
    integers too large for the store, or digits other than 0-9, fall back to the default, as a bad one does."""
    for path in ("/queue", "/api/history"):
        for delete in (5, "abc", {"id": 1}, True):
            status, body = door_call(pool, "POST", path, {"delete": delete})
            assert status == 400 and body["error"]["type"] == "invalid_request", (path, delete, body)
        assert door_call(pool, "POST", path, {"delete": None})[0] == 200
    for query in ("max_items=99999999999999999999", "offset=99999999999999999999999999",
                  "max_items=%C2%B2", "max_items=-3&offset=%D9%A3"):
        status, body = door_call(pool, "GET", f"/history?{query}")
        assert status == 200 and isinstance(body, dict), (query, body)


def test_view_serves_only_door_files(pool: SupervisorProcess) -> None:
    for query in ("filename=../../supervisor.yaml&subfolder=&type=output",
                  f"filename=0.png&subfolder={uuid.uuid4()}&type=output",
                  "filename=outputs.json&subfolder=..&type=output"):
        assert door_call(pool, "GET", f"/view?{query}")[0] == 404


def test_passed_through_routes(pool: SupervisorProcess) -> None:
    status, info = door_call(pool, "GET", "/object_info/KSampler")
    assert status == 200 and "KSampler" in info
    status, stats = door_call(pool, "GET", "/api/system_stats")
    assert status == 200 and "comfyui_version" in stats["system"]
    assert door_call(pool, "GET", "/prompt")[1]["exec_info"]["queue_remaining"] >= 0
    for path in ("/upload/image", "/api/upload/mask"):  # refused in ComfyUI's error shape, nothing stored
        status, body = door_call(pool, "POST", path, {})
        assert status == 403 and body["error"]["type"] == "uploads_not_supported"
    # What only the editor needs passes through; an instance's logs and the door's own paths do not.
    status, settings = door_call(pool, "GET", "/api/settings")
    assert status == 200 and isinstance(settings, dict)
    assert door_call(pool, "GET", "/internal/logs")[0] == 404
    assert door_call(pool, "DELETE", "/api/history")[0] == 405


def _wait_state(pool: SupervisorProcess, job_id: str, states: set[str], timeout: float = 300) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        job = pool.get(f"/v1/jobs/{job_id}")
        return job if job["state"] in states else None

    return wait_until(reached, f"job {job_id} never reached {states}", timeout)


def test_interrupt_queue_delete_and_history_delete(pool: SupervisorProcess) -> None:
    client = str(uuid.uuid4())
    ws = _connect(pool, client)
    slow, queued = str(uuid.uuid4()), str(uuid.uuid4())
    graph = example_graph(seed=11)
    graph["5"]["inputs"].update(width=768, height=768)
    graph["3"]["inputs"]["steps"] = 100
    status, first = door_call(pool, "POST", "/prompt", {"prompt": graph, "client_id": client, "prompt_id": slow})
    assert status == 200
    # front asks ComfyUI to run it next; the pool's queue is FIFO, and the number says so.
    status, second = door_call(pool, "POST", "/prompt", {"prompt": example_graph(seed=12), "client_id": client,
                                                          "prompt_id": queued, "front": True, "number": -5})
    assert status == 200 and second["number"] > first["number"] > 0
    # Claimed is not yet running: until its ComfyUI starts it, a prompt is pending there (a busy machine
    # shows the gap), so wait for the door's queue itself.
    queue = wait_until(lambda: (q := door_call(pool, "GET", "/queue")[1])["queue_running"] and q,
                       "the slow prompt never showed as running", 300)
    assert [item[1] for item in queue["queue_running"]] == [slow]
    assert [item[1] for item in queue["queue_pending"]] == [queued]
    assert queue["queue_pending"][0][0] == second["number"]
    assert door_call(pool, "POST", "/queue", {"delete": [queued]})[0] == 200
    # Prefetched into ComfyUI's own queue or still in ours: taken out either way, it never ran.
    assert all(a["reason"] == "not_started" for a in _wait_state(pool, queued, {"cancelled"})["attempts"])
    assert door_call(pool, "POST", "/interrupt", {"prompt_id": slow})[0] == 200
    assert _wait_state(pool, slow, {"cancelled"})["state"] == "cancelled"
    ended: list[str] = []
    while len(ended) < 2:
        message = json.loads(ws.recv())
        if message["type"] == "executing" and message["data"]["node"] is None:
            ended.append(message["data"]["prompt_id"])
    assert sorted(ended) == sorted([slow, queued])
    assert door_call(pool, "GET", f"/history/{slow}")[1][slow]["status"]["status_str"] == "error"
    assert door_call(pool, "POST", "/history", {"delete": [slow]})[0] == 200
    assert door_call(pool, "GET", f"/history/{slow}")[1] == {}
    ws.close()


def test_example_client_survives_an_instance_killed_mid_prompt(pool: SupervisorProcess, tmp_path: Path) -> None:
    """SIGKILL the instance while the example's prompt samples: it runs again, the client gets its
    image once (this test restarts the pool's instance, so it comes after the others on ``pool``)."""
    graph = example_graph(seed=21)
    graph["5"]["inputs"].update(width=768, height=768)
    graph["3"]["inputs"]["steps"] = 100
    script, received = prepare_example(pool, "websockets_api_example.py", graph, tmp_path)
    client = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    try:
        job = wait_until(lambda: [j for j in pool.get("/v1/jobs?state=running")["jobs"]
                                  if j["request"].get("source") == "comfy_api" and j["progress"]],
                         "the example's prompt never ran", interval=0.2)[0]
        pid = pool.get("/v1/instances")["instances"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        _, stderr = client.communicate(timeout=600)
        assert client.returncode == 0, stderr
    finally:
        if client.poll() is None:
            client.kill()
    assert [f.name for f in received.iterdir()] == ["9_0.png"]
    assert png_size((received / "9_0.png").read_bytes()) == (768, 768)
    done = pool.get(f"/v1/jobs/{job['id']}")
    assert done["state"] == "succeeded"
    assert [a["reason"] for a in done["attempts"]] == ["crash", "succeeded"]


def _finished_prompt(pool: SupervisorProcess, seed: int) -> str:
    prompt_id = str(uuid.uuid4())
    assert door_call(pool, "POST", "/prompt", {"prompt": example_graph(seed=seed), "prompt_id": prompt_id})[0] == 200
    assert _wait_state(pool, prompt_id, {"succeeded", "failed", "rejected", "cancelled"})["state"] == "succeeded"
    return prompt_id


def test_history_delete_and_clear_survive_a_restart(pool: SupervisorProcess) -> None:
    """POST /history clear hides what had finished, delete hides one prompt, both after a restart
    of the supervisor too; the jobs stay in /v1/jobs (this test restarts ``pool``: it comes last)."""
    earlier = _finished_prompt(pool, 30)
    before = door_call(pool, "GET", "/history")[1]
    assert earlier in before
    assert door_call(pool, "POST", "/history", {"clear": True})[0] == 200
    assert door_call(pool, "GET", "/history")[1] == {}
    kept, deleted = _finished_prompt(pool, 31), _finished_prompt(pool, 32)
    assert door_call(pool, "POST", "/api/history", {"delete": [deleted]})[0] == 200
    pool.stop()
    pool.start()
    assert list(door_call(pool, "GET", "/history")[1]) == [kept]
    assert door_call(pool, "GET", f"/history/{deleted}")[1] == {}
    assert door_call(pool, "GET", f"/history/{kept}")[1][kept]["status"]["completed"] is True
    assert {pool.get(f"/v1/jobs/{job_id}")["state"] for job_id in (deleted, *before)} <= {
        "succeeded", "failed", "rejected", "cancelled"}


@pytest.fixture(scope="module")
def strict_pool(tmp_path_factory: pytest.TempPathFactory):
    """A pool whose door gate judges every image unsafe (threshold 0): the placeholder comes back."""
    base = tmp_path_factory.mktemp("door-gate")
    process = SupervisorProcess(base, instances=1)
    door_port = free_port()
    config = yaml.safe_load(process.config_path.read_text())
    config["comfy_api"] = {"port": door_port, "image_gate": {"threshold": 0.0, "action": "replace"}}
    process.config_path.write_text(yaml.safe_dump(config))
    process.door = f"127.0.0.1:{door_port}"  # type: ignore[attr-defined]
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_gate_replaces_unsafe_images_without_the_gate_node(strict_pool: SupervisorProcess, tmp_path: Path) -> None:
    from cute_animal_kids.placeholder_image import placeholder_pil

    received = run_example(strict_pool, "websockets_api_example.py", example_graph(), tmp_path)
    data = (received / "9_0.png").read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        got = image.convert("RGB").tobytes()
    assert got == placeholder_pil(64, 64).tobytes()
