"""``python -m supervisor up``: the service and its HTTP API in one process, drained on a signal.

The HTTP API starts first (``/healthz`` answers and jobs queue while ComfyUI starts); ``/readyz``
turns 200 once an instance serves. On SIGINT/SIGTERM: stop accepting, let running jobs finish for
``jobs.drain_timeout_s`` (the rest stay in the durable queue for the next start), stop instances.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from cute_animal_kids.guard_model import GuardUnavailable
from cute_animal_kids.pack_data import DATA_DIR_ENV, PackDataError
from cute_animal_kids.text_safety import get_checker

from cak.demo import DEMO_PROMPT, DEMO_STYLE
from cak.install_state import NotInstalledError
from cak.progress import ProgressDisplay

from .api import create_app
from .comfy_door import ComfyDoor
from .command import supervisor_command
from .guard_stage import load_guard
from .http_protocol import ApiRunner
from .job_events import progress_label
from .job_request import FieldError
from .service import JobService
from .settings import ConfigError, load_settings
from .states import TERMINAL_STATES, JobState

log = logging.getLogger("supervisor")

DEMO_INSTANCES = 2
HTTP_SHUTDOWN_S = 5.0


def demo_overrides(config_path: Path | None) -> dict[str, Any] | None:
    """``--demo`` runs two CPU instances, unless the config file names its own ``instances``.

    Merged, not replaced: a config that lists instances (ports, GPUs) keeps them for the demo.
    """
    if config_path is not None:
        try:
            named = "instances" in (yaml.safe_load(config_path.read_text()) or {})
        except (OSError, yaml.YAMLError, TypeError):
            named = False  # load_settings reports what is wrong with the file
        if named:
            say(f"demo: using the instances of {config_path}")
            return None
    return {"instances": DEMO_INSTANCES}


_json_lines = False  # with --log-json, progress lines are log records too (nothing else on the stream)


def say(text: str, error: bool = False) -> None:
    """A line for the operator: plain on stdout (stderr for errors), or a JSON log record."""
    if _json_lines:
        (log.error if error else log.info)(text)
    else:
        print(text, file=sys.stderr if error else sys.stdout, flush=True)


async def serve(config_path: Path | None, demo: bool = False, log_json: bool = False) -> int:
    global _json_lines
    _json_lines = log_json
    try:
        settings = load_settings(config_path, demo_overrides(config_path) if demo else None)
        await asyncio.to_thread(get_checker)  # the pack's word lists and rules: a bad file stops `up` here
        guard = None
        if settings.guard is not None:  # loaded before any ComfyUI starts: a bad path stops `up` here
            say(f"loading the guard model from {settings.guard.model_path}...")
            guard = await asyncio.to_thread(load_guard, settings.guard.model_path, settings.guard.device)
        service = JobService(settings, guard=guard)
        door_settings = settings.comfy_api
    except (ConfigError, NotInstalledError) as exc:
        say(f"configuration problem:\n{exc}", error=True)
        return 2
    except GuardUnavailable as exc:
        say(f"configuration problem:\nguard.model_path: {exc}", error=True)
        return 2
    except PackDataError as exc:
        say(f"the node pack's data is not valid (fix the file or unset {DATA_DIR_ENV}):\n{exc}", error=True)
        return 2
    http = settings.http
    if not http.loopback and not http.token:
        log.warning("the API listens on %s without a token: anyone who reaches it can submit jobs", http.host)

    runner = ApiRunner(create_app(service), shutdown_timeout=HTTP_SHUTDOWN_S, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, http.host, http.port)
    try:
        await site.start()
    except OSError as exc:
        say(f"cannot listen on {http.host}:{http.port} ({exc.strerror}): set http.port in --config",
            error=True)
        await runner.cleanup()
        return 1
    port = runner.addresses[0][1]
    url = f"http://{'127.0.0.1' if http.host in ('0.0.0.0', '::') else http.host}:{port}"
    say(f"Cute Animal Kids job service on {url} (API: {url}/v1/openapi.yaml)")
    door = ComfyDoor(service, door_settings, http.token) if door_settings is not None else None
    if door is not None:
        try:
            await door.start()
        except OSError as exc:
            say(f"cannot listen on {door_settings.host}:{door_settings.port} ({exc.strerror}): "  # type: ignore[union-attr]
                "set comfy_api.port in --config", error=True)
            await runner.cleanup()
            return 1
        say(f"ComfyUI API of the pool on http://{door_settings.host}:{door.port}")  # type: ignore[union-attr]

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    demo_task: asyncio.Task[None] | None = None
    try:
        say(f"starting {len(settings.instances)} ComfyUI instance(s) (10-40 s each on a CPU)...")
        await service.start()
        if demo:
            demo_task = asyncio.create_task(_demo_first_job(service, url))
        await stop.wait()
    finally:
        hurry = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, _hurry, hurry)
        say(f"draining: no new jobs; running ones finish (up to {settings.jobs.drain_timeout_s:g} s) or "
              "go back to the queue; Ctrl-C again stops at once...")
        if demo_task is not None:
            demo_task.cancel()
        await service.stop(hurry)
        if door is not None:  # after the drain: its clients hear how their running prompts ended
            await door.stop()
        await runner.cleanup()
        say("stopped.")
    return 0


def _hurry(hurry: asyncio.Event) -> None:
    """A second Ctrl-C/SIGTERM while draining: requeue the running jobs now, as the timeout would."""
    if not hurry.is_set():
        say("stopping now: running jobs go back to the queue for the next start")
        hurry.set()


async def _demo_first_job(service: JobService, url: str) -> None:
    """Submit a first job through the service's own submission path and show it to the end."""
    try:
        submitted = await service.submit({"prompt": DEMO_PROMPT, "style": DEMO_STYLE})
    except FieldError as exc:
        say(f"demo job refused: {exc}")
        return
    job = submitted.job
    say(f"demo: submitted job {job.id} ({DEMO_PROMPT!r}, style {DEMO_STYLE}); "
          f"follow it at {url}/v1/jobs/{job.id}")
    display = ProgressDisplay(line=say)
    with service.events.listen(job.id) as queue:
        while True:
            current = await service.store.get(job.id)
            if current is None or current.state in TERMINAL_STATES:
                break
            try:
                async with asyncio.timeout(5.0):
                    event = await queue.get()
            except TimeoutError:
                continue
            if event["type"] == "progress":
                display.step(f"demo: {progress_label(event)}", int(event["value"]), int(event["max"]))
            elif event["type"] == "state":
                say(f"demo: {event['state']}")
    if current is not None and current.state == JobState.SUCCEEDED:
        for index, relative in enumerate(current.images):
            if service.settings.jobs.database_url:  # the image is a row of the shared database
                say(f"demo: image stored, at {url}/v1/jobs/{job.id}/images/{index}")
            else:
                say(f"demo: image saved at {service.settings.jobs.images_dir / relative}")
    elif current is not None:
        say(f"demo: job ended {current.state}: {current.error}")
    say(f"serving on {url}; try: {supervisor_command()} submit \"{DEMO_PROMPT}\" --style {DEMO_STYLE} "
          f"--wait --url {url}   (Ctrl-C stops)")
