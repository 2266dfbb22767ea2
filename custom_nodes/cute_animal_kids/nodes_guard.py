"""``CAK_KidsGuard``: Qwen3Guard-Gen's second opinion on a prompt, for editor users.

The decision is :meth:`.guard_model.Guard.check`, the same the supervisor makes before queueing.
Checkpoints are sub-folders of ComfyUI's ``guard`` model folder (``models/guard/<name>/``,
registered here with ``folder_paths``); the weights stay loaded between runs until the pack's
Free Memory node unloads them.
"""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths
from comfy_api.latest import io
from typing_extensions import override

from .guard_model import (
    CONTROVERSIAL_POLICIES,
    MODEL_FOLDER,
    Guard,
    GuardDecision,
    get_policy,
    rejection_message,
    shared_model,
)

DEVICES = ("cpu", "cuda")


class GuardUnsafePromptError(Exception):
    """The guard refused the prompt (unsafe, or it could not judge); the message names the category.

    The name ends in ``UnsafePromptError`` so clients (runner, supervisor) report a refusal, not a crash.
    """

    def __init__(self, decision: GuardDecision) -> None:
        super().__init__(rejection_message(decision))
        self.decision = decision
        self.category = decision.category


def register_model_folder() -> None:
    """Add ComfyUI's own ``models/guard`` to the ``guard`` folder (extra_model_paths may add more)."""
    folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER))


def checkpoint_folders() -> dict[str, Path]:
    """Checkpoint name -> folder: every sub-folder holding a ``config.json`` in the guard folders."""
    found: dict[str, Path] = {}
    for root in folder_paths.get_folder_paths(MODEL_FOLDER):
        base = Path(root)
        if not base.is_dir():
            continue
        for child in sorted(base.iterdir()):
            if child.is_dir() and (child / "config.json").is_file():
                found.setdefault(child.name, child)
    return found


class KidsGuard(io.ComfyNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        policy = get_policy()
        return io.Schema(
            node_id="CAK_KidsGuard",
            display_name="Kids Guard (Qwen3Guard)",
            category="Cute Animal Kids/Safety",
            description=(
                "Asks a local Qwen3Guard-Gen model whether the prompt is safe (a second opinion "
                "after Kids Text Safety's word lists; 119 languages). Safe text passes through; "
                "otherwise the prompt stops with an error naming the category. Fails closed: a "
                "model that cannot load, errs or answers out of format refuses the prompt "
                "(category guard_unavailable). Weights: models/guard/<name>/ (see docs/safety.md)."
            ),
            inputs=[
                io.String.Input(
                    "text",
                    force_input=True,
                    tooltip="The prompt to judge, e.g. Kids Text Safety's text output.",
                ),
                io.Combo.Input(
                    "model",
                    options=sorted(checkpoint_folders()),
                    tooltip="A Qwen3Guard-Gen checkpoint folder under models/guard/ (e.g. "
                    "Qwen3Guard-Gen-0.6B). cak_tiny_qwen3guard is install.py's random-weight test "
                    "model: it refuses everything.",
                ),
                io.Combo.Input(
                    "controversial",
                    options=list(CONTROVERSIAL_POLICIES),
                    default=policy.controversial,
                    tooltip="What a 'Controversial' verdict does: refuse (as unsafe; right for "
                    "children) or allow (as safe).",
                ),
                io.Combo.Input(
                    "device",
                    options=list(DEVICES),
                    default="cpu",
                    tooltip="Where the guard runs: cpu (0.6B: about a second a prompt) or cuda.",
                ),
            ],
            outputs=[
                io.String.Output(
                    "safe_text",
                    display_name="text",
                    tooltip="The same text, unchanged; only produced when the guard judged it safe.",
                ),
                io.String.Output(
                    "report",
                    display_name="report",
                    tooltip="JSON decision: safe, category, categories, the model's label and a reason.",
                ),
            ],
        )

    @classmethod
    def execute(cls, text: str, model: str, controversial: str, device: str) -> io.NodeOutput:
        folder = checkpoint_folders().get(model)
        if folder is None:
            raise ValueError(f"no guard checkpoint named {model!r} under models/{MODEL_FOLDER}/")
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        decision = Guard(shared_model(folder, device)).check(text, controversial)
        if not decision.safe:
            raise GuardUnsafePromptError(decision)
        return io.NodeOutput(text, decision.to_json())
