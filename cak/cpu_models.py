"""File names of the random-weight CPU stand-in models (written by ``tools/tiny_models.py``).

The supervisor's warm-up graph, the tests and ``install.py`` name these files; only the set-up tool
writes them, so the names live here and the tool (which needs ComfyUI and torch) stays out of imports.
"""

from __future__ import annotations

DIFFUSION_MODEL = "cak_cpu_mmdit.safetensors"
TEXT_ENCODER = "cak_cpu_clip_l.safetensors"
VAE = "cak_cpu_vae.safetensors"

# Folder (ComfyUI model type) → file name, in generation order.
MODEL_FILES: dict[str, str] = {
    "diffusion_models": DIFFUSION_MODEL,
    "text_encoders": TEXT_ENCODER,
    "vae": VAE,
}
