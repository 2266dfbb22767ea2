"""Draw the pack's pictures from the real editor: a thumbnail per example workflow (the Templates
browser shows ``example_workflows/<name>.jpg`` on the card) and the README's screenshot of the
production graph.

    python -m tools.pack_media --server http://127.0.0.1:8188

The server must be a ComfyUI with the pack loaded (any ComfyUI set up by install.py, or one the pack
is installed into): the pictures are what a user's editor shows, not a hand-made drawing. Playwright drives Debian's
Chromium (``install.py --with-browser``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from playwright.async_api import Error as PlaywrightError

from cak.install_state import PACK_DIR
from tests.support.browser import chromium, new_tab

EXAMPLES_DIR = PACK_DIR / "example_workflows"
SCREENSHOT = PACK_DIR / "docs" / "graph.png"
SCREENSHOT_WORKFLOW = "cute_animal_qwen_image"
THUMBNAIL_SIZE = 400

# Editor settings for a clean picture: no missing-models dialog (the CPU server has no Qwen files),
# no minimap or canvas statistics, full-quality node drawing at the fitted zoom.
SETTINGS = {
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
    "LiteGraph.Canvas.LowQualityRenderingZoomThreshold": 0.1,
}
LABELS = {"cute_animal_qwen_image": "Qwen-Image · 20 steps",
          "cute_animal_qwen_image_fast": "Qwen-Image fast · 8 steps (Lightning LoRA)",
          "cute_animal_cpu": "CPU twin · small test models"}

# Loads the graph, fits it to the view and returns its on-screen box (CSS pixels) with a margin.
LOAD_AND_FIT_JS = """
(async () => {
  await window.app.loadGraphData(%s);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  await window.app.extensionManager.command.execute('Comfy.Canvas.FitView');
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const canvas = window.app.canvas;
  const items = [...(window.app.graph._nodes ?? window.app.graph.nodes),
                 ...(window.app.graph._groups ?? window.app.graph.groups ?? [])];
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const item of items) {
    const [x, y, w, h] = item.boundingRect ?? item._bounding;
    x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h);
  }
  const [ax, ay] = canvas.ds.convertOffsetToCanvas([x0, y0]);
  const [bx, by] = canvas.ds.convertOffsetToCanvas([x1, y1]);
  const rect = canvas.canvas.getBoundingClientRect();
  const m = 12;
  return {x: Math.max(rect.left, rect.left + ax - m), y: Math.max(rect.top, rect.top + ay - m),
          width: Math.min(rect.width, bx - ax + 2 * m), height: Math.min(rect.height, by - ay + 2 * m)};
})()
"""


async def capture(server: str, workflow: dict) -> Image.Image:
    """The graph as the editor draws it, fitted to a large view and cut to its own box."""
    async with chromium() as browser:
        tab = await new_tab(browser, 2600, 1400)
        await tab.page.goto(server, timeout=180_000)
        await tab.wait_for("!!(window.app && window.app.graph && window.app.extensionManager)", timeout=180)
        for key, value in SETTINGS.items():
            await tab.evaluate(f"window.app.extensionManager.setting.set({json.dumps(key)}, {json.dumps(value)})")
        box = await tab.evaluate(LOAD_AND_FIT_JS % json.dumps(workflow))
        png = await tab.page.screenshot(clip=box)
    return Image.open(io.BytesIO(png)).convert("RGB")


def thumbnail(graph: Image.Image, label: str) -> Image.Image:
    """The whole graph on a square card with the variant's name, as the Templates browser shows it."""
    card = Image.new("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE), (32, 32, 36))
    scaled = graph.copy()
    scaled.thumbnail((THUMBNAIL_SIZE - 16, THUMBNAIL_SIZE - 120), Image.LANCZOS)
    card.paste(scaled, ((THUMBNAIL_SIZE - scaled.width) // 2, 104 + (THUMBNAIL_SIZE - 120 - scaled.height) // 2))
    draw = ImageDraw.Draw(card)
    draw.text((16, 18), "Cute Animal Kids", fill=(255, 214, 150), font=ImageFont.load_default(30))
    draw.text((16, 62), label, fill=(235, 235, 235), font=ImageFont.load_default(18))
    return card


async def draw(server: str) -> list[Path]:
    written = []
    for path in sorted(EXAMPLES_DIR.glob("*.json")):
        graph = await capture(server, json.loads(path.read_text()))
        out = path.with_suffix(".jpg")
        thumbnail(graph, LABELS[path.stem]).save(out, quality=85, optimize=True)
        written.append(out)
        if path.stem == SCREENSHOT_WORKFLOW:
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            width = min(1400, graph.width)
            graph.resize((width, graph.height * width // graph.width), Image.LANCZOS).quantize(96).save(
                SCREENSHOT, optimize=True)
            written.append(SCREENSHOT)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.pack_media", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="a ComfyUI with the pack loaded, e.g. http://127.0.0.1:8188")
    args = parser.parse_args(argv)
    try:
        written = asyncio.run(draw(args.server.rstrip("/")))
    except (PlaywrightError, TimeoutError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"pack_media: cannot draw from {args.server}: {first_line}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
