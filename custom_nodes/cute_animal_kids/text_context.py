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

import re
from collections.abc import Mapping, Sequence
from typing import Any

import ahocorasick

from .pack_data import PackDataError, require_string_list
from .text_normalizer import NormalizedText, TextNormalizer, View

_EN_SUFFIX = r"(?:s|es|ed|d|ing|[bdgklmnprt](?:ed|ing)|er|ers|ies|ied|y)?"
_EN_SUFFIXES = frozenset(["", "s", "es", "ed", "d", "ing", "er", "ers", "ies", "ied", "y",
                          *(c + tail for c in "bdgklmnprt" for tail in ("ed", "ing"))])
"""Every string ``_EN_SUFFIX`` matches whole (a unit test enumerates them)."""
_EN_SUFFIX_LENGTHS = sorted({len(x) for x in _EN_SUFFIXES})
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


class ContextRules:
    """The compiled context rules of both languages."""

    def __init__(self, data: Mapping[str, Any], categories: Sequence[str], normalizer: TextNormalizer) -> None:
        self._classes = {name: dict(entry) for name, entry in dict(data.get("classes", {})).items()}
        self._normalizer = normalizer
        self._rules: list[tuple[str, str, str, str, tuple[frozenset[int], ...], str | None]] = []
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
            for item in sequence:
                folded = self._folded(item, lang, where)
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
                r"[^a-z]+".join(re.escape(x) + (_EN_SUFFIX if inflect_first and i == 0 and " " in w else "")
                                for i, x in enumerate(w.split())) for w in folded) + ")" + _EN_SUFFIX
        return "(?:" + "|".join(re.escape(w.replace(" ", "")) for w in folded) + ")"

    def hits(self, views: NormalizedText, recomposed: View | None = None,
             present: set[int] | None = None) -> list[Hit]:
        """A hit for every rejecting rule that holds (Chinese ones also on ``recomposed``).

        ``present`` is :meth:`present` of the same views, when the caller already has it.
        """
        if present is None:
            present = self.present(views, recomposed)
        return self._find(views, recomposed, present, allow=False)

    def allowed_spans(self, views: NormalizedText, present: set[int] | None = None) -> list[tuple[int, int]]:
        """Original-text spans of the ``allow`` rules' matches: lexicon hits inside them are ignored."""
        if present is None:
            present = self.present(views, None)
        return [(start, end) for _, start, end, _ in self._find(views, None, present, allow=True)]

    def present(self, views: NormalizedText, recomposed: View | None) -> set[int]:
        """The class-word keys found in the views: computed once, shared by both kinds of rules."""
        present = self._en_present(views.base.text)
        automaton = self._automata.get("zh")
        if automaton is not None:
            for view in (views.joined, recomposed):
                if view is not None:
                    present.update(key for _, (key, _) in automaton.iter(view.text))
        return present

    def _en_present(self, text: str) -> set[int]:
        """English keys that occur in ``text`` as a whole word, bare or with an accepted suffix."""
        present: set[int] = set()
        words = self._en_words
        for word in set(_LETTERS.findall(text)):
            for length in _EN_SUFFIX_LENGTHS:
                if length == 0:
                    key = words.get(word)
                elif len(word) > length and word[-length:] in _EN_SUFFIXES:
                    key = words.get(word[:-length])
                else:
                    continue
                if key is not None:
                    present.add(key)
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

    def _find(self, views: NormalizedText, recomposed: View | None, present: set[int], *,
              allow: bool) -> list[Hit]:
        found: list[Hit] = []
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
            for view in [views.base] if lang == "en" else zh_views:
                text = view.text
                matches = [m for m in pattern.finditer(text) if unless is None or not unless.search(
                    text, max(0, m.start() - window), min(len(text), m.end() + window))]
                for match in matches if allow else matches[:1]:
                    start, end = match.span()
                    found.append((category, view.origin[start], view.origin[end - 1] + 1, name))
                if matches and not allow:
                    break
        return found

    def zh_characters(self) -> set[str]:
        """Every Chinese character of the Chinese class words (split-character recomposition knows them)."""
        return {ch for entry in self._classes.values() for word in entry.get("zh") or []
                for ch in str(word) if "\u4e00" <= ch <= "\u9fff"}
