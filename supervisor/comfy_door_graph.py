"""What the ComfyUI door checks in a prompt before it is queued, and the shapes it answers in.

Pure logic (no I/O), so every refusal rule is unit-tested: ComfyUI's own 400 body
(``{error, node_errors}``) for a graph ComfyUI would refuse, for a node the deny list names, and for
a text input the child-safety check refuses; the rewrite that turns every image output into a saved
file the supervisor can gate; and ComfyUI's history and queue entries.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cak.object_info import ObjectInfo
from cak.validation import check_node  # one validator for the runner and the door

# extra_data keys ComfyUI never shows in /queue or /history (execution.SENSITIVE_EXTRA_DATA_KEYS).
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
# Image outputs the door turns into SaveImage (so the file passes the supervisor's gate) and the
# ``type`` ComfyUI would have reported for each.
IMAGE_OUTPUT_NODES = {"SaveImage": "output", "PreviewImage": "temp", "SaveImageWebsocket": "websocket"}
GATE_NODE_TYPE = "SupervisorImageGate"


class GraphRefused(Exception):
    """The prompt is refused before the queue; ``body`` is ComfyUI's 400 answer."""

    def __init__(self, error: dict[str, Any], node_errors: dict[str, Any] | None = None) -> None:
        super().__init__(error["message"])
        self.body = {"error": error, "node_errors": node_errors or {}}


def comfy_error(kind: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _failed_validation(node_errors: dict[str, Any]) -> GraphRefused:
    return GraphRefused(comfy_error("prompt_outputs_failed_validation", "Prompt outputs failed validation"),
                        node_errors)


@dataclass(frozen=True)
class NodeRules:
    """Which node classes a prompt may use: ``allow`` (when set) is the only ones, ``deny`` never."""

    deny: frozenset[str]
    allow: frozenset[str] | None = None

    def refuses(self, class_type: str) -> bool:
        return class_type in self.deny or (self.allow is not None and class_type not in self.allow)


def check_prompt(prompt: Any, object_info: ObjectInfo, rules: NodeRules) -> list[str]:
    """The ids of the prompt's output nodes; ``GraphRefused`` in ComfyUI's words otherwise."""
    if not isinstance(prompt, dict) or not prompt:
        raise GraphRefused(comfy_error("invalid_prompt", "Cannot execute because the prompt is empty.",
                                       "The prompt must be an API-format graph {node id: {class_type, inputs}}."))
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise GraphRefused(comfy_error(
                "invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                f"Node ID '#{node_id}'"))
        if not isinstance(node.get("inputs", {}), dict):
            raise GraphRefused(comfy_error("invalid_prompt", "Cannot execute because a node has no inputs.",
                                           f"Node ID '#{node_id}'"))
        if node["class_type"] not in object_info:
            raise GraphRefused(comfy_error(
                "invalid_prompt", f"Cannot execute because node {node['class_type']} does not exist.",
                f"Node ID '#{node_id}'"))
    outputs = [node_id for node_id, node in prompt.items()
               if object_info.get(node["class_type"]).output_node]  # type: ignore[union-attr]
    if not outputs:
        raise GraphRefused(comfy_error("prompt_no_outputs", "Prompt has no outputs"))
    node_errors: dict[str, Any] = {}
    for node_id, node in prompt.items():
        errors = []
        if rules.refuses(node["class_type"]):
            errors.append(comfy_error(
                "node_not_allowed", f"{node['class_type']} is not allowed on this pool",
                "nodes that read or write arbitrary files or run code are refused (comfy_api.deny_nodes)",
                class_type=node["class_type"]))
        spec = object_info.get(node["class_type"])
        for line in check_node(str(node_id), node.get("inputs") or {}, spec, prompt, object_info,  # type: ignore[arg-type]
                                "models"):
            errors.append(comfy_error("invalid_input", line.split(": ", 1)[-1], line))
        if errors:
            node_errors[str(node_id)] = {"errors": errors, "class_type": node["class_type"],
                                         "dependent_outputs": outputs}
    if node_errors:
        raise _failed_validation(node_errors)
    return outputs


def check_texts(prompt: dict[str, Any], outputs: list[str],
                check: Callable[[str], tuple[bool, str | None]]) -> None:
    """Every string input of every node through the child-safety check; ``GraphRefused`` naming
    the category on each node where one fails (``check`` returns ``(safe, category)``)."""
    node_errors: dict[str, Any] = {}
    for node_id, node in prompt.items():
        for name, value in (node.get("inputs") or {}).items():
            if not isinstance(value, str):
                continue
            safe, category = check(value)
            if safe:
                continue
            category = category or "unspecified"
            entry = node_errors.setdefault(str(node_id), {"errors": [], "class_type": node["class_type"],
                                                          "dependent_outputs": outputs})
            entry["errors"].append(comfy_error(
                "unsafe_text", f"The text of '{name}' was judged unsafe for children (category: {category})",
                f"{name}: category: {category}", input_name=name, category=category))
    if node_errors:
        raise _failed_validation(node_errors)


def output_kinds(prompt: dict[str, Any]) -> dict[str, str]:
    """Image output node id → the ``type`` ComfyUI would report (``websocket`` for SaveImageWebsocket)."""
    return {str(node_id): IMAGE_OUTPUT_NODES[node["class_type"]] for node_id, node in prompt.items()
            if node.get("class_type") in IMAGE_OUTPUT_NODES}


def graph_to_run(prompt: dict[str, Any]) -> dict[str, Any]:
    """The graph an instance runs: every image output saved as a file, so that the supervisor
    downloads it and gates it before any client sees it (previews and websocket images too)."""
    graph = copy.deepcopy(prompt)
    for node_id, node in graph.items():
        kind = IMAGE_OUTPUT_NODES.get(node.get("class_type", ""))
        if kind is None:
            continue
        images = (node.get("inputs") or {}).get("images")
        node["class_type"] = "SaveImage"
        node["inputs"] = {"images": images, "filename_prefix": f"door_{kind}_{node_id}"}
    return graph


def public_extra_data(extra_data: Any) -> dict[str, Any]:
    """extra_data as stored and shown: ComfyUI's sensitive keys dropped."""
    if not isinstance(extra_data, dict):
        return {}
    return {key: value for key, value in extra_data.items() if key not in SENSITIVE_EXTRA_DATA_KEYS}


def queue_item(number: float, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any],
               outputs: Iterable[str]) -> list[Any]:
    """ComfyUI's queue tuple as JSON: ``[number, prompt_id, prompt, extra_data, outputs_to_execute]``."""
    return [number, prompt_id, prompt, extra_data, list(outputs)]
