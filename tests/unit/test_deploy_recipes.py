"""The deployment recipes in deploy/, checked with what runs here (no Docker engine, no GPU).

Nothing here builds an image or starts a unit: the files are parsed and held against the real
code — the CLI's parser, the config validation, the metrics registry, the default port.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cak.install_state import REPO_ROOT
from supervisor.cli import build_parser
from supervisor.metrics import ServiceMetrics
from supervisor.settings import DEFAULTS_FILE, TOKEN_ENV, load_settings

DEPLOY = REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "docker" / "compose.yaml"
COMPOSE_POSTGRES = DEPLOY / "docker" / "compose.postgres.yaml"
SCALING_DOC = REPO_ROOT / "docs" / "scaling.md"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
UNIT = DEPLOY / "systemd" / "cute-animal-kids.service"
GRAFANA = DEPLOY / "grafana" / "cute-animal-kids.json"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "cute-animal-kids.rules.yml"
OPERATIONS_DOC = REPO_ROOT / "docs" / "operations.md"
DEFAULT_PORT = yaml.safe_load(DEFAULTS_FILE.read_text())["http"]["port"]
METRIC_NAME = re.compile(r"\bcak_[a-z0-9_]+\b")
SELECTOR = re.compile(r"\b(cak_[a-z0-9_]+)\{([^}]*)\}")
LABEL_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


# ---------------------------------------------------------------------- metrics


def _exposed_metrics() -> tuple[dict[str, set[str]], set[str]]:
    """Every sample name the service exposes (``_total``, ``_bucket``… included) → its label names,
    and the metric families' names.

    The registry is the real one; a fake pool snapshot and one of each event make every family
    produce samples.
    """
    snap = SimpleNamespace(name="gpu0", state="ready", rss_mb=900.0, device_mem_mb=12000.0, jobs_run=4,
                           restarts={"leak": 1, "request": 1})
    metrics = ServiceMetrics(lambda: [snap])
    metrics.set_job_counts({"queued": 2, "succeeded": 5})
    metrics.job_duration.labels("succeeded").observe(12.0)
    metrics.attempts.labels("succeeded").inc()
    metrics.safety_rejections.labels("prompt", "weapons").inc()
    metrics.webhook_deliveries.labels("delivered").inc()
    names: dict[str, set[str]] = {}
    families: set[str] = set()
    for family in text_string_to_metric_families(metrics.render().decode()):
        if not family.name.endswith("_created"):  # prometheus_client's creation timestamps
            families.add(family.name)
        names.setdefault(family.name, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names, families


def _grafana_exprs() -> list[str]:
    dashboard = json.loads(GRAFANA.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [variable["definition"] for variable in dashboard["templating"]["list"]]
    return exprs


def _rule_exprs() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _check_names(texts: list[str], exposed: dict[str, set[str]], where: str) -> set[str]:
    used = {name for text in texts for name in METRIC_NAME.findall(text)}
    unknown = sorted(used - set(exposed))
    assert not unknown, f"{where} names metrics the service does not expose: {unknown}"
    for text in texts:
        for name, matchers in SELECTOR.findall(text):
            labels = set(LABEL_MATCHER.findall(matchers)) - {"__name__"}
            assert labels <= exposed[name], f"{where}: {name} has no label(s) {sorted(labels - exposed[name])}"
    return used


def test_grafana_and_alert_queries_use_real_metrics_and_labels() -> None:
    exposed, families = _exposed_metrics()
    used = _check_names(_grafana_exprs(), exposed, GRAFANA.name)
    _check_names(_rule_exprs(), exposed, RULES.name)
    for family in families:  # the dashboard shows every metric (a new one needs a panel, and a row in the doc)
        assert any(name == family or name.startswith(family + "_") for name in used), family


def test_operations_doc_lists_every_metric_and_names_only_real_ones() -> None:
    exposed, families = _exposed_metrics()
    text = OPERATIONS_DOC.read_text()
    _check_names([text], exposed, OPERATIONS_DOC.name)
    rows = re.findall(r"^\| `(cak_[a-z0-9_]+)`", text, re.MULTILINE)
    missing = [family for family in sorted(families)
               if not any(row == family or row.startswith(family + "_") for row in rows)]
    assert not missing, f"docs/operations.md's metrics table misses {missing}"


def test_grafana_dashboard_is_importable() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"], panel["title"]


def test_prometheus_scrapes_the_service() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"  # /metrics is behind the token when one is set
    targets = [target for group in job["static_configs"] for target in group["targets"]]
    assert targets and all(target.rsplit(":", 1)[1] == str(DEFAULT_PORT) for target in targets)
    assert all((PROMETHEUS.parent / name).is_file() for name in config["rule_files"])
    openapi = yaml.safe_load((REPO_ROOT / "supervisor" / "openapi.yaml").read_text())
    assert "/metrics" in openapi["paths"]


# ---------------------------------------------------------------------- docker


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_installs_with_install_py_only() -> None:
    instructions = _dockerfile_instructions()
    runs = [args for name, args in instructions if name == "RUN"]
    assert any(re.search(r"\bpython3 install\.py\b", run) for run in runs), runs
    for run in runs:
        assert not re.search(r"\b(pip3?|uv|conda|apt-get|apt|apk)\b\s+(install|add)", run), \
            f"a second, hand-written install in the Dockerfile: {run}"
    entrypoint = json.loads(next(args for name, args in instructions if name == "ENTRYPOINT"))
    command = json.loads(next(args for name, args in instructions if name == "CMD"))
    argv = entrypoint + command
    assert argv[1:3] == ["-m", "supervisor"], argv
    parsed = build_parser().parse_args(argv[3:])
    assert parsed.command == "up" and str(parsed.config) == "/app/config/supervisor.yaml"
    assert ("EXPOSE", str(DEFAULT_PORT)) in instructions
    healthcheck = next(args for name, args in instructions if name == "HEALTHCHECK")
    assert f"127.0.0.1:{DEFAULT_PORT}/healthz" in healthcheck
    assert (DOCKERFILE.parent / "Dockerfile.dockerignore").is_file()


def test_compose_reserves_the_gpu_mounts_models_and_publishes_the_default_port() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    service = compose["services"]["supervisor"]
    context = (COMPOSE.parent / service["build"]["context"]).resolve()
    assert context == REPO_ROOT
    assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(device.get("driver") == "nvidia" and "gpu" in device.get("capabilities", [])
               for device in devices), devices
    volumes = {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]}
    assert volumes["/app/models"] in compose["volumes"], "the models volume is a declared volume"
    assert volumes["/app/var/supervisor"] in compose["volumes"], "the job queue outlives the container"
    config_file = (COMPOSE.parent / volumes["/app/config/supervisor.yaml"]).resolve()
    assert config_file.is_file()
    (port,) = service["ports"]
    host_ip, host_port, container_port = str(port).split(":")
    assert host_ip == "127.0.0.1" and int(container_port) == DEFAULT_PORT == int(host_port)
    assert TOKEN_ENV in service["environment"]
    config = yaml.safe_load(config_file.read_text())
    assert config["http"]["port"] == DEFAULT_PORT and config["http"]["host"] == "0.0.0.0"
    assert config["output_root"] == "/app/var/supervisor"


@pytest.mark.usefixtures("installed_comfyui")
def test_compose_postgres_runs_the_gpu_supervisor_beside_its_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/scaling.md's recipe: the same GPU service as compose.yaml, its queue in a postgres service."""
    compose = yaml.safe_load(COMPOSE_POSTGRES.read_text())
    single = yaml.safe_load(COMPOSE.read_text())["services"]["supervisor"]
    postgres, service = compose["services"]["postgres"], compose["services"]["supervisor"]
    assert postgres["image"].startswith("postgres:")
    volume, mount = postgres["volumes"][0].split(":")
    assert volume in compose["volumes"] and mount == "/var/lib/postgresql/data", "the queue outlives the container"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    for key in ("build", "deploy", "ports", "shm_size", "stop_grace_period"):
        assert service[key] == single[key], key
    environment = service["environment"]
    url = environment["CAK_DATABASE_URL"]
    assert url.startswith("postgresql://") and "@postgres:5432/" in url
    assert TOKEN_ENV in environment
    volumes = {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]}
    config_file = (COMPOSE_POSTGRES.parent / volumes["/app/config/supervisor.yaml"]).resolve()
    monkeypatch.setenv("CAK_DATABASE_URL", url.replace("${CAK_POSTGRES_PASSWORD}", "pw"))
    monkeypatch.setenv("CAK_SUPERVISOR_NAME", "gpu-host-1")
    assert "CAK_SUPERVISOR_NAME" in environment
    settings = load_settings(config_file)
    assert settings.jobs.database_url == "postgresql://cak:pw@postgres:5432/cak"
    assert settings.name == "gpu-host-1"
    assert settings.http.port == DEFAULT_PORT and settings.http.host == "0.0.0.0"
    assert all(instance.cuda_device is not None for instance in settings.instances)
    assert str(COMPOSE_POSTGRES.relative_to(REPO_ROOT)) in SCALING_DOC.read_text()


@pytest.mark.parametrize("path", [DEPLOY / "docker" / "supervisor.yaml", DEPLOY / "systemd" / "supervisor.yaml",
                                  DEPLOY / "docker" / "supervisor.postgres.yaml"],
                         ids=["docker", "systemd", "docker-postgres"])
@pytest.mark.usefixtures("installed_comfyui")
def test_example_configs_pass_validation_and_use_the_gpu(path: Path) -> None:
    settings = load_settings(path)
    assert all(instance.cuda_device is not None for instance in settings.instances)  # no --cpu
    assert settings.http.port == DEFAULT_PORT
    assert (REPO_ROOT / "workflows" / f"{settings.jobs.default_workflow}.yaml").is_file()


# ---------------------------------------------------------------------- systemd


def _unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit_runs_a_real_cli_command() -> None:
    service = _unit()["Service"]
    (exec_start,) = service["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0].endswith("/.venv/bin/python") and argv[1:3] == ["-m", "supervisor"], argv
    parsed = build_parser().parse_args(argv[3:])
    assert parsed.command == "up" and parsed.config is not None
    result = subprocess.run([sys.executable, "-m", "supervisor", *argv[3:4], "--help"], check=False, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout


def test_systemd_unit_restarts_drains_and_is_hardened() -> None:
    unit = _unit()
    service = unit["Service"]
    assert service["Restart"] == ["always"]
    assert service["KillSignal"] == ["SIGTERM"] and service["KillMode"] == ["mixed"]
    assert service["EnvironmentFile"], "the token comes from an env file"
    assert "User" in service and service["User"] != ["root"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "RestrictSUIDSGID": "yes"}.items():
        assert service.get(key) == [value], key
    assert "PrivateDevices" not in service, "PrivateDevices hides /dev/nvidia*"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    env_example = (UNIT.parent / "env.example").read_text()
    assert f"{TOKEN_ENV}=" in env_example


def test_docs_say_the_recipes_are_checked_not_run() -> None:
    text = OPERATIONS_DOC.read_text()
    assert "checked, not run" in text
    for path in (COMPOSE, COMPOSE_POSTGRES, DOCKERFILE, UNIT, GRAFANA, PROMETHEUS):
        assert str(path.relative_to(REPO_ROOT)) in text, path
