"""Session fixtures: one real ComfyUI (embedded, or $COMFYUI_PATH via install.py) shared by tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.comfy_server import ComfyTestServer

ARTIFACTS_DIR = Path(os.environ.get("CAK_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "var" / "test-artifacts"))


@pytest.fixture(scope="session")
def comfy(tmp_path_factory: pytest.TempPathFactory):
    """A ComfyUI with our pack on a free loopback port and its own folders; stopped at the end."""
    server = ComfyTestServer(tmp_path_factory.mktemp("comfyui"))
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests keep files worth looking at after a run (screenshots), kept across runs."""
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS_DIR
