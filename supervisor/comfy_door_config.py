"""Settings of the ComfyUI door: the ``comfy_api`` section, over ``comfy_door_defaults.yaml``.

Absent or null: the door is off. Every problem names its key (``ConfigError``), like the rest of
the supervisor's settings, so a bad file fails before any ComfyUI starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, merge

DEFAULTS_FILE = Path(__file__).with_name("comfy_door_defaults.yaml")
GATE_ACTIONS = ("replace", "block")


@dataclass(frozen=True)
class DoorConfig:
    host: str
    port: int
    deny_nodes: frozenset[str]
    allow_nodes: frozenset[str] | None
    gate_threshold: float | None  # None: the pack's threshold
    gate_action: str
    object_info_ttl_s: float
    history_limit: int


def door_config(section: Any) -> DoorConfig | None:
    """The door's settings from the raw ``comfy_api`` section (None: the door is off)."""
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ConfigError(["comfy_api: must be a mapping, or null to turn the door off"])
    defaults = yaml.safe_load(DEFAULTS_FILE.read_text())
    data = merge(defaults, section)
    problems = [f"comfy_api.{key}: unknown setting (known: {', '.join(sorted(defaults))})"
                for key in data if key not in defaults]
    gate = data.get("image_gate")
    if not isinstance(gate, dict):
        problems.append("comfy_api.image_gate: must be a mapping")
        gate = defaults["image_gate"]
    problems += [f"comfy_api.image_gate.{key}: unknown setting (known: threshold, action)"
                 for key in gate if key not in defaults["image_gate"]]
    host = data.get("host")
    if not isinstance(host, str) or not host.strip():
        problems.append("comfy_api.host: must be a non-empty string")
    port = data.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        problems.append("comfy_api.port: must be an integer 0-65535 (0: a free port)")
    deny = _names(data.get("deny_nodes"), "deny_nodes", problems, allow_null=False)
    allow = _names(data.get("allow_nodes"), "allow_nodes", problems, allow_null=True)
    threshold = gate.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0.0 <= threshold <= 1.0):
        problems.append("comfy_api.image_gate.threshold: must be a number 0-1, or null")
    action = gate.get("action")
    if action not in GATE_ACTIONS:
        problems.append(f"comfy_api.image_gate.action: must be one of {', '.join(GATE_ACTIONS)}")
    ttl = data.get("object_info_ttl_s")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 <= ttl <= 86400:
        problems.append("comfy_api.object_info_ttl_s: must be a number 0-86400")
    limit = data.get("history_limit")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
        problems.append("comfy_api.history_limit: must be an integer 1-100000")
    if problems:
        raise ConfigError(problems)
    return DoorConfig(host=host, port=port, deny_nodes=deny or frozenset(), allow_nodes=allow,  # type: ignore[arg-type]
                      gate_threshold=None if threshold is None else float(threshold), gate_action=action,
                      object_info_ttl_s=float(ttl), history_limit=limit)  # type: ignore[arg-type]


def _names(value: Any, key: str, problems: list[str], *, allow_null: bool) -> frozenset[str] | None:
    if value is None and allow_null:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(f"comfy_api.{key}: must be a list of node class names" + (", or null" if allow_null else ""))
        return frozenset()
    return frozenset(value)
