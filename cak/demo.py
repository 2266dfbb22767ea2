"""The demo prompt and the tiny CPU graph: one source for the CLIs' examples, the warm-up and the tests.

The graph is the Qwen-Image shape (separate loaders, AuraFlow sampling) on the random-weight CPU
stand-in models of ``cak.cpu_models``, with no pack nodes in the way.
"""

from __future__ import annotations

from typing import Any

from .cpu_models import DIFFUSION_MODEL, TEXT_ENCODER, VAE

DEMO_PROMPT = "一只戴帽子的小熊"  # "a little bear in a hat"
DEMO_STYLE = "watercolor"
DEMO_NEGATIVE = "scary, dark"


def cpu_graph(prompt: str = DEMO_PROMPT, width: int = 64, height: int = 64, seed: int = 1, steps: int = 2,
              prefix: str = "test", save: bool = True) -> dict[str, Any]:
    """API-format graph; node 10 saves the picture (``save=False``: a preview in temp/, not output/)."""
    output: dict[str, Any] = (
        {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": prefix}} if save
        else {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}})
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": DIFFUSION_MODEL, "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT_ENCODER, "type": "sd3"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": VAE}},
        "4": {"class_type": "ModelSamplingAuraFlow", "inputs": {"model": ["1", 0], "shift": 3.1}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": prompt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": DEMO_NEGATIVE}},
        "7": {"class_type": "EmptySD3LatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "positive": ["5", 0], "negative": ["6", 0], "latent_image": ["7", 0],
            "seed": seed, "steps": steps, "cfg": 2.5, "sampler_name": "euler", "scheduler": "simple",
            "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["3", 0]}},
        "10": output,
    }

