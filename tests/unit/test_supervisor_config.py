"""Supervisor config: defaults load, every mistake names its key, raw sections pass through."""

from __future__ import annotations

from pathlib import Path

import pytest

from cak.install_state import REPO_ROOT, load_state
from supervisor.config import ConfigError, load_config


def _problems(overrides: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides)
    return info.value.problems


def test_defaults_are_valid_and_sensible():
    config = load_config()
    assert config.comfyui_path == Path(load_state().comfyui_path)
    assert [i.name for i in config.instances] == ["comfy-1"]
    assert config.instances[0].port == 0 and config.instances[0].cuda_device is None
    assert config.output_root == REPO_ROOT / "var" / "supervisor"
    assert config.health.step_timeout_s > 0 and config.health.restart.max_restarts >= 1
    assert config.raw_sections == {"http": {}, "jobs": {}, "guard": {}, "webhooks": {}}


def test_instance_count_and_list(tmp_path):
    assert [i.name for i in load_config(overrides={"instances": 3}).instances] == ["comfy-1", "comfy-2", "comfy-3"]
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
    config = load_config(path)
    gpu, cpu = config.instances
    assert (gpu.name, gpu.port, gpu.cuda_device) == ("gpu0", 8190, 0)
    assert gpu.extra_args == ("--lowvram", "--reserve-vram", "1")
    assert (cpu.port, cpu.cuda_device, cpu.extra_args) == (0, None, ("--lowvram",))
    assert config.output_root == tmp_path / "out"  # relative to the config file
    assert config.model_folders == {"loras": (tmp_path / "a", Path("/abs/b")), "checkpoints": (tmp_path / "ckpt",)}
    assert config.health.step_timeout_s == 30
    assert config.health.restart.max_restarts == 2
    assert config.health.restart.window_s == 600  # merged with the defaults, key by key
    assert config.raw_sections == {"http": {"port": 9000}, "jobs": {"max_attempts": 5}, "guard": {},
                                   "webhooks": {}}
    assert config.base_dir == tmp_path


def test_errors_name_the_key():
    problems = _problems({"instances": [{"name": "a", "port": 8190}, {"name": "b", "port": 80}]})
    assert problems == ["instances[1].port: must be an integer 1024-65535"]
    assert str(ConfigError(problems)) == "instances[1].port: must be an integer 1024-65535"


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
    for key in ("instances[0].cuda_device:", "instances[0].colour: unknown setting", "instances[1].name: 'a' is used twice",
                "instances[1].extra_args: must be a list of strings", "health.step_timeout_s: must be a number > 0",
                "health.probe_failures: must be an integer >= 1", "health.restart.backoff_factor: must be a number >= 1",
                "health.typo_s: unknown setting", "model_folders.weights: unknown model type",
                "keep_metadata: must be true or false", "http: must be a mapping", "nonsense: unknown setting"):
        assert key in joined, key


def test_duplicate_ports_and_bad_counts():
    assert _problems({"instances": 0}) == ["instances: must be a count 1-64 or a list of instances"]
    problems = _problems({"instances": [{"name": "a", "port": 9000}, {"name": "b", "port": 9000}]})
    assert problems == ["instances[1].port: 9000 is used twice"]


def test_bad_comfyui_path_and_warmup_graph(tmp_path):
    problems = _problems({"comfyui_path": str(tmp_path), "health": {"warmup_graph": str(tmp_path / "no.json")}})
    assert problems[0].startswith("comfyui_path:") and "no main.py" in problems[0]
    assert problems[1].startswith("health.warmup_graph:") and "does not exist" in problems[1]


def test_unreadable_yaml_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("instances: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(path)
