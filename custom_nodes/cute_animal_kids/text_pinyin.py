"""Pinyin readings of Chinese lexicon terms, so "zisha", "zi sha" or "ZiSha" read 自杀.

Only terms of two or more syllables get a reading (one syllable such as "qiang" or "xue" is an
English-looking fragment far too often), tone-less, with "ü" written both "v" and "u". Readings
shorter than ``_MIN_LETTERS`` or listed in the data's ``pinyin.ignore`` (they collide with English
words, e.g. "emo" for 恶魔) are skipped, and so is a two-syllable reading that a more common everyday
word shares, many times as often (:func:`common_homophones`: "xiao qi" is 小气 "stingy" long before 笑气 "laughing gas",
"yi shu" 艺术 "art" before 遗书).
"""

from __future__ import annotations

import importlib.util
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from pypinyin import Style, lazy_pinyin, pinyin
from pypinyin.pinyin_dict import pinyin_dict

_MIN_LETTERS = 4
_JIEBA_DICTIONARY = Path(importlib.util.find_spec("jieba").submodule_search_locations[0]) / "dict.txt"
"""jieba's word list with corpus counts, read as a file: importing jieba itself is left to strict mode."""


def pinyin_keys(term: str, ignore: Iterable[str] = ()) -> list[str]:
    """The space-separated readings of a folded Chinese term (empty for one-syllable terms)."""
    if not all("\u4e00" <= ch <= "\u9fff" for ch in term) or len(term) < 2:
        return []
    syllables = lazy_pinyin(term, style=Style.NORMAL, v_to_u=False)
    keys = []
    for variant in (" ".join(syllables), " ".join(s.replace("v", "u") for s in syllables)):
        joined = variant.replace(" ", "")
        if len(joined) >= _MIN_LETTERS and joined not in ignore and variant not in keys:
            keys.append(variant)
    return keys


def _char_reading(ch: str, cache: dict[str, str]) -> str:
    """A character's first (most common) reading, tone-less, "ü" as "u"."""
    reading = cache.get(ch)
    if reading is None:
        marked = pinyin_dict.get(ord(ch), "").split(",")[0]
        reading = cache[ch] = "".join(c for c in unicodedata.normalize("NFD", marked) if not unicodedata.combining(c))
    return reading


def common_homophones(terms: Iterable[str], ratio: float) -> frozenset[str]:
    """Joined readings of two-character ``terms`` that a non-lexicon word ``ratio`` times as frequent has.

    Such a reading in a prompt is far more likely the everyday word, so matching it refuses
    innocent pinyin ("xiao zhu xiao qi lai": the piglet laughs). Rivals and counts come from
    jieba's dictionary (each character read with its most common reading); both spellings of "ü"
    ("v" and "u") are returned. A rival only a few times as common is kept apart ("dama": 大妈
    "auntie" is six times as common as 大麻, yet "抽dama" is cannabis).
    """
    lexicon = set(terms)
    readings: dict[str, set[str]] = {}  # reading -> the lexicon terms that have it (傻逼, 煞笔, 沙比)
    for term in lexicon:
        if len(term) == 2:
            for key in pinyin_keys(term):
                readings.setdefault(key.replace(" ", "").replace("v", "u"), set()).add(term)
    counts: dict[str, int] = {}
    rivals: dict[str, int] = {}  # reading -> count of its most frequent non-lexicon word
    cache: dict[str, str] = {}
    with _JIEBA_DICTIONARY.open(encoding="utf-8") as lines:
        for line in lines:
            word, _, rest = line.partition(" ")
            if len(word) != 2:
                continue
            count = int(rest.split(" ", 1)[0])
            if word in lexicon:
                counts[word] = count
            elif (reading := _char_reading(word[0], cache) + _char_reading(word[1], cache)) in readings:
                rivals[reading] = max(rivals.get(reading, 0), count)
    # Against the most frequent lexicon term of that reading: the answer must not depend on which of
    # them a set happens to yield first (it did, per interpreter run, before).
    common = {reading for reading, count in rivals.items()
              if count > ratio * max(counts.get(term, 0) for term in readings[reading])}
    return frozenset(key.replace(" ", "") for term in lexicon if len(term) == 2 for key in pinyin_keys(term)
                     if key.replace(" ", "").replace("v", "u") in common)


_TONE_MARKS = {"\u0304": 1, "\u0301": 2, "\u030c": 3, "\u0300": 4}
"""Combining marks of pinyin tones (after NFD): ā á ǎ à."""


def term_tones(term: str) -> tuple[frozenset[int], ...]:
    """Per character of a Chinese term, the tones any of its readings has (5: neutral)."""
    return tuple(frozenset(int(r[-1]) if r[-1].isdigit() else 5 for r in readings)
                 for readings in pinyin(term, style=Style.TONE3, heteronym=True, neutral_tone_with_five=True))


def written_tones(word: str) -> list[int]:
    """The tones written in one Latin word, in order: marks ("zài") or a final digit ("zai4")."""
    tones = [_TONE_MARKS[c] for c in unicodedata.normalize("NFD", word) if c in _TONE_MARKS]
    if not tones and word and word[-1] in "12345":
        tones = [int(word[-1])]
    return tones


def tones_contradict(words: list[str], options: tuple[frozenset[int], ...]) -> bool:
    """Whether tones written in ``words`` (a run that spells a term's reading) rule the term out.

    "xiǎo māo zài shā fā" spells "zaisha" (宰杀 zǎi shā), but its writer marked zài: another word.
    Only tones that can be lined up with the term's syllables count (one word per syllable, or one
    mark per syllable); unmarked pinyin still reads as the term.
    """
    if len(words) == len(options):
        marked = [(tones[0], allowed) for word, allowed in zip(words, options)
                  if len(tones := written_tones(word)) == 1]
    else:
        tones = [tone for word in words for tone in written_tones(word)]
        marked = list(zip(tones, options)) if len(tones) == len(options) else []
    return any(tone not in allowed for tone, allowed in marked)
