"""The prompt an instance runs before it counts as READY (``health.warmup``).

A warm-up proves the worker thread really executes prompts (``/system_stats`` only proves the HTTP
side lives) and loads the models, so the leak baseline taken after it is the loaded size. The
built-in graph runs the small CPU models for one step; ``health.warmup_graph`` names another
API-format graph (e.g. the production models at their smallest size).
"""

from __future__ import annotations

import json
from pathlib import Path

from cak.cpu_models import DIFFUSION_MODEL, TEXT_ENCODER, VAE


def warmup_graph(path: Path | None = None) -> dict:
    """The configured warm-up graph, or the built-in tiny one (its image goes to temp, not output)."""
    if path is not None:
        return json.loads(path.read_text())
    return {
        "1": {"class_type": "UNETLoader",
              "inputs": {"unet_name": DIFFUSION_MODEL, "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT_ENCODER, "type": "sd3"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": VAE}},
        "4": {"class_type": "ModelSamplingAuraFlow", "inputs": {"model": ["1", 0], "shift": 3.1}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "a cute bear"}},
        "6": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "positive": ["5", 0], "negative": ["5", 0], "latent_image": ["6", 0],
            "seed": 0, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
            "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["3", 0]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
