"""A friendly stand-in picture (a smiling cloud on a pastel sky) for images the safety gate replaces.

Drawn with Pillow primitives only, so it needs no font or asset file and works at any size.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

SKY = (204, 232, 255)
CLOUD = (255, 255, 255)
CLOUD_EDGE = (170, 196, 230)
FACE = (90, 90, 120)
CHEEK = (255, 190, 205)


def placeholder_pil(width: int, height: int) -> Image.Image:
    """The placeholder as an RGB Pillow image of exactly ``width`` x ``height``."""
    if width < 1 or height < 1:
        raise ValueError(f"placeholder size must be positive, got {width}x{height}")
    image = Image.new("RGB", (width, height), SKY)
    draw = ImageDraw.Draw(image)
    # Everything is laid out in a centred square so the cloud keeps its shape on any aspect ratio.
    side = min(width, height)
    cx, cy = width / 2, height / 2
    u = side / 100.0
    edge = max(1, round(1.5 * u))

    puffs = [(-22, 4, 20), (0, -8, 26), (22, 2, 21), (-8, 14, 18), (10, 14, 18)]
    for ox, oy, r in puffs:  # outline pass, then fill pass, gives one soft outline around the union
        draw.ellipse(_box(cx + ox * u, cy + oy * u, r * u + edge), fill=CLOUD_EDGE)
    for ox, oy, r in puffs:
        draw.ellipse(_box(cx + ox * u, cy + oy * u, r * u), fill=CLOUD)

    eye = max(1.0, 3 * u)
    draw.ellipse(_box(cx - 10 * u, cy - 2 * u, eye), fill=FACE)
    draw.ellipse(_box(cx + 10 * u, cy - 2 * u, eye), fill=FACE)
    draw.ellipse(_box(cx - 17 * u, cy + 6 * u, 3.5 * u), fill=CHEEK)
    draw.ellipse(_box(cx + 17 * u, cy + 6 * u, 3.5 * u), fill=CHEEK)
    draw.arc(_box(cx, cy + 3 * u, 7 * u), start=20, end=160, fill=FACE, width=max(1, round(1.6 * u)))
    return image


def placeholder_tensor(width: int, height: int) -> torch.Tensor:
    """The placeholder as a one-image ComfyUI IMAGE batch [1, height, width, 3], float 0..1."""
    array = np.asarray(placeholder_pil(width, height), dtype=np.float32) / 255.0
    return torch.from_numpy(array).unsqueeze(0)


def _box(x: float, y: float, r: float) -> tuple[float, float, float, float]:
    return (x - r, y - r, x + r, y + r)
