"""Kids text safety: obfuscated unsafe prompts are caught in the right category, innocent look-alikes
pass, and reports never repeat the offending words."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from cute_animal_kids import prompt_composer, text_safety
from cute_animal_kids.text_safety import REJECTION_MARKER, UnsafePromptError, check_text

UNSAFE = [
    # (text, expected most severe category)
    ("gore", "violence_gore"),
    ("g o r e", "violence_gore"),
    ("ｇｏｒｅ", "violence_gore"),
    ("gоre", "violence_gore"),                         # Cyrillic о
    ("go\u200bre", "violence_gore"),                   # zero-width space inside the word
    ("goooore", "violence_gore"),                      # repeated letters
    ("b.l.o.o.d", "violence_gore"),
    ("bIood everywhere", "violence_gore"),             # capital I for l
    ("a bunny covered in BLOOD", "violence_gore"),
    ("a g o r e bunny", "violence_gore"),              # run right after the word "a"
    ("k!ll the bunny", "violence_gore"),
    ("a killer bunny", "violence_gore"),
    ("血 腥", "violence_gore"),
    ("血.腥的场面", "violence_gore"),
    ("小熊在流血", "violence_gore"),
    ("n@ked", "sexual"),
    ("s3xy bunny", "sexual"),
    ("$exy", "sexual"),
    ("a nude cat", "sexual"),
    ("s-e-x", "sexual"),
    ("n a k e d", "sexual"),
    ("nαked", "sexual"),                               # Greek alpha
    ("色情图片", "sexual"),
    ("裸 体", "sexual"),
    ("a bunny with a gun", "weapons"),
    ("guns and bullets", "weapons"),
    ("槍", "weapons"),                                  # traditional of 枪
    ("一只拿着枪的熊", "weapons"),
    ("一只拿着刀的熊", "weapons"),
    ("一隻拿著刀的熊", "weapons"),
    ("一只拿着手槍的熊", "weapons"),
    ("炸 弹", "weapons"),
    ("a knife", "weapons"),
    ("b0mb", "weapons"),
    ("a bear drinking beer", "drugs_alcohol_tobacco"),
    ("a fox smoking a cigarette", "drugs_alcohol_tobacco"),
    ("cocktail party", "drugs_alcohol_tobacco"),
    ("鸡尾酒", "drugs_alcohol_tobacco"),
    ("喝醉的猫", "drugs_alcohol_tobacco"),
    ("抽烟的狗", "drugs_alcohol_tobacco"),
    ("cocaine", "drugs_alcohol_tobacco"),
    ("a scary zombie bunny", "horror"),
    ("creepy haunted house", "horror"),
    ("恐怖的鬼屋", "horror"),
    ("僵尸兔子", "horror"),
    ("a bunny who wants to kill myself", "self_harm"),
    ("suicide", "self_harm"),
    ("小熊想自杀", "self_harm"),
    ("割 腕", "self_harm"),
    ("nazi bunny", "hate_extremism"),
    ("a swastika flag", "hate_extremism"),
    ("纳粹小熊", "hate_extremism"),
    ("三K党", "hate_extremism"),
    ("ＫＫＫ", "hate_extremism"),
]

SAFE = [
    "a bunny with a red scarf",
    "一只戴帽子的小熊",
    "grass",
    "a cockatoo on a branch",
    "a sheep from Scunthorpe",
    "a naked mole rat in a tiny sweater",
    "a bunny eating cake with a knife and fork",
    "小熊用剪刀剪纸",
    "a naked mole-rat",
    "a puppy eating a hot dog",
    "a bat hanging upside down",
    "a bear with a bow and arrow",
    "a panda eating bamboo shoots",
    "a panda eating a bamboo shoot",
    "the spitting image of his mum",
    "a killer whale jumping",
    "killer whales",
    "a shooting star",
    "a bath bomb",
    "a blue tit",
    "blue-footed booby",
    "a horny toad",
    "a vampire bat",
    "a Tasmanian devil",
    "a blood orange",
    "cold-blooded lizard",
    "a pussy willow",
    "a heroine fox",
    "heroines",
    "a kitten eating fruit cocktail",
    "root beer float",
    "Bob the bunny",
    "skill",
    "a skilled bunny",
    "a bunny with a grape",
    "its example",
    "an essex sheep",
    "a drugstore cat",
    "a swordfish",
    "ginger cat",
    "a bloodhound puppy",
    "a bullet train",
    "a butter knife and jam",
    "pink粉色兔子",
    "小鸡",
    "一群小鸡",
    "鸭子",
    "射箭",
    "杀价",
    "熊猫",
    "打扫房间",
    "水枪",
    "玩具水枪",
    "枪乌贼",
    "混血猫",
    "冷血动物",
    "酒窝",
    "有酒窝的小熊",
    "一只小鸡巴巴地看着妈妈",
    "一点也不可怕的小鬼",
    "小熊 猫咪 兔子",
    "a b c song",
    "x o x o",
    "a cat, a dog and a bird",
    "ABC 123",
]


@pytest.mark.parametrize(("text", "category"), UNSAFE)
def test_unsafe_is_caught_in_its_category(text: str, category: str) -> None:
    decision = check_text(text)
    assert not decision.safe
    assert decision.category == category
    assert category in decision.categories
    assert decision.matched_rule_count >= 1


@pytest.mark.parametrize("text", SAFE)
def test_innocent_look_alikes_pass(text: str) -> None:
    decision = check_text(text)
    assert decision.safe, decision.to_json()
    assert decision.category is None
    assert decision.categories == ()
    assert decision.matched_rule_count == 0
    assert decision.redacted == text


def test_allowed_phrase_does_not_hide_another_hit() -> None:
    assert check_text("a naked mole rat").safe
    decision = check_text("a naked mole rat and a naked bear")
    assert decision.category == "sexual"
    assert decision.redacted == "a naked mole rat and a [sexual] bear"


def test_most_severe_category_first() -> None:
    decision = check_text("a bunny with a gun drinking beer, naked")
    assert decision.category == "sexual"
    assert decision.categories == ("sexual", "weapons", "drugs_alcohol_tobacco")
    assert decision.matched_rule_count == 3


def test_categories_follow_yaml_order() -> None:
    checker = text_safety.get_checker()
    assert checker.categories[0] == "sexual"
    assert set(checker.categories) >= {
        "sexual", "violence_gore", "horror", "weapons", "drugs_alcohol_tobacco", "self_harm",
        "hate_extremism",
    }


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("a bunny with a gun!", "a bunny with a [weapons]!"),
        ("a g o r e bunny", "a [violence_gore] bunny"),
        ("go\u200bre here", "[violence_gore] here"),
        ("一只拿着枪的熊", "一只拿着[weapons]的熊"),
        ("血 腥的场面", "[violence_gore]的场面"),
        ("ｇｏｒｅ", "[violence_gore]"),
    ],
)
def test_redaction_replaces_the_original_characters(text: str, redacted: str) -> None:
    assert check_text(text).redacted == redacted


@pytest.mark.parametrize("text", ["a bunny holding a gun", "s3xy bunny", "一只拿着枪的熊", "g o r e"])
def test_report_never_contains_the_offending_words(text: str) -> None:
    report = check_text(text).to_json()
    parsed = json.loads(report)
    assert parsed["safe"] is False
    assert set(parsed) == {"safe", "category", "categories", "matched_rule_count", "redacted", "empty"}
    for word in ("gun", "s3xy", "枪", "g o r e"):
        assert word not in report


def test_safe_report() -> None:
    parsed = json.loads(check_text("一只戴帽子的小熊").to_json())
    assert parsed == {"safe": True, "category": None, "categories": [], "matched_rule_count": 0, "empty": False,
                      "redacted": "一只戴帽子的小熊"}


def test_decision_is_frozen() -> None:
    decision = check_text("a bunny")
    with pytest.raises(AttributeError):
        decision.safe = False  # type: ignore[misc]


def test_unsafe_prompt_error_message_names_category_not_words() -> None:
    decision = check_text("a bunny with a gun")
    error = UnsafePromptError(decision)
    assert str(error) == f"{REJECTION_MARKER} (category: weapons)"
    assert str(error).startswith("rejected by Kids Text Safety")
    assert "gun" not in str(error)
    assert type(error).__name__ == "UnsafePromptError"
    assert error.category == "weapons"
    assert not isinstance(error, ValueError)  # a decision, not a bad argument


def test_offending_words_only_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="cute_animal_kids.text_safety"):
        check_text("a bunny with a machete")
    assert "weapons" in caplog.text
    assert "machete" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="cute_animal_kids.text_safety"):
        check_text("a bunny with a machete")
    assert "machete" in caplog.text


@pytest.mark.parametrize("style", prompt_composer.style_names())
@pytest.mark.parametrize("description", ["a bunny with a red scarf", "一只戴帽子的小熊"])
def test_composed_positive_prompts_pass(style: str, description: str) -> None:
    """The style templates themselves must not trip the checker (the positive is wired into it)."""
    positive = prompt_composer.compose(description, style).positive
    assert check_text(positive).safe, check_text(positive).to_json()


def test_composed_negative_prompt_would_be_rejected() -> None:
    """Documents why only the positive prompt goes through Kids Text Safety."""
    assert not check_text(prompt_composer.compose("a bunny", "watercolor").negative).safe


def test_rejects_non_text() -> None:
    with pytest.raises(TypeError):
        check_text(None)  # type: ignore[arg-type]


def test_pure_modules_do_not_import_comfyui() -> None:
    custom_nodes = Path(text_safety.__file__).resolve().parents[1]
    code = (
        "import sys; import cute_animal_kids.text_safety, cute_animal_kids.prompt_composer; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'comfy_api', 'torch')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=custom_nodes)
