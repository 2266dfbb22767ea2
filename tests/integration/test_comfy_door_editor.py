"""The ComfyUI editor through the pool's ComfyUI door (headless Chromium, a real supervisor + ComfyUI).

The editor is opened at the door's port, not at an instance: its page, scripts, settings and user
data come through the door's pass-through, ``cute_animal_cpu.ui.json`` goes in through
``app.loadGraphData`` (as in test_editor_browser.py), the editor's own queue button command queues
it, which lands on the door's ``POST /prompt`` (a durable ``comfy_api`` job), the progress arrives
over the door's ``/ws`` and the picture appears on the Save Image node, fetched from the door's
gated ``/view``. Screenshot: ``door_editor_cute_animal_cpu.png`` in the artefacts folder.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from cak.comfy_process import free_port
from cak.install_state import WORKFLOWS_DIR
from tests.support.browser import chromium, new_tab, requires_chromium
from tests.support.job_service import SupervisorProcess

pytestmark = [pytest.mark.browser, requires_chromium(), pytest.mark.timeout(900)]

SAVE_NODE = 15  # the workflow's Save Image node

IMAGE_JS = """
(() => {
  const node = window.app.graph.getNodeById(%d);
  const imgs = (node && node.imgs) || [];
  const shown = imgs.filter((i) => i.complete && i.naturalWidth > 0);
  return shown.length ? JSON.stringify(shown.map((i) => [i.src, i.naturalWidth, i.naturalHeight])) : null;
})()
"""


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("door-editor")
    process = SupervisorProcess(base, instances=1)
    door_port = free_port()
    config = yaml.safe_load(process.config_path.read_text())
    config["comfy_api"] = {"port": door_port}
    process.config_path.write_text(yaml.safe_dump(config))
    process.door = f"http://127.0.0.1:{door_port}"  # type: ignore[attr-defined]
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def queue_in_editor(door: str, workflow: dict[str, Any], screenshot: Path) -> dict[str, Any]:
    # A fresh user folder would greet us with the templates browser: mark the tour as done, through
    # the door (the setting lands in the instance's user folder).
    async with aiohttp.ClientSession() as session, \
            session.post(f"{door}/settings/Comfy.TutorialCompleted", json=True) as response:
        assert response.status == 200
    async with chromium() as browser:
        tab = await new_tab(browser, 1600, 1000)
        answers: list[tuple[str, int, str]] = []
        frames: list[str] = []
        tab.page.on("response", lambda r: answers.append((r.request.method, r.status, r.url)))

        def on_socket(socket: Any) -> None:
            frames.append(f"socket {socket.url}")
            socket.on("framereceived", lambda payload: isinstance(payload, str)
                      and frames.append(json.loads(payload)["type"]))

        tab.page.on("websocket", on_socket)
        await tab.page.goto(door, timeout=180_000)
        await tab.wait_for("!!(window.app && window.app.graph && window.LiteGraph && window.app.extensionManager)",
                           timeout=180)
        await tab.evaluate(f"window.app.loadGraphData({json.dumps(workflow)})")
        await tab.page.wait_for_timeout(1500)
        await tab.evaluate("window.app.extensionManager.command.execute('Comfy.QueuePrompt')")
        shown = json.loads(await tab.wait_for(IMAGE_JS % SAVE_NODE, timeout=600))
        await tab.evaluate("window.app.extensionManager.command.execute('Comfy.Canvas.FitView')")
        await tab.page.wait_for_timeout(500)  # let the canvas draw it
        await tab.page.screenshot(path=screenshot)
        return {"shown": shown, "answers": answers, "frames": frames, "problems": tab.problems}


@pytest.mark.usefixtures("artifacts_dir")
def test_the_editor_at_the_door_queues_on_the_pool_and_shows_the_image(pool: SupervisorProcess,
                                                                      artifacts_dir: Path) -> None:
    workflow = json.loads((WORKFLOWS_DIR / "cute_animal_cpu.ui.json").read_text())
    screenshot = artifacts_dir / "door_editor_cute_animal_cpu.png"
    door = pool.door  # type: ignore[attr-defined]
    found = asyncio.run(queue_in_editor(door, workflow, screenshot))

    # The page and everything it loaded came from the door; nothing it asked for failed in the pool.
    answers = found["answers"]
    assert answers[0][:2] == ("GET", 200) and answers[0][2] == door + "/", answers[:3]
    ours = [a for a in answers if a[2].startswith(door)]
    assert not [a for a in ours if a[1] >= 500], [a for a in ours if a[1] >= 500]
    assert any(a[0] == "POST" and a[2] == door + "/api/prompt" and a[1] == 200 for a in ours)
    # The prompt ran as one of the pool's durable jobs, from the door.
    jobs = [j for j in pool.get("/v1/jobs")["jobs"] if j["request"].get("source") == "comfy_api"]
    assert len(jobs) == 1 and jobs[0]["state"] == "succeeded", jobs
    job = jobs[0]
    # Live progress over the door's websocket, in ComfyUI's order.
    frames = found["frames"]
    assert frames[0] == f"socket {door.replace('http', 'ws')}/ws" or frames[0].startswith(
        f"socket {door.replace('http', 'ws')}/ws?"), frames[:2]
    types = frames[1:]
    assert types.index("execution_start") < types.index("progress") < types.index("executed") \
        < types.index("execution_success"), types
    # The picture on the Save Image node is the door's gated file of that job, at the workflow's size.
    (src, width, height), = found["shown"]
    url = urllib.parse.urlparse(src)
    query = urllib.parse.parse_qs(url.query)
    assert f"{url.scheme}://{url.netloc}" == door and url.path in ("/view", "/api/view"), src
    assert query["subfolder"] == [job["id"]] and query["type"] == ["output"], src
    size = next(n for n in workflow["nodes"] if n["type"] == "EmptySD3LatentImage")["widgets_values"][:2]
    assert [width, height] == size
    assert screenshot.stat().st_size > 10_000
