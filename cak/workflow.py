"""A workflow = an API-format graph + a YAML manifest naming its parameters.

The manifest says which node input each parameter fills (node id + input name), its type,
default and limits; nothing here guesses node ids. A parameter may also take a node out of the
graph at one value (``bypass``), e.g. the style LoRA at strength 0, so no LoRA file is needed then.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import UsageError
from .install_state import WORKFLOWS_DIR

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


NodeId = Annotated[str, BeforeValidator(lambda value: str(value) if isinstance(value, int) else value)]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Target(_Spec):
    node: NodeId
    input: str


class Bypass(_Spec):
    """At ``when``, drop ``node``; whatever consumed its output gets what feeds ``pass_through``."""

    when: Any
    node: NodeId
    pass_through: str


class Parameter(_Spec):
    """One manifest parameter; validated with the API graph as context so every target exists."""

    name: str
    type: Literal["string", "int", "float", "bool", "choice"]
    default: Any = None
    targets: tuple[Target, ...] = Field(min_length=1)
    description: str = ""
    min: int | float | None = None
    max: int | float | None = None
    multiple_of: int | None = Field(None, ge=1)
    choices: tuple[Any, ...] | None = None
    min_length: int | None = Field(None, ge=0)
    max_length: int | None = Field(None, ge=0)
    bypass: Bypass | None = None

    @field_validator("description", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return "" if value is None else str(value).strip()

    @model_validator(mode="after")
    def _fits_graph(self, info: ValidationInfo) -> Parameter:
        graph: dict[str, Any] = (info.context or {}).get("graph", {})
        for target in self.targets:
            node = graph.get(target.node)
            if node is None:
                raise ValueError(f"target node {target.node} is not in the API graph")
            if target.input not in node.get("inputs", {}):
                raise ValueError(f"node {target.node} ({node['class_type']}) has no input {target.input!r}")
        bypass = self.bypass
        if bypass is not None and (bypass.node not in graph
                                   or bypass.pass_through not in graph[bypass.node].get("inputs", {})):
            raise ValueError(f"bypass names node {bypass.node} input {bypass.pass_through!r}, "
                             "which the API graph does not have")
        if self.type == "choice" and not self.choices:
            raise ValueError("a choice parameter needs `choices`")
        try:
            self.coerce(self.default)
        except UsageError as exc:
            raise ValueError(f"the default does not fit: {exc}") from None
        return self

    def coerce(self, raw: Any) -> Any:
        """The value in this parameter's type, within its limits; ``UsageError`` in one line if not.

        Strings (from ``--set name=value``) are parsed; native values are checked as they are.
        """
        value = self._typed(raw)
        self._check_limits(value)
        return value

    def _typed(self, raw: Any) -> Any:
        bad = UsageError(f"parameter {self.name}: {raw!r} is not a valid {self.type}")
        if self.type == "string" or (self.type == "choice" and isinstance(raw, str)):
            if not isinstance(raw, str):
                raise bad
            return raw
        if self.type == "bool":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
                return raw.strip().lower() in _TRUE
            raise bad
        if self.type == "int":
            if isinstance(raw, bool):
                raise bad
            if isinstance(raw, int):
                return raw
            try:
                return int(str(raw).strip(), 10)
            except ValueError:
                raise bad from None
        if self.type == "float":
            if isinstance(raw, bool):
                raise bad
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise bad from None
            if not math.isfinite(value):
                raise bad
            return value
        return raw  # a choice given natively (e.g. a number): checked against the choices

    def _check_limits(self, value: Any) -> None:
        name = self.name
        if self.choices is not None and value not in self.choices:
            raise UsageError(f"parameter {name}: {value!r} is not one of {', '.join(map(str, self.choices))}")
        if self.min is not None and value < self.min:
            raise UsageError(f"parameter {name}: {value} is below the minimum {_num(self.min)}")
        if self.max is not None and value > self.max:
            raise UsageError(f"parameter {name}: {value} is above the maximum {_num(self.max)}")
        if self.multiple_of and value % self.multiple_of:
            raise UsageError(f"parameter {name}: {value} is not a multiple of {self.multiple_of}")
        if self.min_length is not None and len(value.strip()) < self.min_length:
            raise UsageError(f"parameter {name}: needs at least {self.min_length} "
                             f"character{'s' if self.min_length != 1 else ''}")
        if self.max_length is not None and len(value) > self.max_length:
            raise UsageError(f"parameter {name}: {len(value)} characters, at most {self.max_length} allowed")


@dataclass
class Workflow:
    """A loaded workflow: its API graph, the manifest's parameters, where its files are."""

    name: str
    graph: dict[str, Any]
    parameters: dict[str, Parameter]
    description: str = ""
    raw_manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, name_or_path: str | Path, workflows_dir: Path = WORKFLOWS_DIR) -> Workflow:
        """A workflow by name (``workflows/<name>.yaml``), manifest path, or API-format JSON path.

        An API JSON without a manifest next to it runs as is, with no parameters.
        """
        path = _locate(str(name_or_path), workflows_dir)
        if path.suffix in (".yaml", ".yml"):
            return cls._from_manifest(path)
        sibling = _manifest_beside(path)
        if sibling is not None:
            return cls._from_manifest(sibling)
        return cls(name=path.name.split(".")[0], graph=load_api_graph(path), parameters={})

    @classmethod
    def _from_manifest(cls, path: Path) -> Workflow:
        manifest = _read_yaml(path)
        api_name = manifest.get("api")
        if not isinstance(api_name, str):
            raise UsageError(f"{path}: the manifest needs `api: <file>.api.json`")
        graph = load_api_graph((path.parent / api_name).resolve())
        raw_params = manifest.get("parameters") or {}
        if not isinstance(raw_params, dict):
            raise UsageError(f"{path}: `parameters` must be a mapping of name → definition")
        parameters = {name: _parse_parameter(path, str(name), spec, graph) for name, spec in raw_params.items()}
        return cls(name=str(manifest.get("name") or path.stem), graph=graph, parameters=parameters,
                   description=str(manifest.get("description") or "").strip(), raw_manifest=manifest)

    def defaults(self) -> dict[str, Any]:
        return {name: p.default for name, p in self.parameters.items()}

    def resolve(self, values: dict[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``values``, each checked; unknown names are an error."""
        unknown = sorted(set(values) - set(self.parameters))
        if unknown:
            known = ", ".join(self.parameters) or "none"
            raise UsageError(f"unknown parameter {unknown[0]!r} for workflow {self.name} (known: {known})")
        resolved = self.defaults()
        for name, raw in values.items():
            resolved[name] = self.parameters[name].coerce(raw)
        return resolved

    def build(self, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """The API graph to submit: parameters filled in, bypassed nodes taken out."""
        resolved = self.resolve(values or {})
        graph = copy.deepcopy(self.graph)
        for name, parameter in self.parameters.items():
            for target in parameter.targets:
                graph[target.node]["inputs"][target.input] = resolved[name]
        for name, parameter in self.parameters.items():
            if parameter.bypass is not None and resolved[name] == parameter.bypass.when:
                bypass_node(graph, parameter.bypass.node, parameter.bypass.pass_through)
        return graph


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    """``["seed=7", "prompt=a bear"]`` → ``{"seed": "7", "prompt": "a bear"}`` (values stay text)."""
    values: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--set expects name=value, got {item!r}")
        values[name.strip()] = value
    return values


def bypass_node(graph: dict[str, Any], node_id: str, pass_through: str) -> None:
    """Remove ``node_id``; every input linked to it is linked to what fed its ``pass_through`` input."""
    node = graph.pop(node_id)
    upstream = node["inputs"][pass_through]
    for other in graph.values():
        for name, value in other["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and value[0] == node_id:
                other["inputs"][name] = list(upstream)


def load_api_graph(path: Path) -> dict[str, Any]:
    """An API-format graph from JSON; a UI-format file gets a hint to convert it first."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"workflow file {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read workflow file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"workflow file {path} is not valid JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        raise UsageError(f"{path} is a UI-format workflow: convert it first "
                         "(python -m runner convert FILE --server URL --out FILE.api.json)")
    if not isinstance(data, dict) or not data or not all(
            isinstance(node, dict) and "class_type" in node and isinstance(node.get("inputs", {}), dict)
            for node in data.values()):
        raise UsageError(f"{path} is not an API-format workflow ({{node id: {{class_type, inputs}}}})")
    return data


def _locate(name: str, workflows_dir: Path) -> Path:
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml", ".json") or "/" in name:
        if not path.is_file():
            raise UsageError(f"workflow file {path} does not exist")
        return path.resolve()
    manifest = workflows_dir / f"{name}.yaml"
    if manifest.is_file():
        return manifest
    names = sorted(p.stem for p in workflows_dir.glob("*.yaml"))
    raise UsageError(f"no workflow named {name!r} in {workflows_dir} (available: {', '.join(names) or 'none'})")


def _manifest_beside(path: Path) -> Path | None:
    stem = path.name.removesuffix(".json").removesuffix(".api")
    for candidate in (path.with_name(f"{stem}.yaml"), path.with_name(f"{stem}.yml")):
        if candidate.is_file():
            return candidate
    return None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"manifest {path} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise UsageError(f"manifest {path} must be a mapping (name, api, parameters)")
    return data


def _parse_parameter(path: Path, name: str, spec: Any, graph: dict[str, Any]) -> Parameter:
    where = f"{path}: parameter {name}"
    if not isinstance(spec, dict):
        raise UsageError(f"{where}: must be a mapping (type, default, targets, ...)")
    try:
        return Parameter.model_validate({**spec, "name": name}, context={"graph": graph})
    except ValidationError as exc:
        raise UsageError(f"{where}: {'; '.join(_problem(error) for error in exc.errors())}") from None


def _problem(error: Any) -> str:
    """``targets.0.node: Field required``; a rule across fields reads as its own sentence."""
    reason = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {reason}" if where else reason


def _num(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
