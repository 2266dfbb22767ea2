"""Every setting of the supervisor and its job service: ``defaults.yaml`` ⊕ ``--config`` ⊕ environment.

One pydantic model per section (unknown keys refused, bounds on the fields); the defaults and the
comments operators read live only in ``defaults.yaml``. A bad file fails before any ComfyUI starts,
with every problem at once, one ``instances.1.port: must be an integer 1024-65535`` line each, in a
single ``ConfigError``. Environment variables override the files: ``CAK_SUPERVISOR_<SECTION>__<KEY>``
(pydantic-settings; values read as YAML scalars) and the documented ``CAK_SUPERVISOR_TOKEN``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from cute_animal_kids.guard_model import CONTROVERSIAL_POLICIES
from cute_animal_kids.pack_data import UniqueKeyLoader
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource

from cak.install_state import REPO_ROOT, load_state

from .webhook_policy import UrlRefused, WebhookPolicy, parse_url, valid_webhook_secret

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
TOKEN_ENV = "CAK_SUPERVISOR_TOKEN"
WEBHOOK_SECRET_ENV = "CAK_WEBHOOK_SECRET"
DATABASE_URL_ENV = "CAK_DATABASE_URL"
# Sections that are off unless the user's file (or an override) has them: ``defaults.yaml`` holds
# only the defaults of their keys. The guard needs a model; the ComfyUI door opens a second port.
OPTIONAL_SECTIONS = ("guard", "comfy_api")
ENV_PREFIX = "CAK_SUPERVISOR_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MAX_INSTANCES = 64
MODEL_TYPES = (
    "checkpoints", "diffusion_models", "unet", "text_encoders", "clip", "vae", "loras", "clip_vision",
    "controlnet", "upscale_models", "embeddings", "hypernetworks", "style_models", "gligen",
    "photomaker", "model_patches", "audio_encoders", "custom_nodes",
)
ModelType = Literal[MODEL_TYPES]  # type: ignore[valid-type] - a Literal of the tuple's strings


MAX_HISTORY_LIMIT = 100_000
"""Most entries one GET /history of the ComfyUI door returns (``comfy_api.history_limit`` and ``max_items``)."""

class ConfigError(ValueError):
    """The configuration is wrong; ``problems`` has one ``key: reason`` line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _as_path(value: Any) -> Any:
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise ValueError("must be a path")
    return Path(value).expanduser()


def _resolve(path: Path, info: ValidationInfo) -> Path:
    """Relative paths are relative to the config file's folder (the repository for the defaults)."""
    base = (info.context or {}).get("base_dir", REPO_ROOT)
    return path if path.is_absolute() else (Path(base) / path).resolve()


ConfigPath = Annotated[Path, BeforeValidator(_as_path), AfterValidator(_resolve)]
Seconds = Annotated[float, Strict(), Field(gt=0)]
Limit = Annotated[float, Strict(), Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RestartSettings(_Section):
    """Back-off between fault restarts and the budget after which an instance is FAILED."""

    backoff_initial_s: Limit
    backoff_factor: Annotated[float, Strict(), Field(ge=1)]
    backoff_max_s: Limit
    max_restarts: StrictInt = Field(ge=1)
    window_s: Seconds


class HealthSettings(_Section):
    """What the watchdog measures and when it restarts an instance (docs/supervisor.md)."""

    start_timeout_s: Seconds
    warmup: StrictBool
    warmup_graph: ConfigPath | None
    warmup_timeout_s: Seconds
    probe_interval_s: Seconds
    probe_timeout_s: Seconds
    probe_failures: StrictInt = Field(ge=1)
    step_timeout_s: Seconds
    job_timeout_s: Seconds
    memory_interval_s: Seconds
    max_rss_mb: Limit
    max_rss_growth_mb: Limit
    max_device_mem_mb: Limit
    max_device_mem_growth_mb: Limit
    max_jobs: StrictInt = Field(ge=0)
    idle_free_s: Limit
    kill_grace_s: Limit
    restart: RestartSettings

    @field_validator("warmup_graph")
    @classmethod
    def _graph_exists(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"{path} does not exist")
        return path


class InstanceSettings(_Section):
    """One ComfyUI process. ``extra_args`` holds the common flags followed by the instance's own."""

    name: StrictStr
    port: StrictInt | None = Field(None, ge=1024, le=65535)  # None: a free port, kept across restarts
    cuda_device: StrictInt | None = Field(None, ge=0, le=63)  # None: run on the CPU
    extra_args: tuple[StrictStr, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not NAME_PATTERN.match(name):
            raise ValueError("must be 1-63 letters, digits, '.', '_' or '-'")
        return name


class HttpSettings(_Section):
    """The job service's HTTP API."""

    host: StrictStr = Field(min_length=1)
    port: StrictInt = Field(ge=0, le=65535)
    token: StrictStr | None = Field(min_length=8)
    max_body_bytes: StrictInt = Field(ge=1024, le=64 << 20)
    sse_keepalive_s: StrictInt = Field(ge=1, le=3600)
    list_limit: StrictInt = Field(ge=1, le=10000)

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


def _bounded(low: float, high: float) -> Any:
    return Annotated[float, Strict(), Field(ge=low, le=high)]


class JobsSettings(_Section):
    """The durable queue. ``db_path``/``images_dir`` default to files under ``output_root``."""

    db_path: ConfigPath | None
    images_dir: ConfigPath | None
    database_url: StrictStr | None = Field(pattern=r"^postgres(ql)?://")
    lease_s: _bounded(3, 3600)  # type: ignore[valid-type]
    max_attempts: StrictInt = Field(ge=1, le=100)
    max_prompt_chars: StrictInt = Field(ge=1, le=100_000)
    default_workflow: StrictStr = Field(min_length=1)
    allow_graphs: StrictBool
    strict_text_gate: StrictBool
    max_queue: StrictInt = Field(ge=1, le=10_000_000)
    drain_timeout_s: StrictInt = Field(ge=0, le=86400)
    keep_images_days: StrictInt = Field(ge=0, le=36500)
    prefetch: StrictInt = Field(ge=0, le=8)


class GuardSettings(_Section):
    """The Qwen3Guard stage (docs/safety.md): the second opinion after the lexicon."""

    model_path: ConfigPath | None
    device: StrictStr = Field(pattern=r"^(cpu|cuda(:\d+)?)$", description="cpu, cuda or cuda:N")
    timeout_s: _bounded(0.1, 600)  # type: ignore[valid-type]
    controversial: Literal[CONTROVERSIAL_POLICIES]  # type: ignore[valid-type]
    max_concurrency: StrictInt = Field(ge=1, le=64)

    @field_validator("model_path")
    @classmethod
    def _required(cls, path: Path | None) -> Path:
        if path is None:
            raise ValueError("required (the Qwen3Guard-Gen checkpoint folder)")
        return path


def _webhook_prefix(entry: str) -> str:
    try:
        WebhookPolicy((entry,))
    except UrlRefused as exc:
        raise ValueError(str(exc)) from None
    return entry


def _public_url(text: str) -> str:
    try:
        return str(parse_url(text)).rstrip("/")
    except UrlRefused as exc:
        raise ValueError(str(exc)) from None


class WebhooksSettings(_Section):
    """Signed final-state events to the caller's URL (docs/api.md)."""

    allow: tuple[Annotated[StrictStr, AfterValidator(_webhook_prefix)], ...]
    secret: StrictStr | None
    max_attempts: StrictInt = Field(ge=1, le=100)
    timeout_s: _bounded(0.1, 300)  # type: ignore[valid-type]
    backoff_base_s: _bounded(0.01, 86400)  # type: ignore[valid-type]
    backoff_cap_s: _bounded(0.01, 7 * 86400)  # type: ignore[valid-type]
    inline_images: StrictBool
    inline_max_bytes: StrictInt = Field(ge=0, le=64 << 20)
    public_url: Annotated[StrictStr, AfterValidator(_public_url)] | None
    poll_interval_s: _bounded(0.05, 60)  # type: ignore[valid-type]

    @field_validator("secret")
    @classmethod
    def _signing_secret(cls, secret: str | None, info: ValidationInfo) -> str | None:
        if secret is not None and not valid_webhook_secret(secret):
            raise ValueError(f"must be 'whsec_' followed by base64 of 24-64 bytes (also {WEBHOOK_SECRET_ENV})")
        if secret is None and info.data.get("allow"):
            raise ValueError(f"required when webhooks.allow lists URLs (or set {WEBHOOK_SECRET_ENV})")
        return secret

    @property
    def policy(self) -> WebhookPolicy:
        return WebhookPolicy(self.allow)


class ImageGateSettings(_Section):
    """The supervisor's image gate on every image the ComfyUI door returns."""

    threshold: _bounded(0.0, 1.0) | None  # type: ignore[valid-type]  # None: the pack's threshold
    action: Literal["replace", "block"]


class ComfyApiSettings(_Section):
    """The ComfyUI-compatible door (docs/comfy_api.md); its token is ``http.token``."""

    host: StrictStr = Field(min_length=1)
    port: StrictInt = Field(ge=0, le=65535)  # 0: a free port
    deny_nodes: frozenset[StrictStr]
    allow_nodes: frozenset[StrictStr] | None  # None: any node class not denied
    image_gate: ImageGateSettings
    object_info_ttl_s: _bounded(0, 86400)  # type: ignore[valid-type]
    history_limit: StrictInt = Field(ge=1, le=MAX_HISTORY_LIMIT)
    editor: StrictBool  # the web editor at GET / and its routes passed through (comfy_door_editor.py)


class Settings(_Section):
    """The whole configuration, validated once at start.

    A plain model, not a ``BaseSettings``: validation needs the config file's folder as context,
    which ``BaseSettings.__init__`` would drop; ``_environment`` runs pydantic-settings' own source.
    """

    name: StrictStr | None = Field(pattern=NAME_PATTERN.pattern)  # None: the host name
    comfyui_path: ConfigPath | None
    extra_args: tuple[StrictStr, ...]  # before ``instances``: their validator prepends these
    instances: list[InstanceSettings]
    model_folders: dict[ModelType, tuple[ConfigPath, ...]]
    output_root: ConfigPath
    keep_metadata: StrictBool
    health: HealthSettings
    http: HttpSettings
    jobs: JobsSettings
    webhooks: WebhooksSettings
    guard: GuardSettings | None  # None: no guard stage
    comfy_api: ComfyApiSettings | None  # None: the door is off
    _base_dir: Path = PrivateAttr(default=REPO_ROOT)

    @property
    def base_dir(self) -> Path:
        """The config file's folder: relative paths in the file were resolved against it."""
        return self._base_dir

    @field_validator("comfyui_path", mode="after")
    @classmethod
    def _comfyui_tree(cls, path: Path | None) -> Path:
        if path is None:
            try:
                return Path(load_state().comfyui_path)
            except RuntimeError as exc:
                raise ValueError(f"not set and no installed ComfyUI ({exc})") from exc
        if not (path / "main.py").is_file():
            raise ValueError(f"{path} has no main.py")
        return path

    @field_validator("instances", mode="before")
    @classmethod
    def _count_or_list(cls, value: Any, info: ValidationInfo) -> Any:
        """A count N means comfy-1..comfy-N; entries without a name get comfy-<index+1>; every entry's
        ``extra_args`` become the common ones followed by its own."""
        if isinstance(value, int) and not isinstance(value, bool):
            if not 1 <= value <= MAX_INSTANCES:
                raise ValueError(f"must be a count 1-{MAX_INSTANCES} or a list of instances")
            value = [{} for _ in range(value)]
        if not isinstance(value, list) or not value:
            raise ValueError(f"must be a count 1-{MAX_INSTANCES} or a non-empty list of instances")
        common = list(info.data.get("extra_args", ()))
        entries = []
        for index, entry in enumerate(value):
            if isinstance(entry, dict):
                entry = {"name": f"comfy-{index + 1}", **entry}
                own = entry.get("extra_args", [])
                if isinstance(own, list):
                    entry["extra_args"] = common + own
            entries.append(entry)
        return entries

    @field_validator("model_folders", mode="before")
    @classmethod
    def _one_or_more_paths(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {kind: paths if isinstance(paths, list) else [paths] for kind, paths in value.items()}
        return value

    @model_validator(mode="after")
    def _derived(self) -> Settings:
        if self.jobs.db_path is None:
            self.jobs.db_path = self.output_root / "jobs.sqlite3"
        if self.jobs.images_dir is None:
            self.jobs.images_dir = self.output_root / "job-images"
        if self.name is None:
            self.name = _host_name()
        return self


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Defaults, merged with the file at ``path``, then ``overrides``, then the environment."""
    defaults = _read_yaml(DEFAULTS_FILE)
    given: dict[str, Any] = {}
    base_dir = REPO_ROOT
    if path is not None:
        given = _read_yaml(Path(path))
        base_dir = Path(path).resolve().parent
    if overrides:
        given = merge(given, overrides)
    given = merge(given, _environment())
    data = merge(defaults, given)
    for section in OPTIONAL_SECTIONS:
        if given.get(section) is None:
            data[section] = None
    problems = _duplicates(data.get("instances"))
    try:
        settings = Settings.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(_problems(exc) + problems) from None
    if problems:
        raise ConfigError(problems)
    settings._base_dir = base_dir
    return settings


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
        data = yaml.load(path.read_text(), Loader=UniqueKeyLoader)  # a setting written twice is an error
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML ({exc})"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: must be a mapping of settings"])
    return data


def _environment() -> dict[str, Any]:
    """``CAK_SUPERVISOR_HTTP__PORT=9000`` style overrides (YAML scalars), and the token variable."""
    found = EnvSettingsSource(Settings, case_sensitive=False, env_prefix=ENV_PREFIX,  # type: ignore[arg-type]
                              env_nested_delimiter="__")()

    def scalars(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: scalars(item) for key, item in value.items()}
        try:
            return yaml.safe_load(value) if isinstance(value, str) else value
        except yaml.YAMLError:
            return value

    overrides = scalars(found)
    for variable, section, key in ((TOKEN_ENV, "http", "token"), (WEBHOOK_SECRET_ENV, "webhooks", "secret"),
                                   (DATABASE_URL_ENV, "jobs", "database_url")):
        if os.environ.get(variable):  # secrets are text, never YAML scalars
            overrides = merge(overrides, {section: {key: os.environ[variable]}})
    return overrides


def _host_name() -> str:
    """The default ``name``: this machine's host name, cut to a valid name."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:63].lstrip("-_.")
    return name or "supervisor"


def _duplicates(instances: Any) -> list[str]:
    """Names and ports used twice: a check across entries, on the raw list so it joins the others."""
    if not isinstance(instances, list):
        return []
    problems, names, ports = [], set(), set()
    for index, entry in enumerate(instances):
        if not isinstance(entry, dict):
            continue
        name, port = entry.get("name", f"comfy-{index + 1}"), entry.get("port")
        if isinstance(name, str) and name in names:
            problems.append(f"instances.{index}.name: {name!r} is used twice")
        if isinstance(port, int) and not isinstance(port, bool) and port in ports:
            problems.append(f"instances.{index}.port: {port} is used twice")
        names.add(name)
        ports.add(port)
    return problems


# ---------------------------------------------------------------- error lines


def _problems(exc: ValidationError) -> list[str]:
    """One ``dotted.key: reason`` line per wrong setting, worded for operators, not for pydantic."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        is_key = bool(loc) and loc[-1] == "[key]"
        if is_key:
            loc.pop()
        owner, field = _field_at(Settings, loc)
        line = f"{'.'.join(str(part) for part in loc)}: {_reason(error, owner, field, is_key)}"
        if line not in lines:
            lines.append(line)
    return lines


def _field_at(model: type[BaseModel], loc: list[Any]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model that owns the last named part of ``loc`` and that part's field (list indices skipped)."""
    current: type[BaseModel] | None = model
    owner, field = None, None
    for part in loc:
        if not isinstance(part, str) or current is None:
            continue
        if part not in current.model_fields:
            return current, None
        owner, field = current, current.model_fields[part]
        current = _model_in(field.annotation)
    return owner, field


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _reason(error: dict[str, Any], owner: type[BaseModel] | None, field: FieldInfo | None,
            is_key: bool) -> str:
    kind = error["type"]
    if kind == "extra_forbidden" and owner is not None:
        container = owner if field is None else _model_in(field.annotation) or owner
        return f"unknown setting (known: {', '.join(sorted(container.model_fields))})"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if is_key and kind == "literal_error":
        return f"unknown model type (known: {', '.join(MODEL_TYPES)})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        model = _model_in(field.annotation) if field is not None else None
        if model is not None and get_origin(field.annotation) in (list, tuple):
            return f"must be a mapping with {', '.join(model.model_fields)}"
        return "must be a mapping"
    if kind == "missing":
        return "required"
    if kind == "string_pattern_mismatch" and field is not None and field.description:
        return f"must be {field.description}"
    if kind == "literal_error" and field is not None:
        return f"must be one of {', '.join(map(str, get_args(_strip_none(field.annotation)[0])))}"
    return _expected(field) if field is not None else error["msg"]


def _expected(field: FieldInfo) -> str:
    """What the field takes, from its type and bounds: ``must be an integer 1024-65535``."""
    annotation, optional = _strip_none(field.annotation)
    low = high = None
    exclusive = False
    min_length = None
    for meta in [*field.metadata, *_annotated_metadata(annotation)]:
        if isinstance(meta, annotated_types.Ge):
            low = meta.ge
        elif isinstance(meta, annotated_types.Gt):
            low, exclusive = meta.gt, True
        elif isinstance(meta, annotated_types.Le):
            high = meta.le
        elif isinstance(meta, annotated_types.MinLen):
            min_length = meta.min_length
    base = _base_type(annotation)
    or_null = ", or null" if optional else ""
    if base is bool:
        return "must be true or false"
    if base is int:  # an optional integer's null means "the default" (a free port, the CPU): not offered
        if high is not None:
            return f"must be an integer {low}-{high}"
        return f"must be an integer >= {low}" if low is not None else "must be an integer"
    if base is float:
        if low is not None and high is not None:
            return f"must be a number {low:g}-{high:g}{or_null}"
        bound = f" {'>' if exclusive else '>='} {low:g}" if low is not None else ""
        return f"must be a number{bound}{or_null}"
    if base is str:
        if min_length == 1:
            return f"must be a non-empty string{or_null}"
        if min_length:
            return f"must be a string of at least {min_length} characters{or_null}"
        return f"must be a string{or_null}"
    if base is Path:
        return "must be a path or null" if optional else "must be a path"
    if get_origin(annotation) in (tuple, list):
        return "must be a list of strings"
    return "has the wrong type"


def _strip_none(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _annotated_metadata(annotation: Any) -> list[Any]:
    found: list[Any] = []
    for meta in getattr(annotation, "__metadata__", ()):
        found.extend(meta.metadata if isinstance(meta, FieldInfo) else [meta])  # Field() inside Annotated
    return found


def _base_type(annotation: Any) -> Any:
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    return annotation
