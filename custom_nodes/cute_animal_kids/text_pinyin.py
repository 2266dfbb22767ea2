"""Pinyin readings of Chinese lexicon terms, so "zisha", "zi sha" or "ZiSha" read 自杀.

Only terms of two or more syllables get a reading (one syllable such as "qiang" or "xue" is an
English-looking fragment far too often), tone-less, with "ü" written both "v" and "u". Readings
shorter than ``_MIN_LETTERS`` or listed in the data's ``pinyin.ignore`` (they collide with English
words, e.g. "emo" for 恶魔) are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable

from pypinyin import Style, lazy_pinyin

_MIN_LETTERS = 4


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
