"""The shipped UI workflows open in the real ComfyUI editor without missing nodes or links.

Headless Debian Chromium, driven over the DevTools protocol with the ``websockets`` library we
already depend on (no browser download, no extra package). The editor is the frontend the test
ComfyUI serves; each workflow is loaded through ``app.loadGraphData`` and a screenshot is kept
under the artifacts folder.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect

from runner.install_state import WORKFLOWS_DIR

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed "
                       "(python3 install.py --with-browser)"),
]

INSPECT_JS = """
(async () => {
  const workflow = %s;
  await window.app.loadGraphData(workflow);
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const graph = window.app.graph;
  const nodes = graph._nodes ?? graph.nodes;
  const links = graph.links instanceof Map ? [...graph.links.values()] : Object.values(graph.links ?? {});
  const broken = links.filter((l) => l && (!graph.getNodeById(l.origin_id) || !graph.getNodeById(l.target_id)));
  const unlinked = nodes.flatMap((n) => (n.inputs ?? [])
      .filter((i) => i.link != null && !links.some((l) => l && l.id === i.link))
      .map((i) => `${n.id}.${i.name}`));
  return JSON.stringify({
    nodes: nodes.length,
    links: links.filter(Boolean).length,
    missing: nodes.filter((n) => n.has_errors || !window.LiteGraph.registered_node_types[n.type]).map((n) => n.type),
    broken: broken.map((l) => l.id),
    unlinked,
    dialogs: [...document.querySelectorAll('.p-dialog')].map((d) => d.innerText.slice(0, 300)),
  });
})()
"""


class DevTools:
    """The few DevTools calls this test needs, over one page's websocket."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict:
        call_id = next(self.ids)
        await self.socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(await asyncio.wait_for(self.socket.recv(), timeout=120))
            if message.get("id") == call_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                                 returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")


def start_chromium(profile: Path) -> tuple[subprocess.Popen, str]:
    """Headless Chromium on a free DevTools port; returns the process and the DevTools base URL."""
    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--window-size=1600,1000", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    for line in proc.stderr:
        if "DevTools listening on ws://" in line:
            address = line.split("ws://", 1)[1].split("/", 1)[0]
            return proc, f"http://{address}"
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError("chromium did not start its DevTools endpoint")


async def open_in_editor(comfy_url: str, devtools_url: str, workflow: dict, screenshot: Path) -> dict:
    async with aiohttp.ClientSession() as session:
        # A fresh user folder would greet us with the templates browser: mark the tour as done.
        async with session.post(f"{comfy_url}/settings/Comfy.TutorialCompleted", json=True) as response:
            assert response.status == 200
        async with session.get(f"{devtools_url}/json/list") as response:
            page = next(t for t in await response.json() if t["type"] == "page")
    async with connect(page["webSocketDebuggerUrl"], max_size=None, proxy=None) as socket:
        tools = DevTools(socket)
        await tools.call("Page.enable")
        await tools.call("Page.navigate", url=comfy_url)
        deadline = time.monotonic() + 180
        while not await tools.evaluate("!!(window.app && window.app.graph && window.LiteGraph)"):
            assert time.monotonic() < deadline, "the editor did not load"
            await asyncio.sleep(0.5)
        report = json.loads(await tools.evaluate(INSPECT_JS % json.dumps(workflow)))
        shot = await tools.call("Page.captureScreenshot", format="png")
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        return report


@pytest.mark.parametrize("name", ["cute_animal_cpu", "cute_animal_qwen_image"])
def test_ui_workflow_opens_in_the_editor(comfy, artifacts_dir: Path, tmp_path: Path, name: str):
    workflow = json.loads((WORKFLOWS_DIR / f"{name}.ui.json").read_text())
    proc, devtools_url = start_chromium(tmp_path / "profile")
    screenshot = artifacts_dir / f"editor_{name}.png"
    try:
        report = asyncio.run(open_in_editor(comfy.url, devtools_url, workflow, screenshot))
    finally:
        proc.kill()
        proc.wait()
    assert report["nodes"] == len(workflow["nodes"]), report
    assert report["links"] == len(workflow["links"]), report
    assert report["missing"] == [] and report["broken"] == [] and report["unlinked"] == [], report
    assert not any("missing" in d.lower() and "node" in d.lower() for d in report["dialogs"]), report
    assert screenshot.stat().st_size > 10_000
