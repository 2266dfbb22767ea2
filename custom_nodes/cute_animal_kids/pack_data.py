"""Loading and validating the pack's YAML data files (lexicons, styles, maps, limits).

The data lives in YAML so policy can change without code changes; that also means a typo in a data
file must fail loudly at load time, naming the file and the key path, rather than silently weakening
a safety filter. Files with a fixed shape (``styles.yaml``, ``image_safety.yaml``) are pydantic models
checked by :func:`validate_model` (pydantic comes with ComfyUI, so the pack needs nothing more); the
``require_*`` checkers stay for the lexicons' free-form parts.

This module must not import ComfyUI: the supervisor and the unit tests import it directly.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as _ValidationError

DATA_DIR = Path(__file__).resolve().parent / "data"
DATA_DIR_ENV = "CUTE_ANIMAL_KIDS_DATA_DIR"
"""Environment override for the data directory (tests and operators pointing at another copy)."""

_cache: dict[tuple[Path, str], dict[str, Any]] = {}
_cache_lock = threading.Lock()
_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class UniqueKeyLoader(_BASE_LOADER):  # type: ignore[misc, valid-type]
    """libyaml's safe loader when PyYAML was built with it (the same data, parsed about 8x faster;
    the text-safety files take 0.8 s CPU in pure Python), refusing a key written twice in one
    mapping: YAML would keep the last silently, so half of a list would vanish from the policy."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is written twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


class PackDataError(ValueError):
    """A data file is missing, unreadable or fails validation; the message names file and key path."""


def data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The directory data files are read from: explicit override, then env var, then the pack's."""
    if override is not None:
        return Path(override)
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else DATA_DIR


def load_data_file(name: str, directory: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Parse ``name`` (e.g. ``"styles.yaml"``) once per directory and return its top-level mapping.

    The result is cached and shared: callers must treat it as read-only.
    """
    folder = data_dir(directory).resolve()
    key = (folder, name)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        path = folder / name
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PackDataError(f"{name}: cannot read {path}: {exc.strerror or exc}") from exc
        try:
            parsed = yaml.load(text, Loader=UniqueKeyLoader)  # a safe loader (C or Python)
        except yaml.YAMLError as exc:
            raise PackDataError(f"{name}: invalid YAML: {exc}") from exc
        data = require_mapping(parsed, name, "")
        _cache[key] = data
        return data


def clear_cache() -> None:
    """Forget parsed files (tests; operators reloading edited data)."""
    with _cache_lock:
        _cache.clear()


def _where(file: str, path: str) -> str:
    return f"{file}: {path}" if path else f"{file}: (top level)"


def child_path(path: str, key: str | int) -> str:
    """Extend a key path: ``categories`` + ``weapons`` -> ``categories.weapons``; ints become ``[i]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def require_mapping(value: Any, file: str, path: str, *, non_empty: bool = True) -> dict[str, Any]:
    """A mapping with string keys (YAML turns bare ``1:`` into an int key, which is rejected)."""
    if not isinstance(value, Mapping):
        raise PackDataError(f"{_where(file, path)}: must be a mapping, got {type(value).__name__}")
    if non_empty and not value:
        raise PackDataError(f"{_where(file, path)}: must not be empty")
    for key in value:
        if not isinstance(key, str) or not key.strip():
            raise PackDataError(f"{_where(file, path)}: key {key!r} must be a non-empty string")
    return dict(value)


def require_key(mapping: Mapping[str, Any], key: str, file: str, path: str) -> Any:
    """The value under ``key``; a missing key is an error naming the full path."""
    if key not in mapping:
        raise PackDataError(f"{_where(file, child_path(path, key))}: missing")
    return mapping[key]


def require_string(value: Any, file: str, path: str, *, max_length: int | None = None) -> str:
    """A non-empty, non-blank string, optionally bounded in length."""
    if not isinstance(value, str) or not value.strip():
        raise PackDataError(f"{_where(file, path)}: must be a non-empty string")
    if max_length is not None and len(value) > max_length:
        raise PackDataError(f"{_where(file, path)}: longer than {max_length} characters")
    return value


def require_string_list(
    value: Any, file: str, path: str, *, non_empty: bool = True, unique: bool = True
) -> list[str]:
    """A list of non-empty strings; duplicates are rejected because they usually hide a typo."""
    if not isinstance(value, list):
        raise PackDataError(f"{_where(file, path)}: must be a list, got {type(value).__name__}")
    if non_empty and not value:
        raise PackDataError(f"{_where(file, path)}: must not be empty")
    seen: set[str] = set()
    for index, item in enumerate(value):
        item_path = child_path(path, index)
        require_string(item, file, item_path)
        if unique and item in seen:
            raise PackDataError(f"{_where(file, item_path)}: duplicate entry")
        seen.add(item)
    return list(value)


def require_number(
    value: Any,
    file: str,
    path: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    integer: bool = False,
) -> float | int:
    """A finite number (bools rejected) within ``[minimum, maximum]``; ``integer`` demands an int."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PackDataError(f"{_where(file, path)}: must be a number")
    if integer and not isinstance(value, int):
        raise PackDataError(f"{_where(file, path)}: must be an integer")
    if not math.isfinite(value):
        raise PackDataError(f"{_where(file, path)}: must be finite")
    if minimum is not None and value < minimum:
        raise PackDataError(f"{_where(file, path)}: must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise PackDataError(f"{_where(file, path)}: must be <= {maximum}")
    return value


def require_char(value: Any, file: str, path: str) -> str:
    """Exactly one character (map keys such as leetspeak digits and homoglyphs)."""
    if not isinstance(value, str) or len(value) != 1:
        raise PackDataError(f"{_where(file, path)}: must be a single character")
    return value


# ---------------------------------------------------------------- pydantic models of the data files

Model = TypeVar("Model", bound=BaseModel)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty string")
    return value


Text = Annotated[StrictStr, AfterValidator(_not_blank)]
"""A non-empty, non-blank string (the ``require_string`` rule as a type)."""


class DataModel(BaseModel):
    """Base of the data files' models: unknown keys are typos, not silently ignored settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def validate_model(model: type[Model], data: Any, file: str) -> Model:
    """``data`` as ``model``; every problem at once, one ``file: key.path: reason`` line each."""
    try:
        return model.model_validate(data)
    except _ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False):
            path = ""
            for part in error["loc"]:
                path = child_path(path, part)
            # A rule across keys (a model validator) names its keys itself.
            where = _where(file, path) if path or error["type"] != "value_error" else file
            lines.append(f"{where}: {_reason(error)}")
        raise PackDataError("\n".join(dict.fromkeys(lines))) from None


def _reason(error: Any) -> str:
    """The ``require_*`` checkers' wording for pydantic's error types."""
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "missing":
        return "missing"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping, got {type(error['input']).__name__}"
    if kind in ("too_short",) and isinstance(error["input"], (dict, list)):
        return "must not be empty"
    if kind in ("string_type", "string_too_short"):
        return "must be a non-empty string"
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']}"
    if kind == "less_than_equal":
        return f"must be <= {ctx['le']}"
    if kind == "int_type":
        return "must be an integer"
    if kind in ("float_type", "finite_number"):
        return "must be a number" if kind == "float_type" else "must be finite"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}, got {error['input']!r}"
    if kind == "extra_forbidden":
        return "unknown key"
    return str(error["msg"])


PLACEHOLDER = "{description}"
IMAGE_ACTIONS = ("replace", "block")


class StyleEntry(DataModel):
    display_name: Text
    positive: Text
    negative: Text

    @field_validator("positive")
    @classmethod
    def _one_placeholder(cls, value: str) -> str:
        if value.count(PLACEHOLDER) != 1:
            raise ValueError(f"must contain {PLACEHOLDER} exactly once")
        return value

    @field_validator("display_name", "negative")
    @classmethod
    def _no_placeholder(cls, value: str) -> str:
        if PLACEHOLDER in value:
            raise ValueError(f"must not contain {PLACEHOLDER}")
        return value


class StyleLimits(DataModel):
    max_description_chars: StrictInt = Field(ge=1, le=10_000)


class StyleBase(DataModel):
    positive: Text
    negative: Text


class StylesData(DataModel):
    """``styles.yaml``: the limit, the shared base prompts, the styles and the default one."""

    limits: StyleLimits
    default_style: Text
    base: StyleBase
    styles: Annotated[dict[Text, StyleEntry], Field(min_length=1)]

    @model_validator(mode="after")
    def _default_is_a_style(self) -> StylesData:
        if self.default_style not in self.styles:
            raise ValueError(f"default_style: {self.default_style!r} is not one of the styles")
        return self


class ImageSafetyData(DataModel):
    """``image_safety.yaml``: the Kids Image Safety node's defaults."""

    threshold: Annotated[float, Strict(), Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    action: Literal[IMAGE_ACTIONS]  # type: ignore[valid-type] - a Literal of the tuple's strings
