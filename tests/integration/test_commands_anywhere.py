"""``cak-supervisor`` and ``cak-runner`` (pyproject's [project.scripts]), installed the way install.py
installs them, work from any folder, and their --help examples name them.

A throw-away venv gets the shared environment's packages through a .pth file, then the project is
installed into it editable without dependencies (install.py's step); the real .venv is not touched.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from cak.install_state import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv_bin(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("commands") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "shared.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n{REPO_ROOT / 'custom_nodes'}\n")
    subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-e", str(REPO_ROOT),
                    "--no-deps", "--no-build-isolation"], check=True, capture_output=True, timeout=600)
    return venv / "bin"


@pytest.mark.parametrize(("script", "module"), [("cak-supervisor", "supervisor"), ("cak-runner", "runner")])
def test_console_scripts_and_module_work_from_any_folder(venv_bin, tmp_path, script, module):
    for command in ([str(venv_bin / script), "--help"], [str(venv_bin / "python"), "-m", module, "--help"]):
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        examples = [line.strip() for line in result.stdout.split("examples", 1)[1].split("\n\n", 1)[0]
                    .splitlines() if line.startswith("  ") and not line.startswith("   ")]
        assert examples and all(line.startswith(f"{script} ") for line in examples), examples


def test_runtime_hints_name_the_installed_command(venv_bin, tmp_path):
    result = subprocess.run([str(venv_bin / "cak-supervisor"), "status", "--url", "http://127.0.0.1:9"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f"`{venv_bin / 'cak-supervisor'} up` running?" in result.stderr, result.stderr
