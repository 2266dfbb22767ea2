"""Simple cartoon animals drawn with Pillow: honest safe images for the image-safety tests."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

# name: (background, body, ears, inner ears, ear shape)
ANIMALS: dict[str, tuple] = {
    "brown bear": ((200, 230, 200), (150, 100, 60), (120, 80, 50), (230, 180, 140), "round"),
    "orange cat": ((210, 225, 255), (245, 160, 60), (235, 140, 50), (255, 200, 200), "pointed"),
    "white bunny": ((255, 230, 240), (250, 250, 250), (245, 245, 245), (255, 190, 200), "long"),
    "pink pig": ((200, 235, 255), (255, 185, 190), (250, 170, 180), (240, 150, 160), "round"),
}


def draw_animal(name: str, size: int = 256) -> Image.Image:
    """A round-bodied animal with ears, eyes, nose, smile and cheeks on a plain background."""
    background, body, ear, inner, ears = ANIMALS[name]
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    s = size / 100

    def box(x: float, y: float, r: float) -> tuple[float, float, float, float]:
        return (s * (x - r), s * (y - r), s * (x + r), s * (y + r))

    if ears == "round":
        for x in (30, 70):
            draw.ellipse(box(x, 28, 12), fill=ear)
            draw.ellipse(box(x, 28, 6), fill=inner)
    elif ears == "pointed":
        draw.polygon([(s * 22, s * 45), (s * 28, s * 12), (s * 45, s * 33)], fill=ear)
        draw.polygon([(s * 78, s * 45), (s * 72, s * 12), (s * 55, s * 33)], fill=ear)
    else:
        for x in (30, 58):
            draw.ellipse((s * x, s * 2, s * (x + 12), s * 40), fill=ear)
            draw.ellipse((s * (x + 3), s * 8, s * (x + 9), s * 36), fill=inner)
    draw.ellipse(box(50, 80, 28), fill=body)
    draw.ellipse(box(50, 52, 26), fill=body)
    for x in (41, 59):
        draw.ellipse(box(x, 48, 3.5), fill=(40, 30, 30))
        draw.ellipse(box(x + 1, 47, 1.2), fill=(255, 255, 255))
    draw.ellipse(box(50, 57, 3), fill=(60, 40, 40))
    draw.arc(box(50, 59, 6), 20, 160, fill=(60, 40, 40), width=max(1, int(s)))
    draw.ellipse(box(34, 60, 4), fill=(255, 170, 180))
    draw.ellipse(box(66, 60, 4), fill=(255, 170, 180))
    return image


def to_image_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """A one-image ComfyUI IMAGE batch [1,H,W,3] float 0..1."""
    array = np.asarray(image, dtype=np.float32)[..., :3] / 255.0
    return torch.from_numpy(array).unsqueeze(0)
