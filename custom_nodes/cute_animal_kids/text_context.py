"""Context rules: a scene is unsafe because of how its words combine, not because of one word.

"the bunny hurts itself", "beat the fox to death", "cut the kitten into pieces", 小熊用刀砍小兔:
none of these words is unsafe alone. A rule is data (``context`` in ``data/text_safety/*.yaml``):
a sequence of word classes (or literal words) in one language, each item at most ``max_gap`` words
(English) or characters (Chinese) after the previous one, and the category it proves::

    classes:
      harm_verb: {en: [hurt, stab, cut], zh: [伤, 割, 捅]}
      reflexive: {en: [itself, herself], zh: [自己]}
    rules:
      - {name: hurts_itself, category: self_harm, lang: en, sequence: [harm_verb, reflexive], max_gap: 3}

English class words match with their inflections (stab, stabs, stabbed, stabbing). Each rule is
compiled once into one regular expression when the checker is built. A rule's expression only runs
when every one of its items has a word in the text: one Aho-Corasick pass per language finds which
class words occur (as plain substrings, which every match of them contains).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import ahocorasick

from .pack_data import PackDataError, require_string_list
from .text_normalizer import NormalizedText, TextNormalizer

_EN_SUFFIX = r"(?:s|es|ed|d|ing|[bdgkmnprt](?:ed|ing)|er|ers|ies|ied|y)?"
_FILE = "text_safety/context"


class ContextRules:
    """The compiled context rules of both languages."""

    def __init__(self, data: Mapping[str, Any], categories: Sequence[str], normalizer: TextNormalizer) -> None:
        classes = dict(data.get("classes", {}))
        self._rules: list[tuple[str, str, str, re.Pattern[str], tuple[frozenset[int], ...]]] = []
        keys: dict[str, dict[str, int]] = {"en": {}, "zh": {}}
        """Per language: literal every match of a class word contains -> key id."""
        self._always: list[int] = []
        """Rules with an item that may match without any literal (never ruled out)."""
        self._triggers: dict[int, list[int]] = {}
        """Key id -> the rules whose most selective item has that key."""
        for index, rule in enumerate(data.get("rules", [])):
            where = f"{_FILE}: rules[{index}]"
            name, category, lang = rule.get("name"), rule.get("category"), rule.get("lang")
            if category not in categories:
                raise PackDataError(f"{where}: unknown category {category!r}")
            if lang not in ("en", "zh"):
                raise PackDataError(f"{where}: lang must be en or zh")
            sequence = require_string_list(rule.get("sequence"), _FILE, f"rules[{index}].sequence", unique=False)
            gap = int(rule.get("max_gap", 3))
            parts = []
            items: list[frozenset[int]] = []
            unfiltered = False
            for item in sequence:
                words = classes[item].get(lang) if item in classes else [item]
                if not words:
                    raise PackDataError(f"{where}: class {item!r} has no {lang} words")
                folded = sorted({normalizer.fold_term(w) for w in words}, key=len, reverse=True)
                literals = ([max(w.split() or [""], key=len) for w in folded] if lang == "en"
                            else [w.replace(" ", "") for w in folded])
                if "" in literals:
                    unfiltered = True
                    continue
                # Key ids are global (one counter for both languages), so one trigger map serves both.
                items.append(frozenset(keys[lang].setdefault(x, sum(map(len, keys.values()))) for x in literals))
                if lang == "en":
                    parts.append("(?:" + "|".join(
                        r"[^a-z]+".join(re.escape(x) for x in w.split()) for w in folded) + ")" + _EN_SUFFIX)
                else:
                    parts.append("(?:" + "|".join(re.escape(w.replace(" ", "")) for w in folded) + ")")
            if lang == "en":
                joiner = rf"(?:[^a-z]+[a-z']+){{0,{gap}}}?[^a-z]+"
                pattern = r"(?<![a-z])" + joiner.join(parts) + r"(?![a-z])"
            else:
                pattern = f"[^。！？!?.]{{0,{gap}}}?".join(parts)
            if unfiltered or not items:
                self._always.append(len(self._rules))
            else:
                # The item whose shortest literal is longest is the rarest: it triggers the rule.
                trigger = max(items, key=lambda item: min(len(lit) for lit, key in keys[lang].items() if key in item))
                for key in trigger:
                    self._triggers.setdefault(key, []).append(len(self._rules))
            self._rules.append((str(name), category, lang, re.compile(pattern), tuple(items)))
        self._automata: dict[str, ahocorasick.Automaton] = {}
        for lang, literals in keys.items():
            if literals:
                automaton = ahocorasick.Automaton()
                for literal, key in literals.items():
                    automaton.add_word(literal, key)
                automaton.make_automaton()
                self._automata[lang] = automaton

    def hits(self, views: NormalizedText) -> list[tuple[str, int, int, str]]:
        """``(category, start, end, rule name)`` in original positions for every rule that holds."""
        found = []
        present: set[int] = set()
        for lang, automaton in self._automata.items():
            view = views.base if lang == "en" else views.joined
            if view is not None:
                present.update(key for _, key in automaton.iter(view.text))
        candidates = set(self._always)
        triggers = self._triggers
        for key in present.intersection(triggers):
            candidates.update(triggers[key])
        for index in sorted(candidates):
            name, category, lang, pattern, items = self._rules[index]
            view = views.base if lang == "en" else views.joined
            if view is None or any(present.isdisjoint(item) for item in items):
                continue
            match = pattern.search(view.text)
            if match:
                start, end = match.span()
                found.append((category, view.origin[start], view.origin[end - 1] + 1, name))
        return found
