"""`python -m runner` as a subprocess against the session ComfyUI: run, validate, convert, bad input."""

from __future__ import annotations

import asyncio
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from cak.comfy_client import ComfyClient
from cak.errors import (
    EXIT_SERVER,
    EXIT_UNSAFE,
    EXIT_USAGE,
    EXIT_VALIDATION,
)
from cak.install_state import REPO_ROOT, WORKFLOWS_DIR
from cak.workflow import Workflow


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The single error line; there must be no traceback."""
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("runner: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_run_cpu_workflow_end_to_end(comfy, tmp_path: Path):
    out = tmp_path / "out"
    result = cli("run", "cute_animal_cpu", "--set", "prompt=一只戴帽子的小熊", "--set", "seed=7",
                 "--set", "width=96", "--set", "height=64", "--server", comfy.url, "--out", str(out))
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.splitlines()]
    assert len(paths) == 1 and paths[0].parent == out.resolve()
    with Image.open(paths[0]) as image:
        assert image.format == "PNG" and image.size == (96, 64)
    assert "KSampler: step 4/4" in result.stderr  # progress per step (non-TTY form)
    assert "node 14 CAK_KidsImageSafety" in result.stderr  # progress per node


def test_run_json_result(comfy, tmp_path: Path):
    result = cli("run", "cute_animal_cpu", "--set", "seed=8", "--server", comfy.url, "--out",
                 str(tmp_path), "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["status"] == "ok" and body["parameters"]["seed"] == 8
    assert Path(body["images"][0]).is_file()


def test_unsafe_prompt_is_rejected_and_saves_nothing(comfy, tmp_path: Path):
    out = tmp_path / "out"
    result = cli("run", "cute_animal_cpu", "--set", "prompt=a bear holding a gun, covered in blood",
                 "--server", comfy.url, "--out", str(out), "--json")
    assert result.returncode == EXIT_UNSAFE, result.stderr
    assert "unsafe prompt (category:" in one_line_error(result)
    assert json.loads(result.stdout.splitlines()[-1])["kind"] == "prompt"
    assert not out.exists() or not any(out.iterdir())


def _planted(tmp_path: Path, change) -> Path:
    graph = Workflow.load("cute_animal_cpu").build()
    change(graph)
    path = tmp_path / "planted.api.json"
    path.write_text(json.dumps(graph))
    return path


@pytest.mark.parametrize(("change", "expected"), [
    (lambda g: g["13"].update(class_type="VAEDecodeTurbo"), "node 13: class VAEDecodeTurbo is not on this server"),
    (lambda g: g["12"]["inputs"].update(model=["99", 0]), "linked to node 99, which is not in the graph"),
    (lambda g: g["12"]["inputs"].update(positive=["11", 0]), "wants CONDITIONING but node 11"),
    (lambda g: g["12"]["inputs"].update(steps=0), "steps=0 is below the minimum 1"),
    (lambda g: g["1"]["inputs"].update(unet_name="qwen_image_fp8_e4m3fn.safetensors"),
     "model file qwen_image_fp8_e4m3fn.safetensors is not in diffusion_models/"),
    (lambda g: g["12"]["inputs"].pop("seed"), "required input 'seed' is missing"),
])
def test_validate_catches_planted_errors(comfy, tmp_path: Path, change, expected):
    result = cli("validate", str(_planted(tmp_path, change)), "--server", comfy.url)
    assert result.returncode == EXIT_VALIDATION, result.stdout + result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_offline_with_saved_object_info(comfy, tmp_path: Path):
    saved = tmp_path / "object_info.json"
    assert cli("object-info", "--server", comfy.url, "--out", str(saved)).returncode == 0
    result = cli("validate", "cute_animal_cpu", "--object-info", str(saved))
    assert result.returncode == 0, result.stderr


def test_production_workflow_lacks_only_its_model_files(comfy):
    result = cli("validate", "cute_animal_qwen_image", "--server", comfy.url)
    assert result.returncode == EXIT_VALIDATION
    problems = [line for line in result.stderr.splitlines() if line.startswith("invalid:")]
    assert len(problems) == 3 and all(" model file " in p for p in problems), problems
    for name in ("qwen_image_fp8_e4m3fn.safetensors", "qwen_2.5_vl_7b_fp8_scaled.safetensors",
                 "qwen_image_vae.safetensors"):
        assert name in result.stderr
    with_lora = cli("validate", "cute_animal_qwen_image", "--set", "lora_strength=1", "--server", comfy.url)
    assert "Qwen-Image-Lightning-8steps-V1.0.safetensors is not in loras/" in with_lora.stderr


def test_fast_workflow_lacks_only_its_model_files_and_lora(comfy):
    result = cli("validate", "cute_animal_qwen_image_fast", "--server", comfy.url)
    assert result.returncode == EXIT_VALIDATION
    problems = [line for line in result.stderr.splitlines() if line.startswith("invalid:")]
    assert len(problems) == 4 and all(" model file " in p for p in problems), problems
    assert "Qwen-Image-Lightning-8steps-V1.0.safetensors is not in loras/" in result.stderr


@pytest.mark.parametrize("name", ["cute_animal_cpu", "cute_animal_qwen_image", "cute_animal_qwen_image_fast"])
def test_convert_ui_gives_the_shipped_api_file(comfy, tmp_path: Path, name):
    out = tmp_path / f"{name}.api.json"
    result = cli("convert", str(WORKFLOWS_DIR / f"{name}.ui.json"), "--server", comfy.url, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text()) == json.loads((WORKFLOWS_DIR / f"{name}.api.json").read_text())
    assert out.read_text() == (WORKFLOWS_DIR / f"{name}.api.json").read_text()


@pytest.mark.parametrize(("args", "expected"), [
    (["run", "no_such_workflow"], "no workflow named 'no_such_workflow'"),
    (["run", "/nowhere/graph.api.json"], "does not exist"),
    (["run", "cute_animal_cpu", "--set", "colour=red"], "unknown parameter 'colour'"),
    (["run", "cute_animal_cpu", "--set", "steps=500"], "above the maximum 100"),
    (["run", "cute_animal_cpu", "--set", "seed"], "--set expects name=value"),
])
def test_bad_input_is_a_one_line_usage_error(comfy, args, expected):
    result = cli(*args, "--server", comfy.url)
    assert result.returncode == EXIT_USAGE
    assert expected in one_line_error(result)


def test_malformed_workflow_file(comfy, tmp_path: Path):
    bad = tmp_path / "bad.api.json"
    bad.write_text('{"1": {"class_type": "SaveImage", ')
    result = cli("run", str(bad), "--server", comfy.url)
    assert result.returncode == EXIT_USAGE and "not valid JSON" in one_line_error(result)


def test_unreachable_and_non_comfyui_servers(tmp_path: Path):
    result = cli("run", "cute_animal_cpu", "--server", "http://127.0.0.1:9")
    assert result.returncode == EXIT_SERVER and "cannot connect" in one_line_error(result)

    class Page(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass
    (tmp_path / "system_stats").write_text("<html>not comfy</html>")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Page(*a, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = cli("run", "cute_animal_cpu", "--server", url)
        assert result.returncode == EXIT_SERVER and "ComfyUI" in one_line_error(result)
    finally:
        server.shutdown()


def test_client_reconnects_when_the_socket_drops_mid_run(comfy):
    """Close the client's websocket at the first sampling step: the run still completes."""

    class DroppingClient(ComfyClient):
        sockets: list = []

        async def _connect_socket(self, client_id: str, first: bool):
            socket = await super()._connect_socket(client_id, first)
            self.sockets.append(socket)
            return socket

    async def main() -> None:
        async with DroppingClient(comfy.url) as client:
            dropped = []

            async def on_event(event) -> None:
                if event.type in ("progress", "executing") and not dropped:
                    dropped.append(event.type)
                    await client.sockets[0].close()
            graph = Workflow.load("cute_animal_cpu").build({"seed": 99, "steps": 8})
            result = await client.run(graph, on_event=on_event, timeout=300)
            assert dropped and result.reconnects >= 1
            assert len(result.images) == 1
    asyncio.run(main())
