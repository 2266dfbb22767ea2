"""Kids text safety: reject prompts that ask for sexual, violent, scary, weapon, drug, self-harm,
hateful, bullying or swearing content, in English or Chinese, including obfuscated spellings.

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
from .text_context import ContextRules, inflects
from .text_leet import LeetReader
from .text_morphology import Stemmer
from .text_normalizer import DATA_FILE, NormalizedText, TextNormalizer, View, get_normalizer
from .text_pinyin import common_homophones, pinyin_keys, term_tones, tones_contradict
from .text_split_chars import SplitCharacters
from .text_strict import StrictVocabulary
from .text_term_index import CjkTermIndex, LatinTermIndex

logger = logging.getLogger(__name__)

REJECTION_MARKER = "rejected by Kids Text Safety"
"""Stable start of every rejection message, followed by ``(category: <name>)``.

ComfyUI reports the class as ``exception_type`` (ending in ``UnsafePromptError``) and this text as
the message, so tracebacks read "...UnsafePromptError: rejected by Kids Text Safety (category: x)".
"""

LANGUAGES = ("en", "zh")
EXTRA_DATA_DIR = "text_safety"
"""Folder (next to ``text_safety.yaml``) of further lexicon files, one per concern, merged in."""
EMPTY = "empty"
"""Category of a text with nothing left after normalisation (the API answers 422 for it)."""
UNKNOWN_WORD = "unknown_word"
"""Category of strict mode: a content word outside the kid-safe vocabulary."""
_PINYIN_WORD = re.compile(r"(?<![a-z])([a-z]+)[1-5]?(?![a-z])")
"""A Latin word, with an optional tone digit (left out of the group)."""
_MAX_PINYIN_WORDS = 4
_SURROGATE = re.compile("[\ud800-\udfff]")
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
    empty: bool = False
    """Nothing but whitespace/invisible characters after normalisation: a client error (422)."""

    def to_json(self) -> str:
        """The report for logs and the node's ``report`` output; contains no offending words."""
        return json.dumps(
            {
                "safe": self.safe,
                "category": self.category,
                "categories": list(self.categories),
                "matched_rule_count": self.matched_rule_count,
                "redacted": self.redacted,
                "empty": self.empty,
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

    def __init__(self, data: Mapping[str, Any], normalizer: TextNormalizer, file: str = DATA_FILE,
                 extra: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._normalizer = normalizer
        categories = require_mapping(require_key(data, "categories", file, ""), file, "categories")
        allow_data = require_mapping(require_key(data, "allow", file, ""), file, "allow")
        categories, allow_data, extra_sections = _merge_extra(categories, allow_data, extra or {}, file)
        self.categories: tuple[str, ...] = tuple(categories)
        self._severity = {name: rank for rank, name in enumerate(self.categories)}

        pinyin_data = extra_sections.get("pinyin", {})
        self._pinyin_ignore = frozenset(pinyin_data.get("ignore", [])) | common_homophones(
            (self._normalizer.fold_term(term) for entry in categories.values()
             for term in (entry.get("zh") or []) if isinstance(term, str)),
            float(pinyin_data.get("common_homophone_ratio", 10)))
        self._pinyin: dict[str, int] = {}
        """Tone-less reading ("zisha") -> rule of the Chinese term."""
        self._pinyin_tones: dict[str, list[tuple[frozenset[int], ...]]] = {}
        """Tone-less reading -> the tones of every term that reads so (a written tone must fit one)."""
        rules: list[_Rule] = []
        branches: dict[str, list[tuple[int, int, re.Pattern[str]]]] = {language: [] for language in LANGUAGES}
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
                    pattern = self._pattern(term, language, file, child_path(terms_path, index))
                    branches[language].append((len(self._normalizer.fold_term(term)), len(rules), pattern))
                    rules.append(_Rule(name, language, term))
                    if language == "zh":
                        # Pinyin of a multi-syllable Chinese term is one more English alternative
                        # of the same rule: "zisha", "zi sha", "zi-sha" all read 自杀.
                        folded = self._normalizer.fold_term(term)
                        for key in pinyin_keys(folded, self._pinyin_ignore):
                            self._pinyin.setdefault(key.replace(" ", ""), len(rules) - 1)
                            self._pinyin_tones.setdefault(key.replace(" ", ""), []).append(term_tones(folded))
        self._rules = tuple(rules)
        self._pinyin_prefixes = frozenset(key[:end] for key in self._pinyin for end in range(1, len(key) + 1))
        self._stemmer = Stemmer(
            (rule.term, index) for index, rule in enumerate(rules) if rule.language == "en"
        )
        self._context = ContextRules(extra_sections.get("context", {}), self.categories, self._normalizer)
        vocabulary = self._context.english_words() | {
            piece for rule in rules if rule.language == "en"
            for piece in self._normalizer.fold_term(rule.term).split() if piece.isalpha()}
        self._leet = LeetReader(self._normalizer.letter_alternatives, lambda word: inflects(word, vocabulary))
        zh_chars = {ch for rule in rules if rule.language == "zh" for ch in rule.term}
        self._split = SplitCharacters(zh_chars | self._context.zh_characters(),
                                      extra_sections.get("split_characters", {}))
        self._strict_data = extra_sections.get("strict_vocabulary", {})
        self._strict: StrictVocabulary | None = None
        # Each term is its own small pattern, tried in the order of one alternation of them all:
        # longest first, because at a position the first alternative that matches wins and the
        # longest gives the cleanest redaction ("血腥" rather than "血" + "腥").
        self._patterns: list[re.Pattern[str] | None] = [None] * len(rules)
        self._rank: list[int] = [0] * len(rules)
        for language in LANGUAGES:
            branches[language].sort(key=lambda branch: -branch[0])
            for rank, (_, rule, pattern) in enumerate(branches[language]):
                self._rank[rule] = rank
                self._patterns[rule] = pattern

        allow = allow_data
        self._allow: dict[str, tuple[re.Pattern[str], ...]] = {}
        allow_terms: dict[str, list[str]] = {}
        for language in LANGUAGES:
            path = child_path("allow", language)
            phrases = require_string_list(require_key(allow, language, file, "allow"), file, path,
                                          non_empty=False)
            self._allow[language] = tuple(
                self._pattern(phrase, language, file, child_path(path, index))
                for index, phrase in enumerate(phrases)
            )
            allow_terms[language] = [self._normalizer.fold_term(phrase) for phrase in phrases]
        # One index per script over rules and allow phrases: ids below len(rules) are rules, the
        # rest allow phrases (id - len(rules) in that language's list).
        self._indexes = {
            language: index_type(self._normalizer, [
                *((i, self._normalizer.fold_term(rule.term)) for i, rule in enumerate(rules)
                  if rule.language == language),
                *((len(rules) + i, phrase) for i, phrase in enumerate(allow_terms[language])),
            ])
            for language, index_type in (("en", LatinTermIndex), ("zh", CjkTermIndex))
        }

    def _pattern(self, term: str, language: str, file: str, path: str) -> re.Pattern[str]:
        """The tolerant regex for one lexicon term or allow phrase (see :mod:`.text_normalizer`),
        compiled here once: the empty-string check needs it compiled, and ``re``'s own cache (512
        entries) is far smaller than the lexicon, so compiling it again later would parse it twice.
        """
        folded = self._normalizer.fold_term(term)
        if language == "en":
            try:
                pattern = self._normalizer.latin_pattern(folded)
            except ValueError:
                raise PackDataError(
                    f"{file}: {path}: English entries must be Latin letters, digits, spaces or hyphens"
                ) from None
        else:
            if folded.isascii():
                raise PackDataError(f"{file}: {path}: Chinese entries must contain Chinese characters")
            pattern = self._normalizer.cjk_pattern(folded)
        compiled = re.compile(pattern)
        if compiled.fullmatch(""):
            raise PackDataError(f"{file}: {path}: matches the empty string")
        return compiled

    def check(self, text: str, *, strict: bool = False) -> TextSafetyDecision:
        """Decide whether ``text`` is fit for a children's picture prompt.

        ``strict`` (the youngest audience) also refuses any content word outside the kid-safe
        vocabulary, with category ``unknown_word``.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        shown = _printable(text)
        views = self._normalizer.views(text)
        if not views.base.text.strip():
            return TextSafetyDecision(False, EMPTY, (EMPTY,), 0, shown, empty=True)
        hits: list[_Hit] = []
        for view in views.latin_views:
            rules, allowed = self._candidates(view, "en")
            if rules:
                hits.extend(self._scan(view, rules, allowed, "en"))
            hits.extend(self._stem_hits(view, allowed))
        hits.extend(self._pinyin_hits(views.base, text))
        recomposed = None
        if views.joined is not None:
            recomposed = self._split.recompose(views.joined)
            for view in (views.joined,) if recomposed is None else (views.joined, recomposed):
                rules, allowed = self._candidates(view, "zh")
                if rules:
                    hits.extend(self._scan(view, rules, allowed, "zh"))
        keys = self._context.keys(views, recomposed)
        allowed: list[tuple[int, int]] | None = None
        if hits and (allowed := self._context.allowed_spans(views, keys)):
            # Innocent contexts from the context data ("shoot" beside 篮球 or "hoops", toy weapons).
            hits = [h for h in hits if not any(a <= h.start and h.end <= b for a, b in allowed)]
        context_hits = self._context.hits(views, recomposed, keys) or self._rewritten_context_hits(views)
        if context_hits:
            # An allow-listed phrase protects context matches that start inside it ("killer whale",
            # "bamboo shoots for the panda": no killing, no shooting); an allow rule's match those
            # that lie wholly inside it ("a nurse giving a shot to the bunny"), so a harm told
            # after an innocent context still counts.
            protected = self._protected_spans(views)
            if allowed is None:
                allowed = self._context.allowed_spans(views, keys)
            context_hits = [h for h in context_hits if not any(a <= h[1] < b for a, b in protected)
                            and not any(a <= h[1] and h[2] <= b for a, b in allowed)]
        if not hits and not context_hits:
            if strict:
                return self._strict_check(views, shown)
            return TextSafetyDecision(True, None, (), 0, shown)
        return self._reject(shown, hits, context_hits)

    def _rewritten_context_hits(self, views: NormalizedText) -> list[tuple[str, int, int, str]]:
        """English scene rules on the other Latin views: letters spaced apart and joined up ("d r o w n
        s"), short words split ("c-ut"), and obfuscated words read back ("cuts h1s wr1sts").

        Context rules run on the base view first; these copies exist only for prompts that use such
        tricks, so ordinary prompts pay nothing for them.
        """
        rewritten = [read for view in views.latin_views if (read := self._leet.read(view)) is not None]
        for view in (*views.latin_views[1:], *rewritten):
            found = self._context.hits(NormalizedText(view, (), None), None)
            if found:
                return found
        return []

    def _reject(self, text: str, hits: list[_Hit], context_hits: list[tuple[str, int, int, str]]
                ) -> TextSafetyDecision:

        rules = {hit.rule for hit in hits}
        found = {self._rules[r].category for r in rules} | {c for c, _, _, _ in context_hits}
        categories = tuple(sorted(found, key=self._severity.__getitem__))
        count = len(rules) + len({name for _, _, _, name in context_hits})
        if logger.isEnabledFor(logging.DEBUG):
            terms = sorted({(self._rules[r].category, self._rules[r].term) for r in rules})
            logger.debug("text safety hits: %s; context rules: %s", terms,
                         sorted({name for _, _, _, name in context_hits}))
        logger.info("text rejected: categories=%s rules=%d", ",".join(categories), count)
        spans = [(h.start, h.end, self._severity[self._rules[h.rule].category]) for h in hits]
        spans += [(start, end, self._severity[c]) for c, start, end, _ in context_hits]
        return TextSafetyDecision(False, categories[0], categories, count,
                                  _redact(text, spans, self.categories))

    def _candidates(self, view: View, language: str) -> tuple[list[int], list[int]]:
        """The rules (in alternation order) and allow phrases the index cannot rule out in ``view``."""
        ids = self._indexes[language].candidates(view.text)
        if not ids:
            return [], []
        count = len(self._rules)
        rules = sorted((i for i in ids if i < count), key=self._rank.__getitem__)
        return rules, [i - count for i in ids if i >= count]

    def _stem_hits(self, view: View, allow: list[int]) -> list[_Hit]:
        """English morphology: a word whose stem is a lexicon word's stem ("nakedness", "stabbings")."""
        found = self._stemmer.hits(view.text)
        if not found:
            return []
        allowed = self._allowed_spans(view.text, "en", allow)
        return [_Hit(rule, view.origin[start], view.origin[end - 1] + 1) for rule, start, end in found
                if not any(a <= start and end <= b for a, b in allowed)]

    def _pinyin_hits(self, view: View, text: str) -> list[_Hit]:
        """Runs of 1-4 Latin words that spell a Chinese term's reading ("zisha", "zi sha", "zi4 sha1"),
        unless the tones written in ``text`` fit none of the terms of that reading."""
        prefixes = self._pinyin_prefixes
        words = _PINYIN_WORD.findall(view.text)
        # A reading starts with a whole word: when no word begins one, there is no hit.
        if prefixes.isdisjoint(words):
            return []
        runs: list[tuple[int, int, int, str]] = []  # (first word, last word, rule, reading)
        for i in range(len(words)):
            key = ""
            for j in range(i, min(i + _MAX_PINYIN_WORDS, len(words))):
                key += words[j]
                if key not in prefixes:
                    break  # no reading starts with this run of words, nor with a longer one
                rule = self._pinyin.get(key)
                if rule is not None:
                    runs.append((i, j, rule, key))
                    break
        if not runs:
            return []
        spans = [(view.origin[start], view.origin[end - 1] + 1) for start, end in
                 (m.span() for m in _PINYIN_WORD.finditer(view.text))]
        return [_Hit(rule, spans[i][0], spans[j][1]) for i, j, rule, key in runs
                if not all(tones_contradict([text[a:b] for a, b in spans[i:j + 1]], tones)
                           for tones in self._pinyin_tones[key])]

    def _strict_check(self, views: Any, text: str) -> TextSafetyDecision:
        if self._strict is None:
            self._strict = StrictVocabulary(self._strict_data, self._normalizer)
        unknown = self._strict.unknown_spans(views)
        if not unknown:
            return TextSafetyDecision(True, None, (), 0, text)
        logger.info("text rejected: categories=%s words=%d", UNKNOWN_WORD, len(unknown))
        rank = len(self.categories)
        return TextSafetyDecision(False, UNKNOWN_WORD, (UNKNOWN_WORD,), len(unknown),
                                  _redact(text, [(a, b, rank) for a, b in unknown],
                                          (*self.categories, UNKNOWN_WORD)))

    def _scan(self, view: View, rules: list[int], allow: list[int], language: str) -> list[_Hit]:
        """Non-overlapping hits of ``rules`` (in alternation order), left to right, as one
        alternation of them would find them: at the leftmost position where any matches, the first
        rule that matches there wins and the search goes on after it.
        """
        text = view.text
        patterns = [self._patterns[rule] for rule in rules]
        matches = [pattern.search(text) for pattern in patterns]  # type: ignore[union-attr]
        hits: list[_Hit] = []
        allowed_spans: list[tuple[int, int]] | None = None
        position = 0
        while True:
            best: re.Match[str] | None = None
            best_rule = -1
            for index, match in enumerate(matches):
                if match is not None and match.start() < position:
                    # A match from an earlier search stays the leftmost one while it starts at or
                    # after the new position; only an overtaken one is searched again.
                    match = matches[index] = patterns[index].search(text, position)  # type: ignore[union-attr]
                if match is not None and (best is None or match.start() < best.start()):
                    best, best_rule = match, rules[index]
            if best is None:
                return hits
            start, end = best.span()
            if allowed_spans is None:
                allowed_spans = self._allowed_spans(text, language, allow)
            if any((a <= start and end <= b) if language == "en" else (a < end and start < b)
                   for a, b in allowed_spans):
                position = start + 1
                continue
            hits.append(_Hit(best_rule, view.origin[start], view.origin[end - 1] + 1))
            position = end

    def _protected_spans(self, views: Any) -> list[tuple[int, int]]:
        """Allow-listed phrases of the base (English) and joined (Chinese) views, in original positions."""
        spans = []
        for view, language in ((views.base, "en"), (views.joined, "zh")):
            if view is not None:
                _, allow = self._candidates(view, language)
                spans += [(view.origin[a], view.origin[b - 1] + 1)
                          for a, b in self._allowed_spans(view.text, language, allow) if b > a]
        return spans

    def _allowed_spans(self, text: str, language: str, allow: list[int]) -> list[tuple[int, int]]:
        """All (possibly overlapping) spans of the allow-listed phrases ``allow`` in one view."""
        spans: list[tuple[int, int]] = []
        phrases = self._allow[language]
        for pattern in (phrases[i] for i in allow):
            position = 0
            while (match := pattern.search(text, position)) is not None:
                spans.append(match.span())
                position = match.start() + 1
        return spans


def _printable(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD, so reports can always be encoded."""
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def _redact(text: str, spans: list[tuple[int, int, int]], names: tuple[str, ...]) -> str:
    """``text`` with every span (merged where they overlap) replaced by ``[category]``."""
    merged: list[list[int]] = []  # [start, end, severity rank]
    for start, end, rank in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
            merged[-1][2] = min(merged[-1][2], rank)
        else:
            merged.append([start, end, rank])
    parts: list[str] = []
    position = 0
    for start, end, rank in merged:
        parts.append(text[position:start])
        parts.append(f"[{names[rank]}]")
        position = end
    parts.append(text[position:])
    return "".join(parts)


def _merge_extra(categories: dict[str, Any], allow: dict[str, Any],
                 extra: Mapping[str, Mapping[str, Any]], file: str
                 ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Merge the files of ``data/text_safety/`` into the main lexicon.

    Their ``categories`` and ``allow`` lists extend the main file's (a new category goes after the
    main file's, i.e. is less severe); any other top-level section (``context``, ``pinyin``,
    ``split_characters``, ``strict_vocabulary``) is handed to the mechanism that owns it.
    """
    categories = {name: {lang: list(terms) for lang, terms in require_mapping(entry, file, name).items()}
                  for name, entry in categories.items()}
    allow = {lang: list(require_string_list(phrases, file, f"allow.{lang}", non_empty=False))
             if isinstance(phrases, list) else phrases for lang, phrases in allow.items()}
    sections: dict[str, Any] = {}
    for name, data in extra.items():
        for key, value in data.items():
            if key == "categories":
                for category, entry in require_mapping(value, name, "categories").items():
                    target = categories.setdefault(category, {lang: [] for lang in LANGUAGES})
                    for lang, terms in require_mapping(entry, name, category).items():
                        if lang not in LANGUAGES:
                            raise PackDataError(f"{name}: categories.{category}.{lang}: unknown language")
                        target.setdefault(lang, []).extend(
                            t for t in require_string_list(terms, name, f"categories.{category}.{lang}",
                                                           non_empty=False, unique=False)
                            if t not in target[lang])
            elif key == "allow":
                for lang, phrases in require_mapping(value, name, "allow").items():
                    allow.setdefault(lang, []).extend(
                        p for p in require_string_list(phrases, name, f"allow.{lang}", non_empty=False,
                                                       unique=False) if p not in allow.get(lang, []))
            elif key in sections and isinstance(sections[key], dict) and isinstance(value, dict):
                for sub, item in value.items():
                    if isinstance(item, list) and isinstance(sections[key].get(sub), list):
                        sections[key][sub] = sections[key][sub] + item
                    elif isinstance(item, dict) and isinstance(sections[key].get(sub), dict):
                        sections[key][sub] = {**sections[key][sub], **item}
                    else:
                        sections[key][sub] = item
            else:
                sections[key] = dict(value) if isinstance(value, dict) else value
    return categories, allow, sections


def get_checker(directory: str | Path | None = None) -> TextSafetyChecker:
    """The checker for a data directory (default: the pack's), compiled once."""
    folder = data_dir(directory)
    # Resolving a path costs a system call per component (about a millisecond on a loaded
    # machine, ten times the match): absolute paths are resolved once, relative ones every time
    # because they depend on the working directory.
    if folder.is_absolute():
        return _get_checker_at(folder)
    return _get_checker_for(folder.resolve())


@functools.cache
def _get_checker_at(folder: Path) -> TextSafetyChecker:
    return _get_checker_for(folder.resolve())


@functools.cache
def _get_checker_for(folder: Path) -> TextSafetyChecker:
    extra_dir = folder / EXTRA_DATA_DIR
    extra = {f"{EXTRA_DATA_DIR}/{path.name}": load_data_file(path.name, extra_dir)
             for path in sorted(extra_dir.glob("*.yaml"))} if extra_dir.is_dir() else {}
    return TextSafetyChecker(load_data_file(DATA_FILE, folder), get_normalizer(folder), extra=extra)


def check_text(text: str, *, strict: bool = False) -> TextSafetyDecision:
    """Check ``text`` against the pack's lexicon: the one entry the node and the supervisor call.

    ``strict`` also refuses words outside the kid-safe vocabulary (category ``unknown_word``).
    A text with nothing left after normalisation is refused with ``empty=True`` (category
    ``empty``), which the API reports as a client error.
    """
    return get_checker().check(text, strict=strict)
