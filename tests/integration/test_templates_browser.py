"""The pack's example workflows in the editor's Templates browser: listed under the pack's name by
``/workflow_templates``, shown as cards with their thumbnails, and opening one gives the graph with
no missing nodes. Playwright drives Debian's Chromium (``tests/browser.py``); the screenshots are
kept in the artifacts folder (``templates_browser.png``, ``template_opened.png``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from cak.install_state import PACK_DIR
from tests.support.browser import chromium, new_tab, requires_chromium

pytestmark = [pytest.mark.browser, requires_chromium()]

EXAMPLES_DIR = PACK_DIR / "example_workflows"
OPENED = "cute_animal_qwen_image_fast"

GRAPH_JS = """
(() => {
  const graph = window.app.graph;
  const nodes = graph._nodes ?? graph.nodes;
  const links = graph.links instanceof Map ? [...graph.links.values()] : Object.values(graph.links ?? {});
  return JSON.stringify({
    nodes: nodes.length,
    links: links.filter(Boolean).length,
    types: nodes.map((n) => n.type).sort(),
    missing: nodes.filter((n) => n.has_errors || !window.LiteGraph.registered_node_types[n.type]).map((n) => n.type),
    dialogs: [...document.querySelectorAll('.p-dialog')].map((d) => d.innerText.slice(0, 2000)),
  });
})()
"""


async def browse_templates(comfy_url: str, module: str, artifacts_dir: Path) -> dict:
    # A fresh user folder would greet us with the templates browser: mark the tour as done,
    # so the test opens it itself.
    async with aiohttp.ClientSession() as session, \
            session.post(f"{comfy_url}/settings/Comfy.TutorialCompleted", json=True) as response:
        assert response.status == 200
    async with chromium() as browser:
        tab = await new_tab(browser, 1600, 1000)
        thumbnails: list[str] = []
        tab.page.on("response", lambda r: r.ok and r.url.endswith(".jpg") and thumbnails.append(r.url))
        await tab.page.goto(comfy_url, timeout=180_000)
        await tab.wait_for("!!(window.app && window.app.graph && window.app.extensionManager)", timeout=180)
        await tab.evaluate("window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        dialog = tab.page.locator(".workflow-template-selector-dialog")
        await dialog.get_by_text(module, exact=True).click()  # the pack's entry under Extensions
        cards = dialog.locator("[data-testid^='template-workflow-']")
        await cards.first.wait_for(timeout=60_000)
        names = await tab.wait_for(
            "(() => { const cards = [...document.querySelectorAll(\"[data-testid^='template-workflow-']\")];"
            " const imgs = cards.map((c) => c.querySelector('img'));"
            " return imgs.length && imgs.every((i) => i && i.complete && i.naturalWidth > 0)"
            " ? JSON.stringify(cards.map((c, k) => [c.dataset.testid, [imgs[k].naturalWidth, imgs[k].naturalHeight]]))"
            " : null; })()", timeout=60)
        await tab.page.screenshot(path=artifacts_dir / "templates_browser.png")
        await dialog.locator(f"[data-testid='template-workflow-{OPENED}']").click()
        await dialog.wait_for(state="detached", timeout=60_000)
        await tab.page.wait_for_timeout(1500)  # let the editor settle the loaded graph
        report = json.loads(await tab.evaluate(GRAPH_JS))
        await tab.page.screenshot(path=artifacts_dir / "template_opened.png")
    return {"cards": json.loads(names), "thumbnails": thumbnails, **report}


def test_templates_browser_lists_and_opens_the_packs_workflows(comfy, artifacts_dir: Path):
    expected = sorted(path.stem for path in EXAMPLES_DIR.glob("*.json"))
    listed = comfy.get_json("/workflow_templates")
    assert sorted(listed[PACK_DIR.name]) == expected

    found = asyncio.run(browse_templates(comfy.url, PACK_DIR.name, artifacts_dir))
    cards = dict(found["cards"])
    assert sorted(cards) == [f"template-workflow-{name}" for name in expected]
    for name in expected:  # each card shows the pack's own thumbnail, not the default picture
        assert f"{comfy.url}/api/workflow_templates/{PACK_DIR.name}/{name}.jpg" in found["thumbnails"], found
        with Image.open(EXAMPLES_DIR / f"{name}.jpg") as thumbnail:
            assert cards[f"template-workflow-{name}"] == list(thumbnail.size)
    workflow = json.loads((EXAMPLES_DIR / f"{OPENED}.json").read_text())
    assert found["nodes"] == len(workflow["nodes"]) and found["links"] == len(workflow["links"]), found
    assert found["types"] == sorted(node["type"] for node in workflow["nodes"])
    assert found["missing"] == [], found
    assert not any("missing" in d.lower() and "node" in d.lower() for d in found["dialogs"]), found
    # No Qwen files on the test server: the editor offers the downloads named in properties.models,
    # the Lightning LoRA among them.
    assert any("Qwen-Image-Lightning-8steps-V1.0.safetensors" in d for d in found["dialogs"]), found
    assert (artifacts_dir / "template_opened.png").stat().st_size > 10_000
