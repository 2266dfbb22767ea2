"""Which ComfyUI model folder each loader input's file goes in, for advice about missing models.

Used by the runner's offline check (``cak.validation``) and by the supervisor when ComfyUI
refuses a job for missing files (``supervisor.dispatcher.missing_model_files``).
"""

from __future__ import annotations

# Loader input name → ComfyUI model folder (the name under models/).
MODEL_FOLDERS: dict[str, str] = {
    "unet_name": "diffusion_models",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "clip_name4": "text_encoders",
    "vae_name": "vae",
    "lora_name": "loras",
    "ckpt_name": "checkpoints",
    "control_net_name": "controlnet",
    "upscale_model_name": "upscale_models",
    "style_model_name": "style_models",
}
