"""Fault-injection nodes for the supervisor's tests: crash, hang without progress, leak memory.

TEST INSTANCES ONLY. They are loaded through an extra ``--extra-model-paths-config`` file naming
``custom_nodes: tests/fault_nodes`` and never ship with the pack. Each passes an IMAGE through, so
it can be spliced into the CPU graph before SaveImage; ``not_idempotent`` makes it run every time.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

CATEGORY = "testing/faults"

# What FaultLeak keeps alive for the life of the process: the leak the supervisor must notice.
_LEAKED: list[bytearray] = []


class FaultCrash(io.ComfyNode):
    """Kills its own ComfyUI with SIGKILL (no cleanup, no exit message: a real crash)."""

    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaultCrash", display_name="Fault: Crash", category=CATEGORY,
            inputs=[io.Image.Input("images")],
            outputs=[io.Image.Output("images_out", display_name="images")],
            not_idempotent=True,
        )

    @classmethod
    def execute(cls, images: Any) -> io.NodeOutput:
        logging.warning("FaultCrash: killing ComfyUI (pid %d)", os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)
        return io.NodeOutput(images)


class FaultHang(io.ComfyNode):
    """Sleeps in small steps for ``seconds`` without any progress event: a stuck node."""

    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaultHang", display_name="Fault: Hang", category=CATEGORY,
            inputs=[io.Image.Input("images"),
                    io.Float.Input("seconds", default=3600.0, min=0.0, max=86400.0)],
            outputs=[io.Image.Output("images_out", display_name="images")],
            not_idempotent=True,
        )

    @classmethod
    def execute(cls, images: Any, seconds: float) -> io.NodeOutput:
        logging.warning("FaultHang: sleeping %.0f s without progress", seconds)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.2)
        return io.NodeOutput(images)


class FaultLeak(io.ComfyNode):
    """Keeps ``megabytes`` more memory alive on every run (written, so it counts in RSS)."""

    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaultLeak", display_name="Fault: Leak", category=CATEGORY,
            inputs=[io.Image.Input("images"), io.Int.Input("megabytes", default=100, min=0, max=65536)],
            outputs=[io.Image.Output("images_out", display_name="images")],
            not_idempotent=True,
        )

    @classmethod
    def execute(cls, images: Any, megabytes: int) -> io.NodeOutput:
        # Repeating a non-zero byte writes every page; a zeroed bytearray may stay unbacked.
        _LEAKED.append(bytearray(b"\x01") * (megabytes * 2**20))
        total = sum(len(block) for block in _LEAKED) // 2**20
        logging.warning("FaultLeak: +%d MB, %d MB held", megabytes, total)
        return io.NodeOutput(images)


class _RaisingSession:
    """Stands in for the loaded ONNX session: every classification fails."""

    def classify_batch(self, arrays: Any) -> Any:
        raise RuntimeError("FaultBreakImageClassifier: the classifier raised")


class FaultBreakImageClassifier(io.ComfyNode):
    """Breaks the pack's shared NSFW classifier in this process, then passes the images on.

    ``cannot_load``: the model path points nowhere and the loaded session is dropped (a missing or
    corrupt model file); ``raises``: the session raises on every batch. Spliced in before
    KidsImageSafety, so the gate runs on a broken classifier and must fail the prompt.
    """

    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FaultBreakImageClassifier", display_name="Fault: Break Image Classifier",
            category=CATEGORY,
            inputs=[io.Image.Input("images"), io.Combo.Input("mode", options=["cannot_load", "raises"])],
            outputs=[io.Image.Output("images_out", display_name="images")],
            not_idempotent=True,
        )

    @classmethod
    def execute(cls, images: Any, mode: str) -> io.NodeOutput:
        # ComfyUI imports the pack under a path-derived module name: find its classifier module.
        (module,) = [m for name, m in list(sys.modules.items())
                     if name.endswith("cute_animal_kids.image_classifier")]
        classifier = module.shared_classifier()
        with classifier._lock:
            if mode == "cannot_load":
                classifier._model_path, classifier._classifier = Path("/nonexistent/open_nsfw.onnx"), None
            else:
                classifier._classifier = _RaisingSession()
        logging.warning("FaultBreakImageClassifier: classifier broken (%s)", mode)
        return io.NodeOutput(images)


class FaultNodesExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [FaultCrash, FaultHang, FaultLeak, FaultBreakImageClassifier]


async def comfy_entrypoint() -> FaultNodesExtension:
    return FaultNodesExtension()
