"""Obfuscated words read back as the words they hide, so scene rules see them.

A lexicon term's own pattern already reads leet and masks ("k1ll", "n_ked"). A context rule is a
sequence of class words ("cuts h1s wr1sts", "d#ad deer with its g_ts out"); making each of its
hundreds of words tolerant would slow every prompt. Instead a word of the prompt that mixes letters
with digits, leet symbols or masks is replaced, in a copy of the view, by the one vocabulary word
(bare or inflected) it can stand for. Replacements have the same length, so the copy keeps the
view's position map. Only prompts with such words pay; a word that reads as two vocabulary words,
or as none, stays as written.
"""

from __future__ import annotations

import itertools
import math
import re
import string
import threading
from collections.abc import Callable, Mapping

from .text_normalizer import MASKS, View

_MAX_READINGS = 2_000
"""Words with more possible readings than this (many masks) are left alone: nothing to tell apart."""
_CACHE_LIMIT = 20_000


class LeetReader:
    """Reads words like "h1s", "wr1sts", "d#ad", "g_ts" as vocabulary words."""

    def __init__(self, letter_alternatives: Mapping[str, str], is_word: Callable[[str], bool]) -> None:
        """``letter_alternatives``: letter -> the symbols that may stand for it (the normaliser's
        leet map); ``is_word``: whether a candidate reading is a vocabulary word (or its inflection).
        """
        readings: dict[str, set[str]] = {}
        for letter, symbols in letter_alternatives.items():
            for symbol in symbols:
                if not symbol.isalpha():
                    readings.setdefault(symbol, set()).add(letter)
        for mask in MASKS:
            readings[mask] = set(string.ascii_lowercase)
        self._readings = {symbol: "".join(sorted(letters)) for symbol, letters in readings.items()}
        symbols = re.escape("".join(sorted(self._readings)))
        chars = f"[a-z0-9{symbols}]"
        # A token of letters and symbols with at least one letter and one symbol, 3+ characters.
        self._token = re.compile(
            rf"(?<!{chars})(?={chars}*[a-z])(?={chars}*[{symbols}]){chars}{{3,}}(?!{chars})"
        )
        self._symbols = frozenset(self._readings)
        self._is_word = is_word
        self._cache: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def read(self, view: View) -> View | None:
        """``view`` with each obfuscated word replaced by its one reading, or None if none changed."""
        text = view.text
        if self._symbols.isdisjoint(text):
            return None
        pieces: list[str] = []
        position = 0
        for match in self._token.finditer(text):
            word = match.group()
            reading = self._cache[word] if word in self._cache else self._reading(word)
            if reading:
                pieces += [text[position:match.start()], reading]
                position = match.end()
        if not pieces:
            return None
        pieces.append(text[position:])
        return View("".join(pieces), make_origin=lambda: view.origin)

    def _reading(self, word: str) -> str | None:
        """The one vocabulary word ``word`` can stand for, or None (none, or more than one)."""
        options = [self._readings.get(ch, ch) if not ch.isalpha() else ch for ch in word]
        found: str | None = None
        if math.prod(map(len, options)) <= _MAX_READINGS:
            for letters in itertools.product(*options):
                candidate = "".join(letters)
                if candidate.isalpha() and self._is_word(candidate):
                    if found is not None and found != candidate:
                        found = None
                        break
                    found = candidate
        with self._lock:
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[word] = found
        return found
