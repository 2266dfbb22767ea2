"""The YAML loader and validators: real data loads, broken data fails naming file and key path."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cute_animal_kids import pack_data
from cute_animal_kids.pack_data import (
    PackDataError,
    load_data_file,
    require_char,
    require_mapping,
    require_number,
    require_string_list,
)
from cute_animal_kids.prompt_composer import PromptComposer
from cute_animal_kids.text_normalizer import TextNormalizer
from cute_animal_kids.text_safety import TextSafetyChecker


@pytest.fixture(autouse=True)
def _fresh_cache():
    pack_data.clear_cache()
    yield
    pack_data.clear_cache()


def _real(name: str) -> dict[str, Any]:
    return copy.deepcopy(load_data_file(name))


def _write(directory: Path, name: str, data: Any) -> Path:
    (directory / name).write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return directory


def _append(items: list[Any], item: Any) -> int:
    """Append and return the new index, so a parametrized case can name the key path."""
    items.append(item)
    return len(items) - 1


def _safety_checker(directory: Path) -> TextSafetyChecker:
    data = load_data_file("text_safety.yaml", directory)
    return TextSafetyChecker(data, TextNormalizer(data))


def test_real_data_files_validate() -> None:
    data = load_data_file("text_safety.yaml")
    TextSafetyChecker(data, TextNormalizer(data))
    PromptComposer(load_data_file("styles.yaml"))


def test_load_is_cached_per_directory(tmp_path: Path) -> None:
    _write(tmp_path, "x.yaml", {"a": 1})
    first = load_data_file("x.yaml", tmp_path)
    assert load_data_file("x.yaml", tmp_path) is first
    _write(tmp_path, "x.yaml", {"a": 2})
    assert load_data_file("x.yaml", tmp_path)["a"] == 1  # cached until cleared
    pack_data.clear_cache()
    assert load_data_file("x.yaml", tmp_path)["a"] == 2


def test_env_var_overrides_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "x.yaml", {"from": "env"})
    monkeypatch.setenv(pack_data.DATA_DIR_ENV, str(tmp_path))
    assert load_data_file("x.yaml") == {"from": "env"}


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(PackDataError, match=r"^nothing\.yaml: cannot read"):
        load_data_file("nothing.yaml", tmp_path)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("a: [1, 2\nb: {", encoding="utf-8")
    with pytest.raises(PackDataError, match=r"^bad\.yaml: invalid YAML"):
        load_data_file("bad.yaml", tmp_path)


def test_a_key_written_twice_is_refused(tmp_path: Path) -> None:
    """YAML keeps the last of two equal keys: a class or category written twice would lose a list silently."""
    (tmp_path / "twice.yaml").write_text("classes:\n  own:\n    en: [own]\n  other:\n    en: [x]\n"
                                         "  own:\n    en: [itself]\n", encoding="utf-8")
    with pytest.raises(PackDataError, match=r"^twice\.yaml: invalid YAML: key 'own' is written twice"):
        load_data_file("twice.yaml", tmp_path)
    (tmp_path / "lists.yaml").write_text("a:\n  en: [x]\n  zh: [甲]\n  zh: [乙]\n", encoding="utf-8")
    with pytest.raises(PackDataError, match="key 'zh' is written twice"):
        load_data_file("lists.yaml", tmp_path)


@pytest.mark.parametrize("content", ["- a\n- b\n", "just text\n", "", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, content: str) -> None:
    (tmp_path / "list.yaml").write_text(content, encoding="utf-8")
    with pytest.raises(PackDataError, match=r"^list\.yaml: \(top level\): must be a mapping"):
        load_data_file("list.yaml", tmp_path)


def test_empty_term_names_the_exact_key_path(tmp_path: Path) -> None:
    data = _real("text_safety.yaml")
    data["categories"]["weapons"]["en"][3] = ""
    _write(tmp_path, "text_safety.yaml", data)
    with pytest.raises(PackDataError) as info:
        _safety_checker(tmp_path)
    assert str(info.value) == "text_safety.yaml: categories.weapons.en[3]: must be a non-empty string"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["categories"]["weapons"]["en"].__setitem__(0, 7),
         "categories.weapons.en[0]: must be a non-empty string"),
        (lambda d: d["categories"]["horror"].pop("zh"), "categories.horror.zh: missing"),
        (lambda d: d["categories"]["horror"].__setitem__("fr", ["x"]),
         "categories.horror.fr: unknown language"),
        (lambda d: d["categories"].__setitem__("Bad Name", {"en": ["x"], "zh": ["枪"]}),
         "categories.Bad Name: category names must match"),
        (lambda d: _append(d["categories"]["sexual"]["en"], "血腥"),
         "categories.sexual.en[{}]: English entries must be Latin"),
        (lambda d: _append(d["categories"]["sexual"]["zh"], "gore"),
         "categories.sexual.zh[{}]: Chinese entries must contain Chinese characters"),
        (lambda d: _append(d["categories"]["drugs_alcohol_tobacco"]["en"], "beer"),
         "categories.drugs_alcohol_tobacco.en[{}]: duplicate entry"),
        (lambda d: _append(d["categories"]["weapons"]["zh"], "\u200b"),
         "categories.weapons.zh[{}]: Chinese entries must contain Chinese characters"),
        (lambda d: d["categories"].__setitem__("empty", {"en": [], "zh": ["枪"]}),
         "categories.empty.en: must not be empty"),
        (lambda d: d.pop("allow"), "allow: missing"),
        (lambda d: d["allow"].__setitem__("en", "naked mole rat"), "allow.en: must be a list"),
        (lambda d: d["leet"].__setitem__("00", ["o"]), "leet.00: must be a single character"),
        (lambda d: d["leet"].__setitem__("x", ["o"]), "leet.x: a leet key must be a digit or symbol"),
        (lambda d: d["leet"].__setitem__("0", ["oo"]), "leet.0[0]: must be one lowercase letter"),
        (lambda d: d["lookalike_letters"].__setitem__("1", ["l"]),
         "lookalike_letters.1: key must be one lowercase"),
        (lambda d: d["lookalike_letters"].__setitem__("o", ["o"]),
         "lookalike_letters.o[0]: must be one lowercase"),
        (lambda d: d["homoglyphs"]["extra"].__setitem__("a", "b"),
         "homoglyphs.extra.a: key must be a non-ASCII"),
        (lambda d: d["homoglyphs"]["extra"].__setitem__("ø", "Ø"),
         "homoglyphs.extra.ø: must be lowercase ASCII"),
        (lambda d: d["limits"].__setitem__("min_spaced_run", 1), "limits.min_spaced_run: must be >= 2"),
        (lambda d: d["limits"].__setitem__("max_spaced_gap", 2.5),
         "limits.max_spaced_gap: must be an integer"),
        (lambda d: d["limits"].__setitem__("max_spaced_gap", True),
         "limits.max_spaced_gap: must be a number"),
        (lambda d: d["matching"].__setitem__("en_suffixes", ["S"]),
         "matching.en_suffixes[0]: must be lowercase"),
    ],
)
def test_text_safety_yaml_errors(tmp_path: Path, mutate, expected: str) -> None:
    data = _real("text_safety.yaml")
    expected = expected.format(mutate(data))
    _write(tmp_path, "text_safety.yaml", data)
    with pytest.raises(PackDataError, match="^" + re.escape(f"text_safety.yaml: {expected}")):
        _safety_checker(tmp_path)


def test_yaml_integer_keys_are_rejected(tmp_path: Path) -> None:
    """``0: [o]`` unquoted is an int key in YAML; the loader says so instead of ignoring it."""
    text = (Path(pack_data.DATA_DIR) / "text_safety.yaml").read_text(encoding="utf-8")
    (tmp_path / "text_safety.yaml").write_text(text.replace('  "0": [o]', "  0: [o]"), encoding="utf-8")
    with pytest.raises(PackDataError, match=r"^text_safety\.yaml: leet: key 0 must be a non-empty string"):
        _safety_checker(tmp_path)


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        ("1", {}, "must be a number"),
        (True, {}, "must be a number"),
        (float("nan"), {}, "must be finite"),
        (-1, {"minimum": 0}, "must be >= 0"),
        (2, {"maximum": 1}, "must be <= 1"),
        (0.5, {"integer": True}, "must be an integer"),
    ],
)
def test_require_number_rejects(value: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PackDataError, match=re.escape(f"f.yaml: a.b: {message}")):
        require_number(value, "f.yaml", "a.b", **kwargs)


def test_require_number_accepts_in_range() -> None:
    assert require_number(0.5, "f.yaml", "x", minimum=0, maximum=1) == 0.5
    assert require_number(3, "f.yaml", "x", integer=True) == 3


def test_require_string_list_paths() -> None:
    assert require_string_list(["a", "b"], "f.yaml", "k") == ["a", "b"]
    with pytest.raises(PackDataError, match=re.escape("f.yaml: k[1]: must be a non-empty string")):
        require_string_list(["a", "  "], "f.yaml", "k")
    with pytest.raises(PackDataError, match=re.escape("f.yaml: k: must not be empty")):
        require_string_list([], "f.yaml", "k")
    assert require_string_list([], "f.yaml", "k", non_empty=False) == []


def test_require_mapping_and_char() -> None:
    with pytest.raises(PackDataError, match=re.escape("f.yaml: m: must be a mapping, got list")):
        require_mapping([], "f.yaml", "m")
    with pytest.raises(PackDataError, match=re.escape("f.yaml: m: must not be empty")):
        require_mapping({}, "f.yaml", "m")
    assert require_char("x", "f.yaml", "c") == "x"
    with pytest.raises(PackDataError, match=re.escape("f.yaml: c: must be a single character")):
        require_char("xy", "f.yaml", "c")
