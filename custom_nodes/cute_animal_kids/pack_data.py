"""Loading and validating the pack's YAML data files (lexicons, styles, maps, limits).

The data lives in YAML so policy can change without code changes; that also means a typo in a data
file must fail loudly at load time, naming the file and the key path, rather than silently weakening
a safety filter. No schema library: a few typed checkers cover what the pack needs.

This module must not import ComfyUI: the supervisor and the unit tests import it directly.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

DATA_DIR = Path(__file__).resolve().parent / "data"
DATA_DIR_ENV = "CUTE_ANIMAL_KIDS_DATA_DIR"
"""Environment override for the data directory (tests and operators pointing at another copy)."""

_cache: dict[tuple[Path, str], dict[str, Any]] = {}
_cache_lock = threading.Lock()


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
            parsed = yaml.safe_load(text)
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
