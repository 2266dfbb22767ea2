"""``up --demo`` merges with a config file's instances instead of silently replacing them."""

from __future__ import annotations

import pytest

from supervisor.serve import DEMO_INSTANCES, demo_overrides
from supervisor.settings import load_settings


@pytest.mark.usefixtures("installed_comfyui")
def test_demo_keeps_the_instances_a_config_names(tmp_path, capsys):
    config = tmp_path / "supervisor.yaml"
    config.write_text("instances:\n  - {name: gpu-a, port: 8301}\n  - {name: gpu-b, port: 8302}\n"
                      "  - {name: gpu-c, port: 8303}\n")
    merged = load_settings(config, demo_overrides(config))
    assert [i.name for i in merged.instances] == ["gpu-a", "gpu-b", "gpu-c"]
    assert f"using the instances of {config}" in capsys.readouterr().out


@pytest.mark.usefixtures("installed_comfyui")
def test_demo_runs_two_instances_without_a_config_or_when_it_names_none(tmp_path):
    assert len(load_settings(None, demo_overrides(None)).instances) == DEMO_INSTANCES == 2
    config = tmp_path / "supervisor.yaml"
    config.write_text("output_root: out\n")
    assert len(load_settings(config, demo_overrides(config)).instances) == DEMO_INSTANCES
