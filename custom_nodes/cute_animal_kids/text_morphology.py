"""English morphology for the text gate: a word matches a lexicon word when their Snowball stems
agree, so "nakedness", "stabbings" and "bloodied" need no entry of their own.

A prompt word that is a strict beginning of a lexicon word ("stone" of "stoned") is its base and
does not count. Only single-word terms of at least four letters take part (short stems such as "gin" or "tit"
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
        self._index: dict[str, list[tuple[str, int]]] = {}
        """Stem -> the lexicon words with that stem and their rules."""
        for term, rule in terms:
            word = term.lower()
            if word.isalpha() and len(word) >= _MIN_TERM:
                for key in {word, self.stem(word)}:
                    self._index.setdefault(key, []).append((word, rule))
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
        rule = self._match(word, self._index.get(stem))
        if rule < 0:
            rule = self._match(word, self._index.get(self.stem(stem)))
        with self._lock:
            if len(self._rules) < _CACHE_LIMIT:
                self._rules[word] = rule
        return rule

    @staticmethod
    def _match(word: str, entries: list[tuple[str, int]] | None) -> int:
        """The rule of the first entry ``word`` may stand for, or -1.

        A word that is a strict beginning of the lexicon word is its base, not an inflection of it:
        "stoned" and "wasted" mean something the stone and the waste bin do not.
        """
        for term, rule in entries or ():
            if not (len(word) < len(term) and term.startswith(word)):
                return rule
        return -1

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
