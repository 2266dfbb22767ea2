"""The supervisor's configuration: ``defaults.yaml`` merged with the operator's YAML, validated once.

Validation happens at start and every problem names its key (``instances[1].port: must be an
integer 1024-65535``), so a bad file fails before any ComfyUI is launched. The ``http`` and ``jobs``
sections belong to the job service: they are merged and handed through in ``raw_sections``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cak.install_state import REPO_ROOT, load_state

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
RAW_SECTIONS = ("http", "jobs", "guard", "webhooks")
# Handed through only when present: its absence (or null) turns the ComfyUI door off.
OPTIONAL_SECTIONS = ("comfy_api",)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MODEL_TYPES = (
    "checkpoints", "diffusion_models", "unet", "text_encoders", "clip", "vae", "loras", "clip_vision",
    "controlnet", "upscale_models", "embeddings", "hypernetworks", "style_models", "gligen",
    "photomaker", "model_patches", "audio_encoders", "custom_nodes",
)


class ConfigError(ValueError):
    """The configuration is wrong; ``problems`` has one ``key: reason`` line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class RestartPolicyConfig:
    backoff_initial_s: float
    backoff_factor: float
    backoff_max_s: float
    max_restarts: int
    window_s: float


@dataclass(frozen=True)
class HealthPolicy:
    start_timeout_s: float
    warmup: bool
    warmup_graph: Path | None
    warmup_timeout_s: float
    probe_interval_s: float
    probe_timeout_s: float
    probe_failures: int
    step_timeout_s: float
    job_timeout_s: float
    memory_interval_s: float
    max_rss_mb: float
    max_rss_growth_mb: float
    max_device_mem_mb: float
    max_device_mem_growth_mb: float
    max_jobs: int
    idle_free_s: float
    kill_grace_s: float
    restart: RestartPolicyConfig


@dataclass(frozen=True)
class InstanceConfig:
    name: str
    port: int = 0  # 0: a free port picked at first start, then kept across restarts
    cuda_device: int | None = None  # None: run on the CPU
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class SupervisorConfig:
    comfyui_path: Path
    instances: tuple[InstanceConfig, ...]
    model_folders: dict[str, tuple[Path, ...]]
    output_root: Path
    keep_metadata: bool
    health: HealthPolicy
    raw_sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    base_dir: Path = REPO_ROOT  # relative paths in the file are relative to this (its folder)


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> SupervisorConfig:
    """Defaults, merged with the file at ``path`` and then ``overrides``; validated."""
    data = _read_yaml(DEFAULTS_FILE)
    base_dir = REPO_ROOT
    if path is not None:
        data = merge(data, _read_yaml(Path(path)))
        base_dir = Path(path).resolve().parent
    if overrides:
        data = merge(data, overrides)
    return parse_config(data, base_dir)


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML ({exc})"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: must be a mapping of settings"])
    return data


class _Checker:
    """Collects every problem instead of stopping at the first one."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[str] = []

    def fail(self, key: str, reason: str) -> None:
        self.problems.append(f"{key}: {reason}")

    def number(self, data: dict, key: str, prefix: str, minimum: float = 0.0,
               positive: bool = False) -> float:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum or (
                positive and value <= 0):
            self.fail(prefix + key, f"must be a number {'> 0' if positive else f'>= {minimum:g}'}")
            return minimum or 1.0
        return float(value)

    def integer(self, data: dict, key: str, prefix: str, low: int, high: int | None = None) -> int:
        value = data.get(key)
        too_high = high is not None and isinstance(value, int) and value > high
        if isinstance(value, bool) or not isinstance(value, int) or value < low or too_high:
            self.fail(prefix + key, f"must be an integer {low}-{high}" if high is not None
                      else f"must be an integer >= {low}")
            return low
        return value

    def boolean(self, data: dict, key: str, prefix: str) -> bool:
        value = data.get(key)
        if not isinstance(value, bool):
            self.fail(prefix + key, "must be true or false")
            return False
        return value

    def path(self, value: Any, key: str) -> Path:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, "must be a path")
            return self.base_dir
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.fail(key, "must be a list of strings")
            return ()
        return tuple(value)

    def known_keys(self, data: dict, allowed: set[str], prefix: str) -> None:
        for key in data:
            if key not in allowed:
                self.fail(f"{prefix}{key}", f"unknown setting (known: {', '.join(sorted(allowed))})")


_TOP_KEYS = {"comfyui_path", "instances", "extra_args", "model_folders", "output_root", "keep_metadata",
             "health", *RAW_SECTIONS, *OPTIONAL_SECTIONS}
_INSTANCE_KEYS = {"name", "port", "cuda_device", "extra_args"}


def parse_config(data: dict[str, Any], base_dir: Path = REPO_ROOT) -> SupervisorConfig:
    """Validate merged settings into a ``SupervisorConfig``; ``ConfigError`` lists every problem."""
    check = _Checker(base_dir)
    check.known_keys(data, _TOP_KEYS, "")
    comfyui_path = _comfyui_path(data.get("comfyui_path"), check)
    common_args = check.strings(data.get("extra_args", []), "extra_args")
    instances = _instances(data.get("instances"), common_args, check)
    model_folders = _model_folders(data.get("model_folders", {}), check)
    output_root = check.path(data.get("output_root"), "output_root")
    keep_metadata = check.boolean(data, "keep_metadata", "")
    health = _health(data.get("health"), check)
    raw_sections = {}
    for section in RAW_SECTIONS:
        value = data.get(section, {})
        if value is None:
            value = {}
        if not isinstance(value, dict):
            check.fail(section, "must be a mapping")
            value = {}
        raw_sections[section] = value
    for section in OPTIONAL_SECTIONS:
        if data.get(section) is not None:
            raw_sections[section] = data[section]  # checked by its own module (comfy_door_config)
    if check.problems:
        raise ConfigError(check.problems)
    return SupervisorConfig(comfyui_path=comfyui_path, instances=instances, model_folders=model_folders,
                            output_root=output_root, keep_metadata=keep_metadata, health=health,
                            raw_sections=raw_sections, base_dir=base_dir)


def _comfyui_path(value: Any, check: _Checker) -> Path:
    if value is None:
        try:
            return Path(load_state().comfyui_path)
        except RuntimeError as exc:
            check.fail("comfyui_path", f"not set and no installed ComfyUI ({exc})")
            return check.base_dir
    path = check.path(value, "comfyui_path")
    if path != check.base_dir and not (path / "main.py").is_file():
        check.fail("comfyui_path", f"{path} has no main.py")
    return path


def _instances(value: Any, common_args: tuple[str, ...], check: _Checker) -> tuple[InstanceConfig, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 64:
            check.fail("instances", "must be a count 1-64 or a list of instances")
            return ()
        return tuple(InstanceConfig(name=f"comfy-{i + 1}", extra_args=common_args) for i in range(value))
    if not isinstance(value, list) or not value:
        check.fail("instances", "must be a count 1-64 or a non-empty list of instances")
        return ()
    instances = []
    names: set[str] = set()
    ports: set[int] = set()
    for index, entry in enumerate(value):
        prefix = f"instances[{index}]."
        if not isinstance(entry, dict):
            check.fail(f"instances[{index}]", "must be a mapping with name, port, cuda_device, extra_args")
            continue
        check.known_keys(entry, _INSTANCE_KEYS, prefix)
        name = entry.get("name", f"comfy-{index + 1}")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            check.fail(prefix + "name", "must be 1-63 letters, digits, '.', '_' or '-'")
        elif name in names:
            check.fail(prefix + "name", f"{name!r} is used twice")
        names.add(str(name))
        port = 0
        if entry.get("port") is not None:
            port = check.integer(entry, "port", prefix, 1024, 65535)
            if port in ports:
                check.fail(prefix + "port", f"{port} is used twice")
            ports.add(port)
        device = None
        if entry.get("cuda_device") is not None:
            device = check.integer(entry, "cuda_device", prefix, 0, 63)
        own_args = check.strings(entry.get("extra_args", []), prefix + "extra_args")
        instances.append(InstanceConfig(name=str(name), port=port, cuda_device=device,
                                        extra_args=common_args + own_args))
    return tuple(instances)


def _model_folders(value: Any, check: _Checker) -> dict[str, tuple[Path, ...]]:
    if not isinstance(value, dict):
        check.fail("model_folders", "must be a mapping of model type to a path or a list of paths")
        return {}
    folders = {}
    for kind, paths in value.items():
        key = f"model_folders.{kind}"
        if kind not in MODEL_TYPES:
            check.fail(key, f"unknown model type (known: {', '.join(MODEL_TYPES)})")
            continue
        items = paths if isinstance(paths, list) else [paths]
        folders[kind] = tuple(check.path(item, key) for item in items)
    return folders


_HEALTH_NUMBERS = ("start_timeout_s", "warmup_timeout_s", "probe_interval_s", "probe_timeout_s",
                   "step_timeout_s", "job_timeout_s", "memory_interval_s")
_HEALTH_LIMITS = ("max_rss_mb", "max_rss_growth_mb", "max_device_mem_mb", "max_device_mem_growth_mb",
                  "idle_free_s", "kill_grace_s")
_RESTART_KEYS = {"backoff_initial_s", "backoff_factor", "backoff_max_s", "max_restarts", "window_s"}


def _health(value: Any, check: _Checker) -> HealthPolicy:
    if not isinstance(value, dict):
        check.fail("health", "must be a mapping")
        value = {}
    prefix = "health."
    check.known_keys(value, {*_HEALTH_NUMBERS, *_HEALTH_LIMITS, "warmup", "warmup_graph", "probe_failures",
                             "max_jobs", "restart"}, prefix)
    numbers = {key: check.number(value, key, prefix, positive=True) for key in _HEALTH_NUMBERS}
    limits = {key: check.number(value, key, prefix) for key in _HEALTH_LIMITS}
    graph = value.get("warmup_graph")
    warmup_graph = None if graph is None else check.path(graph, prefix + "warmup_graph")
    if warmup_graph is not None and not warmup_graph.is_file():
        check.fail(prefix + "warmup_graph", f"{warmup_graph} does not exist")
    restart = value.get("restart")
    if not isinstance(restart, dict):
        check.fail(prefix + "restart", "must be a mapping")
        restart = {}
    rprefix = prefix + "restart."
    check.known_keys(restart, _RESTART_KEYS, rprefix)
    restart_config = RestartPolicyConfig(
        backoff_initial_s=check.number(restart, "backoff_initial_s", rprefix),
        backoff_factor=check.number(restart, "backoff_factor", rprefix, minimum=1.0),
        backoff_max_s=check.number(restart, "backoff_max_s", rprefix),
        max_restarts=check.integer(restart, "max_restarts", rprefix, 1),
        window_s=check.number(restart, "window_s", rprefix, positive=True),
    )
    return HealthPolicy(
        warmup=check.boolean(value, "warmup", prefix), warmup_graph=warmup_graph,
        probe_failures=check.integer(value, "probe_failures", prefix, 1),
        max_jobs=check.integer(value, "max_jobs", prefix, 0),
        restart=restart_config, **numbers, **limits,
    )
