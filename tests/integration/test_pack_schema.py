"""Every node of the pack explains itself in the editor: prefixed id, description, a tooltip on
every input and output, a place in the ``Cute Animal Kids/`` category tree (as ``/object_info``
serves them to the node search and the node library)."""

from __future__ import annotations

from tests.support.pack_checks import declared_node_ids, pack_nodes, schema_problems


def test_every_pack_node_is_loaded_and_documented(comfy):
    nodes = pack_nodes(comfy.get_json("/object_info"))
    assert set(nodes) == declared_node_ids() and len(nodes) >= 5, sorted(nodes)
    problems = [problem for node_id, node in nodes.items() for problem in schema_problems(node_id, node)]
    assert problems == []
