"""A typed view of ComfyUI's ``/object_info``: what each node class takes and gives.

Validation and UI→API conversion both need the same facts (widget order, types, ranges, choices);
this module reads them from the two spellings ComfyUI uses: classic ``[[choices], {opts}]`` combos
and V3 ``["COMBO", {"options": [...]}]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cak.errors import UsageError

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str                       # "INT", "MODEL", "COMBO", "IMAGE,MASK", "*", ...
    options: dict[str, Any]
    required: bool
    choices: tuple[Any, ...] | None = None

    @property
    def is_widget(self) -> bool:
        """A value typed into the node (not only a socket): these fill ``widgets_values``."""
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def has_control_widget(self) -> bool:
        """The editor adds a "control after generate" value after this widget's own value."""
        return bool(self.options.get("control_after_generate"))


@dataclass(frozen=True)
class NodeSpec:
    class_type: str
    inputs: dict[str, InputSpec]      # in the node's declared order (required, then optional)
    output_types: tuple[str, ...]
    display_name: str
    output_node: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def widget_inputs(self) -> list[InputSpec]:
        return [spec for spec in self.inputs.values() if spec.is_widget]


class ObjectInfo:
    """All node classes of one server."""

    def __init__(self, raw: dict[str, Any]) -> None:
        if not isinstance(raw, dict) or not raw or not all(isinstance(v, dict) for v in raw.values()):
            raise UsageError("this is not ComfyUI /object_info data (expected {class name: definition})")
        self.raw = raw
        self._specs: dict[str, NodeSpec] = {}

    @classmethod
    def load(cls, path: Path) -> ObjectInfo:
        """A saved ``/object_info`` JSON (``python -m runner object-info --out FILE``)."""
        try:
            return cls(json.loads(path.read_text()))
        except OSError as exc:
            raise UsageError(f"cannot read object info file {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise UsageError(f"object info file {path} is not valid JSON ({exc})") from None

    def __contains__(self, class_type: str) -> bool:
        return class_type in self.raw

    def get(self, class_type: str) -> NodeSpec | None:
        if class_type not in self.raw:
            return None
        if class_type not in self._specs:
            self._specs[class_type] = _parse_node(class_type, self.raw[class_type])
        return self._specs[class_type]


def _parse_node(class_type: str, raw: dict[str, Any]) -> NodeSpec:
    sections = raw.get("input") or {}
    order = raw.get("input_order") or {}
    inputs: dict[str, InputSpec] = {}
    for section in ("required", "optional"):
        declared = sections.get(section) or {}
        names = order.get(section) or list(declared)
        for name in names:
            if name in declared:
                inputs[name] = _parse_input(name, declared[name], section == "required")
    return NodeSpec(
        class_type=class_type,
        inputs=inputs,
        output_types=tuple(_type_name(t) for t in raw.get("output") or []),
        display_name=raw.get("display_name") or class_type,
        output_node=bool(raw.get("output_node")),
        extra={k: v for k, v in raw.items() if k in ("category", "python_module")},
    )


def _parse_input(name: str, raw: Any, required: bool) -> InputSpec:
    raw = raw if isinstance(raw, (list, tuple)) else [raw]
    kind = raw[0] if raw else "*"
    options = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}
    if isinstance(kind, (list, tuple)):
        return InputSpec(name, "COMBO", options, required, tuple(kind))
    if kind == "COMBO":
        return InputSpec(name, "COMBO", options, required, tuple(options.get("options") or ()))
    return InputSpec(name, str(kind), options, required)


def _type_name(kind: Any) -> str:
    return "COMBO" if isinstance(kind, (list, tuple)) else str(kind)


def types_compatible(output_type: str, input_type: str) -> bool:
    """ComfyUI's rule: ``*`` matches anything, ``A,B`` means either, otherwise names must match."""
    if output_type == "*" or input_type == "*":
        return True
    outputs = {t.strip() for t in output_type.split(",")}
    inputs = {t.strip() for t in input_type.split(",")}
    return bool(outputs & inputs)
