"""Start, watch and stop one headless ComfyUI process.

One launcher for everyone who needs a ComfyUI: the runner's ``demo``, the test fixtures and the
supervisor's instances. Each process gets its own loopback port, output/temp/user folders and log
file, and its own process group so that stopping it also stops anything it started.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil

from .install_state import InstallState

LOOPBACK = "127.0.0.1"


async def wait_exit(popen: subprocess.Popen[bytes]) -> int:
    """Return the exit code once ``popen`` has exited (and reap it).

    A pidfd becomes readable the moment the process exits, so the event loop learns of a crash
    without polling and without a blocked thread; where pidfds are missing, a thread waits instead.
    """
    if popen.poll() is not None:
        return popen.returncode
    try:
        fd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):
        return await asyncio.to_thread(popen.wait)
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
    try:
        await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    # The pidfd fired: the process is a zombie now, so this wait returns immediately.
    return popen.wait()


class ComfyStartError(RuntimeError):
    """ComfyUI did not come up; the message carries the end of its log."""


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class ComfyLaunch:
    """How to start one ComfyUI: where it keeps its files and which flags it gets."""

    base_dir: Path
    port: int = 0  # 0: pick a free one at start
    extra_args: list[str] = field(default_factory=list)
    extra_model_paths: list[Path] = field(default_factory=list)  # beyond install.py's own file
    cuda_device: int | None = None
    keep_metadata: bool = False  # saved PNGs carry the prompt text only when asked

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def temp_dir(self) -> Path:
        return self.base_dir / "temp"  # ComfyUI empties it at start: never share one

    @property
    def user_dir(self) -> Path:
        return self.base_dir / "user"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "comfyui.log"

    @property
    def pid_path(self) -> Path:
        return self.base_dir / "comfyui.pid"


class ComfyProcess:
    """A ComfyUI child process in its own process group."""

    def __init__(self, launch: ComfyLaunch, state: InstallState) -> None:
        self.launch = launch
        self.state = state
        self.port = launch.port
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def command(self) -> list[str]:
        launch = self.launch
        command = [
            self.state.python, str(self.state.comfyui_main),
            "--listen", LOOPBACK, "--port", str(self.port), "--disable-auto-launch",
            "--output-directory", str(launch.output_dir),
            "--input-directory", str(launch.input_dir),
            "--temp-directory", str(launch.temp_dir),
            "--user-directory", str(launch.user_dir),
            # ComfyUI's default database lives inside its own tree: keep it per instance instead.
            "--database-url", f"sqlite:///{launch.user_dir / 'comfyui.db'}",
            # None when the pack sits in that ComfyUI's own custom_nodes/ (the Manager-path test).
            *(["--extra-model-paths-config", self.state.extra_model_paths] if self.state.extra_model_paths else []),
            *[arg for path in launch.extra_model_paths for arg in ("--extra-model-paths-config", str(path))],
        ]
        if launch.cuda_device is None:
            command.append("--cpu")
        else:
            command += ["--cuda-device", str(launch.cuda_device)]
        if not launch.keep_metadata:
            command.append("--disable-metadata")
        return command + launch.extra_args

    def start(self) -> None:
        """Spawn the process (returns at once; ``wait_ready`` tells when it serves)."""
        if self.port == 0:
            self.port = free_port()
        for folder in (self.launch.output_dir, self.launch.input_dir, self.launch.user_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._kill_stale()
        log = self.launch.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                self.command(), cwd=self.state.comfyui_path, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            log.close()
        self.launch.pid_path.write_text(f"{self.popen.pid}\n")

    def _kill_stale(self) -> None:
        """Kill a ComfyUI left on these folders by an owner that died without stopping it.

        Each ComfyUI runs in its own process group, so a SIGKILLed supervisor leaves its instances
        running, holding ports and memory. The pid file says which group was ours; the command line
        must still name this instance's folders before anything is killed.
        """
        try:
            pid = int(self.launch.pid_path.read_text())
            cmdline = psutil.Process(pid).cmdline()
        except (OSError, ValueError, psutil.Error):
            return
        if str(self.state.comfyui_main) in cmdline and str(self.launch.output_dir) in cmdline:
            try:
                os.killpg(pid, signal.SIGKILL)
                psutil.Process(pid).wait(timeout=10)
            except (ProcessLookupError, psutil.Error):
                pass

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.launch.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def wait_ready(self, timeout: float = 180.0) -> dict:
        """Poll ``/system_stats`` until it answers; fail early if the process dies."""
        deadline = time.monotonic() + timeout
        probe_timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=probe_timeout) as session:
            while True:
                if not self.running():
                    code = self.popen.returncode if self.popen else None
                    raise ComfyStartError(f"ComfyUI exited with code {code} while starting; "
                                          f"log {self.launch.log_path}:\n{self.log_tail()}")
                try:
                    async with session.get(f"{self.url}/system_stats") as response:
                        if response.status == 200:
                            return await response.json()
                except (TimeoutError, aiohttp.ClientError):
                    pass
                if time.monotonic() > deadline:
                    raise ComfyStartError(f"ComfyUI did not answer on {self.url} within {timeout:.0f} s; "
                                          f"log {self.launch.log_path}:\n{self.log_tail()}")
                await asyncio.sleep(0.5)

    def signal_group(self, sig: signal.Signals) -> None:
        """Send a signal to the whole process group (no-op once it is gone)."""
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    async def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the group, then SIGKILL after ``grace`` seconds; returns the exit code."""
        if self.popen is None:
            return None
        self.signal_group(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.signal_group(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await wait_exit(self.popen)
        except TimeoutError:
            pass
        self.signal_group(signal.SIGKILL)  # also ends anything left in the group
        await wait_exit(self.popen)
        self.launch.pid_path.unlink(missing_ok=True)
        return self.popen.returncode
