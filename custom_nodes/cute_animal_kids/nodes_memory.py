"""Nodes that give memory back during and after a prompt.

``OffloadTextEncoder`` unloads the text encoder as soon as the prompt is encoded: on Qwen-Image the
encoder is ~9 GB that sampling never needs. ``FreeMemory`` unloads all models and can ask ComfyUI's
worker to drop its cached node outputs once the prompt is done, as the ``/free`` route does; it also
unloads the Kids Guard's Qwen3Guard weights, which ComfyUI's model management does not know about.
"""

from __future__ import annotations

import logging
from typing import Any

from comfy_api.latest import io
from server import PromptServer
from typing_extensions import override

from .guard_model import unload_shared as unload_guards
from .model_memory import unload_all, unload_patcher

CATEGORY = "Cute Animal Kids/Memory"


class OffloadTextEncoder(io.ComfyNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CAK_OffloadTextEncoder",
            display_name="Offload Text Encoder",
            category=CATEGORY,
            description=(
                "Passes the conditioning through after unloading this CLIP's text encoder, so "
                "sampling does not share memory with it. Only that encoder (and its clones) is "
                "unloaded; the diffusion model and VAE stay loaded."
            ),
            inputs=[
                io.Conditioning.Input(
                    "conditioning", tooltip="Encoded prompt (positive); passed through unchanged."
                ),
                io.Clip.Input("clip", tooltip="The CLIP whose text encoder is unloaded."),
                io.Conditioning.Input(
                    "negative",
                    optional=True,
                    tooltip="Encoded negative prompt; wire it here so the encoder is unloaded "
                    "only after both prompts are encoded.",
                ),
            ],
            outputs=[
                io.Conditioning.Output(
                    "conditioning_out",
                    display_name="conditioning",
                    tooltip="The positive conditioning, unchanged.",
                ),
                io.Conditioning.Output(
                    "negative_out",
                    display_name="negative",
                    tooltip="The negative conditioning, unchanged (None if none was given).",
                ),
            ],
            not_idempotent=True,
        )

    @classmethod
    def execute(
        cls, conditioning: list, clip: Any, negative: list | None = None
    ) -> io.NodeOutput:
        unloaded = unload_patcher(clip.patcher)
        logging.info("Offload Text Encoder: unloaded %s", unloaded or "nothing (not loaded)")
        return io.NodeOutput(conditioning, negative)


class FreeMemory(io.ComfyNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CAK_FreeMemory",
            display_name="Free Memory",
            category=CATEGORY,
            description=(
                "Passes any value through, unloading every model and/or asking ComfyUI to drop "
                "its cached node outputs when the prompt finishes. Wire it after the last node "
                "that needs a model (e.g. from VAE Decode's image, next to Save Image)."
            ),
            inputs=[
                io.AnyType.Input(
                    "value", tooltip="Any value; it orders this node after the one producing it."
                ),
                io.Boolean.Input(
                    "unload_models",
                    default=True,
                    tooltip="Unload all models (the Kids Guard's too) now, and again once the prompt is done.",
                ),
                io.Boolean.Input(
                    "drop_cached_outputs",
                    default=False,
                    tooltip="Once the prompt is done, drop every cached node output (the next "
                    "prompt recomputes everything and reloads models from disk). On a CPU-only "
                    "machine this is what actually returns RAM. ComfyUI also unloads the models "
                    "then, since the cached loader outputs are what keep them.",
                ),
            ],
            outputs=[
                io.AnyType.Output(
                    "value_out", display_name="value", tooltip="The input value, unchanged."
                ),
            ],
            is_output_node=True,
            not_idempotent=True,
        )

    @classmethod
    def execute(cls, value: Any, unload_models: bool, drop_cached_outputs: bool) -> io.NodeOutput:
        queue = PromptServer.instance.prompt_queue
        if unload_models:
            unloaded = unload_all() + unload_guards()  # the guard is not a ComfyUI-managed model
            logging.info("Free Memory: unloaded %s", unloaded or "nothing (none loaded)")
            # Models that nodes running after this one load are unloaded by the worker at the end.
            queue.set_flag("unload_models", True)
        if drop_cached_outputs:
            # Only the worker can reset the executor's caches, and only between prompts.
            queue.set_flag("free_memory", True)
        return io.NodeOutput(value)
