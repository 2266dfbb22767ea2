"""The pack's V3 extension: the list of nodes ComfyUI registers, and the pack's HTTP route."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .memory_route import register_memory_route
from .nodes_guard import KidsGuard, register_model_folder
from .nodes_image_safety import KidsImageSafety
from .nodes_memory import FreeMemory, OffloadTextEncoder
from .nodes_prompt import CuteAnimalPrompt
from .nodes_text_safety import KidsTextSafety


class CuteAnimalKidsExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # ComfyUI 0.3.75 never calls ComfyExtension.on_load; this runs while custom nodes load,
        # before the server copies its route table into the web app.
        register_memory_route()
        register_model_folder()
        return [
            CuteAnimalPrompt,
            KidsTextSafety,
            KidsGuard,
            KidsImageSafety,
            OffloadTextEncoder,
            FreeMemory,
        ]
