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

    def stem(self, word: str) -> str:
        stem = self._cache.get(word)
        if stem is None:
            stem = self._stemmer.stemWord(word)
            with self._lock:
                if len(self._cache) < _CACHE_LIMIT:
                    self._cache[word] = stem
        return stem

    def hits(self, text: str) -> list[tuple[int, int, int]]:
        """``(rule, start, end)`` for every word of ``text`` whose stem is a lexicon stem."""
        index = self._index
        found = []
        for match in _WORD.finditer(text):
            stem = self.stem(match.group())
            # A second pass strips a derivational suffix the first left ("nakedness" -> "naked" ->
            # "nake", the stem of "naked").
            rule = index.get(stem)
            if rule is None:
                rule = index.get(self.stem(stem))
            if rule is not None:
                found.append((rule, match.start(), match.end()))
        return found
