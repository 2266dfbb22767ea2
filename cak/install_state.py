"""Where the project keeps things, and what ``install.py`` recorded about the ComfyUI it set up.

Standard library only: ``install.py`` imports this with the system Python before any environment
exists, and every other part (runner, supervisor, tests) reads the same record instead of guessing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = REPO_ROOT / "var"
STATE_FILE = VAR_DIR / "install" / "state.json"
EMBEDDED_COMFYUI_DIR = VAR_DIR / "comfyui"
EXTRA_MODEL_PATHS_FILE = VAR_DIR / "extra_model_paths.yaml"
CUSTOM_NODES_DIR = REPO_ROOT / "custom_nodes"
PACK_DIR = CUSTOM_NODES_DIR / "cute_animal_kids"
MODELS_DIR = REPO_ROOT / "models"
WORKFLOWS_DIR = REPO_ROOT / "workflows"
VENV_DIR = REPO_ROOT / ".venv"


class NotInstalledError(RuntimeError):
    """The project has not been set up (or its record is damaged)."""


@dataclass(frozen=True)
class InstallState:
    comfyui_path: str
    comfyui_version: str
    embedded: bool
    python: str
    models_dir: str
    extra_model_paths: str
    linked: bool

    @property
    def comfyui_main(self) -> Path:
        return Path(self.comfyui_path) / "main.py"

    def save(self, path: Path = STATE_FILE) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)


def load_state(path: Path = STATE_FILE) -> InstallState:
    """The record ``install.py`` wrote, or a ``NotInstalledError`` that says what to run."""
    try:
        data = json.loads(path.read_text())
        state = InstallState(**data)
    except FileNotFoundError:
        raise NotInstalledError("the project is not set up yet: run `python3 install.py`") from None
    except (ValueError, TypeError) as exc:
        raise NotInstalledError(f"{path} is damaged ({exc}): run `python3 install.py` again") from None
    if not state.comfyui_main.is_file():
        raise NotInstalledError(
            f"ComfyUI is gone from {state.comfyui_path}: run `python3 install.py` again"
        )
    return state


def comfyui_version(comfyui: Path) -> str:
    """The version a ComfyUI tree declares in ``comfyui_version.py`` (``unknown`` if it has none)."""
    version_file = comfyui / "comfyui_version.py"
    try:
        for line in version_file.read_text().splitlines():
            if line.startswith("__version__"):
                return line.split("=", 1)[1].strip().strip("\"'")
    except OSError:
        pass
    return "unknown"
