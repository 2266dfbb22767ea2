"""Aho-Corasick indexes of the lexicon: which terms can possibly occur in a view, in microseconds.

The tolerant regex of each term (:mod:`.text_normalizer`) stays the judge of a match; these indexes
only rule terms OUT, so the checker runs a handful of small patterns instead of one alternation of
hundreds of terms at every position of every view. Ruling out must never lose a match, so each key
is something every match of its term is certain to contain:

- English (:class:`LatinTermIndex`): every letter of a term may also be written as one of its
  look-alikes and repeated ("bIooood"). Mapping each letter and its look-alikes to one class
  symbol and collapsing repeats turns every match of a term word into the same string, its key
  ("blood" -> "bIod"). Text is cut into words (runs of characters a term word can match) and each
  distinct word is looked up once and cached, so a prompt costs a regex split and a dictionary
  lookup per word. A word with a mask ("k*ll") is tested against each term word's own pattern
  instead (masks stand for any letter), also cached.
- Chinese (:class:`CjkTermIndex`): each character of a term may be repeated ("枪枪"), so two
  neighbouring different characters of a term always appear side by side in a match; the key is
  the first such pair (or one character), found by one automaton pass over the joined view.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping

import ahocorasick

from .text_normalizer import MASKS, TextNormalizer

_CACHE_LIMIT = 50_000
"""Bound on cached words so hostile input with endless distinct words cannot grow memory."""
_SEPARATORS = " -'."
"""Characters of a folded term that become optional separators in its pattern."""


def _automaton(keys: Mapping[str, Iterable[int]]) -> ahocorasick.Automaton | None:
    """An automaton whose value for each key is the sorted tuple of its ids (None if no keys)."""
    if not keys:
        return None
    automaton = ahocorasick.Automaton()
    for key, ids in keys.items():
        automaton.add_word(key, tuple(sorted(set(ids))))
    automaton.make_automaton()
    return automaton


def _collapse(text: str) -> str:
    """``text`` with each run of one repeated character written once ("boob" -> "bob")."""
    out: list[str] = []
    previous = ""
    for ch in text:
        if ch != previous:
            out.append(ch)
            previous = ch
    return "".join(out)


class LatinTermIndex:
    """Index of English terms (given as ``(id, folded term)``) over the words of a Latin view."""

    def __init__(self, normalizer: TextNormalizer, entries: Iterable[tuple[int, str]]) -> None:
        alternatives = normalizer.letter_alternatives
        # Letters that may stand for each other share one class symbol: union-find over every
        # letter and its look-alikes ("1" stands for i and l, "i" for l: i, l, 1, |, ! are one).
        parent: dict[str, str] = {}

        def find(ch: str) -> str:
            while parent.setdefault(ch, ch) != ch:
                ch = parent[ch]
            return ch

        for letter, others in alternatives.items():
            for other in others:
                first, second = sorted((find(letter), find(other)))
                parent[second] = first
        self._classes = str.maketrans({ch: find(ch) for ch in parent if find(ch) != ch})
        word_chars = set("abcdefghijklmnopqrstuvwxyz0123456789" + MASKS)
        word_chars.update(ch for others in alternatives.values() for ch in others)
        self._word = re.compile("[" + "".join(re.escape(ch) for ch in sorted(word_chars)) + "]+")

        keys: dict[str, list[int]] = {}
        self._pieces: list[tuple[int, re.Pattern[str]]] = []
        for entry_id, folded in entries:
            pieces = normalizer.piece_patterns(folded)
            # The most selective piece (longest key) is the one every match is checked for.
            word, pattern = max(pieces, key=lambda piece: len(self._key(piece[0])))
            keys.setdefault(self._key(word), []).append(entry_id)
            self._pieces.append((entry_id, re.compile(pattern)))
        self._automaton = _automaton(keys)
        self._cache: dict[str, tuple[int, ...]] = {}
        self._lock = threading.Lock()

    def _key(self, word: str) -> str:
        return _collapse(word.translate(self._classes))

    def candidates(self, text: str) -> set[int]:
        """Ids of the entries that may match somewhere in ``text`` (a superset of those that do)."""
        found: set[int] = set()
        cache = self._cache
        for word in self._word.findall(text):
            ids = cache.get(word)
            if ids is None:
                ids = self._word_ids(word)
            if ids:
                found.update(ids)
        return found

    def _word_ids(self, word: str) -> tuple[int, ...]:
        if any(mask in word for mask in MASKS):
            ids = tuple(entry_id for entry_id, pattern in self._pieces if pattern.search(word))
        elif self._automaton is None:
            ids = ()
        else:
            ids = tuple(sorted({i for _, found in self._automaton.iter(self._key(word)) for i in found}))
        with self._lock:
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[word] = ids
        return ids


class CjkTermIndex:
    """Index of Chinese terms (given as ``(id, folded term)``) over a joined view."""

    def __init__(self, normalizer: TextNormalizer, entries: Iterable[tuple[int, str]]) -> None:
        alternatives = normalizer.letter_alternatives

        def literal(ch: str) -> bool:
            """Matches only itself in a joined view (no look-alikes; masks never survive joining)."""
            return ch not in alternatives and ch not in _SEPARATORS

        keys: dict[str, list[int]] = {}
        for entry_id, folded in entries:
            chars = folded.replace(" ", "")
            pairs = [chars[i:i + 2] for i in range(len(chars) - 1)
                     if chars[i] != chars[i + 1] and literal(chars[i]) and literal(chars[i + 1])]
            key = pairs[0] if pairs else next(ch for ch in chars if literal(ch))
            keys.setdefault(key, []).append(entry_id)
        self._automaton = _automaton(keys)
        self._firsts = frozenset(key[0] for key in keys)
        """A text with none of these has no key: one C-level set test skips the automaton."""

    def candidates(self, text: str) -> set[int]:
        """Ids of the entries that may match somewhere in ``text`` (a superset of those that do)."""
        found: set[int] = set()
        if self._automaton is not None and not self._firsts.isdisjoint(text):
            for _, ids in self._automaton.iter(text):
                found.update(ids)
        return found
