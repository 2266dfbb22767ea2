"""Compose positive and negative prompts from a child's or parent's description and a style preset.

The description is kept verbatim (only trimmed) inside the style template: it is the user's
request, and rewriting it would hide from the safety check what is actually sent to the model.
Styles, the shared cute/age-appropriate base and the length limit live in ``data/styles.yaml``.

No ComfyUI imports, so it runs without ComfyUI: the Cute Animal Prompt node (``nodes_prompt``)
wraps it, and the unit tests call :func:`style_names` and :func:`compose` directly (the workflow
manifests' style choices are checked against :func:`style_names`). The supervisor does not import
it: prompts are composed inside ComfyUI, by the node.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .pack_data import PLACEHOLDER, StylesData, data_dir, load_data_file, validate_model

DATA_FILE = "styles.yaml"


class PromptInputError(ValueError):
    """The description or style cannot be used (empty, too long, unknown style)."""


@dataclass(frozen=True, slots=True)
class Style:
    name: str
    display_name: str
    positive: str
    negative: str


@dataclass(frozen=True, slots=True)
class ComposedPrompt:
    positive: str
    negative: str
    style: str


class PromptComposer:
    """The styles of one data directory, validated once."""

    def __init__(self, data: Mapping[str, Any], file: str = DATA_FILE) -> None:
        checked = validate_model(StylesData, data, file)
        self.max_description_chars = checked.limits.max_description_chars
        self._base_positive = checked.base.positive.strip()
        self._base_negative = checked.base.negative.strip()
        self._styles = {
            name: Style(name, entry.display_name.strip(), entry.positive.strip(), entry.negative.strip())
            for name, entry in checked.styles.items()
        }
        self.default_style = checked.default_style

    def style_names(self) -> list[str]:
        """Style keys in YAML order, default first (the node's combo shows the default on top)."""
        return [self.default_style, *(name for name in self._styles if name != self.default_style)]

    def style(self, name: str) -> Style:
        try:
            return self._styles[name]
        except KeyError:
            raise PromptInputError(
                f"unknown style {name!r}; choose one of: {', '.join(self.style_names())}"
            ) from None

    def compose(self, description: str, style: str) -> ComposedPrompt:
        """Positive = base + style template around the trimmed description; negative = base + style."""
        if not isinstance(description, str):
            raise PromptInputError(f"description must be text, not {type(description).__name__}")
        text = description.strip()
        if not text:
            raise PromptInputError("description is empty: describe the animal you would like to see")
        if len(text) > self.max_description_chars:
            raise PromptInputError(
                f"description is too long ({len(text)} characters; the limit is {self.max_description_chars})"
            )
        chosen = self.style(style)
        # str.replace, not str.format: braces in the user's words must stay verbatim and inert.
        positive = f"{chosen.positive.replace(PLACEHOLDER, text)}, {self._base_positive}"
        negative = f"{self._base_negative}, {chosen.negative}"
        return ComposedPrompt(positive, negative, chosen.name)


def get_composer(directory: str | Path | None = None) -> PromptComposer:
    """The composer for a data directory (default: the pack's), built once."""
    return _get_composer_for(data_dir(directory).resolve())


@functools.cache
def _get_composer_for(folder: Path) -> PromptComposer:
    return PromptComposer(load_data_file(DATA_FILE, folder))


def style_names() -> list[str]:
    """Available style keys, default first."""
    return get_composer().style_names()


def compose(description: str, style: str) -> ComposedPrompt:
    """Build the positive and negative prompt for ``description`` in ``style``."""
    return get_composer().compose(description, style)
