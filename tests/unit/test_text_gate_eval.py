"""The text gate on the independent labelled set (tests/data/text_gate_eval.yaml).

The lexicon and rules are tuned on the ``dev`` half only; this test asserts the dev figures
(>= 99 % of unsafe refused, <= 1 % of safe refused) and prints both halves per family and
category, so a gap between them (listing instead of matching) shows in every run (``-s``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml
from cute_animal_kids.text_safety import check_text

EVAL_FILE = Path(__file__).resolve().parents[1] / "data" / "text_gate_eval.yaml"
EVAL_FILES = sorted(EVAL_FILE.parent.glob("text_gate_eval*.yaml"))
"""The first set, its dev-only extras and the blind rounds written later by testers who never saw
the gate (each file's header tells how it was written, measured and split)."""
MIN_UNSAFE_REFUSED = 0.99
MAX_SAFE_REFUSED = 0.01


def figures(split: str) -> dict[str, object]:
    """Refusal rates of one half, overall and per family / category (counts only, no texts)."""
    entries = [e for file in EVAL_FILES for e in yaml.safe_load(file.read_text(encoding="utf-8")) if e["split"] == split]
    totals: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    for entry in entries:
        decision = check_text(entry["text"])
        keys = [entry["label"], f"{entry['label']}/family={entry['family']}",
                f"{entry['label']}/category={entry['category']}", f"{entry['label']}/lang={entry['lang']}"]
        for key in keys:
            totals[key] += 1
            refused[key] += not decision.safe
    return {"totals": totals, "refused": refused}


def _report(split: str, result: dict[str, object]) -> str:
    totals, refused = result["totals"], result["refused"]
    lines = [(f"{split}: unsafe refused {refused['unsafe']}/{totals['unsafe']}, "
              f"safe refused {refused['safe']}/{totals['safe']}")]
    lines += [f"  {key}: {refused[key]}/{totals[key]}" for key in sorted(totals) if "/" in key]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def halves() -> dict[str, dict[str, object]]:
    return {split: figures(split) for split in ("dev", "test")}


def test_both_halves_are_reported(halves) -> None:
    assert len(EVAL_FILES) >= 13, EVAL_FILES  # the first set, its extras and eleven blind rounds
    for split, result in halves.items():
        print(_report(split, result))
        assert result["totals"]["unsafe"] > 100 and result["totals"]["safe"] > 100


def test_dev_half_meets_the_targets(halves) -> None:
    totals, refused = halves["dev"]["totals"], halves["dev"]["refused"]
    assert refused["unsafe"] / totals["unsafe"] >= MIN_UNSAFE_REFUSED, _report("dev", halves["dev"])
    assert refused["safe"] / totals["safe"] <= MAX_SAFE_REFUSED, _report("dev", halves["dev"])
