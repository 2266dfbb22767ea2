"""The shipped UI workflows open in the real ComfyUI editor without missing nodes or links.

Headless Debian Chromium (``tests/headless_chromium.py``) loads the frontend the test ComfyUI
serves; each workflow goes in through ``app.loadGraphData`` and a screenshot is kept under the
artifacts folder.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from cak.install_state import WORKFLOWS_DIR
from tests.headless_chromium import HeadlessChromium, requires_chromium

pytestmark = [pytest.mark.browser, requires_chromium()]

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


async def open_in_editor(comfy_url: str, work_dir: Path, workflow: dict, screenshot: Path) -> dict:
    async with aiohttp.ClientSession() as session:
        # A fresh user folder would greet us with the templates browser: mark the tour as done.
        async with session.post(f"{comfy_url}/settings/Comfy.TutorialCompleted", json=True) as response:
            assert response.status == 200
    async with HeadlessChromium.launch(work_dir) as browser:
        page = await browser.new_page(width=1600, height=1000)
        await page.goto(comfy_url, timeout=180)
        await page.wait_for("!!(window.app && window.app.graph && window.LiteGraph)", timeout=180)
        report = json.loads(await page.evaluate(INSPECT_JS % json.dumps(workflow), timeout=120))
        await page.screenshot(screenshot, full_page=False)
        return report


@pytest.mark.parametrize("name", ["cute_animal_cpu", "cute_animal_qwen_image", "cute_animal_qwen_image_fast"])
def test_ui_workflow_opens_in_the_editor(comfy, artifacts_dir: Path, tmp_path: Path, name: str):
    workflow = json.loads((WORKFLOWS_DIR / f"{name}.ui.json").read_text())
    screenshot = artifacts_dir / f"editor_{name}.png"
    report = asyncio.run(open_in_editor(comfy.url, tmp_path, workflow, screenshot))
    assert report["nodes"] == len(workflow["nodes"]), report
    assert report["links"] == len(workflow["links"]), report
    assert report["missing"] == [] and report["broken"] == [] and report["unlinked"] == [], report
    assert not any("missing" in d.lower() and "node" in d.lower() for d in report["dialogs"]), report
    assert screenshot.stat().st_size > 10_000
