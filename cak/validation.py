"""Check an API-format graph against a server's ``/object_info`` before anything is queued.

ComfyUI validates too, but only once the prompt is posted and in its own words; this check runs
offline (from a saved ``/object_info``) and names what to do, e.g. which folder a missing model
file belongs in.
"""

from __future__ import annotations

from typing import Any

from cak.model_folders import MODEL_FOLDERS

from .object_info import InputSpec, NodeSpec, ObjectInfo, types_compatible


def validate_graph(graph: dict[str, Any], object_info: ObjectInfo, models_hint: str = "models") -> list[str]:
    """Every problem found, one readable line each (empty when the graph fits the server).

    ``models_hint`` is the models folder named in missing-file advice.
    """
    if not isinstance(graph, dict) or not graph:
        return ["the graph is empty or not an API-format graph ({node id: {class_type, inputs}})"]
    problems: list[str] = []
    for node_id, node in graph.items():
        if not isinstance(node, dict) or "class_type" not in node:
            problems.append(f"node {node_id}: not an API-format node (no class_type)")
            continue
        spec = object_info.get(node["class_type"])
        if spec is None:
            problems.append(f"node {node_id}: class {node['class_type']} is not on this server "
                            "(a custom node pack missing or failed to load?)")
            continue
        problems += check_node(node_id, node.get("inputs") or {}, spec, graph, object_info, models_hint)
    return problems


def check_node(node_id: str, inputs: dict[str, Any], spec: NodeSpec, graph: dict[str, Any],
                object_info: ObjectInfo, models_hint: str) -> list[str]:
    where = f"node {node_id} ({spec.class_type})"
    problems = [f"{where}: {name!r} is not an input of {spec.class_type}"
                for name in inputs if name not in spec.inputs]
    for name, input_spec in spec.inputs.items():
        if name not in inputs:
            if input_spec.required:
                problems.append(f"{where}: required input {name!r} is missing")
            continue
        value = inputs[name]
        if _is_link(value):
            problems += _check_link(where, name, value, input_spec, graph, object_info)
        elif not input_spec.is_widget and input_spec.type != "COMBO":
            problems.append(f"{where}: input {name!r} needs a link from a {input_spec.type} output, "
                            f"got the value {value!r}")
        else:
            problems += _check_value(where, name, value, input_spec, models_hint)
    return problems


def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def _check_link(where: str, name: str, link: list, input_spec: InputSpec, graph: dict[str, Any],
                object_info: ObjectInfo) -> list[str]:
    origin_id, slot = link
    origin = graph.get(origin_id)
    if not isinstance(origin, dict):
        return [f"{where}: input {name!r} is linked to node {origin_id}, which is not in the graph"]
    origin_spec = object_info.get(origin.get("class_type", ""))
    if origin_spec is None:
        return []  # reported on the origin node itself
    if not 0 <= slot < len(origin_spec.output_types):
        return [(f"{where}: input {name!r} is linked to output {slot} of node {origin_id} "
                f"({origin_spec.class_type}), which has {len(origin_spec.output_types)} outputs")]
    output_type = origin_spec.output_types[slot]
    if not types_compatible(output_type, input_spec.type):
        return [(f"{where}: input {name!r} wants {input_spec.type} but node {origin_id} "
                f"({origin_spec.class_type}) output {slot} gives {output_type}")]
    return []


def _check_value(where: str, name: str, value: Any, spec: InputSpec, models_hint: str) -> list[str]:
    if spec.type == "COMBO":
        if spec.choices is not None and value not in spec.choices:
            folder = MODEL_FOLDERS.get(name)
            if folder is not None:
                return [(f"{where}: model file {value} is not in {folder}/ on the server — put it in "
                        f"{models_hint}/{folder}/ (see docs/workflows.md)")]
            shown = ", ".join(map(str, spec.choices[:8])) + (", …" if len(spec.choices) > 8 else "")
            return [f"{where}: {name}={value!r} is not one of the choices ({shown})"]
        return []
    if spec.type == "BOOLEAN":
        return [] if isinstance(value, bool) else [f"{where}: {name} must be true or false, got {value!r}"]
    if spec.type == "STRING":
        return [] if isinstance(value, str) else [f"{where}: {name} must be text, got {value!r}"]
    if spec.type == "INT" and (isinstance(value, bool) or not isinstance(value, int)):
        return [f"{where}: {name} must be a whole number, got {value!r}"]
    if spec.type == "FLOAT" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return [f"{where}: {name} must be a number, got {value!r}"]
    low, high = spec.options.get("min"), spec.options.get("max")
    if low is not None and value < low:
        return [f"{where}: {name}={value} is below the minimum {low}"]
    if high is not None and value > high:
        return [f"{where}: {name}={value} is above the maximum {high}"]
    return []
