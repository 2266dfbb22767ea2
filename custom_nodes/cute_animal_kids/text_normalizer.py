"""Normalisation of prompt text before lexicon matching, and the matching patterns for terms.

Filters are beaten by writing the same word differently: full-width letters (ｇｏｒｅ), look-alike
letters from other scripts (Cyrillic о in "gоre"), zero-width characters inside words, accents,
traditional Chinese (槍 for 枪), letters spaced or punctuated apart ("g o r e", "b.l.o.o.d",
"血 腥"), repeated letters ("goooore") and digits or symbols for letters ("n@ked", "s3xy").

Two of these tricks are handled in the term patterns rather than by rewriting the text:
- a digit or symbol may stand for several letters (1 is i or l) and "!" is usually punctuation, so
  the text keeps them and each letter of a term matches its look-alikes (``[i1!|]``);
- repeated letters: each letter of a term matches one or more copies, so "goooore" hits "gore"
  while "bob" still does not hit "boob".

Everything else is folded character by character (with a per-character cache), so every position
of a normalised view maps back to a position of the original text; the safety checker uses that
to redact the original without repeating the offending words.

The data (look-alike maps, leetspeak, limits) lives in ``data/text_safety.yaml``. No ComfyUI
imports: the supervisor uses this module before a job is queued.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import emoji
import opencc
from confusable_homoglyphs import confusables

from .pack_data import (
    PackDataError,
    child_path,
    data_dir,
    load_data_file,
    require_char,
    require_key,
    require_mapping,
    require_number,
    require_string,
    require_string_list,
)

DATA_FILE = "text_safety.yaml"

_DROPPED_CATEGORIES = frozenset({"Mn", "Me", "Cf", "Cs", "Zl", "Zp"})
"""Stripped before matching: combining marks (accents, variation selectors), format characters
(zero-width, bidi controls U+202A-U+202E and U+2066-U+2069), lone UTF-16 surrogates (which would
make OpenCC and every UTF-8 writer raise) and the line/paragraph separators U+2028/U+2029 (hostile
input hides them inside words: "gu\u2028n" reads "gun")."""

_FEW_CHANGES = 8
"""Up to this many distinct characters to fold in a text, ``str.replace`` each; beyond, translate."""

_FOLD_CACHE_LIMIT = 50_000
"""Bound on cached characters so hostile input with many distinct code points cannot grow memory."""

_SEPARATOR = r"[\W_]"
"""Anything that is not a letter or digit of any script: spaces, punctuation, symbols."""

_LATIN_TERM = re.compile(r"[a-z0-9]+(?:[ \-'.][a-z0-9]+)*")
"""Shape of an English term after folding: letters/digits, single spaces, hyphens, apostrophes."""


_SHORT_SPLIT = re.compile(
    r"(?<![a-z])[a-z]{1,2}([.\-]+)(?=[a-z])"        # "g.un", "ki-ll": a short piece before a dot/dash
    r"|(?<=[a-z])([.\-]+)[a-z]{1,2}(?![a-z])"       # "gu.n"
    r"|(?<=[a-z]{2})( )[b-hj-z](?![a-z])"            # "gu n": a lone letter (not "a"/"i") after a word
    r"|(?<!\S)[b-hj-z]( )(?=[a-z]{2})"                # "k ill"
)
"""Dots, dashes or a space splitting a short word: the short-word view joins them up."""
_LONE_LETTER = re.compile(r"[b-hj-z](?<![a-z][\s\S])(?![a-z])")
"""What a space split of ``_SHORT_SPLIT`` needs: a letter (not "a"/"i") with no letter either side."""

MASKS = "*#_"
"""Characters that hide a letter inside a word ("k*ll")."""
_NO_LETTER_BEFORE_FIRST = r"(?<![a-z][\s\S])"
"""Placed after a term's first character: the character before it is not a letter a-z."""
_NO_LETTER_AFTER = r"(?![a-z])"
_MIN_MASKED_TERM = 3
"""Terms shorter than this take no masks (a masked two-letter word is anything)."""


class View:
    """One normalised form of a prompt; ``origin[i]`` is the original index of ``text[i]``.

    Only a rejected prompt needs the position map (to redact the original), so a view can be built
    with ``make_origin`` instead: the map is then computed on first use, at most once.
    """

    __slots__ = ("_make_origin", "_origin", "text")

    def __init__(self, text: str, origin: Sequence[int] | None = None, *,
                 make_origin: Callable[[], Sequence[int]] | None = None) -> None:
        if (origin is None) == (make_origin is None):
            raise TypeError("give exactly one of origin and make_origin")
        self.text = text
        self._origin = origin
        self._make_origin = make_origin

    @property
    def origin(self) -> Sequence[int]:
        if self._origin is None:
            self._origin = self._make_origin()  # type: ignore[misc]  # set whenever _origin is not
        return self._origin

    def __repr__(self) -> str:
        return f"View({self.text!r})"


@dataclass(frozen=True, slots=True)
class NormalizedText:
    """The forms a prompt is matched in.

    ``base`` is the folded text. ``spaced`` repeats it with runs of single letters joined up (only
    present when such runs exist). ``joined`` is the base without spaces and punctuation, for
    Chinese, which has no word boundaries (only present when the text has non-ASCII characters).
    """

    base: View
    spaced: tuple[View, ...]
    joined: View | None
    short: View | None = None
    """The base with separators inside short words dropped ("g.un", "gu n"), when there are any."""

    @property
    def latin_views(self) -> tuple[View, ...]:
        return (self.base, *self.spaced) if self.short is None else (self.base, *self.spaced, self.short)


class TextNormalizer:
    """Folds text and builds tolerant term patterns, configured from ``text_safety.yaml``."""

    def __init__(self, data: Mapping[str, Any], file: str = DATA_FILE) -> None:
        leet = require_mapping(require_key(data, "leet", file, ""), file, "leet")
        homoglyphs = require_mapping(require_key(data, "homoglyphs", file, ""), file, "homoglyphs")
        limits = require_mapping(require_key(data, "limits", file, ""), file, "limits")
        matching = require_mapping(require_key(data, "matching", file, ""), file, "matching")

        lookalikes = require_mapping(require_key(data, "lookalike_letters", file, ""), file,
                                     "lookalike_letters", non_empty=False)
        self._letter_alternatives = _parse_alternatives(leet, "leet", file, letter_keys=False)
        for letter, others in _parse_alternatives(lookalikes, "lookalike_letters", file,
                                                  letter_keys=True).items():
            self._letter_alternatives[letter] = self._letter_alternatives.get(letter, "") + others
        self._leet_symbols = "".join(
            sorted({s for symbols in self._letter_alternatives.values() for s in symbols if not s.isalnum()})
        )
        self._homoglyphs = _parse_homoglyphs(homoglyphs, file)
        self._emoji_words = _parse_emoji_words(data.get("emoji_words", {}), file)
        self._t2s = opencc.OpenCC("t2s")
        self._zh_variants = _parse_zh_variants(data.get("zh_variants") or {}, file)
        self._fold_cache: dict[str, str] = {}
        self._fold_table: dict[int, str] = {}
        """``str.translate`` table of the cached characters that do not fold to themselves."""
        self._changed: set[str] = set()
        """The keys of ``_fold_table`` as characters."""
        self._irregular: set[str] = set()
        """Cached characters that fold to no or several characters (they shift positions)."""
        self._fold_lock = threading.Lock()

        min_run = int(require_number(require_key(limits, "min_spaced_run", file, "limits"), file,
                                     "limits.min_spaced_run", minimum=2, maximum=20, integer=True))
        max_gap = int(require_number(require_key(limits, "max_spaced_gap", file, "limits"), file,
                                     "limits.max_spaced_gap", minimum=1, maximum=10, integer=True))
        single = f"[a-z0-9{re.escape(self._leet_symbols)}]"
        self._run_re = re.compile(
            # "Not after a letter or digit" is checked after the first single (see _body_pattern).
            rf"{single}(?<![^\W_][\s\S])(?:{_SEPARATOR}{{1,{max_gap}}}{single}){{{min_run - 1},}}(?![^\W_])"
        )
        self._standalone_letters = frozenset(
            require_string_list(require_key(matching, "standalone_letters", file, "matching"), file,
                                "matching.standalone_letters")
        )
        suffixes = require_string_list(require_key(matching, "en_suffixes", file, "matching"), file,
                                       "matching.en_suffixes")
        for index, suffix in enumerate(suffixes):
            if not suffix.isascii() or not suffix.isalpha() or suffix != suffix.lower():
                raise PackDataError(f"{file}: matching.en_suffixes[{index}]: must be lowercase ASCII letters")
        self._suffix_group = "(?:" + "|".join(sorted(suffixes, key=lambda s: (-len(s), s))) + ")?"
        self._separators = re.compile(r"[\W_]+")

    # -- folding ---------------------------------------------------------------------------------

    def _fold_char(self, ch: str) -> str:
        """What one original character becomes: "" (dropped), itself, or a folded replacement."""
        folded = self._fold_cache.get(ch)
        if folded is not None:
            return folded
        if unicodedata.category(ch) in _DROPPED_CATEGORIES:
            self._remember(ch, "", always=True)
            return ""
        if not ch.isascii() and ch in emoji.EMOJI_DATA:
            folded = f" {self._emoji_word(ch)} "
            self._remember(ch, folded)
            return folded
        decomposed = unicodedata.normalize("NFKD", ch)
        kept = "".join(c for c in decomposed if unicodedata.category(c) not in _DROPPED_CATEGORIES)
        # Look-alikes are mapped before AND after case folding: Greek "Β" looks like "B" but its
        # lower case "β" does not look like "b"; Cyrillic "І" folds to "і", which looks like "i".
        look_alike = self._homoglyphs
        kept = "".join(look_alike.get(c, c) for c in kept)
        folded = unicodedata.normalize("NFKC", kept.casefold())
        folded = "".join(look_alike.get(c, c) for c in folded)
        if not folded.isascii():
            folded = "".join(self._zh_variants.get(c, c) for c in self._t2s.convert(folded))
        self._remember(ch, folded)
        return folded

    def _remember(self, ch: str, folded: str, *, always: bool = False) -> None:
        """Cache one character's fold (bounded unless ``always``) and index it for :meth:`fold`."""
        with self._fold_lock:
            if not always and len(self._fold_cache) >= _FOLD_CACHE_LIMIT:
                return
            if len(folded) != 1:
                self._irregular.add(ch)
            if folded != ch:
                self._fold_table[ord(ch)] = folded
                self._changed.add(ch)
            self._fold_cache[ch] = folded

    def _emoji_word(self, ch: str) -> str:
        """An emoji read as words: the YAML's reading (``emoji_words``) or its CLDR name.

        So "🔪" is read "kitchen knife" and matched like the words; the YAML pins readings where
        the name hides what the emoji stands for ("🔫" is named "water pistol" but means a gun).
        """
        word = self._emoji_words.get(ch)
        if word is None:
            word = emoji.EMOJI_DATA[ch]["en"].strip(":").replace("_", " ")
        return word.lower()

    def fold(self, text: str) -> View:
        """The base view: NFKC/NFKD, case fold, marks and format chars dropped, look-alikes, t2s."""
        if text.isascii():
            return View(text.lower(), range(len(text)))
        # Fast path: once every character is cached, one C-level translate folds the text; the
        # position map is the identity when every character folds to exactly one (plain Chinese,
        # accents, full-width letters), else it is built only if a hit needs it (emoji, ß).
        chars = set(text)
        cache = self._fold_cache
        missing = chars.difference(cache)
        for ch in missing:
            self._fold_char(ch)
        if all(ch in cache for ch in missing):
            changed = chars.intersection(self._changed)
            # A few str.replace beat translate's per-character lookups (when no replacement
            # brings in a character that is itself replaced, so the order cannot matter).
            if len(changed) <= _FEW_CHANGES and all(self._changed.isdisjoint(cache[ch]) for ch in changed):
                folded = text
                for ch in changed:
                    folded = folded.replace(ch, cache[ch])
            else:
                folded = text.translate(self._fold_table)
            if chars.isdisjoint(self._irregular):
                return View(folded, range(len(text)))
            return View(folded, make_origin=lambda: self._origin_of(text))
        pieces: list[str] = []
        origin: list[int] = []
        fold_char = self._fold_char
        for index, ch in enumerate(text):
            folded = fold_char(ch)
            if len(folded) == 1:
                origin.append(index)
            elif folded:
                origin.extend([index] * len(folded))
            else:
                continue
            pieces.append(folded)
        return View("".join(pieces), origin)

    def _origin_of(self, text: str) -> list[int]:
        """The position map of the fold of ``text``, all of whose characters are cached."""
        cache = self._fold_cache
        origin: list[int] = []
        for index, ch in enumerate(text):
            size = len(cache[ch])
            if size == 1:
                origin.append(index)
            elif size:
                origin.extend([index] * size)
        return origin

    def normalize(self, text: str) -> str:
        """The folded text (the base view without the position map)."""
        return self.fold(text).text

    def views(self, text: str) -> NormalizedText:
        """All forms the checker matches ``text`` in."""
        base = self.fold(text)
        runs = list(self._run_re.finditer(base.text))
        spaced: list[View] = []
        if runs:
            for keep_symbols in (False, True):
                for split_leading, split_trailing in ((False, False), (True, False), (False, True), (True, True)):
                    view = self._join_runs(base, runs, keep_symbols, split_leading, split_trailing)
                    if view.text != base.text and all(view.text != other.text for other in spaced):
                        spaced.append(view)
        short = self._join_short_splits(base)
        joined = None if base.text.isascii() else self._join_all(base)
        return NormalizedText(base, tuple(spaced), joined, short)

    def _join_runs(self, base: View, runs: list[re.Match[str]], keep_symbols: bool,
                   split_leading: bool, split_trailing: bool) -> View:
        """Join each run of single letters ("g o r e" -> "gore").

        With ``split_leading`` / ``split_trailing`` a standalone word ("a", "i") at that end of the
        run, after or before a space, is left out of it: "a g o r e" yields "a gore" rather than
        "agore", "k-i-l-l-i-n-g a fox" "killing a fox", "a s w a s t i k a" (leading only)
        "a swastika". Every variant is matched.
        """
        text = base.text
        chars: list[str] = []
        origin: list[int] = []
        position = 0
        for run in runs:
            start, end = run.span()
            if split_leading and text[start] in self._standalone_letters:
                start += 1
                while start < end and not text[start].isalnum():
                    start += 1
            if split_trailing and text[end - 1] in self._standalone_letters and text[end - 2:end - 1].isspace():
                end -= 1
                while end > start and not text[end - 1].isalnum():
                    end -= 1
            chars.append(text[position:start])
            origin.extend(base.origin[position:start])
            for index in range(start, end):
                ch = text[index]
                if ch.isalnum() or (keep_symbols and ch in self._leet_symbols):
                    chars.append(ch)
                    origin.append(base.origin[index])
            position = end
        chars.append(text[position:])
        origin.extend(base.origin[position:])
        return View("".join(chars), origin)

    def _join_short_splits(self, base: View) -> View | None:
        """Drop the separators that split a short word ("g.un", "gu n" -> "gun"), or None."""
        text = base.text
        if "." not in text and "-" not in text and _LONE_LETTER.search(text) is None:
            return None  # the usual case, decided without running the four-way pattern
        gaps: list[tuple[int, int]] = []  # the dropped separators, left to right, disjoint
        for match in _SHORT_SPLIT.finditer(text):
            for group in range(1, 5):
                if match.group(group) is not None:
                    gaps.append(match.span(group))
        if not gaps:
            return None
        kept: list[tuple[int, int]] = []  # the pieces between them
        position = 0
        for start, end in gaps:
            if start > position:
                kept.append((position, start))
            position = max(position, end)
        kept.append((position, len(text)))

        def origin() -> list[int]:
            full = base.origin
            return [i for start, end in kept for i in full[start:end]]

        return View("".join(text[start:end] for start, end in kept), make_origin=origin)

    def _join_all(self, base: View) -> View:
        """Drop every separator, so "血 腥" and "血.腥" read "血腥"."""
        text = base.text

        def origin() -> list[int]:
            kept: list[int] = []
            position = 0
            for gap in self._separators.finditer(text):
                kept.extend(base.origin[position:gap.start()])
                position = gap.end()
            kept.extend(base.origin[position:])
            return kept

        return View(self._separators.sub("", text), make_origin=origin)

    # -- patterns --------------------------------------------------------------------------------

    @property
    def letter_alternatives(self) -> Mapping[str, str]:
        """Letter -> the characters a term's letter also matches in text (leet, look-alikes)."""
        return self._letter_alternatives

    def piece_patterns(self, folded: str) -> list[tuple[str, str]]:
        """The words of a folded English term with the regex each matches inside one word of text.

        ``"blow job"`` gives ``blow`` and ``job``, each with the atoms of :meth:`latin_pattern`
        (look-alikes, repeats, masks) but no separators or suffix: a match of the term contains a
        match of every piece, which lets an index rule terms out before their pattern runs.
        """
        masked = len(folded) >= _MIN_MASKED_TERM
        pieces: list[tuple[str, str]] = []
        word, pattern = "", ""
        for index, ch in enumerate(folded):
            if ch in " -'.":
                if word:
                    pieces.append((word, pattern))
                word, pattern = "", ""
                continue
            word += ch
            pattern += self._atom(ch, masked=masked and index > 0) + "+"
        if word:
            pieces.append((word, pattern))
        return pieces

    def fold_term(self, term: str) -> str:
        """A lexicon term folded like prompts are, with runs of whitespace made single spaces."""
        return " ".join(self.fold(term).text.split())

    def _atom(self, ch: str, *, masked: bool = False) -> str:
        """One character of a term, without quantifier: a leet class, a literal or a separator.

        With ``masked`` a letter may also be written as a mask character (``*``, ``#``, ``_``):
        "k*ll", "s#x" and "n_ked" read as the term. The first letter of a term is never masked,
        so a row of masks matches nothing.
        """
        if ch in " -'.":
            return _SEPARATOR
        alternatives = self._letter_alternatives.get(ch, "")
        if masked and ch.isalpha():
            alternatives += MASKS
        if alternatives:
            return "[" + re.escape(ch + alternatives) + "]"
        return re.escape(ch)

    def _body_pattern(self, folded: str, tail: str, *, guard: str = "") -> str:
        """``folded`` with each letter repeatable and each separator optional, then ``tail``.

        ``guard`` (a look-behind) goes right AFTER the first character, written to look back over
        it: a pattern that starts with a literal or a class lets ``re`` skip ahead to where that
        character occurs, about fifteen times faster than trying a look-behind at every position.
        """
        first = self._atom(folded[0])
        masked = len(folded) >= _MIN_MASKED_TERM
        rest = "".join(
            f"{self._atom(ch)}*" if ch in " -'." else f"{self._atom(ch, masked=masked)}+"
            for ch in folded[1:]
        )
        return f"{first}{guard}{first}*{rest}{tail}"

    def latin_pattern(self, folded: str) -> str:
        """Regex for a folded English term: leet look-alikes, repeats, optional separators, suffix,
        and whole-word guards (no letter a-z may touch either end).
        """
        if not _LATIN_TERM.fullmatch(folded):
            raise ValueError(f"not a Latin term after normalisation: {folded!r}")
        return self._body_pattern(folded, self._suffix_group + _NO_LETTER_AFTER, guard=_NO_LETTER_BEFORE_FIRST)

    def cjk_pattern(self, folded: str) -> str:
        """Regex for a folded Chinese term: a substring, each character possibly repeated.

        A Latin letter at either end ("k粉") gets a word guard, so "pink粉色" is not "k粉".
        """
        folded = folded.replace(" ", "")
        tail = _NO_LETTER_AFTER if folded[-1].isascii() and folded[-1].isalpha() else ""
        guard = _NO_LETTER_BEFORE_FIRST if folded[0].isascii() and folded[0].isalpha() else ""
        return self._body_pattern(folded, tail, guard=guard)


def _parse_alternatives(
    mapping: Mapping[str, Any], key: str, file: str, *, letter_keys: bool
) -> dict[str, str]:
    """Invert ``stand-in -> [letters]`` into ``letter -> stand-ins`` for pattern character classes.

    ``leet`` keys are digits or symbols; ``lookalike_letters`` keys are letters a-z.
    """
    alternatives: dict[str, str] = {}
    for stand_in, letters in mapping.items():
        path = child_path(key, stand_in)
        require_char(stand_in, file, path)
        is_letter = "a" <= stand_in <= "z"
        if letter_keys and not is_letter:
            raise PackDataError(f"{file}: {path}: key must be one lowercase letter a-z")
        if not letter_keys and stand_in.isascii() and stand_in.isalpha():
            raise PackDataError(f"{file}: {path}: a leet key must be a digit or symbol, not a letter")
        for index, letter in enumerate(require_string_list(letters, file, path)):
            if len(letter) != 1 or not ("a" <= letter <= "z") or letter == stand_in:
                raise PackDataError(f"{file}: {child_path(path, index)}: must be one lowercase letter a-z")
            alternatives[letter] = alternatives.get(letter, "") + stand_in
    return alternatives


def _parse_homoglyphs(homoglyphs: Mapping[str, Any], file: str) -> dict[str, str]:
    """Look-alike -> Latin map: confusables data for the listed scripts, then the YAML extras."""
    scripts = tuple(
        s.upper() for s in require_string_list(require_key(homoglyphs, "scripts", file, "homoglyphs"),
                                                file, "homoglyphs.scripts")
    )
    mapping: dict[str, str] = {}
    for ch, candidates in confusables.confusables_data.items():
        if len(ch) != 1 or ch.isascii() or not unicodedata.name(ch, "").startswith(scripts):
            continue
        letters = [c["c"] for c in candidates if len(c["c"]) == 1 and c["c"].isascii() and c["c"].isalpha()]
        if letters:
            # Same case first: capital iota "Ι" looks like "I" (and like "l", listed first).
            same_case = [c for c in letters if c.isupper() == ch.isupper()]
            mapping[ch] = (same_case or letters)[0].lower()
    extra = require_mapping(require_key(homoglyphs, "extra", file, "homoglyphs"), file,
                            "homoglyphs.extra", non_empty=False)
    for ch, latin in extra.items():
        path = child_path("homoglyphs.extra", ch)
        require_char(ch, file, path)
        if ch.isascii():
            raise PackDataError(f"{file}: {path}: key must be a non-ASCII character")
        value = require_string(latin, file, path, max_length=3)
        if not (value.isascii() and value.isalpha() and value == value.lower()):
            raise PackDataError(f"{file}: {path}: must be lowercase ASCII letters")
        mapping[ch] = value
    return mapping


def _parse_zh_variants(mapping: Any, file: str) -> dict[str, str]:
    """``variant -> standard character`` for Chinese variants that OpenCC's t2s keeps (砲 for 炮)."""
    mapping = require_mapping(mapping, file, "zh_variants", non_empty=False)
    variants = {}
    for ch, standard in mapping.items():
        path = child_path("zh_variants", ch)
        require_char(ch, file, path)
        require_char(standard, file, path)
        variants[ch] = standard
    return variants


def _parse_emoji_words(mapping: Any, file: str) -> dict[str, str]:
    """``emoji -> reading`` from the optional ``emoji_words`` mapping."""
    words = require_mapping(mapping, file, "emoji_words", non_empty=False)
    for ch, word in words.items():
        path = child_path("emoji_words", ch)
        if ch not in emoji.EMOJI_DATA:
            raise PackDataError(f"{file}: {path}: not an emoji")
        value = require_string(word, file, path, max_length=40)
        if not _LATIN_TERM.fullmatch(value.lower()):
            raise PackDataError(f"{file}: {path}: must be English words")
    return {ch: word.lower() for ch, word in words.items()}


def get_normalizer(directory: str | Path | None = None) -> TextNormalizer:
    """The normaliser for a data directory (default: the pack's), built once."""
    return _get_normalizer_for(data_dir(directory).resolve())


@functools.cache
def _get_normalizer_for(folder: Path) -> TextNormalizer:
    return TextNormalizer(load_data_file(DATA_FILE, folder))


def normalize(text: str) -> str:
    """Fold ``text`` with the pack's data (see :meth:`TextNormalizer.fold`)."""
    return get_normalizer().normalize(text)
