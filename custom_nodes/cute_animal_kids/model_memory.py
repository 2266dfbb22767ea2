"""What ComfyUI holds in memory, and unloading chosen models from it.

Unloading goes entry by entry through ``comfy.model_management.current_loaded_models`` instead of
``free_memory(..., keep_loaded=...)``: that function expects ``LoadedModel`` entries in
``keep_loaded``, and passing raw models there silently unloads everything (a common bug in published
"unload" nodes).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import comfy.model_base
import comfy.model_management as mm
import psutil


def model_kind(patcher: Any) -> str:
    """``diffusion_model``, ``text_encoder``, ``vae`` or ``other``, from the patched model's type.

    ComfyUI has no common base class for text encoders or VAEs, so they are told apart by the
    method ComfyUI calls on them: ``encode_token_weights`` (CLIP) and ``decode`` (VAE).
    """
    model = patcher.model
    if isinstance(model, comfy.model_base.BaseModel):
        return "diffusion_model"
    if hasattr(model, "encode_token_weights"):
        return "text_encoder"
    if hasattr(model, "decode"):
        return "vae"
    return "other"


def loaded_models() -> list[dict[str, Any]]:
    """One entry per model in ``current_loaded_models``: class, kind, device and sizes in bytes."""
    described = []
    # The HTTP route calls this from the event loop while the worker thread may change the list:
    # iterate over a copy, and skip entries whose patcher has already been collected.
    for entry in list(mm.current_loaded_models):
        patcher = entry.model
        if patcher is None:
            continue
        described.append(
            {
                "class_name": type(patcher.model).__name__,
                "kind": model_kind(patcher),
                "device": str(entry.device),
                "loaded_bytes": int(entry.model_loaded_memory()),
                "size_bytes": int(entry.model_memory()),
            }
        )
    return described


def memory_report() -> dict[str, Any]:
    """Process RSS, the torch device's memory, and the loaded models (the pack's memory route)."""
    device = mm.get_torch_device()
    return {
        "process": {"pid": os.getpid(), "rss_bytes": psutil.Process().memory_info().rss},
        "device": {
            "name": mm.get_torch_device_name(device),
            "type": device.type,
            "total_bytes": int(mm.get_total_memory(device)),
            "free_bytes": int(mm.get_free_memory(device)),
        },
        "models": loaded_models(),
    }


def unload_models(matches: Callable[[Any], bool]) -> list[str]:
    """Unload every loaded model whose patcher ``matches``; return the unloaded class names.

    ``model_unload`` moves the weights to the offload device (CPU RAM on a GPU machine); on a
    CPU-only machine nothing moves, but the entry leaves ``current_loaded_models`` all the same.
    """
    unloaded = []
    names = []
    for entry in list(mm.current_loaded_models):
        patcher = entry.model
        if patcher is None or not matches(patcher):
            continue
        entry.model_unload()
        unloaded.append(entry)
        names.append(type(patcher.model).__name__)
    if unloaded:
        # In place and by identity: other modules hold this very list, and LoadedModel.__eq__
        # compares patchers, which would also match other entries of the same model.
        gone = {id(entry) for entry in unloaded}
        mm.current_loaded_models[:] = [e for e in mm.current_loaded_models if id(e) not in gone]
        mm.soft_empty_cache()
    return names


def unload_patcher(patcher: Any) -> list[str]:
    """Unload ``patcher`` and its clones (same underlying model), e.g. a CLIP's text encoder."""
    return unload_models(lambda loaded: loaded is patcher or loaded.is_clone(patcher))


def unload_all() -> list[str]:
    """Unload every model, on every device (``unload_all_models`` only covers the torch device)."""
    return unload_models(lambda loaded: True)
