"""The Aho-Corasick indexes of the text gate: they only rule terms OUT, never lose a match, and the
checker finds the same hits as one leftmost-first alternation of all terms would."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from cute_animal_kids.text_normalizer import View
from cute_animal_kids.text_safety import get_checker
from cute_animal_kids.text_split_chars import SplitCharacters

EVAL_FILE = Path(__file__).resolve().parents[1] / "data" / "text_gate_eval.yaml"


@pytest.fixture(scope="module")
def checker():
    return get_checker()


def _disguises(term: str) -> list[str]:
    """Ways a prompt writes ``term``: repeats, leet digits, a look-alike I, a mask, upper case."""
    middle = len(term) // 2
    return [
        term,
        "".join(ch * 3 for ch in term),                               # "gggooorrreee"
        term.replace("o", "0").replace("e", "3").replace("a", "@"),   # leet
        term.replace("l", "I"),                                       # look-alike capital I
        term[:middle] + "*" + term[middle + 1:] if len(term) > 3 and term[middle].isalpha() else term,
        term.upper(),
        f"a bunny and {term}s, really",
    ]


def test_no_english_term_is_ruled_out_where_its_pattern_matches(checker) -> None:
    index = checker._indexes["en"]
    checked = 0
    for rule_id, rule in enumerate(checker._rules):
        if rule.language != "en":
            continue
        for text in _disguises(rule.term):
            for view in checker._normalizer.views(text).latin_views:
                if checker._patterns[rule_id].search(view.text):
                    checked += 1
                    assert rule_id in index.candidates(view.text), (rule.term, text)
    assert checked > 1000


def test_no_chinese_term_is_ruled_out_where_its_pattern_matches(checker) -> None:
    index = checker._indexes["zh"]
    checked = 0
    for rule_id, rule in enumerate(checker._rules):
        if rule.language != "zh":
            continue
        for text in (rule.term, "".join(ch * 2 for ch in rule.term), f"小熊{rule.term}了", " ".join(rule.term)):
            joined = checker._normalizer.views(text).joined
            if joined is not None and checker._patterns[rule_id].search(joined.text):
                checked += 1
                assert rule_id in index.candidates(joined.text), (rule.term, text)
    assert checked > 300


def test_an_innocent_prompt_leaves_few_candidates(checker) -> None:
    text = "a fluffy little bear cub in a yellow raincoat jumping into puddles with a duckling friend"
    candidates = checker._indexes["en"].candidates(checker._normalizer.fold(text).text)
    assert len(candidates) < 20 < len(checker._rules) / 10
    zh = checker._indexes["zh"].candidates("一只戴着黄色雨衣的小熊和小鸭子朋友在花园里跳水坑")
    assert len(zh) < 5


def _alternation_hits(checker, text: str, language: str) -> list[tuple[int, int, int]]:
    """Reference: one alternation of all terms (longest first), allow phrases ignored."""
    rules = sorted((i for i, r in enumerate(checker._rules) if r.language == language),
                   key=checker._rank.__getitem__)
    pattern = re.compile("|".join(f"(?P<r{i}>{checker._patterns[i].pattern})" for i in rules))
    return [(int(m.lastgroup[1:]), *m.span()) for m in pattern.finditer(text)]


@pytest.mark.parametrize("language", ["en", "zh"])
def test_scan_finds_what_one_alternation_finds(checker, language: str) -> None:
    texts = [entry["text"] for entry in yaml.safe_load(EVAL_FILE.read_text(encoding="utf-8"))]
    compared = 0
    for text in texts:
        views = checker._normalizer.views(text)
        view = views.base if language == "en" else views.joined
        if view is None:
            continue
        expected = _alternation_hits(checker, view.text, language)
        rules, _ = checker._candidates(view, language)
        # No allow phrases, so every hit counts, exactly as in the reference.
        found = [(h.rule, h.start, h.end) for h in checker._scan(View(view.text, range(len(view.text))), rules,
                                                                  [], language)] if rules else []
        assert found == expected, text
        compared += bool(expected)
    assert compared > 100


def test_split_pairs_are_taken_left_to_right_without_overlap() -> None:
    split = SplitCharacters([], {"extra": {"木仓": "枪", "仓木": "X"}})
    view = split.recompose(View("木仓木", range(3)))
    assert view is not None and view.text == "枪木"
    assert list(view.origin) == [0, 2]
    assert split.recompose(View("小熊", range(2))) is None


def test_view_builds_its_position_map_once_and_only_when_asked() -> None:
    calls = []
    view = View("ab", make_origin=lambda: calls.append(1) or [0, 1])
    assert calls == []
    assert list(view.origin) == [0, 1] and list(view.origin) == [0, 1]
    assert calls == [1]
    with pytest.raises(TypeError):
        View("ab")
