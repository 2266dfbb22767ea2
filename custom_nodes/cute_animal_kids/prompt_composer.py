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

from .pack_data import (
    PackDataError,
    child_path,
    data_dir,
    load_data_file,
    require_key,
    require_mapping,
    require_number,
    require_string,
)

DATA_FILE = "styles.yaml"
PLACEHOLDER = "{description}"


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
        limits = require_mapping(require_key(data, "limits", file, ""), file, "limits")
        self.max_description_chars = int(require_number(
            require_key(limits, "max_description_chars", file, "limits"), file,
            "limits.max_description_chars", minimum=1, maximum=10_000, integer=True,
        ))
        base = require_mapping(require_key(data, "base", file, ""), file, "base")
        self._base_positive, self._base_negative = (
            require_string(require_key(base, key, file, "base"), file, child_path("base", key)).strip()
            for key in ("positive", "negative")
        )

        styles: dict[str, Style] = {}
        entries = require_mapping(require_key(data, "styles", file, ""), file, "styles")
        for name, entry in entries.items():
            path = child_path("styles", name)
            entry = require_mapping(entry, file, path)
            fields = {
                key: require_string(require_key(entry, key, file, path), file, child_path(path, key)).strip()
                for key in ("display_name", "positive", "negative")
            }
            if fields["positive"].count(PLACEHOLDER) != 1:
                raise PackDataError(
                    f"{file}: {child_path(path, 'positive')}: must contain {PLACEHOLDER} exactly once"
                )
            for key in ("display_name", "negative"):
                if PLACEHOLDER in fields[key]:
                    raise PackDataError(f"{file}: {child_path(path, key)}: must not contain {PLACEHOLDER}")
            styles[name] = Style(name, **fields)
        self._styles = styles

        default = require_string(require_key(data, "default_style", file, ""), file, "default_style")
        if default not in styles:
            raise PackDataError(f"{file}: default_style: {default!r} is not one of the styles")
        self.default_style = default

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


@functools.lru_cache(maxsize=None)
def _get_composer_for(folder: Path) -> PromptComposer:
    return PromptComposer(load_data_file(DATA_FILE, folder))


def style_names() -> list[str]:
    """Available style keys, default first."""
    return get_composer().style_names()


def compose(description: str, style: str) -> ComposedPrompt:
    """Build the positive and negative prompt for ``description`` in ``style``."""
    return get_composer().compose(description, style)
