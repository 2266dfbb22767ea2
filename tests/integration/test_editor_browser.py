"""The shipped UI workflows open in the real ComfyUI editor without missing nodes or links.

Headless Debian Chromium, driven by Playwright (``tests/browser.py``), loads the frontend the test ComfyUI
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
from tests.support.browser import chromium, new_tab, requires_chromium

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


async def open_in_editor(comfy_url: str, workflow: dict, screenshot: Path) -> dict:
    # A fresh user folder would greet us with the templates browser: mark the tour as done.
    async with aiohttp.ClientSession() as session, \
            session.post(f"{comfy_url}/settings/Comfy.TutorialCompleted", json=True) as response:
        assert response.status == 200
    async with chromium() as browser:
        tab = await new_tab(browser, 1600, 1000)
        await tab.page.goto(comfy_url, timeout=180_000)
        await tab.wait_for("!!(window.app && window.app.graph && window.LiteGraph)", timeout=180)
        report = json.loads(await tab.evaluate(INSPECT_JS % json.dumps(workflow)))
        await tab.page.screenshot(path=screenshot)
        return report


@pytest.mark.parametrize("name", ["cute_animal_cpu", "cute_animal_qwen_image", "cute_animal_qwen_image_fast"])
def test_ui_workflow_opens_in_the_editor(comfy, artifacts_dir: Path, name: str):
    workflow = json.loads((WORKFLOWS_DIR / f"{name}.ui.json").read_text())
    screenshot = artifacts_dir / f"editor_{name}.png"
    report = asyncio.run(open_in_editor(comfy.url, workflow, screenshot))
    assert report["nodes"] == len(workflow["nodes"]), report
    assert report["links"] == len(workflow["links"]), report
    assert report["missing"] == [] and report["broken"] == [] and report["unlinked"] == [], report
    assert not any("missing" in d.lower() and "node" in d.lower() for d in report["dialogs"]), report
    assert screenshot.stat().st_size > 10_000
