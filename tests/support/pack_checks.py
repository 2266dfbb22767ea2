"""What every node of the pack must show in ``/object_info``, shared by the embedded-ComfyUI test
and the Manager-path test (the pack copied alone into a clean ComfyUI).

The expected node ids are read from the pack's source (``node_id="..."`` in ``nodes_*.py``), so a
new node is covered without editing the test, and a node that fails to load is missed loudly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

PACK_DIR = Path(__file__).resolve().parents[2] / "custom_nodes" / "cute_animal_kids"
PACK_MODULE = "custom_nodes.cute_animal_kids"
NODE_PREFIX = "CAK_"
CATEGORIES = {"Cute Animal Kids/Prompt", "Cute Animal Kids/Safety", "Cute Animal Kids/Memory"}
NODE_ID = re.compile(r'node_id="([^"]+)"')


def declared_node_ids() -> set[str]:
    """The node ids the pack's node modules declare."""
    return {match for file in PACK_DIR.glob("nodes_*.py") for match in NODE_ID.findall(file.read_text())}


def pack_nodes(object_info: dict[str, Any]) -> dict[str, Any]:
    """The ``/object_info`` entries ComfyUI loaded from our pack (by their module)."""
    return {node_id: node for node_id, node in object_info.items() if node.get("python_module") == PACK_MODULE}


def schema_problems(node_id: str, node: dict[str, Any]) -> list[str]:
    """Why the editor could not explain this node by itself (empty when it can)."""
    problems = []
    if not node_id.startswith(NODE_PREFIX):
        problems.append(f"{node_id}: id lacks the {NODE_PREFIX} prefix")
    if node.get("display_name", "").startswith(NODE_PREFIX) or not node.get("display_name"):
        problems.append(f"{node_id}: display name {node.get('display_name')!r}")
    if node.get("category") not in CATEGORIES:
        problems.append(f"{node_id}: category {node.get('category')!r} not in {sorted(CATEGORIES)}")
    if len(node.get("description") or "") < 40:
        problems.append(f"{node_id}: no real description")
    for section in ("required", "optional"):
        for name, spec in node.get("input", {}).get(section, {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if not options.get("tooltip"):
                problems.append(f"{node_id}: input {name} has no tooltip")
    tooltips = node.get("output_tooltips") or []
    if len(tooltips) != len(node.get("output", [])) or not all(tooltips):
        problems.append(f"{node_id}: output tooltips {tooltips!r} for outputs {node.get('output_name')}")
    return problems
