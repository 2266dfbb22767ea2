"""The prompt composer: verbatim descriptions, deterministic output, clear input errors, valid styles."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cute_animal_kids import pack_data
from cute_animal_kids.pack_data import PackDataError, load_data_file
from cute_animal_kids.prompt_composer import (
    ComposedPrompt,
    PromptComposer,
    PromptInputError,
    compose,
    get_composer,
    style_names,
)

REQUIRED_STYLES = {"picture_book", "watercolor", "plush_toy", "clay_3d", "sticker", "crayon"}


def test_style_names() -> None:
    names = style_names()
    assert len(names) >= 6
    assert REQUIRED_STYLES <= set(names)
    assert len(names) == len(set(names))
    assert names[0] == get_composer().default_style


@pytest.mark.parametrize("style", sorted(REQUIRED_STYLES))
def test_every_style_has_a_display_name_and_keeps_it_cute(style: str) -> None:
    composer = get_composer()
    assert composer.style(style).display_name.strip()
    prompt = compose("a bunny", style)
    assert isinstance(prompt, ComposedPrompt)
    assert prompt.style == style
    assert "cute" in prompt.positive
    assert "nsfw" in prompt.negative and "gore" in prompt.negative


def test_styles_differ() -> None:
    positives = {compose("a bunny", style).positive for style in style_names()}
    negatives = {compose("a bunny", style).negative for style in style_names()}
    assert len(positives) == len(style_names())
    assert len(negatives) == len(style_names())


@pytest.mark.parametrize(
    "description",
    [
        "a bunny with a red scarf",
        "一只戴帽子的小熊",
        "a {description} with {0} braces and %s",
        "小熊 & bunny: \"quotes\", 'apostrophes'\nand a second line",
        "ｆｕｌｌ-width 兔子",
    ],
)
@pytest.mark.parametrize("style", ["picture_book", "sticker"])
def test_description_is_kept_verbatim(description: str, style: str) -> None:
    prompt = compose(f"  \t{description}\n ", style)
    assert description in prompt.positive
    assert prompt.positive.count(description) == 1
    assert description not in prompt.negative


def test_description_is_only_trimmed() -> None:
    prompt = compose("  a  bunny   with  spaces  ", "watercolor")
    assert "a  bunny   with  spaces" in prompt.positive
    assert "  a  bunny" not in prompt.positive


def test_deterministic() -> None:
    first = compose("一只戴帽子的小熊", "clay_3d")
    for _ in range(5):
        assert compose("一只戴帽子的小熊", "clay_3d") == first
    fresh = PromptComposer(copy.deepcopy(load_data_file("styles.yaml")))
    assert fresh.compose("一只戴帽子的小熊", "clay_3d") == first


@pytest.mark.parametrize("description", ["", "   ", "\n\t \u3000"])
def test_empty_description(description: str) -> None:
    with pytest.raises(PromptInputError, match="description is empty"):
        compose(description, "picture_book")


def test_length_limit_comes_from_yaml() -> None:
    limit = get_composer().max_description_chars
    assert limit == load_data_file("styles.yaml")["limits"]["max_description_chars"]
    compose("熊" * limit, "picture_book")
    compose("  " + "a" * limit + "  ", "picture_book")  # surrounding whitespace does not count
    with pytest.raises(PromptInputError, match=rf"too long \({limit + 1} characters; the limit is {limit}\)"):
        compose("熊" * (limit + 1), "picture_book")


def test_unknown_style_lists_the_choices() -> None:
    with pytest.raises(PromptInputError, match=r"unknown style 'oil_painting'; choose one of: .*watercolor"):
        compose("a bunny", "oil_painting")


def test_non_text_description() -> None:
    with pytest.raises(PromptInputError, match="must be text"):
        compose(None, "picture_book")  # type: ignore[arg-type]


def test_input_error_is_a_value_error() -> None:
    assert issubclass(PromptInputError, ValueError)


# -- styles.yaml validation ---------------------------------------------------------------------

def _broken(tmp_path: Path, mutate) -> PromptComposer:
    data: dict[str, Any] = copy.deepcopy(load_data_file("styles.yaml"))
    mutate(data)
    (tmp_path / "styles.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    pack_data.clear_cache()
    return get_composer(tmp_path)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["styles"]["watercolor"].__setitem__("positive", "watercolor of a bunny"),
         "styles.watercolor.positive: must contain {description} exactly once"),
        (lambda d: d["styles"]["watercolor"].__setitem__("positive", "{description} and {description}"),
         "styles.watercolor.positive: must contain {description} exactly once"),
        (lambda d: d["styles"]["sticker"].__setitem__("negative", "no {description}"),
         "styles.sticker.negative: must not contain {description}"),
        (lambda d: d["styles"]["crayon"].pop("display_name"), "styles.crayon.display_name: missing"),
        (lambda d: d["styles"]["crayon"].__setitem__("display_name", " "),
         "styles.crayon.display_name: must be a non-empty string"),
        (lambda d: d.__setitem__("styles", {}), "styles: must not be empty"),
        (lambda d: d.__setitem__("default_style", "oil"), "default_style: 'oil' is not one of the styles"),
        (lambda d: d["limits"].__setitem__("max_description_chars", 0),
         "limits.max_description_chars: must be >= 1"),
        (lambda d: d["base"].pop("negative"), "base.negative: missing"),
    ],
)
def test_styles_yaml_errors(tmp_path: Path, mutate, expected: str) -> None:
    with pytest.raises(PackDataError, match="^" + re.escape(f"styles.yaml: {expected}")):
        _broken(tmp_path, mutate)
