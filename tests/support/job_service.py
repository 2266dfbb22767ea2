"""A real ``python -m supervisor up`` for tests, and a small synchronous HTTP helper around it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from cak.comfy_process import free_port
from cak.install_state import REPO_ROOT
from supervisor.states import SERVING_STATES, TERMINAL_STATES, JobState
from tests.support.waiting import wait_until

PACK_PARENT = REPO_ROOT / "custom_nodes"
FINAL_STATES = TERMINAL_STATES
# A job that samples long enough (~11 s on an idle 2-core machine, 100 steps at 768²) for a test to
# act while it runs: kill, cancel. Smaller jobs finished between two polls when CI was idle.
SLOW_JOB = {"width": 768, "height": 768, "steps": 100}


class SupervisorProcess:
    """One supervisor process with its own config, output root, database and port.

    With ``name`` and ``database_url`` it is one host of several sharing a PostgreSQL job store
    (``hosts``); its instances are then named after it (``<name>-cpu``), so attempts show the host.
    """

    def __init__(self, base_dir: Path, *, instances: int | list[dict[str, Any]] = 1, token: str | None = None,
                 jobs: dict[str, Any] | None = None, health: dict[str, Any] | None = None,
                 guard: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                 webhooks: dict[str, Any] | None = None, name: str | None = None) -> None:
        self.base_dir = base_dir
        self.name = name
        self.port = free_port()
        self.token = token
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = base_dir / "supervisor.yaml"
        self.log_path = base_dir / "supervisor.log"
        config: dict[str, Any] = {
            "instances": instances,
            "output_root": str(base_dir / "out"),
            "http": {"port": self.port, "token": token},
            "jobs": {"drain_timeout_s": 5, **(jobs or {})},
        }
        if name:
            config["name"] = name
        if health:
            config["health"] = health
        if guard:
            config["guard"] = guard
        self.extra_env = env or {}
        if webhooks:
            config["webhooks"] = webhooks
        base_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config))
        self.popen: subprocess.Popen[bytes] | None = None
        self.comfy_pids: set[int] = set()
        self.paused: list[int] = []  # supervisor + ComfyUI pids stopped by pause_host, in that order

    # ------------------------------------------------------------------ process

    def start(self, ready: int = 1, timeout: float = 300.0) -> SupervisorProcess:
        env = {k: v for k, v in os.environ.items()
               if k not in ("CAK_SUPERVISOR_TOKEN", "CAK_SUPERVISOR_URL", "CAK_WEBHOOK_SECRET")}
        # This checkout's pack first: a venv shared between checkouts has one .pth naming only one.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACK_PARENT), env.get("PYTHONPATH")]))
        env.update(self.extra_env)
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "up", "--config", str(self.config_path), "--log-json"],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.wait_ready(ready, timeout)
        return self

    def wait_ready(self, count: int, timeout: float = 300.0) -> None:
        def serving() -> bool:
            self._check_alive()
            try:
                status, data = self.call("GET", "/v1/instances")
            except (urllib.error.URLError, ConnectionError):
                return False  # the API is not up yet
            if status != 200:
                return False  # up, but its job store not yet (pghosts_requests.md: a 500 before the store opens)
            instances = data["instances"]
            self.comfy_pids |= {i["pid"] for i in instances if i["pid"]}
            return sum(i["state"] in SERVING_STATES for i in instances) >= count

        wait_until(serving, lambda: f"supervisor not ready with {count} instance(s) in {timeout} s:\n"
                   f"{self.log_tail()}", timeout, interval=0.5)

    def _check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise RuntimeError(f"supervisor exited with {self.popen.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL the supervisor alone, as a crash would (its ComfyUI children are left running)."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()

    def host_pids(self) -> list[int]:
        """The ComfyUI pids this supervisor runs now (each leads its own process group)."""
        pids = [i["pid"] for i in self.get("/v1/instances")["instances"] if i["pid"]]
        self.comfy_pids |= set(pids)
        return pids

    def kill_host(self) -> None:
        """SIGKILL the supervisor and its ComfyUI at once, as when the whole machine dies."""
        assert self.popen is not None
        comfy = self.host_pids()
        self.popen.send_signal(signal.SIGKILL)
        _signal_groups(comfy, signal.SIGKILL)
        self.popen.wait()

    def pause_host(self) -> None:
        """SIGSTOP the supervisor, then its ComfyUI (a frozen machine, or one cut off the network)."""
        assert self.popen is not None and not self.paused
        comfy = self.host_pids()
        self.popen.send_signal(signal.SIGSTOP)
        _signal_groups(comfy, signal.SIGSTOP)
        self.paused = [self.popen.pid, *comfy]

    def resume_host(self) -> None:
        """SIGCONT what ``pause_host`` stopped: the supervisor first, so it acts before its ComfyUI runs on."""
        supervisor, *comfy = self.paused
        os.kill(supervisor, signal.SIGCONT)
        _signal_groups(comfy, signal.SIGCONT)
        self.paused = []

    def stop(self) -> None:
        """SIGTERM (the supervisor drains), SIGKILL if it hangs; then any ComfyUI left behind."""
        if self.paused:  # a stopped process cannot act on the SIGTERM
            self.resume_host()
        if self.popen is not None and self.popen.poll() is None:
            self.record_pids()
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.kill_orphans()

    def record_pids(self) -> None:
        """Remember the ComfyUI pids now running, to clean up after a supervisor that was killed."""
        try:
            self.comfy_pids |= {i["pid"] for i in self.get("/v1/instances")["instances"] if i["pid"]}
        except (urllib.error.URLError, ConnectionError, AssertionError):
            pass

    def kill_orphans(self) -> None:
        for pid in self.comfy_pids:
            try:
                os.killpg(pid, signal.SIGKILL)  # each ComfyUI leads its own process group
            except (ProcessLookupError, PermissionError):
                pass
        self.comfy_pids.clear()

    def instance_urls(self) -> list[str]:
        """Its ComfyUI instances' own URLs (to look at their queue and history)."""
        return [i["url"] for i in self.get("/v1/instances")["instances"]]

    # ------------------------------------------------------------------ HTTP

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                headers: dict[str, str] | None = None, token: str | None | bool = True,
                timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body of one call (errors included: no exception for 4xx/5xx)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        chosen = self.token if token is True else token
        if chosen:
            all_headers["Authorization"] = f"Bearer {chosen}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        status, _, payload = self.request(method, path, body, **kwargs)
        return status, (json.loads(payload) if payload else None)

    def get(self, path: str) -> Any:
        status, data = self.call("GET", path)
        assert status == 200, (status, data)
        return data

    def submit(self, **body: Any) -> dict[str, Any]:
        status, data = self.call("POST", "/v1/jobs", body)
        assert status == 202, (status, data)
        return data

    def wait_job(self, job_id: str, states: set[str] = FINAL_STATES, timeout: float = 600.0) -> dict[str, Any]:
        """The job once it is in one of ``states`` (no time assertion: the limit only stops a hang)."""
        def reached() -> dict[str, Any] | None:
            self._check_alive()
            job = self.get(f"/v1/jobs/{job_id}")
            return job if job["state"] in states else None

        return wait_until(reached, lambda: f"job {job_id} not in {states} after {timeout} s:\n{self.log_tail()}",
                          timeout)

    def wait_progress(self, job_id: str, timeout: float = 600.0) -> dict[str, Any]:
        """The job once it is running and its sampler has reported a step."""
        def stepped() -> dict[str, Any] | None:
            job = self.get(f"/v1/jobs/{job_id}")
            assert job["state"] in (JobState.QUEUED, JobState.RUNNING), job
            running = job["state"] == JobState.RUNNING and job["progress"] and job["progress"]["value"] > 0
            return job if running else None

        return wait_until(stepped, lambda: f"job {job_id} made no progress in {timeout} s:\n{self.log_tail()}",
                          timeout, interval=0.2)


def _signal_groups(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


def host_pair(base_dir: Path, database_url: str, *, lease_s: float = 4,
              jobs: dict[str, Any] | None = None, **kwargs: Any) -> list[SupervisorProcess]:
    """Two supervisors (``host-a``, ``host-b``) on one PostgreSQL job store, each with one CPU
    instance named after it and a short lease, so a lost host is noticed within a test's patience."""
    return [SupervisorProcess(base_dir / name, name=name, instances=[{"name": f"{name}-cpu"}],
                              jobs={"database_url": database_url, "lease_s": lease_s, **(jobs or {})}, **kwargs)
            for name in ("host-a", "host-b")]
