"""Normalisation: each obfuscation trick folds to the plain form, positions map back, and it is fast."""

from __future__ import annotations

import re
import statistics
import time

import pytest
from cute_animal_kids.text_normalizer import get_normalizer, normalize


@pytest.fixture(scope="module")
def normalizer():
    return get_normalizer()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GORE", "gore"),                           # case
        ("Straße", "strasse"),                      # case fold, not just lower()
        ("ｇｏｒｅ", "gore"),                         # full-width letters (NFKC)
        ("ＡＢＣ１２３", "abc123"),                   # full-width upper case and digits
        ("𝐠𝐨𝐫𝐞", "gore"),                          # mathematical bold letters (NFKC)
        ("gоre", "gore"),                           # Cyrillic о
        ("ѕех", "sex"),                             # Cyrillic ѕ е х
        ("ΒΟΜΒ", "bomb"),                           # Greek capitals
        ("nαked", "naked"),                         # Greek alpha
        ("g\u200bo\u200cr\u200de\u2060", "gore"),  # zero-width space / non-joiners / word joiner
        ("go\u00adre", "gore"),                     # soft hyphen (format character)
        ("\ufeffgore", "gore"),                     # byte order mark
        ("nàkéd", "naked"),                         # accents
        ("n\u0301aked", "naked"),                   # combining mark on its own
        ("kiłł", "kill"),                           # YAML homoglyph extra
        ("槍", "枪"),                               # traditional -> simplified
        ("血腥暴力與槍枝", "血腥暴力与枪枝"),
        ("一只戴帽子的小熊", "一只戴帽子的小熊"),     # simplified stays as is
        ("血 腥", "血 腥"),                         # base keeps separators (joined view drops them)
        ("n@ked s3xy", "n@ked s3xy"),               # leet is left to the term patterns
    ],
)
def test_fold(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_origin_maps_every_character_back(normalizer) -> None:
    text = "Ｇ\u200bо\u00adre 槍!"
    view = normalizer.fold(text)
    assert view.text == "gore 枪!"
    assert [text[i] for i in view.origin] == ["Ｇ", "о", "r", "e", " ", "槍", "!"]


def test_expanding_fold_repeats_the_origin(normalizer) -> None:
    view = normalizer.fold("ßx")
    assert view.text == "ssx"
    assert list(view.origin) == [0, 0, 1]


@pytest.mark.parametrize(
    ("text", "joined"),
    [
        ("g o r e", "gore"),
        ("b.l.o.o.d", "blood"),
        ("s-e-x", "sex"),
        ("g _ o _ r _ e", "gore"),
        ("k * i * l * l", "kill"),
        ("a g o r e bunny", "a gore bunny"),     # a standalone "a" before the run is kept apart
        ("n @ k e d", "n@ked"),                  # symbols kept in one variant...
        ("g!o!r!e", "gore"),                     # ...and treated as separators in another
    ],
)
def test_spaced_runs_are_joined(normalizer, text: str, joined: str) -> None:
    assert joined in [view.text for view in normalizer.views(text).spaced]


@pytest.mark.parametrize(
    "text",
    [
        "its example",                 # "s ex": only runs of SINGLE letters are joined
        "a bunny with a red scarf",
        "an owl in a tree",
        "s ex y",                      # two single letters are not a run
        "a b",
        "plan b",
    ],
)
def test_ordinary_text_is_not_joined(normalizer, text: str) -> None:
    assert normalizer.views(text).spaced == ()


def test_joined_view_drops_separators_for_chinese(normalizer) -> None:
    views = normalizer.views("血 腥，小熊")
    assert views.joined is not None
    assert views.joined.text == "血腥小熊"
    assert normalizer.views("血.腥").joined.text == "血腥"
    assert normalizer.views("a plain ascii prompt").joined is None


def test_spaced_view_origin_points_at_the_letters(normalizer) -> None:
    text = "a g o r e!"
    view = next(v for v in normalizer.views(text).spaced if "gore" in v.text)
    start = view.text.index("gore")
    assert [text[view.origin[i]] for i in range(start, start + 4)] == list("gore")


@pytest.mark.parametrize(
    ("term", "matches", "misses"),
    [
        ("gore", ["gore", "goooore", "g0re", "gor3", "gores", "gored"], ["gorge", "ogre", "gorgeous"]),
        ("naked", ["naked", "n@ked", "n4k3d", "naaaked"], ["snaked", "nakedness"]),
        ("sex", ["sex", "s3x", "$ex", "5ex", "sexy", "sexxxy"], ["sussex", "essex", "sextant"]),
        ("kill", ["kill", "k1ll", "k!ll", "ki11", "killer", "killing"], ["skill", "kiln"]),
        ("boob", ["boob", "b00b", "boobs"], ["bob", "bobs"]),
        ("blow job", ["blow job", "blowjob", "blow-job", "blow_job"], ["blow"]),
    ],
)
def test_latin_pattern(normalizer, term: str, matches: list[str], misses: list[str]) -> None:
    pattern = re.compile(normalizer.latin_pattern(normalizer.fold_term(term)))
    for text in matches:
        assert pattern.search(text), f"{term!r} should match {text!r}"
    for text in misses:
        assert not pattern.search(text), f"{term!r} should not match {text!r}"


def test_cjk_pattern_guards_latin_edges(normalizer) -> None:
    pattern = re.compile(normalizer.cjk_pattern(normalizer.fold_term("k粉")))
    assert pattern.search("k粉")
    assert pattern.search("买k粉")
    assert not pattern.search("pink粉色")


def test_latin_pattern_rejects_non_latin(normalizer) -> None:
    with pytest.raises(ValueError):
        normalizer.latin_pattern("血腥")


def test_normalisation_is_fast(normalizer) -> None:
    """Budget ~0.1 ms a prompt (measured ~0.001-0.01 ms); the bound here is loose for slow CI."""
    prompts = [
        "a bunny with a red scarf sitting in a meadow of flowers, picture book style",
        "一只戴帽子的小熊在森林里吃蜂蜜，旁边有很多蝴蝶和花朵",
        "ａ ｇｏｒｅ bunny with gоre and 血 腥 and g o r e and n@ked 槍",
    ]
    for prompt in prompts:
        normalizer.views(prompt)  # warm the per-character cache
    timings = []
    for _ in range(200):
        for prompt in prompts:
            start = time.perf_counter()
            normalizer.views(prompt)
            timings.append(time.perf_counter() - start)
    assert statistics.median(timings) < 0.5e-3
