"""Latency of one CPU prompt through the pool's ComfyUI door vs straight to one ComfyUI instance.

Run by hand (it starts its own supervisor and ComfyUI; nothing else should load the machine):

    .venv/bin/python bench/bench_door.py [--prompts 9] [--steps 4]

One supervisor with one instance and the ``comfy_api`` door. The same client code, ComfyUI's own
websocket protocol as its ``script_examples`` speak it, runs the same API graph (the
``cute_animal_cpu`` workflow, a new seed each time) against the door and against the pool's own
instance directly (its URL from ``/v1/instances``: the same process, the same warm models), in
turns (door, direct, door, ...) after one warm-up each, so drift of the machine hits both alike.
Each figure is ``POST /prompt`` → ``executing`` with ``node: null`` → ``GET /history/{id}`` → every
image downloaded with ``GET /view``. Through the door that also covers the checks before the queue
(validation, text gate), the durable job, dispatch, the supervisor's image gate and staging.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cak.comfy_process import free_port
from cak.install_state import REPO_ROOT
from cak.workflow import Workflow

WORKFLOW = "cute_animal_cpu"
PROMPT = "一只戴帽子的小熊"


async def one_prompt(session: aiohttp.ClientSession, base: str, graph: dict[str, Any]) -> float:
    """Seconds from POST /prompt to the last image downloaded, as a ComfyUI websocket client does it."""
    client_id = str(uuid.uuid4())
    async with session.ws_connect(f"{base.replace('http', 'ws', 1)}/ws?clientId={client_id}") as socket:
        started = time.perf_counter()
        async with session.post(f"{base}/prompt", json={"prompt": graph, "client_id": client_id}) as response:
            answer = await response.json()
            if response.status != 200:
                raise RuntimeError(f"{base} refused the prompt: {answer}")
        prompt_id = answer["prompt_id"]
        async for message in socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue  # previews
            frame = message.json()
            data = frame.get("data", {})
            if frame["type"] == "execution_error" and data.get("prompt_id") == prompt_id:
                raise RuntimeError(f"{base}: {data.get('exception_message')}")
            if frame["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                break
    async with session.get(f"{base}/history/{prompt_id}") as response:
        history = (await response.json())[prompt_id]
    images = [image for output in history["outputs"].values() for image in output.get("images", [])]
    if not images:
        raise RuntimeError(f"{base}: no image in the history of {prompt_id}")
    for image in images:
        async with session.get(f"{base}/view", params=image) as response:
            if response.status != 200 or not await response.read():
                raise RuntimeError(f"{base}: /view answered {response.status}")
    return time.perf_counter() - started


async def wait_ready(session: aiohttp.ClientSession, url: str, door: str) -> str:
    """The instance's URL once the pool has it READY and the door answers."""
    while True:
        try:
            async with session.get(f"{url}/v1/instances") as response:
                instances = (await response.json())["instances"]
            ready = [i for i in instances if i["state"] == "ready"]
            if ready:
                async with session.get(f"{door}/system_stats") as response:
                    if response.status == 200:
                        return ready[0]["url"]
        except (aiohttp.ClientError, KeyError, ValueError):  # not listening yet
            pass
        await asyncio.sleep(0.5)


def start_supervisor(base: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """One supervisor, one instance, the door on; (its process, its URL, the door's URL)."""
    port, door_port = free_port(), free_port()
    config = base / "supervisor.yaml"
    config.write_text(yaml.safe_dump({"instances": 1, "output_root": str(base / "out"), "http": {"port": port},
                                      "comfy_api": {"port": door_port}}))
    popen = subprocess.Popen([sys.executable, "-m", "supervisor", "up", "--config", str(config)],
                             cwd=REPO_ROOT, stdout=(base / "log").open("wb"), stderr=subprocess.STDOUT)
    return popen, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{door_port}"


async def measure(url: str, door: str, prompts: int, steps: int) -> tuple[list[float], list[float]]:
    workflow = Workflow.load(WORKFLOW)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        direct = await asyncio.wait_for(wait_ready(session, url, door), 600)
        for target in (door, direct):  # warm-up: models loaded, the door's gate and object_info ready
            await one_prompt(session, target, workflow.build({"prompt": PROMPT, "steps": steps, "seed": 999}))
        via_door, straight = [], []
        for n in range(prompts):
            graph = workflow.build({"prompt": PROMPT, "steps": steps, "seed": 1 + n})
            via_door.append(await one_prompt(session, door, graph))
            graph = workflow.build({"prompt": PROMPT, "steps": steps, "seed": 1001 + n})
            straight.append(await one_prompt(session, direct, graph))
    return via_door, straight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=9, help="prompts each way for the medians")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-door-") as tmp:
        popen, url, door = start_supervisor(Path(tmp))
        try:
            via_door, straight = asyncio.run(measure(url, door, args.prompts, args.steps))
        finally:
            popen.send_signal(signal.SIGTERM)
            popen.wait(timeout=120)
    door_median, direct_median = statistics.median(via_door), statistics.median(straight)
    print(f"workflow {WORKFLOW}, {args.steps} steps, 128x128, {args.prompts} prompts each way, in turns")
    print(f"door:   {' '.join(f'{s:.2f}' for s in via_door)}")
    print(f"direct: {' '.join(f'{s:.2f}' for s in straight)}")
    print(f"median latency: straight to the instance {direct_median:.2f} s, through the door {door_median:.2f} s, "
          f"ratio {door_median / direct_median:.2f}")


if __name__ == "__main__":
    main()
