"""Settings of the job service: ``http``, ``jobs``, ``guard`` and ``webhooks``, over ``service_defaults.yaml``.

``supervisor.config`` validates the pool's settings and hands these two sections through as they
are; this module checks them the same way (every problem names its key, ``ConfigError``) so a bad
file fails before any ComfyUI starts.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cak.install_state import REPO_ROOT

from .config import ConfigError, SupervisorConfig, merge
from .webhook_policy import UrlRefused, WebhookPolicy, parse_url, valid_webhook_secret

SERVICE_DEFAULTS_FILE = Path(__file__).with_name("service_defaults.yaml")
TOKEN_ENV = "CAK_SUPERVISOR_TOKEN"
WEBHOOK_SECRET_ENV = "CAK_WEBHOOK_SECRET"


@dataclass(frozen=True)
class HttpConfig:
    host: str
    port: int
    token: str | None
    max_body_bytes: int
    sse_keepalive_s: float
    list_limit: int

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


@dataclass(frozen=True)
class JobsConfig:
    db_path: Path
    images_dir: Path
    max_attempts: int
    max_prompt_chars: int
    default_workflow: str
    allow_graphs: bool
    strict_text_gate: bool
    max_queue: int
    drain_timeout_s: float
    keep_images_days: int = 30


@dataclass(frozen=True)
class GuardConfig:
    """The Qwen3Guard stage (docs/safety.md); absent from the file: no guard."""

    model_path: Path
    device: str
    timeout_s: float
    controversial: str
    max_concurrency: int


@dataclass(frozen=True)
class WebhooksConfig:
    policy: WebhookPolicy
    secret: str | None  # "whsec_..." (None only while no URL is allowed)
    max_attempts: int
    timeout_s: float
    backoff_base_s: float
    backoff_cap_s: float
    inline_images: bool
    inline_max_bytes: int
    public_url: str | None
    poll_interval_s: float


@dataclass(frozen=True)
class ServiceConfig:
    http: HttpConfig
    jobs: JobsConfig
    webhooks: WebhooksConfig
    guard: GuardConfig | None = None


def service_config(config: SupervisorConfig, base_dir: Path | None = None) -> ServiceConfig:
    """The job service's settings from a loaded supervisor config.

    Relative paths are relative to ``base_dir``: the config file's folder (the repository without one).
    """
    defaults = yaml.safe_load(SERVICE_DEFAULTS_FILE.read_text())
    http = merge(defaults["http"], config.raw_sections.get("http", {}))
    jobs = merge(defaults["jobs"], config.raw_sections.get("jobs", {}))
    webhooks = merge(defaults["webhooks"], config.raw_sections.get("webhooks", {}))
    problems: list[str] = []
    _known(http, defaults["http"], "http.", problems)
    _known(jobs, defaults["jobs"], "jobs.", problems)
    _known(webhooks, defaults["webhooks"], "webhooks.", problems)
    base = base_dir or REPO_ROOT

    token = os.environ.get(TOKEN_ENV) or http["token"]
    if token is not None and (not isinstance(token, str) or len(token) < 8):
        problems.append("http.token: must be a string of at least 8 characters, or null")
    http_config = HttpConfig(
        host=_string(http, "host", "http.", problems),
        port=_integer(http, "port", "http.", problems, 0, 65535),
        token=token if isinstance(token, str) else None,
        max_body_bytes=_integer(http, "max_body_bytes", "http.", problems, 1024, 64 << 20),
        sse_keepalive_s=float(_integer(http, "sse_keepalive_s", "http.", problems, 1, 3600)),
        list_limit=_integer(http, "list_limit", "http.", problems, 1, 10000),
    )
    allow_graphs = jobs["allow_graphs"]
    if not isinstance(allow_graphs, bool):
        problems.append("jobs.allow_graphs: must be true or false")
    strict_text_gate = jobs["strict_text_gate"]
    if not isinstance(strict_text_gate, bool):
        problems.append("jobs.strict_text_gate: must be true or false")
    jobs_config = JobsConfig(
        db_path=_path(jobs["db_path"], base, config.output_root / "jobs.sqlite3", "jobs.db_path", problems),
        images_dir=_path(jobs["images_dir"], base, config.output_root / "job-images", "jobs.images_dir",
                         problems),
        max_attempts=_integer(jobs, "max_attempts", "jobs.", problems, 1, 100),
        max_prompt_chars=_integer(jobs, "max_prompt_chars", "jobs.", problems, 1, 100_000),
        default_workflow=_string(jobs, "default_workflow", "jobs.", problems),
        allow_graphs=bool(allow_graphs),
        strict_text_gate=bool(strict_text_gate),
        max_queue=_integer(jobs, "max_queue", "jobs.", problems, 1, 10_000_000),
        drain_timeout_s=float(_integer(jobs, "drain_timeout_s", "jobs.", problems, 0, 86400)),
        keep_images_days=_integer(jobs, "keep_images_days", "jobs.", problems, 0, 36500),
    )
    guard_config = _guard(config.raw_sections.get("guard", {}), defaults["guard"], base, problems)
    webhooks_config = _webhooks(webhooks, problems)
    if problems:
        raise ConfigError(problems)
    return ServiceConfig(http=http_config, jobs=jobs_config, webhooks=webhooks_config, guard=guard_config)


def _guard(section: dict[str, Any], defaults: dict[str, Any], base: Path, problems: list[str]) -> GuardConfig | None:
    if not section:
        return None
    from cute_animal_kids.guard_model import CONTROVERSIAL_POLICIES  # the pack, only with a guard

    guard = merge(defaults, section)
    _known(guard, defaults, "guard.", problems)
    model_path = _path(guard["model_path"], base, Path(), "guard.model_path", problems)
    if guard["model_path"] is None:
        problems.append("guard.model_path: required (the Qwen3Guard-Gen checkpoint folder)")
    device = guard["device"]
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(?::\d+)?", device):
        problems.append("guard.device: must be cpu, cuda or cuda:N")
    timeout = guard["timeout_s"]
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.1 <= timeout <= 600:
        problems.append("guard.timeout_s: must be a number 0.1-600")
        timeout = 1.0
    if guard["controversial"] not in CONTROVERSIAL_POLICIES:
        problems.append(f"guard.controversial: must be one of {', '.join(CONTROVERSIAL_POLICIES)}")
    return GuardConfig(model_path=model_path, device=str(device), timeout_s=float(timeout),
                       controversial=str(guard["controversial"]),
                       max_concurrency=_integer(guard, "max_concurrency", "guard.", problems, 1, 64))


def _webhooks(data: dict[str, Any], problems: list[str]) -> WebhooksConfig:
    prefix = "webhooks."
    allow = data.get("allow")
    entries: list[str] = []
    if not isinstance(allow, list):
        problems.append("webhooks.allow: must be a list of URL prefixes")
    else:
        for index, entry in enumerate(allow):
            try:
                WebhookPolicy((entry,))
                entries.append(entry)
            except UrlRefused as exc:
                problems.append(f"webhooks.allow[{index}]: {exc}")
    secret = os.environ.get(WEBHOOK_SECRET_ENV) or data.get("secret")
    if secret is not None and not valid_webhook_secret(secret):
        problems.append(f"webhooks.secret ({WEBHOOK_SECRET_ENV}): must be 'whsec_' followed by "
                        "base64 of 24-64 bytes")
        secret = None
    if entries and secret is None and not any(p.startswith("webhooks.secret") for p in problems):
        problems.append(f"webhooks.secret: required when webhooks.allow lists URLs (or set {WEBHOOK_SECRET_ENV})")
    public_url = data.get("public_url")
    if public_url is not None:
        try:
            public_url = str(parse_url(public_url)).rstrip("/")
        except UrlRefused as exc:
            problems.append(f"webhooks.public_url: {exc}")
            public_url = None
    inline_images = data.get("inline_images")
    if not isinstance(inline_images, bool):
        problems.append("webhooks.inline_images: must be true or false")
    return WebhooksConfig(
        policy=WebhookPolicy(tuple(entries)),
        secret=secret,
        max_attempts=_integer(data, "max_attempts", prefix, problems, 1, 100),
        timeout_s=_number(data, "timeout_s", prefix, problems, 0.1, 300),
        backoff_base_s=_number(data, "backoff_base_s", prefix, problems, 0.01, 86400),
        backoff_cap_s=_number(data, "backoff_cap_s", prefix, problems, 0.01, 7 * 86400),
        inline_images=bool(inline_images),
        inline_max_bytes=_integer(data, "inline_max_bytes", prefix, problems, 0, 64 << 20),
        public_url=public_url,
        poll_interval_s=_number(data, "poll_interval_s", prefix, problems, 0.05, 60),
    )



def _known(data: dict[str, Any], defaults: dict[str, Any], prefix: str, problems: list[str]) -> None:
    for key in data:
        if key not in defaults:
            problems.append(f"{prefix}{key}: unknown setting (known: {', '.join(sorted(defaults))})")


def _integer(data: dict[str, Any], key: str, prefix: str, problems: list[str], low: int, high: int) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.append(f"{prefix}{key}: must be an integer {low}-{high}")
        return low
    return value


def _number(data: dict[str, Any], key: str, prefix: str, problems: list[str], low: float,
            high: float) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        problems.append(f"{prefix}{key}: must be a number {low:g}-{high:g}")
        return low
    return float(value)


def _string(data: dict[str, Any], key: str, prefix: str, problems: list[str]) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{prefix}{key}: must be a non-empty string")
        return ""
    return value


def _path(value: Any, base: Path, default: Path, key: str, problems: list[str]) -> Path:
    if value is None:
        return default
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{key}: must be a path or null")
        return default
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()
