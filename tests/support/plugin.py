"""The test suite's pytest plugin (``-p tests.support.plugin`` in pyproject.toml): session fixtures,
one real ComfyUI (embedded, or $COMFYUI_PATH via install.py) shared by tests, and the markers.

The ``comfyui`` marker (``pytest -m "not comfyui"`` runs the pure unit tests on a machine without
install.py's set-up) is put here by need, not by hand: every test under ``tests/integration/``
(each starts ComfyUI, a supervisor or a set-up model), and every other test that uses the ``comfy``
or ``installed_comfyui`` fixture, directly or through another fixture.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cak.install_state import InstallState, load_state
from tests.support.comfy_server import ComfyTestServer

ARTIFACTS_DIR = Path(os.environ.get("CAK_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "var" / "test-artifacts"))
INTEGRATION_DIR = Path(__file__).resolve().parent.parent / "integration"
NEEDS_COMFYUI = {"comfy", "installed_comfyui"}  # fixtures whose users need the set-up


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``comfyui`` what needs the installed ComfyUI (see the module docstring)."""
    for item in items:
        in_integration = item.path.is_relative_to(INTEGRATION_DIR)
        if in_integration or NEEDS_COMFYUI & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.comfyui)


@pytest.fixture(scope="session")
def installed_comfyui() -> InstallState:
    """What install.py set up (a test that needs ComfyUI's tree or the default config takes this)."""
    return load_state()


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


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the session (tests.support.postgres_server); stopped at the end."""
    from tests.support.postgres_server import INSTALL_HINT, available, scratch_postgres
    if not available():
        pytest.fail(INSTALL_HINT)
    with scratch_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh database on the session's server (restarted if a test left it stopped)."""
    postgres_server.ensure_running()
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path):
    """``await open_store(name="host-a", lease_s=30)``: an opened job store, on each backend in turn.

    Stores made by one test share one queue (one SQLite file, or one fresh PostgreSQL database) and
    one output folder, like supervisors sharing a database; ``open_store.backend`` says which.
    """
    from supervisor.job_store_sqlite import SqliteJobStore
    url = None
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        server.ensure_running()
        url = server.new_database()

    async def opened(name: str = "host-a", lease_s: float = 30.0):
        if url is not None:
            from supervisor.job_store_postgres import PostgresJobStore
            store = PostgresJobStore(url, tmp_path / "out", name, lease_s)
        else:
            store = SqliteJobStore(tmp_path / "jobs.sqlite3", tmp_path / "out", name, lease_s)
        await store.open()
        return store

    opened.backend = request.param  # type: ignore[attr-defined]
    opened.url = url  # type: ignore[attr-defined]
    return opened
