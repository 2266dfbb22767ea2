"""Kids text safety: reject prompts that ask for sexual, violent, scary, weapon, drug, self-harm or
hateful content, in English or Chinese, including obfuscated spellings.

The supervisor calls :func:`check_text` before a job is queued and the ``KidsTextSafety`` node calls
it inside a workflow; so this module must not import ComfyUI.

Matching (lexicon and policy in ``data/text_safety.yaml``):
- English terms match whole words in every Latin view of the normalised text (see
  :mod:`.text_normalizer`), so "grass", "cockatoo" and "Scunthorpe" never hit.
- Chinese terms match as substrings of the view without separators.
- A hit that lies entirely inside an allow-listed phrase in the same view is ignored
  ("naked mole rat", "killer whale", 水枪, 酒窝); after such a hit the search resumes one character
  later, so an allowed phrase never hides a different hit that overlaps it.

Offending words never leave this module at info level: the decision carries categories, a rule
count and a redacted copy of the text; the words themselves are logged at debug level only.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .pack_data import (
    PackDataError,
    child_path,
    data_dir,
    load_data_file,
    require_key,
    require_mapping,
    require_string_list,
)
from .text_normalizer import DATA_FILE, TextNormalizer, View, get_normalizer

logger = logging.getLogger(__name__)

REJECTION_MARKER = "rejected by Kids Text Safety"
"""Stable start of every rejection message, followed by ``(category: <name>)``.

ComfyUI reports the class as ``exception_type`` (ending in ``UnsafePromptError``) and this text as
the message, so tracebacks read "...UnsafePromptError: rejected by Kids Text Safety (category: x)".
"""

LANGUAGES = ("en", "zh")
_CATEGORY_NAME = re.compile(r"[a-z][a-z0-9_]*")


class UnsafePromptError(Exception):
    """A prompt was rejected by the text safety check (a decision, not a crash).

    The message names the category and never the offending words.
    """

    def __init__(self, decision: TextSafetyDecision) -> None:
        super().__init__(f"{REJECTION_MARKER} (category: {decision.category})")
        self.decision = decision
        self.category = decision.category


@dataclass(frozen=True, slots=True)
class TextSafetyDecision:
    """The verdict on one text.

    ``category`` is the most severe category hit (categories are ordered most severe first in the
    YAML), ``categories`` all categories hit in that order, ``matched_rule_count`` the number of
    distinct lexicon entries hit, and ``redacted`` the original text with each hit replaced by
    ``[category]``.
    """

    safe: bool
    category: str | None
    categories: tuple[str, ...]
    matched_rule_count: int
    redacted: str

    def to_json(self) -> str:
        """The report for logs and the node's ``report`` output; contains no offending words."""
        return json.dumps(
            {
                "safe": self.safe,
                "category": self.category,
                "categories": list(self.categories),
                "matched_rule_count": self.matched_rule_count,
                "redacted": self.redacted,
            },
            ensure_ascii=False,
        )


@dataclass(frozen=True, slots=True)
class _Rule:
    category: str
    language: str
    term: str


@dataclass(frozen=True, slots=True)
class _Hit:
    rule: int
    start: int
    end: int
    """Half-open span in the ORIGINAL text."""


class TextSafetyChecker:
    """The compiled lexicon of one data directory."""

    def __init__(self, data: Mapping[str, Any], normalizer: TextNormalizer, file: str = DATA_FILE) -> None:
        self._normalizer = normalizer
        categories = require_mapping(require_key(data, "categories", file, ""), file, "categories")
        self.categories: tuple[str, ...] = tuple(categories)
        self._severity = {name: rank for rank, name in enumerate(self.categories)}

        rules: list[_Rule] = []
        branches: dict[str, list[tuple[int, str]]] = {language: [] for language in LANGUAGES}
        for name, entry in categories.items():
            path = child_path("categories", name)
            if not _CATEGORY_NAME.fullmatch(name):
                raise PackDataError(f"{file}: {path}: category names must match {_CATEGORY_NAME.pattern}")
            entry = require_mapping(entry, file, path)
            for key in entry:
                if key not in LANGUAGES:
                    raise PackDataError(
                        f"{file}: {child_path(path, key)}: unknown language (use {', '.join(LANGUAGES)})"
                    )
            for language in LANGUAGES:
                terms_path = child_path(path, language)
                terms = require_string_list(require_key(entry, language, file, path), file, terms_path)
                for index, term in enumerate(terms):
                    group = f"r{len(rules)}"
                    pattern = self._pattern(term, language, file, child_path(terms_path, index), group=group)
                    branches[language].append((len(self._normalizer.fold_term(term)), pattern))
                    rules.append(_Rule(name, language, term))
        self._rules = tuple(rules)
        for language in LANGUAGES:
            # Longest first: the regex takes the first alternative that matches at a position, and
            # the longest one gives the cleanest redaction ("血腥" rather than "血" + "腥").
            branches[language].sort(key=lambda branch: -branch[0])
        self._latin = re.compile("(?<![a-z])(?:" + "|".join(p for _, p in branches["en"]) + ")(?![a-z])")
        self._cjk = re.compile("|".join(p for _, p in branches["zh"]))

        allow = require_mapping(require_key(data, "allow", file, ""), file, "allow")
        self._allow: dict[str, tuple[re.Pattern[str], ...]] = {}
        for language in LANGUAGES:
            path = child_path("allow", language)
            phrases = require_string_list(require_key(allow, language, file, "allow"), file, path,
                                          non_empty=False)
            self._allow[language] = tuple(
                re.compile(self._pattern(phrase, language, file, child_path(path, index)))
                for index, phrase in enumerate(phrases)
            )

    def _pattern(self, term: str, language: str, file: str, path: str, *, group: str | None = None) -> str:
        """The tolerant regex for one entry: a named-group alternative for the lexicon alternation
        (``group`` given; word guards are shared around it) or a standalone allow-list pattern.
        """
        folded = self._normalizer.fold_term(term)
        if language == "en":
            try:
                pattern = self._normalizer.latin_pattern(folded, group=group, boundaries=group is None)
            except ValueError:
                raise PackDataError(
                    f"{file}: {path}: English entries must be Latin letters, digits, spaces or hyphens"
                ) from None
        else:
            if folded.isascii():
                raise PackDataError(f"{file}: {path}: Chinese entries must contain Chinese characters")
            pattern = self._normalizer.cjk_pattern(folded, group=group)
        if re.fullmatch(pattern, ""):
            raise PackDataError(f"{file}: {path}: matches the empty string")
        return pattern

    def check(self, text: str) -> TextSafetyDecision:
        """Decide whether ``text`` is fit for a children's picture prompt."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        views = self._normalizer.views(text)
        hits: list[_Hit] = []
        for view in views.latin_views:
            hits.extend(self._scan(view, self._latin, "en"))
        if views.joined is not None:
            hits.extend(self._scan(views.joined, self._cjk, "zh"))
        if not hits:
            return TextSafetyDecision(True, None, (), 0, text)

        rules = {hit.rule for hit in hits}
        categories = tuple(sorted({self._rules[r].category for r in rules}, key=self._severity.__getitem__))
        if logger.isEnabledFor(logging.DEBUG):
            terms = sorted({(self._rules[r].category, self._rules[r].term) for r in rules})
            logger.debug("text safety hits: %s", terms)
        logger.info("text rejected: categories=%s rules=%d", ",".join(categories), len(rules))
        return TextSafetyDecision(False, categories[0], categories, len(rules), self._redact(text, hits))

    def _scan(self, view: View, pattern: re.Pattern[str], language: str) -> list[_Hit]:
        hits: list[_Hit] = []
        allowed_spans: list[tuple[int, int]] | None = None
        position = 0
        while (match := pattern.search(view.text, position)) is not None:
            start, end = match.span()
            if allowed_spans is None:
                allowed_spans = self._allowed_spans(view.text, language)
            if any(a <= start and end <= b for a, b in allowed_spans):
                position = start + 1
                continue
            rule = int(match.lastgroup[1:])  # type: ignore[index]  # every alternative has a named group
            hits.append(_Hit(rule, view.origin[start], view.origin[end - 1] + 1))
            position = end
        return hits

    def _allowed_spans(self, text: str, language: str) -> list[tuple[int, int]]:
        """All (possibly overlapping) spans of allow-listed phrases in one view."""
        spans: list[tuple[int, int]] = []
        for pattern in self._allow[language]:
            position = 0
            while (match := pattern.search(text, position)) is not None:
                spans.append(match.span())
                position = match.start() + 1
        return spans

    def _redact(self, text: str, hits: list[_Hit]) -> str:
        """``text`` with every hit (merged where they overlap) replaced by ``[category]``."""
        merged: list[list[int]] = []  # [start, end, severity rank]
        for hit in sorted(hits, key=lambda h: (h.start, h.end)):
            rank = self._severity[self._rules[hit.rule].category]
            if merged and hit.start < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hit.end)
                merged[-1][2] = min(merged[-1][2], rank)
            else:
                merged.append([hit.start, hit.end, rank])
        parts: list[str] = []
        position = 0
        for start, end, rank in merged:
            parts.append(text[position:start])
            parts.append(f"[{self.categories[rank]}]")
            position = end
        parts.append(text[position:])
        return "".join(parts)


def get_checker(directory: str | Path | None = None) -> TextSafetyChecker:
    """The checker for a data directory (default: the pack's), compiled once."""
    return _get_checker_for(data_dir(directory).resolve())


@functools.lru_cache(maxsize=None)
def _get_checker_for(folder: Path) -> TextSafetyChecker:
    return TextSafetyChecker(load_data_file(DATA_FILE, folder), get_normalizer(folder))


def check_text(text: str) -> TextSafetyDecision:
    """Check ``text`` against the pack's lexicon; the supervisor calls this before queueing a job."""
    return get_checker().check(text)
