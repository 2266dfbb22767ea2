"""Strict mode for the youngest audience: every content word must be in a kid-safe vocabulary.

The vocabulary (``strict_vocabulary`` in ``data/text_safety/strict_vocabulary.yaml``) lists
animals, colours, clothes, food, places and everyday actions in both languages, plus function
words. English words match through their Snowball stems; Chinese text is segmented with jieba
(its dictionary is loaded once, lazily, on the first strict check, without printing) and a segment
passes when it is a vocabulary word or splits completely into vocabulary words.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

import Stemmer as _snowball

from .pack_data import require_mapping, require_string_list
from .text_normalizer import NormalizedText, TextNormalizer

_EN_WORD = re.compile(r"[a-z]+")
_CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")
_MAX_WORD = 4
_jieba_lock = threading.Lock()
_jieba: Any = None


def _tokenizer(words: frozenset[str]) -> Any:
    """jieba's tokenizer, initialised once (it takes ~1 s and logs to stderr by default)."""
    global _jieba
    with _jieba_lock:
        if _jieba is None:
            import jieba

            jieba.setLogLevel(logging.WARNING)
            tokenizer = jieba.Tokenizer()
            tokenizer.initialize()
            for word in words:
                tokenizer.add_word(word)
            _jieba = tokenizer
        return _jieba


class StrictVocabulary:
    """The kid-safe vocabulary and the check of one normalised text against it."""

    def __init__(self, data: Mapping[str, Any], normalizer: TextNormalizer) -> None:
        self._stemmer = _snowball.Stemmer("english")
        file = "text_safety/strict_vocabulary.yaml"
        groups = {
            lang: {name: require_string_list(words, file, f"strict_vocabulary.{lang}.{name}", unique=False)
                   for name, words in require_mapping(data.get(lang, {}), file, f"strict_vocabulary.{lang}").items()}
            for lang in ("en", "zh")
        }
        en = [normalizer.fold_term(w) for group in groups["en"].values() for w in group]
        self._en = frozenset(self._stemmer.stemWords([w for phrase in en for w in phrase.split()]))
        self._en_exact = frozenset(w for phrase in en for w in phrase.split())
        self._zh = frozenset(normalizer.fold_term(w) for group in groups["zh"].values() for w in group)

    def _known_zh(self, word: str) -> bool:
        """A vocabulary word, or a run that splits completely into vocabulary words (longest first)."""
        if word in self._zh:
            return True
        for size in range(min(_MAX_WORD, len(word) - 1), 0, -1):
            if word[:size] in self._zh and self._known_zh(word[size:]):
                return True
        return False

    def unknown_spans(self, views: NormalizedText) -> list[tuple[int, int]]:
        """Original spans of the words outside the vocabulary."""
        base = views.base
        spans = []
        for match in _EN_WORD.finditer(base.text):
            word = match.group()
            if word not in self._en_exact and self._stemmer.stemWord(word) not in self._en:
                spans.append((base.origin[match.start()], base.origin[match.end() - 1] + 1))
        runs = list(_CJK_RUN.finditer(base.text))
        if runs:
            tokenizer = _tokenizer(self._zh)
            for run in runs:
                position = run.start()
                for word in tokenizer.lcut(run.group(), HMM=False):
                    if not self._known_zh(word):
                        spans.append((base.origin[position], base.origin[position + len(word) - 1] + 1))
                    position += len(word)
        return spans
