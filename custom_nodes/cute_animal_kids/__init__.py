"""Cute Animal Kids: a ComfyUI node pack for child-safe, memory-lean cute-animal pictures.

ComfyUI finds the pack through ``comfy_entrypoint``. The node modules import ComfyUI's API, so they
are imported inside the entry point: the pure modules (``text_safety``, ``prompt_composer``) stay
importable by the supervisor and the tests without a ComfyUI on ``sys.path``.
"""

from __future__ import annotations

from typing import Any


async def comfy_entrypoint() -> Any:
    from .extension import CuteAnimalKidsExtension

    return CuteAnimalKidsExtension()
