"""The pack folder as a Comfy Registry package: its pyproject.toml meets the registry's rules
(https://docs.comfy.org/registry/specifications), its dependencies are the pinned requirements.txt
beside it, and installing them changes nothing ComfyUI itself pins or needs."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

from cak.install_state import PACK_DIR, REPO_ROOT, InstallState

PYPROJECT = PACK_DIR / "pyproject.toml"
# Registry rules for [project] name: < 100 characters; letters, digits, "-", "_", "."; no two
# special characters in a row; starts with a letter; and (best practice) no "ComfyUI" in it.
NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*$")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
PUBLISHER = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")
ICON_TYPES = (".svg", ".png", ".jpg", ".jpeg", ".gif")
ICON_MAX = (800, 400)  # maximum width x height


def _pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


def _requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def registry_problems(pyproject: dict, pack_dir: Path) -> list[str]:
    """Every way ``pyproject`` breaks the Comfy Registry's pyproject.toml specification."""
    problems = []
    project, comfy = pyproject.get("project", {}), pyproject.get("tool", {}).get("comfy", {})
    name = project.get("name", "")
    if not (0 < len(name) < 100 and NAME.match(name)) or "comfyui" in name.lower():
        problems.append(f"project.name {name!r}")
    if not SEMVER.match(project.get("version", "")):
        problems.append(f"project.version {project.get('version')!r} is not X.Y.Z")
    license_ = project.get("license")
    if not (isinstance(license_, dict) and (license_.get("text") or
                                             (pack_dir / license_.get("file", "/nonexistent")).is_file())):
        problems.append(f"project.license {license_!r}: {{file = ...}} naming a file, or {{text = ...}}")
    if not project.get("description"):
        problems.append("project.description is missing")
    repository = project.get("urls", {}).get("Repository", "")
    if urlparse(repository).scheme != "https":
        problems.append(f"project.urls.Repository {repository!r}")
    if not PUBLISHER.match(comfy.get("PublisherId", "")):
        problems.append(f"tool.comfy.PublisherId {comfy.get('PublisherId')!r}")
    if not comfy.get("DisplayName"):
        problems.append("tool.comfy.DisplayName is missing")
    icon = comfy.get("Icon", "")
    if urlparse(icon).scheme != "https" or not icon.lower().endswith(ICON_TYPES):
        problems.append(f"tool.comfy.Icon {icon!r}: an https URL to an SVG, PNG, JPG or GIF")
    for folder in comfy.get("includes", []):
        if not (pack_dir / folder).is_dir():
            problems.append(f"tool.comfy.includes: {folder!r} is not a folder of the pack")
    return problems


def test_pyproject_meets_the_registry_rules():
    assert registry_problems(_pyproject(), PACK_DIR) == []


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("project.name", "ComfyUI-cute", "project.name"),
    ("project.name", "9lives", "project.name"),
    ("project.name", "cute--animal", "project.name"),
    ("project.version", "0.1", "project.version"),
    ("project.license", "GPL-3.0-or-later", "project.license"),
    ("project.license", {"file": "NO_SUCH_FILE"}, "project.license"),
    ("tool.comfy.PublisherId", "", "PublisherId"),
    ("tool.comfy.Icon", "icon.png", "Icon"),
    ("tool.comfy.includes", ["no_such_folder"], "includes"),
])
def test_registry_check_catches_each_rule(key, value, expected):
    pyproject = _pyproject()
    *parents, last = key.split(".")
    section = pyproject
    for parent in parents:
        section = section[parent]
    section[last] = value
    problems = registry_problems(pyproject, PACK_DIR)
    assert len(problems) == 1 and expected in problems[0], problems


def test_icon_is_the_packs_own_small_picture():
    icon = _pyproject()["tool"]["comfy"]["Icon"]
    repository = _pyproject()["project"]["urls"]["Repository"]
    owner_repo = urlparse(repository).path.strip("/")
    path = urlparse(icon).path
    prefix = f"/{owner_repo}/main/"
    assert path.startswith(prefix), (icon, repository)  # served from the same repository
    local = REPO_ROOT / path.removeprefix(prefix)
    with Image.open(local) as image:
        assert image.width <= ICON_MAX[0] and image.height <= ICON_MAX[1]


def test_dependencies_are_the_pinned_requirements():
    pinned = _requirement_lines(PACK_DIR / "requirements.txt")
    assert sorted(_pyproject()["project"]["dependencies"]) == sorted(pinned)
    for line in pinned:
        requirement = Requirement(line)
        (spec,) = requirement.specifier
        assert spec.operator == "==", line
        # What the tests run against is what the pack declares.
        assert importlib.metadata.version(requirement.name) == spec.version, line
    # The repository's install (install.py) installs the pack's file, not a copy of its pins.
    root = _requirement_lines(REPO_ROOT / "requirements.txt")
    assert "-r custom_nodes/cute_animal_kids/requirements.txt" in root
    pack_names = {canonicalize_name(Requirement(line).name) for line in pinned}
    assert not pack_names & {canonicalize_name(Requirement(line).name) for line in root if not line.startswith("-")}


def _comfyui_requirements(installed: InstallState) -> dict[str, Requirement]:
    path = Path(installed.comfyui_path) / "requirements.txt"
    return {canonicalize_name(r.name): r for r in map(Requirement, _requirement_lines(path))}


def _closure(names: list[str]) -> list[tuple[str, Requirement]]:
    """Every (dependent, requirement) reachable from ``names`` in the installed environment."""
    seen, found, todo = set(), [], [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            found.append((name, requirement))
            todo.append(canonicalize_name(requirement.name))
    return found


def test_pack_installs_nothing_comfyui_pins_differently(installed_comfyui):
    comfyui = _comfyui_requirements(installed_comfyui)
    pinned = [Requirement(line).name for line in _requirement_lines(PACK_DIR / "requirements.txt")]
    # ComfyUI owns what it requires: the pack leaves those to it instead of pinning them again.
    assert not {canonicalize_name(n) for n in pinned} & set(comfyui)
    clashes = []
    for dependent, requirement in _closure(pinned):
        ours = comfyui.get(canonicalize_name(requirement.name))
        if ours is None:
            continue
        installed = importlib.metadata.version(requirement.name)  # what ComfyUI's pins resolved to
        exact = [s.version for s in ours.specifier if s.operator == "=="]
        for version in [installed, *exact]:
            if not requirement.specifier.contains(version, prereleases=True):
                clashes.append(f"{dependent} needs {requirement}, ComfyUI has {ours} ({version})")
    assert clashes == []


EXAMPLES_DIR = PACK_DIR / "example_workflows"


def test_example_workflows_are_the_shipped_ui_files():
    """One source: each example is a byte-for-byte copy of ``workflows/<name>.ui.json``.

    After editing a workflow: cp workflows/NAME.ui.json custom_nodes/cute_animal_kids/example_workflows/NAME.json
    (and python -m tools.pack_media --server URL for its thumbnail).
    """
    shipped = {path.name.removesuffix(".ui.json"): path for path in (REPO_ROOT / "workflows").glob("*.ui.json")}
    examples = {path.stem: path for path in EXAMPLES_DIR.glob("*.json")}
    assert set(examples) == set(shipped) >= {"cute_animal_qwen_image", "cute_animal_qwen_image_fast",
                                             "cute_animal_cpu"}
    drifted = [name for name in shipped if examples[name].read_bytes() != shipped[name].read_bytes()]
    assert drifted == []


def test_every_example_workflow_has_a_thumbnail():
    for example in EXAMPLES_DIR.glob("*.json"):
        # The editor's Templates browser asks for <name>.jpg beside <name>.json.
        with Image.open(example.with_suffix(".jpg")) as thumbnail:
            assert thumbnail.format == "JPEG" and min(thumbnail.size) >= 200, example.name
