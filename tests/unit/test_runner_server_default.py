"""``--server`` defaults to $CAK_COMFYUI_URL when set, else the local ComfyUI, and --help says so."""

from __future__ import annotations

import pytest

from runner.cli import FALLBACK_SERVER, SERVER_ENV, build_parser

COMMANDS = [["run", "cute_animal_cpu"], ["validate", "cute_animal_cpu"], ["object-info", "--out", "x.json"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: argv[0])
def test_the_environment_names_the_server_and_the_flag_wins(monkeypatch, argv):
    monkeypatch.setenv(SERVER_ENV, "http://10.0.0.5:9000")
    assert build_parser().parse_args(argv).server == "http://10.0.0.5:9000"
    assert build_parser().parse_args([*argv, "--server", "http://h:1"]).server == "http://h:1"
    monkeypatch.delenv(SERVER_ENV)
    assert build_parser().parse_args(argv).server == FALLBACK_SERVER == "http://127.0.0.1:8188"


@pytest.mark.parametrize("command", ["run", "validate", "object-info"])
def test_help_names_the_variable_and_the_fallback(monkeypatch, capsys, command):
    monkeypatch.setenv(SERVER_ENV, "http://10.0.0.5:9000")
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default: ${SERVER_ENV} when set, else {FALLBACK_SERVER})" in text
