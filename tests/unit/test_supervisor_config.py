"""Supervisor settings: defaults load, every mistake names its key, all of them in one error."""

from __future__ import annotations

from pathlib import Path

import pytest

from cak.install_state import REPO_ROOT, load_state
from supervisor.settings import ConfigError, load_settings


def _problems(overrides: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides=overrides)
    return info.value.problems


@pytest.mark.usefixtures("installed_comfyui")
def test_defaults_are_valid_and_sensible():
    config = load_settings()
    assert config.comfyui_path == Path(load_state().comfyui_path)
    assert [i.name for i in config.instances] == ["comfy-1"]
    assert config.instances[0].port is None and config.instances[0].cuda_device is None
    assert config.output_root == REPO_ROOT / "var" / "supervisor"
    assert config.health.step_timeout_s > 0 and config.health.restart.max_restarts >= 1
    assert config.http.port == 8288 and config.jobs.db_path == REPO_ROOT / "var" / "supervisor" / "jobs.sqlite3"


@pytest.mark.usefixtures("installed_comfyui")
def test_instance_count_and_list(tmp_path):
    assert [i.name for i in load_settings(overrides={"instances": 3}).instances] == ["comfy-1", "comfy-2", "comfy-3"]
    path = tmp_path / "sup.yaml"
    path.write_text(
        "extra_args: [--lowvram]\n"
        "output_root: out\n"
        "instances:\n"
        "  - {name: gpu0, port: 8190, cuda_device: 0, extra_args: [--reserve-vram, '1']}\n"
        "  - {name: cpu}\n"
        "model_folders: {loras: [a, /abs/b], checkpoints: ckpt}\n"
        "health: {step_timeout_s: 30, restart: {max_restarts: 2}}\n"
        "http: {port: 9000}\n"
        "jobs: {max_attempts: 5}\n"
    )
    config = load_settings(path)
    gpu, cpu = config.instances
    assert (gpu.name, gpu.port, gpu.cuda_device) == ("gpu0", 8190, 0)
    assert gpu.extra_args == ("--lowvram", "--reserve-vram", "1")
    assert (cpu.port, cpu.cuda_device, cpu.extra_args) == (None, None, ("--lowvram",))
    assert config.output_root == tmp_path / "out"  # relative to the config file
    assert config.model_folders == {"loras": (tmp_path / "a", Path("/abs/b")), "checkpoints": (tmp_path / "ckpt",)}
    assert config.health.step_timeout_s == 30
    assert config.health.restart.max_restarts == 2
    assert config.health.restart.window_s == 600  # merged with the defaults, key by key
    assert (config.http.port, config.http.host, config.jobs.max_attempts) == (9000, "127.0.0.1", 5)
    assert config.base_dir == tmp_path


@pytest.mark.usefixtures("installed_comfyui")
def test_errors_name_the_key():
    problems = _problems({"instances": [{"name": "a", "port": 8190}, {"name": "b", "port": 80}]})
    assert problems == ["instances.1.port: must be an integer 1024-65535"]
    assert str(ConfigError(problems)) == "instances.1.port: must be an integer 1024-65535"


def test_every_problem_is_listed():
    problems = _problems({
        "instances": [{"name": "a", "cuda_device": -1, "colour": "red"}, {"name": "a", "extra_args": "--x"}],
        "health": {"step_timeout_s": 0, "probe_failures": 0, "restart": {"backoff_factor": 0.5}, "typo_s": 1},
        "model_folders": {"weights": "/x"},
        "keep_metadata": "yes",
        "http": [1],
        "nonsense": 1,
    })
    joined = "\n".join(problems)
    for key in ("instances.0.cuda_device:", "instances.0.colour: unknown setting", "instances.1.name: 'a' is used twice",
                "instances.1.extra_args: must be a list of strings", "health.step_timeout_s: must be a number > 0",
                "health.probe_failures: must be an integer >= 1", "health.restart.backoff_factor: must be a number >= 1",
                "health.typo_s: unknown setting", "model_folders.weights: unknown model type",
                "keep_metadata: must be true or false", "http: must be a mapping", "nonsense: unknown setting"):
        assert key in joined, key


@pytest.mark.usefixtures("installed_comfyui")
def test_duplicate_ports_and_bad_counts():
    assert _problems({"instances": 0}) == ["instances: must be a count 1-64 or a list of instances"]
    problems = _problems({"instances": [{"name": "a", "port": 9000}, {"name": "b", "port": 9000}]})
    assert problems == ["instances.1.port: 9000 is used twice"]


def test_bad_comfyui_path_and_warmup_graph(tmp_path):
    problems = _problems({"comfyui_path": str(tmp_path), "health": {"warmup_graph": str(tmp_path / "no.json")}})
    assert problems[0].startswith("comfyui_path:") and "no main.py" in problems[0]
    assert problems[1].startswith("health.warmup_graph:") and "does not exist" in problems[1]


def test_unreadable_yaml_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("instances: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_settings(path)
    path.write_text("http:\n  port: 9100\ninstances: 1\nhttp:\n  token: abc\n")  # the port would be lost
    with pytest.raises(ConfigError, match="key 'http' is written twice"):
        load_settings(path)


@pytest.mark.usefixtures("installed_comfyui")
def test_environment_overrides_the_file(tmp_path, monkeypatch):
    path = tmp_path / "sup.yaml"
    path.write_text("http: {port: 9000}\nhealth: {max_jobs: 3}\n")
    monkeypatch.setenv("CAK_SUPERVISOR_HTTP__PORT", "9100")
    monkeypatch.setenv("CAK_SUPERVISOR_HEALTH__RESTART__MAX_RESTARTS", "7")
    monkeypatch.setenv("CAK_SUPERVISOR_URL", "http://127.0.0.1:1")  # the CLI's variable, not a setting
    config = load_settings(path)
    assert (config.http.port, config.health.max_jobs, config.health.restart.max_restarts) == (9100, 3, 7)
    monkeypatch.setenv("CAK_SUPERVISOR_HTTP__PORT", "web")
    assert _problems({}) == ["http.port: must be an integer 0-65535"]


@pytest.mark.usefixtures("installed_comfyui")
def test_optional_sections_are_off_unless_given_and_checked_when_given(tmp_path, monkeypatch):
    """``guard`` and ``comfy_api`` have defaults for their keys but stay off until a file names them."""
    monkeypatch.delenv("CAK_SUPERVISOR_GUARD__MODEL_PATH", raising=False)
    settings = load_settings()
    assert settings.guard is None and settings.comfy_api is None and not settings.jobs.strict_text_gate
    guard = load_settings(overrides={"guard": {"model_path": "models/guard"}}).guard
    assert guard is not None and guard.device == "cpu" and guard.timeout_s == 30 and guard.controversial == "refuse"
    assert _problems({"guard": {}}) == ["guard.model_path: required (the Qwen3Guard-Gen checkpoint folder)"]
    assert _problems({"guard": {"model_path": "m", "device": "gpu", "timeout_s": 0, "controversial": "maybe"}}) == [
        "guard.device: must be cpu, cuda or cuda:N", "guard.timeout_s: must be a number 0.1-600",
        "guard.controversial: must be one of refuse, allow"]
    monkeypatch.setenv("CAK_SUPERVISOR_GUARD__MODEL_PATH", str(tmp_path))
    assert load_settings().guard.model_path == tmp_path  # the environment can turn it on too
