"""Context rules: a scene is unsafe because of how its words combine, not because of one word.

"the bunny hurts itself", "beat the fox to death", "cut the kitten into pieces", 小熊用刀砍小兔:
none of these words is unsafe alone. A rule is data (``context`` in ``data/text_safety/*.yaml``):
a sequence of word classes (or literal words) in one language, each item at most ``max_gap`` words
(English) or characters (Chinese) after the previous one, and the category it proves::

    classes:
      harm_verb: {en: [hurt, stab, cut], zh: [伤, 割, 捅]}
      reflexive: {en: [itself, herself], zh: [自己]}
      victim: {en: ["@creature", baby]}       # "@name" takes in another class's words
    rules:
      - {name: hurts_itself, category: self_harm, lang: en, sequence: [harm_verb, reflexive], max_gap: 3,
         unless: [pretend]}

``unless`` (classes or words) names innocent neighbours: a match whose text (or the few characters
around it) contains one of them does not count ("打扮自己" is dressing up, not hitting oneself). A
rule whose category is ``allow`` proves nothing: its matches are spans in which lexicon hits are
ignored ("shoot" next to "篮球" or "hoops", toy weapons, costumes), so innocent contexts are data too.

English class words match with their inflections (stab, stabs, stabbed, stabbing; a silent e drops:
shove, shoving); irregular forms are listed. Chinese rules run on the text without separators and
on its split-character recomposition. A rule is one regular expression, compiled when the data loads. A rule's expression only runs when every
one of its items has a word in the text. For each item the longest piece of each of its words is a
key every match contains; English keys count only as whole words (the text's run of letters a-z
is the key plus one of the suffixes the rule accepts, exactly what the expression demands), so
"it" inside "with" or "as" inside "has" does not wake a rule. Chinese keys (and English ones with
other characters, "don't") come from one Aho-Corasick pass per language.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ahocorasick

from .pack_data import PackDataError, require_string_list
from .text_normalizer import NormalizedText, TextNormalizer, View

_EN_SUFFIXES = frozenset(["", "s", "es", "ed", "d", "ing", "er", "ers", "ies", "ied",
                          *(c + tail for c in "bdgklmnprt" for tail in ("ed", "ing"))])
"""Every suffix a class word may take after some base (the whole-word pre-filter's set)."""
_EN_SUFFIX_LENGTHS = sorted({len(x) for x in _EN_SUFFIXES})


def suffix_fits(base: str, suffix: str) -> bool:
    """Whether ``base + suffix`` is a regular form: "-d" only after an e (bake-d; boar-d is "board"),
    a doubled consonant only after that consonant (stab-bed; "stabked" is no form of stab)."""
    if suffix == "d":
        return base.endswith("e")
    if len(suffix) > 2 and suffix[0] in "bdgklmnprt" and suffix[1:] in ("ed", "ing"):
        return base.endswith(suffix[0])
    return True


@functools.cache
def suffix_pattern(last: str) -> str:
    """The optional suffix expression after a word ending in ``last``: what :func:`suffix_fits` allows."""
    fitting = sorted((x for x in _EN_SUFFIXES if x and suffix_fits(last, x)), key=len, reverse=True)
    return "(?:" + "|".join(fitting) + ")?"
_LETTERS = re.compile(r"[a-z]+")
_EN_SEP = r"[^a-z,;:.!?]+"
"""What lies between two words of one English scene: no clause or list boundary, so the parts of a
rule stay in one clause ("hanging paper lanterns, a hedgehog ..." is two things, not one act)."""
_FILE = "text_safety/context"
_UNLESS_WINDOW = {"en": 30, "zh": 4}
"""Characters either side of a match that ``unless`` words are also looked for in ("she bakes a cake
and cuts it into pieces": the cake is outside the match)."""
ALLOW = "allow"
"""Category of rules whose matches protect lexicon hits instead of rejecting."""

Hit = tuple[str, int, int, str]
"""``(category, start, end, rule name)``, positions in the original text."""
_CACHE_LIMIT = 50_000
"""Bound on cached prompt words, so hostile input with endless distinct words cannot grow memory."""


def inflects(word: str, vocabulary: frozenset[str]) -> bool:
    """Whether ``word`` is a vocabulary word bare or with a suffix the rules accept ("wrists", "cutting")."""
    if word in vocabulary:
        return True
    for length in _EN_SUFFIX_LENGTHS:
        if length and len(word) > length and word[-length:] in _EN_SUFFIXES:
            if word[:-length] in vocabulary and suffix_fits(word[:-length], word[-length:]):
                return True
    return False


@dataclass(slots=True)
class Keys:
    """What one prompt holds of the rules' words, found once and shared by allow and rejecting rules."""

    present: set[int]
    """Key ids of class words in the text."""
    starts: dict[str, list[int]] = field(default_factory=dict)
    """First word of an English class phrase -> where it starts in the base view (inflected or not)."""


def _matches_at(pattern: re.Pattern[str], text: str, positions: list[int]) -> Iterator[re.Match[str]]:
    """``pattern.finditer(text)`` when matches can only begin at ``positions`` (ascending): the same
    non-overlapping matches, tried only there."""
    end = -1
    for position in positions:
        if position >= end and (match := pattern.match(text, position)) is not None:
            end = max(match.end(), position + 1)
            yield match


class ContextRules:
    """The compiled context rules of both languages."""

    def __init__(self, data: Mapping[str, Any], categories: Sequence[str], normalizer: TextNormalizer) -> None:
        self._classes = {name: dict(entry) for name, entry in dict(data.get("classes", {})).items()}
        for name, entry in self._classes.items():
            for lang, words in entry.items():
                # YAML reads a bare on/off/yes/no as a boolean: such a word must be quoted.
                require_string_list(words, _FILE, f"classes.{name}.{lang}", unique=False)
        self._normalizer = normalizer
        self._breaks: dict[str, re.Pattern[str]] = {}
        """Per language: words that start a new event ("and then"); an innocent context does not
        reach across them ("shoot hoops and then shoot the puppy")."""
        for lang, words in dict(data.get("clause_breaks") or {}).items():
            words = require_string_list(words, _FILE, f"clause_breaks.{lang}")
            # Longest first, so "and then" wins over "then".
            folded = sorted({normalizer.fold_term(w) for w in words}, key=len, reverse=True)
            alternatives = "|".join(re.escape(w) for w in folded)
            self._breaks[lang] = re.compile(rf"(?<![a-z])(?:{alternatives})(?![a-z])" if lang == "en" else alternatives)
        self._rules: list[tuple[str, str, str, str, tuple[frozenset[int], ...], str | None]] = []
        self._starts: list[frozenset[str] | None] = []
        """Per rule: the first words its English match can begin with (None: search the whole text)."""
        keys: dict[str, dict[str, int]] = {"en": {}, "zh": {}}
        """Per language: literal every match of a class word contains -> key id."""
        self._always: list[int] = []
        """Rules with an item that may match without any literal (never ruled out)."""
        self._triggers: dict[int, list[int]] = {}
        """Key id -> the rules whose most selective item has that key."""
        for index, rule in enumerate(data.get("rules", [])):
            where = f"{_FILE}: rules[{index}]"
            name, category, lang = rule.get("name"), rule.get("category"), rule.get("lang")
            if category not in categories and category != ALLOW:
                raise PackDataError(f"{where}: unknown category {category!r}")
            if lang not in ("en", "zh"):
                raise PackDataError(f"{where}: lang must be en or zh")
            sequence = require_string_list(rule.get("sequence"), _FILE, f"rules[{index}].sequence", unique=False)
            gap = int(rule.get("max_gap", 3))
            parts = []
            items: list[frozenset[int]] = []
            unfiltered = False
            for position, item in enumerate(sequence):
                folded = self._folded(item, lang, where)
                if position == 0:
                    firsts = frozenset(w.split()[0] for w in folded if w.split())
                    # A match begins with one of these words (plus a suffix): the rule's expression
                    # is tried only where one stands, not at every position of the text.
                    self._starts.append(firsts if lang == "en" and firsts and all(
                        _LETTERS.fullmatch(x) for x in firsts) else None)
                literals = ([max(w.split() or [""], key=len) for w in folded] if lang == "en"
                            else [w.replace(" ", "") for w in folded])
                parts.append(self._regex(folded, lang))
                if "" in literals:
                    unfiltered = True
                    continue
                # Key ids are global (one counter for both languages), so one trigger map serves both.
                items.append(frozenset(keys[lang].setdefault(x, sum(map(len, keys.values()))) for x in literals))
            if lang == "en":
                joiner = rf"(?:{_EN_SEP}[a-z']+){{0,{gap}}}?{_EN_SEP}"
                pattern = r"(?<![a-z])" + joiner.join(parts) + r"(?![a-z])"
            else:
                pattern = f"[^。！？!?.]{{0,{gap}}}?".join(parts)
            unless = None
            if rule.get("unless"):
                words = require_string_list(rule["unless"], _FILE, f"rules[{index}].unless", unique=False)
                alternatives = "|".join(self._regex(self._folded(item, lang, where), lang, inflect_first=False)
                                        for item in words)
                unless = rf"(?<![a-z])(?:{alternatives})(?![a-z])" if lang == "en" else alternatives
            if unfiltered or not items:
                self._always.append(len(self._rules))
            else:
                # The item whose shortest literal is longest is the rarest: it triggers the rule.
                trigger = max(items, key=lambda item: min(len(lit) for lit, key in keys[lang].items() if key in item))
                for key in trigger:
                    self._triggers.setdefault(key, []).append(len(self._rules))
            self._rules.append((str(name), category, lang, pattern, tuple(items), unless))
        # Compiled at load, not on first use: a rule compiled while a prompt waits costs that
        # prompt milliseconds (the p99 of distinct prompts was all regex compiling).
        self._compiled = [(re.compile(pattern), None if unless is None else re.compile(unless))
                          for _, _, _, pattern, _, unless in self._rules]
        self._en_words = {literal: key for literal, key in keys["en"].items() if _LETTERS.fullmatch(literal)}
        """English keys of letters a-z only: looked up from the text's words."""
        self._start_words = frozenset(x for firsts in self._starts if firsts for x in firsts)
        self._word_info: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {}
        """Prompt word -> (its key ids, the start words it inflects): one lookup a word once warm."""
        self._lock = threading.Lock()
        self._automata: dict[str, ahocorasick.Automaton] = {}
        for lang, literals in keys.items():
            if lang == "en":
                literals = {literal: key for literal, key in literals.items() if literal not in self._en_words}
            if literals:
                automaton = ahocorasick.Automaton()
                for literal, key in literals.items():
                    automaton.add_word(literal, (key, len(literal)))
                automaton.make_automaton()
                self._automata[lang] = automaton

    def _words(self, item: str, lang: str, seen: frozenset[str] = frozenset()) -> list[str]:
        """The words of a class (``@other`` classes expanded), or the literal item itself."""
        if item.startswith("@") and item[1:] in self._classes:
            item = item[1:]
        if item not in self._classes:
            return [item]
        words: list[str] = []
        for word in self._classes[item].get(lang) or []:
            ref = str(word)
            if ref.startswith("@") and ref[1:] not in seen:
                words.extend(self._words(ref[1:], lang, seen | {item}))
            else:
                words.append(ref)
        return words

    def _folded(self, item: str, lang: str, where: str) -> list[str]:
        """The folded words of one item, longest first (English ones also with a silent e dropped)."""
        words = self._words(item, lang)
        if not words:
            raise PackDataError(f"{where}: class {item!r} has no {lang} words")
        folded = {self._normalizer.fold_term(w) for w in words}
        if lang == "en":
            # A final silent e drops before -ing: shove -> shoving, bite -> biting, smoke -> smoking.
            folded |= {w[:-1] + "ing" for w in folded if w.endswith("e") and len(w) > 3 and w[-2] not in "aeiou"}
        return sorted(folded, key=len, reverse=True)

    @staticmethod
    def _regex(folded: list[str], lang: str, *, inflect_first: bool = True) -> str:
        if lang == "en":
            # The first word of a phrase inflects too: "stomp on" reads "stomping on", "beat up" "beats up".
            # ``unless`` phrases list their forms (hang from, hanging from, but not "hanged from").
            return "(?:" + "|".join(
                r"[^a-z]+".join(re.escape(x) + (suffix_pattern(x[-1]) if inflect_first and i == 0 and " " in w else "")
                                for i, x in enumerate(w.split())) + suffix_pattern(w[-1]) for w in folded) + ")"
        return "(?:" + "|".join(re.escape(w.replace(" ", "")) for w in folded) + ")"

    def hits(self, views: NormalizedText, recomposed: View | None = None,
             keys: Keys | None = None) -> list[Hit]:
        """A hit for every rejecting rule that holds (Chinese ones also on ``recomposed``).

        ``keys`` is :meth:`keys` of the same views, when the caller already has it.
        """
        if keys is None:
            keys = self.keys(views, recomposed)
        return self._find(views, recomposed, keys, allow=False)

    def allowed_spans(self, views: NormalizedText, keys: Keys | None = None) -> list[tuple[int, int]]:
        """Original-text spans of the ``allow`` rules' matches: lexicon hits inside them are ignored."""
        if keys is None:
            keys = self.keys(views, None)
        return [(start, end) for _, start, end, _ in self._find(views, None, keys, allow=True)]

    def keys(self, views: NormalizedText, recomposed: View | None) -> Keys:
        """The class words found in the views: computed once, shared by both kinds of rules."""
        found = Keys(set())
        self._en_scan(views.base.text, found)
        automaton = self._automata.get("zh")
        if automaton is not None:
            for view in (views.joined, recomposed):
                if view is not None:
                    found.present.update(key for _, (key, _) in automaton.iter(view.text))
        return found

    def _word_entry(self, word: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """The keys and start words one prompt word stands for, bare or with an accepted suffix."""
        ids: list[int] = []
        bases: list[str] = []
        for length in _EN_SUFFIX_LENGTHS:
            if length == 0:
                base = word
            elif len(word) > length and word[-length:] in _EN_SUFFIXES:
                base = word[:-length]
            else:
                continue
            if (key := self._en_words.get(base)) is not None:
                ids.append(key)
            if base in self._start_words:
                bases.append(base)
        entry = (tuple(ids), tuple(bases))
        with self._lock:
            if len(self._word_info) < _CACHE_LIMIT:
                self._word_info[word] = entry
        return entry

    def _en_present(self, text: str) -> set[int]:
        """English keys that occur in ``text`` as a whole word, bare or with an accepted suffix."""
        found = Keys(set())
        self._en_scan(text, found)
        return found.present

    def _en_scan(self, text: str, found: Keys) -> None:
        """Fill ``found`` with the English keys of ``text`` and where the rules' first words stand."""
        present, starts, info = found.present, found.starts, self._word_info
        for match in _LETTERS.finditer(text):
            word = match.group()
            entry = info.get(word)
            if entry is None:
                entry = self._word_entry(word)
            ids, bases = entry
            if ids:
                present.update(ids)
            for base in bases:
                starts.setdefault(base, []).append(match.start())
        automaton = self._automata.get("en")
        if automaton is not None:
            # Keys with other characters ("don't", 篮球): the same whole-word test at each occurrence.
            for end, (key, length) in automaton.iter(text):
                start = end + 1 - length
                if start > 0 and "a" <= text[start - 1] <= "z":
                    continue
                after = _LETTERS.match(text, end + 1)
                if after is None or after.group() in _EN_SUFFIXES:
                    present.add(key)
        return present

    def _find(self, views: NormalizedText, recomposed: View | None, keys: Keys, *,
              allow: bool) -> list[Hit]:
        found: list[Hit] = []
        present, starts = keys.present, keys.starts
        zh_views = [view for view in (views.joined, recomposed) if view is not None]
        candidates = set(self._always)
        triggers = self._triggers
        for key in present:
            # Not ``present.intersection(triggers)``: that walks the whole trigger map on every call.
            if (rules := triggers.get(key)) is not None:
                candidates.update(rules)
        for index in sorted(candidates):
            name, category, lang, _, items, _ = self._rules[index]
            if (category == ALLOW) != allow or any(present.isdisjoint(item) for item in items):
                continue
            pattern, unless = self._compiled[index]
            window = _UNLESS_WINDOW[lang]
            firsts = self._starts[index]
            for view in [views.base] if lang == "en" else zh_views:
                text = view.text
                if firsts is None:
                    tried = pattern.finditer(text)
                else:
                    # Only where a first word stands: an alternation of hundreds of class words
                    # tried at every position is most of the time a prompt takes.
                    positions = sorted({p for first in firsts if first in starts for p in starts[first]})
                    tried = _matches_at(pattern, text, positions)
                breaks = self._breaks.get(lang)
                if allow and breaks is not None:
                    tried = (m for m in tried if breaks.search(text, m.start(), m.end()) is None)
                matches = [m for m in tried if unless is None or not unless.search(
                    text, *self._unless_window(text, m, window, breaks))]
                for match in matches if allow else matches[:1]:
                    start, end = match.span()
                    found.append((category, view.origin[start], view.origin[end - 1] + 1, name))
                if matches and not allow:
                    break
        return found

    @staticmethod
    def _unless_window(text: str, match: re.Match[str], window: int,
                       breaks: re.Pattern[str] | None) -> tuple[int, int]:
        """Where ``unless`` words count for ``match``: ``window`` characters either side, not past a
        clause break."""
        low, high = max(0, match.start() - window), min(len(text), match.end() + window)
        if breaks is not None:
            for before in breaks.finditer(text, low, match.start()):
                low = before.end()
            if (after := breaks.search(text, match.end(), high)) is not None:
                high = after.start()
        return low, high

    def english_words(self) -> frozenset[str]:
        """Every single English word of the classes, folded (what an obfuscated word may stand for)."""
        return frozenset(piece for name in self._classes for word in self._words(name, "en")
                         for piece in self._normalizer.fold_term(str(word)).split() if _LETTERS.fullmatch(piece))

    def zh_characters(self) -> set[str]:
        """Every Chinese character of the Chinese class words (split-character recomposition knows them)."""
        return {ch for entry in self._classes.values() for word in entry.get("zh") or []
                for ch in str(word) if "\u4e00" <= ch <= "\u9fff"}
