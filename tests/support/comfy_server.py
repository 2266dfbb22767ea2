"""A real ComfyUI process for tests, with a small synchronous HTTP helper around it."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from cak.comfy_process import ComfyLaunch, ComfyProcess
from cak.install_state import load_state


class PromptFailed(AssertionError):
    """The prompt ended in ``execution_error`` (``.error`` holds that event's data) or was refused."""

    def __init__(self, message: str, error: dict) -> None:
        super().__init__(message)
        self.error = error


class ComfyTestServer:
    def __init__(self, base_dir: Path, extra_model_paths: list[Path] | None = None,
                 extra_args: list[str] | None = None) -> None:
        self.launch = ComfyLaunch(base_dir=base_dir, extra_model_paths=extra_model_paths or [],
                                  extra_args=extra_args or [])
        self.process = ComfyProcess(self.launch, load_state())

    def start(self, timeout: float = 240.0) -> ComfyTestServer:
        self.process.start()
        asyncio.run(self.process.wait_ready(timeout))
        return self

    def stop(self) -> None:
        asyncio.run(self.process.stop())

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def output_dir(self) -> Path:
        return self.launch.output_dir

    @property
    def input_dir(self) -> Path:
        return self.launch.input_dir

    def get_json(self, path: str, timeout: float = 30.0):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.load(response)

    def post_json(self, path: str, body: dict, timeout: float = 30.0):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def submit(self, graph: dict) -> str:
        try:
            answer = self.post_json("/prompt", {"prompt": graph})
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
            raise PromptFailed(f"prompt refused: {json.dumps(body)[:500]}", body) from None
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 120.0) -> dict:
        """The ``/history`` entry once the prompt is done; ``PromptFailed`` if it errored."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get_json(f"/history/{prompt_id}")
            if prompt_id in history:
                entry = history[prompt_id]
                for kind, data in entry["status"].get("messages", []):
                    if kind == "execution_error":
                        raise PromptFailed(f"{data.get('exception_type')}: {data.get('exception_message')}", data)
                return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s")

    def run(self, graph: dict, timeout: float = 120.0) -> dict:
        return self.wait(self.submit(graph), timeout)

    def image_paths(self, entry: dict) -> list[Path]:
        """The saved output files of a finished prompt."""
        return [self.output_dir / image["subfolder"] / image["filename"]
                for output in entry["outputs"].values() for image in output.get("images", [])
                if image.get("type") == "output"]
