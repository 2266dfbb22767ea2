"""Each matching mechanism of the text gate, with unsafe AND innocent cases in both languages.

The texts here are written for the mechanisms, not taken from the evaluation set.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cute_animal_kids import text_safety
from cute_animal_kids.text_pinyin import pinyin_keys
from cute_animal_kids.text_safety import EMPTY, UNKNOWN_WORD, check_text


def _refused(text: str, category: str | None = None, *, strict: bool = False) -> None:
    decision = check_text(text, strict=strict)
    assert not decision.safe, text
    if category is not None:
        assert category in decision.categories, decision.to_json()


def _passes(text: str, *, strict: bool = False) -> None:
    decision = check_text(text, strict=strict)
    assert decision.safe, decision.to_json()


@pytest.mark.parametrize(("text", "category"), [
    ("a kitten in total nakedness", "sexual"),
    ("three stabbings in the forest", "violence_gore"),
    ("the murderous wolf", "violence_gore"),
    ("a bloodied paw", "violence_gore"),
    ("a frog with knives", "weapons"),
])
def test_stemming_catches_inflections(text, category):
    _refused(text, category)


@pytest.mark.parametrize("text", ["a skilled bunny", "a heroine fox", "a sheep from Scunthorpe",
                                  "a duck weeding the garden", "bamboo shoots for the panda"])
def test_stemming_leaves_innocent_words(text):
    _passes(text)


@pytest.mark.parametrize(("text", "category"), [
    ("k*ll the fox", "violence_gore"), ("a s#xy cat", "sexual"), ("a g_n in the grass", "weapons"),
    ("b*mb", "weapons"), ("a c*caine party", "drugs_alcohol_tobacco"),
])
def test_masked_letters_are_wildcards(text, category):
    _refused(text, category)


@pytest.mark.parametrize("text", ["**cute** bunny", "a 5*5 grid of carrots", "my_cat_is_happy",
                                  "***", "a#b"])
def test_masks_alone_match_nothing(text):
    _passes(text)


@pytest.mark.parametrize(("text", "category"), [
    ("xiao xiong zisha", "self_harm"), ("yi zhi xiaoxiong zai xi du", "drugs_alcohol_tobacco"),
    ("小熊想 zi sha", "self_harm"), ("a bunny in a xue xing forest", "violence_gore"),
    ("yi zhi luoti de mao", "sexual"),
])
def test_pinyin_of_chinese_terms(text, category):
    _refused(text, category)


@pytest.mark.parametrize("text", ["xiao xiong chi pingguo", "ni hao xiong mao", "yi zhi xiao mao",
                                  "a panda named Xue", "小熊 hen kaixin"])
def test_innocent_pinyin_passes(text):
    _passes(text)


def test_pinyin_keys_skip_single_syllables_and_ignored_readings():
    assert pinyin_keys("枪") == []
    assert pinyin_keys("自杀") == ["zi sha"]
    assert pinyin_keys("女鬼") == ["nv gui", "nu gui"]
    assert pinyin_keys("恶魔", ignore={"emo"}) == []


@pytest.mark.parametrize(("text", "category"), [
    ("一只小熊拿着木仓", "weapons"), ("弓虽女干", "sexual"), ("小狗月兑光了", "sexual"),
    ("森林里有尸亻本", "violence_gore"),
])
def test_split_characters_are_recomposed(text, category):
    _refused(text, category)


@pytest.mark.parametrize("text", ["木头做的小房子", "女孩子在唱歌", "弓和箭", "火车开过来了"])
def test_components_in_ordinary_text_pass(text):
    _passes(text)


@pytest.mark.parametrize(("text", "category"), [
    ("🐰🔫", "weapons"), ("a fox with 🔪", "weapons"), ("🐻🍺", "drugs_alcohol_tobacco"),
    ("🦊🚬", "drugs_alcohol_tobacco"), ("🐶🩸", "violence_gore"), ("🍆🍑", "sexual"),
    ("小熊🔫", "weapons"),
])
def test_emoji_are_read_as_words(text, category):
    _refused(text, category)


@pytest.mark.parametrize("text", ["🐰🌸🍰", "🐼🎋", "🍑", "🍆 soup", "🐶🎾⚽", "小熊🎈🎂", "👻🎃 costume party"])
def test_innocent_emoji_pass(text):
    _passes(text)


@pytest.mark.parametrize(("text", "category"), [
    ("the little bunny stabs itself", "self_harm"),
    ("a puppy that wants to hang herself", "self_harm"),
    ("the wolf beats the sheep to death", "violence_gore"),
    ("a cat chews the mouse until it stops moving", "violence_gore"),
    ("the giant chops the piglet into pieces", "violence_gore"),
    ("everyone laughing at the fat hippo", "bullying"),
    ("they made him eat dirt", "bullying"),
    ("小熊用刀割自己", "self_harm"),
    ("大狗一直咬小猫直到它不动了", "violence_gore"),
    ("狐狸把小鸡切成一块一块的", "violence_gore"),
    ("小猫从楼顶跳下去", "self_harm"),
    ("大家逼小狗吃土", "bullying"),
])
def test_context_rules_catch_scenes(text, category):
    _refused(text, category)


@pytest.mark.parametrize("text", [
    "the kitten washes itself", "a puppy that wants to see herself in the mirror",
    "mum cuts the cake into pieces", "the bear chops wood", "the dog bites a bone",
    "everyone laughing at the clown's funny trick", "they made a cake together",
    "妈妈把苹果切成一块一块的", "小猫自己洗脸", "小熊打开了门", "小猫从楼梯上跳下来",
])
def test_context_rules_leave_innocent_scenes(text):
    _passes(text)


@pytest.mark.parametrize(("text", "category"), [
    ("a bunny with a g.un", "weapons"), ("a k i l l e r fox", "violence_gore"),
    ("n-a-k-e-d", "sexual"), ("血 腥 的 森 林", "violence_gore"), ("裸.体", "sexual"),
])
def test_spacing_inside_words(text, category):
    _refused(text, category)


@pytest.mark.parametrize("text", ["a b c song", "its example", "小熊 猫咪 兔子", "x o x o"])
def test_ordinary_spacing_passes(text):
    _passes(text)


@pytest.mark.parametrize("text", ["a penguin shooting hoops", "a sloth trying to kill time",
                                  "a bunny on the bullet train", "一个吊床上的小猫", "小猪看烟花",
                                  "小熊坐子弹头列车", "水枪大战", "医生给小狗消毒"])
def test_innocent_look_alikes_are_data(text):
    _passes(text)


def test_bullying_category_in_both_languages():
    _refused("a duck being bullied by the pond", "bullying")
    _refused("一群小动物在欺负一只小猪", "bullying")
    _passes("小动物们一起分享午餐")


@pytest.mark.parametrize("text", ["a cute bunny with a red scarf", "A happy panda eating cake in the garden",
                                  "一只戴帽子的小熊", "小猫在花园里玩"])
def test_strict_mode_accepts_kid_vocabulary(text):
    _passes(text, strict=True)


@pytest.mark.parametrize("text", ["a bunny with a laser", "a bunny flying a spaceship", "一只小熊在开拖拉机",
                                  "a fox with a 🔫"])
def test_strict_mode_refuses_other_words(text):
    decision = check_text(text, strict=True)
    assert not decision.safe
    assert decision.category in (UNKNOWN_WORD, "weapons")
    assert check_text("a bunny flying a spaceship", strict=True).category == UNKNOWN_WORD


def test_strict_mode_names_nothing_unsafe_and_default_is_off():
    decision = check_text("a bunny with a laser", strict=True)
    assert decision.categories == (UNKNOWN_WORD,)
    assert "laser" not in decision.to_json()
    assert check_text("a bunny with a laser").safe


def test_strict_mode_import_prints_nothing_and_jieba_loads_lazily():
    custom_nodes = Path(text_safety.__file__).resolve().parents[1]
    code = ("import sys; from cute_animal_kids.text_safety import check_text; "
            "check_text('a bunny'); assert 'jieba' not in sys.modules; "
            "print(check_text('一只小熊', strict=True).safe)")
    done = subprocess.run([sys.executable, "-c", code], cwd=custom_nodes, capture_output=True, text=True,
                          check=True)
    assert done.stdout == "True\n"


@pytest.mark.parametrize("text", ["\ud800", "gu\ud800n", "a bunny \udfff"])
def test_lone_surrogates_never_raise(text):
    decision = check_text(text)
    json.dumps(decision.to_json()).encode("utf-8")
    decision.redacted.encode("utf-8")


@pytest.mark.parametrize("text", ["g\u202eun", "gu\u2066n", "gu\u2028n", "gu\u2029n", "g\u200bu\u200dn"])
def test_invisible_and_bidi_characters_are_stripped(text):
    _refused(text, "weapons")


@pytest.mark.parametrize("text", ["", "   ", "\u200b\u200b", "\u202e\u2066", "\ud800", "\u2028"])
def test_empty_after_normalisation_is_a_clear_decision(text):
    decision = check_text(text)
    assert not decision.safe and decision.empty and decision.category == EMPTY
    assert json.loads(decision.to_json())["empty"] is True


def test_emoji_only_text_is_not_empty():
    assert not check_text("🐰").empty


@pytest.mark.parametrize(("text", "category"), [
    ("a bunny with a gu n", "weapons"), ("k ill the fox", "violence_gore"), ("a se.x cat", "sexual"),
    ("dr-ugs for the bear", "drugs_alcohol_tobacco"),
])
def test_split_short_words_are_joined(text, category):
    _refused(text, category)


@pytest.mark.parametrize("text", ["a cat in the us-uk race", "a big b day", "mr. fox", "a t-shirt", "vitamin c drops"])
def test_short_words_next_to_each_other_pass(text):
    _passes(text)
