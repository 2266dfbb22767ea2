"""Turn an editor (UI-format) workflow into the API format ComfyUI's ``/prompt`` runs.

The editor stores each node's typed-in values as a positional ``widgets_values`` list; only the
node's definition (``/object_info``) says which input each position belongs to. This module does
what the editor's "Export (API)" does, so a designer's edited graph can run headless:

- widget values map to the node's widget inputs in declared order, skipping the extra
  "control after generate" value (``fixed``/``randomize``/...) after seed-like widgets;
- links become ``[origin id, slot]``; a linked widget input takes the link, not the stored value;
- muted nodes (mode 2) are left out with their links; bypassed nodes (mode 4) are left out and
  their consumers are fed by the bypassed node's input of the same type;
- Note, MarkdownNote and groups are layout only; Reroute passes its input through; a
  PrimitiveNode's value is written into each input it feeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cak.errors import UsageError
from cak.object_info import NodeSpec, ObjectInfo

MODE_ALWAYS = 0
MODE_MUTED = 2
MODE_BYPASSED = 4
LAYOUT_ONLY = frozenset({"Note", "MarkdownNote"})
REROUTE = "Reroute"
PRIMITIVE = "PrimitiveNode"
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
SEED_NAMES = frozenset({"seed", "noise_seed"})


class ConversionError(UsageError):
    """The UI workflow cannot be turned into an API graph (the message names the node)."""


@dataclass(frozen=True)
class _Link:
    origin: int
    slot: int
    target: int
    target_slot: int
    type: str


def ui_to_api(workflow: dict[str, Any], object_info: ObjectInfo) -> dict[str, dict[str, Any]]:
    """The API-format graph (``{id: {class_type, inputs, _meta}}``) for a UI-format workflow."""
    if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
        raise ConversionError("not a UI-format workflow (no \"nodes\" list); API-format files need no conversion")
    if (workflow.get("definitions") or {}).get("subgraphs"):
        raise ConversionError("workflows with subgraphs are not supported: unpack them in the editor first")
    converter = _Converter(workflow, object_info)
    return converter.convert()


class _Converter:
    def __init__(self, workflow: dict[str, Any], object_info: ObjectInfo) -> None:
        self.object_info = object_info
        self.nodes: dict[int, dict[str, Any]] = {}
        for node in workflow["nodes"]:
            try:
                self.nodes[int(node["id"])] = node
            except (KeyError, TypeError, ValueError):
                raise ConversionError(f"a node has no usable id: {str(node)[:80]}") from None
        self.links: dict[int, _Link] = {}
        for raw in workflow.get("links") or []:
            link = _parse_link(raw)
            self.links[link_id(raw)] = link

    def convert(self) -> dict[str, dict[str, Any]]:
        graph: dict[str, dict[str, Any]] = {}
        for node_id in sorted(self.nodes):
            node = self.nodes[node_id]
            if self._is_virtual(node) or node.get("mode", MODE_ALWAYS) in (MODE_MUTED, MODE_BYPASSED):
                continue
            spec = self.object_info.get(node["type"])
            if spec is None:
                raise ConversionError(f"node {node_id}: class {node['type']} is not on this server "
                                      "(a custom node pack missing?)")
            graph[str(node_id)] = {
                "inputs": self._inputs(node, spec),
                "class_type": node["type"],
                "_meta": {"title": node.get("title") or spec.display_name},
            }
        return graph

    def _is_virtual(self, node: dict[str, Any]) -> bool:
        return node.get("type") in LAYOUT_ONLY | {REROUTE, PRIMITIVE}

    def _inputs(self, node: dict[str, Any], spec: NodeSpec) -> dict[str, Any]:
        inputs = self._widget_values(node, spec)
        for slot in node.get("inputs") or []:
            name = slot.get("widget", {}).get("name") or slot.get("name")
            if slot.get("link") is None:
                continue
            source = self._resolve(slot["link"], node_id=int(node["id"]), input_name=name)
            if source is not None:  # fed by a muted node: a widget keeps its typed-in value
                inputs[name] = source
        return inputs

    def _widget_values(self, node: dict[str, Any], spec: NodeSpec) -> dict[str, Any]:
        values = node.get("widgets_values")
        widgets = spec.widget_inputs
        if values is None:
            return {}
        if isinstance(values, dict):  # some custom nodes store values by name
            return {w.name: values[w.name] for w in widgets if w.name in values}
        values = list(values)
        result: dict[str, Any] = {}
        position = 0
        for widget in widgets:
            if position >= len(values):
                break
            result[widget.name] = values[position]
            position += 1
            if position < len(values) and self._has_control_value(widget.name, widget.has_control_widget,
                                                                  values[position]):
                position += 1
        return result

    @staticmethod
    def _has_control_value(name: str, declared: bool, value: Any) -> bool:
        return isinstance(value, str) and value in CONTROL_VALUES and (declared or name in SEED_NAMES)

    def _resolve(self, link_ref: int, node_id: int, input_name: str) -> Any:
        """What feeds an input: ``[origin, slot]``, a primitive's value, or ``None`` (nothing)."""
        seen: set[int] = set()
        link = self.links.get(int(link_ref))
        while True:
            if link is None:
                raise ConversionError(f"node {node_id} input {input_name}: link {link_ref} is not in the "
                                      "workflow's link list")
            if link.origin in seen:
                raise ConversionError(f"node {node_id} input {input_name}: links loop through node {link.origin}")
            seen.add(link.origin)
            origin = self.nodes.get(link.origin)
            if origin is None:
                raise ConversionError(f"node {node_id} input {input_name}: link {link_ref} comes from "
                                      f"node {link.origin}, which is not in the workflow")
            mode = origin.get("mode", MODE_ALWAYS)
            if origin["type"] == PRIMITIVE:
                return (origin.get("widgets_values") or [None])[0] if mode == MODE_ALWAYS else None
            if mode == MODE_MUTED:
                return None
            if origin["type"] == REROUTE or mode == MODE_BYPASSED:
                upstream = self._pass_through(origin, link.slot, link.type)
                if upstream is None:
                    return None
                link = self.links.get(int(upstream))
                continue
            return [str(link.origin), link.slot]

    def _pass_through(self, node: dict[str, Any], out_slot: int, out_type: str) -> int | None:
        """The link feeding a bypassed node's output: same slot if its type fits, else first fit."""
        inputs = node.get("inputs") or []
        if node["type"] == REROUTE:
            return inputs[0].get("link") if inputs else None
        candidates = [(i, slot) for i, slot in enumerate(inputs) if slot.get("link") is not None]
        for i, slot in candidates:
            if i == out_slot and _same_type(slot.get("type"), out_type):
                return slot["link"]
        for _, slot in candidates:
            if _same_type(slot.get("type"), out_type):
                return slot["link"]
        return None


def _same_type(a: Any, b: Any) -> bool:
    return a == b or "*" in (a, b)


def link_id(raw: Any) -> int:
    return int(raw["id"] if isinstance(raw, dict) else raw[0])


def _parse_link(raw: Any) -> _Link:
    """A link in either spelling: ``[id, origin, slot, target, slot, type]`` or an object."""
    try:
        if isinstance(raw, dict):
            return _Link(int(raw["origin_id"]), int(raw["origin_slot"]), int(raw["target_id"]),
                         int(raw["target_slot"]), str(raw.get("type", "*")))
        return _Link(int(raw[1]), int(raw[2]), int(raw[3]), int(raw[4]), str(raw[5]))
    except (KeyError, IndexError, TypeError, ValueError):
        raise ConversionError(f"malformed link {str(raw)[:80]}") from None
