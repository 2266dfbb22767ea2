"""Facts the docs state about the code, checked against the code (so the two cannot drift apart)."""

from __future__ import annotations

import re

import yaml
from cute_animal_kids.pack_data import data_dir
from cute_animal_kids.text_safety import check_text

from cak.install_state import REPO_ROOT

NODES_MD = REPO_ROOT / "docs" / "nodes.md"


def _allow_list() -> set[str]:
    data = yaml.safe_load((data_dir() / "text_safety.yaml").read_text(encoding="utf-8"))
    return {phrase for phrases in data["allow"].values() for phrase in phrases}


def _words(text: str) -> list[str]:
    return [word.strip(" *\n") for word in re.split(r",|\band\b", text) if word.strip(" *\n")]


def test_docs_nodes_md_names_allow_list_entries_and_words_that_need_none() -> None:
    text = " ".join(NODES_MD.read_text(encoding="utf-8").split())
    need_none = re.search(r"whole words only, so (.+?) need no entry, and the Chinese terms are chosen so that (.+?) hold none",
                          text)
    entries = re.search(r"entries of the allow-list \(`allow` in `data/text_safety.yaml`\): (.+?) …", text)
    assert need_none and entries, "docs/nodes.md no longer says which words are allow-list entries"
    allowed = _allow_list()
    for word in _words(entries.group(1)):
        assert word in allowed, f"docs/nodes.md calls {word!r} an allow-list entry; it is not one"
        assert check_text(word).safe, word
    for word in _words(need_none.group(1)) + _words(need_none.group(2)):
        assert word not in allowed, f"docs/nodes.md says {word!r} needs no entry, but it has one"
        assert check_text(word).safe, f"docs/nodes.md says {word!r} passes; the gate refuses it"
