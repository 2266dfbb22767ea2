"""The text-gate evaluation set stays well-formed: fields, labels, coverage, balanced split, no duplicates.

It checks the data only (not the gate), so a hand edit that breaks the set fails here first.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

EVAL_SET = Path(__file__).resolve().parents[1] / "data" / "text_gate_eval.yaml"
DEV_EXTRA = EVAL_SET.with_name("text_gate_eval_dev_extra.yaml")
CATEGORIES = {"sexual", "self_harm", "violence_gore", "weapons", "drugs_alcohol_tobacco",
              "horror", "hate_extremism", "bullying"}
UNSAFE_FAMILIES = {"plain", "morphology", "scene", "slang", "pinyin", "split_char", "masked",
                   "spaced", "emoji", "frame", "mixed_lang"}
LANGS = {"en", "zh", "zh-hant", "mixed", "emoji"}
FIELDS = {"text", "label", "lang", "family", "category", "split"}


@pytest.fixture(scope="module")
def entries() -> list[dict]:
    """The parsed set."""
    return yaml.safe_load(EVAL_SET.read_text(encoding="utf-8"))


def test_every_entry_has_the_documented_fields(entries: list[dict]) -> None:
    """Each entry has exactly the header's fields with allowed values."""
    for e in entries:
        assert set(e) == FIELDS, e
        assert isinstance(e["text"], str) and e["text"].strip(), e
        assert e["label"] in {"safe", "unsafe"}, e
        assert e["lang"] in LANGS, e
        assert e["split"] in {"dev", "test"}, e
        if e["label"] == "unsafe":
            assert e["category"] in CATEGORIES, e
        else:
            assert e["category"] is None, e


def test_sizes_and_coverage(entries: list[dict]) -> None:
    """At least 450 of each label, every category and every evasion family present in both halves."""
    labels = Counter(e["label"] for e in entries)
    assert labels["unsafe"] >= 450 and labels["safe"] >= 450, labels
    unsafe = [e for e in entries if e["label"] == "unsafe"]
    for split in ("dev", "test"):
        half = [e for e in unsafe if e["split"] == split]
        assert {e["category"] for e in half} == CATEGORIES, split
        assert UNSAFE_FAMILIES <= {e["family"] for e in half}, split
    safe = [e for e in entries if e["label"] == "safe"]
    assert 2 * sum(e["family"] == "lookalike" for e in safe) >= len(safe)


def test_split_is_balanced_per_label_and_family(entries: list[dict]) -> None:
    """Dev and test differ by at most one prompt in every (label, family) stratum."""
    count = Counter((e["label"], e["family"], e["split"]) for e in entries)
    for label, family in {(e["label"], e["family"]) for e in entries}:
        assert abs(count[label, family, "dev"] - count[label, family, "test"]) <= 1, (label, family)


def test_no_duplicate_texts(entries: list[dict]) -> None:
    """No prompt appears twice (it would count in both halves or twice in one)."""
    dupes = [t for t, n in Counter(e["text"] for e in entries).items() if n > 1]
    assert not dupes, dupes


def test_dev_extras_are_dev_only_and_new(entries: list[dict]) -> None:
    """The variants added after the split are well-formed, all dev, and repeat no prompt of the set."""
    extras = yaml.safe_load(DEV_EXTRA.read_text(encoding="utf-8"))
    test_every_entry_has_the_documented_fields(extras)
    assert {e["split"] for e in extras} == {"dev"}
    texts = [e["text"] for e in extras]
    assert len(set(texts)) == len(texts)
    assert not set(texts) & {e["text"] for e in entries}
