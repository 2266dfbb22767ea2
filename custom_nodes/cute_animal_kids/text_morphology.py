"""English morphology for the text gate: a word matches a lexicon word when their Snowball stems
agree, so "nakedness", "stabbings" and "bloodied" need no entry of their own.

Only single-word terms of at least four letters take part (short stems such as "gin" or "tit"
collide with innocent words); the stems of prompt words are cached, so a prompt costs one
dictionary lookup a word once warm.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

import Stemmer as _snowball

_WORD = re.compile(r"[a-z]{4,}")
_CACHE_LIMIT = 50_000
_MIN_TERM = 4


class Stemmer:
    """Stem index of the lexicon's single English words: stem -> rule index."""

    def __init__(self, terms: Iterable[tuple[str, int]]) -> None:
        self._stemmer = _snowball.Stemmer("english")
        self._lock = threading.Lock()
        self._cache: dict[str, str] = {}
        self._index: dict[str, int] = {}
        for term, rule in terms:
            word = term.lower()
            if word.isalpha() and len(word) >= _MIN_TERM:
                self._index.setdefault(word, rule)
                self._index.setdefault(self.stem(word), rule)
        self._rules: dict[str, int] = {}
        """Prompt word -> its rule, or -1: one lookup a word once warm."""

    def stem(self, word: str) -> str:
        stem = self._cache.get(word)
        if stem is None:
            stem = self._stemmer.stemWord(word)
            with self._lock:
                if len(self._cache) < _CACHE_LIMIT:
                    self._cache[word] = stem
        return stem

    def _rule(self, word: str) -> int:
        rule = self._rules.get(word)
        if rule is not None:
            return rule
        stem = self.stem(word)
        # A second pass strips a derivational suffix the first left ("nakedness" -> "naked" ->
        # "nake", the stem of "naked").
        rule = self._index.get(stem)
        if rule is None:
            rule = self._index.get(self.stem(stem), -1)
        with self._lock:
            if len(self._rules) < _CACHE_LIMIT:
                self._rules[word] = rule
        return rule

    def hits(self, text: str) -> list[tuple[int, int, int]]:
        """``(rule, start, end)`` for every word of ``text`` whose stem is a lexicon stem."""
        rules = self._rules
        for word in _WORD.findall(text):
            rule = rules.get(word)
            if rule is None:
                rule = self._rule(word)
            if rule >= 0:
                break
        else:
            return []  # the usual case: no word hits, and no match objects were made
        found = []
        for match in _WORD.finditer(text):
            rule = self._rule(match.group())
            if rule >= 0:
                found.append((rule, match.start(), match.end()))
        return found
