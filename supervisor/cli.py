"""``python -m supervisor``: run the service (``up``) or talk to a running one over HTTP.

``up`` runs the pool, the dispatcher and the HTTP API in one process and drains on Ctrl-C/SIGTERM:
it stops accepting, lets running jobs finish (or requeues them in the durable queue for the next
start) and stops every ComfyUI. Every other command only uses the HTTP API (``--url``/``--token``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from cak.demo import DEMO_PROMPT, DEMO_STYLE
from cak.install_state import REPO_ROOT
from cak.progress import ProgressDisplay

from .command import supervisor_command
from .job_events import progress_label
from .log_format import configure_logging
from .service_client import ServiceClient, ServiceError
from .settings import TOKEN_ENV
from .states import JobState

URL_ENV = "CAK_SUPERVISOR_URL"
DEFAULT_URL = "http://127.0.0.1:8288"
# Exit codes (docs/api.md "Command line"); 2 is also argparse's for a bad command line.
EXIT_OK = 0
EXIT_UNREACHABLE = 1      # cannot reach the service, or it takes no jobs now (503)
EXIT_BAD_REQUEST = 2      # the service refused the request: a bad field, token, id or name (4xx)
EXIT_MISSING_MODELS = 3   # the job was refused because model files are missing on the server
EXIT_UNSAFE = 4           # the prompt or the picture was judged unsafe for children
EXIT_FAILED = 5           # the job failed or was cancelled

EXAMPLES = f"""\
examples (cak-supervisor is in .venv/bin/, installed by install.py; `.venv/bin/python -m supervisor`
is the same; both work from any folder):
  cak-supervisor up --demo                 # two CPU instances, a first job, then keep serving
  cak-supervisor up --config supervisor.yaml --log-json
  cak-supervisor status                    # instances, memory, jobs run, restarts, queue depth
  cak-supervisor submit "{DEMO_PROMPT}" --style {DEMO_STYLE} --wait
  cak-supervisor jobs --state failed
  cak-supervisor cancel JOB_ID
  cak-supervisor restart comfy-1
  cak-supervisor drain comfy-2

The commands other than `up` read ${URL_ENV} (default {DEFAULT_URL}) and ${TOKEN_ENV}.
Exit codes: 0 done, {EXIT_UNREACHABLE} service unreachable or not taking jobs, {EXIT_BAD_REQUEST} bad request,
{EXIT_MISSING_MODELS} model files missing, {EXIT_UNSAFE} judged unsafe, {EXIT_FAILED} job failed or cancelled.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cak-supervisor",
        description="Cute Animal Kids job service: a durable queue of picture jobs on a self-healing "
                    "pool of ComfyUI instances, with an HTTP API (docs/api.md).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run the pool, the dispatcher and the HTTP API (Ctrl-C drains)",
                             description="Run the service until Ctrl-C or SIGTERM, then drain: no new "
                                         "jobs, running ones finish or go back to the queue, instances stop.")
    up.add_argument("--config", type=Path, metavar="FILE",
                    help="YAML over supervisor/defaults.yaml")
    up.add_argument("--demo", action="store_true",
                    help="two CPU instances (or the instances your --config names), submit a first "
                         "job and show it through, then keep serving")
    up.add_argument("--log-json", action="store_true", help="log JSON lines (with job id and instance)")

    def remote(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=description or help_text)
        sub.add_argument("--url", default=os.environ.get(URL_ENV, DEFAULT_URL),
                         help=f"the service (default ${URL_ENV} or {DEFAULT_URL})")
        sub.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                         help=f"bearer token (default ${TOKEN_ENV})")
        return sub

    remote("status", "each instance's state, memory, jobs run and restarts; the queue depth; the hosts "
                     "sharing the queue when there are several")
    submit = remote("submit", "submit a picture job",
                    "Submit a job; with --wait follow its progress and save the picture.")
    submit.add_argument("prompt", help="what to draw (English or Chinese)")
    submit.add_argument("--style", help="picture style, e.g. watercolor, picture_book, crayon")
    submit.add_argument("--seed", type=int)
    submit.add_argument("--width", type=int)
    submit.add_argument("--height", type=int)
    submit.add_argument("--steps", type=int)
    submit.add_argument("--workflow", help="workflow name from workflows/ (default: the service's)")
    submit.add_argument("--idempotency-key", help="resubmitting with the same key returns the same job")
    submit.add_argument("--webhook", metavar="URL",
                        help="POST the signed final-state event there (must be under the service's webhooks.allow)")
    submit.add_argument("--wait", action="store_true", help="show progress, save the image, print its path")
    submit.add_argument("--out", type=Path, default=REPO_ROOT / "out",
                        help="folder for the saved images (default: out/)")
    jobs = remote("jobs", "list recent jobs")
    jobs.add_argument("--state", choices=list(JobState))
    jobs.add_argument("--limit", type=int, default=20)
    cancel = remote("cancel", "cancel a queued job, or interrupt a running one")
    cancel.add_argument("job_id", help="the job's id, as `submit` or `jobs` prints it")
    for action in ("restart", "drain"):
        sub = remote(action, f"{action} an instance" + (" (after its running job)" if action == "restart"
                                                        else " (no new jobs until restarted)"))
        sub.add_argument("name", help="instance name, as `status` shows it")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "up":
        from .serve import serve  # the service's imports (pool, ComfyUI client) only when serving
        configure_logging(json_lines=args.log_json)
        return asyncio.run(serve(args.config, demo=args.demo, log_json=args.log_json))
    logging.basicConfig(level=logging.WARNING)
    try:
        return asyncio.run(_remote(args))
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return 130


def exit_code_for(exc: ServiceError) -> int:
    """Unreachable (no answer, or 503) or a refused request (any other error answer)."""
    if exc.status is None or exc.status >= 500:
        return EXIT_UNREACHABLE
    return EXIT_BAD_REQUEST


async def _remote(args: argparse.Namespace) -> int:
    async with ServiceClient(args.url, args.token) as client:
        if args.command == "status":
            return await _status(client)
        if args.command == "submit":
            return await _submit(client, args)
        if args.command == "jobs":
            data = await client.request("GET", f"/v1/jobs?limit={args.limit}"
                                        + (f"&state={args.state}" if args.state else ""))
            for job in data["jobs"]:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["created_at"]))
                detail = job["error"] or ", ".join(job["images"])
                if job.get("category"):  # why it was rejected: violence_gore, missing_models, invalid...
                    detail = f"[{job['category']}] {detail}"
                prompt = (job["request"].get("prompt") or "(graph)")[:40]
                print(f"{job['id']}  {when}  {job['state']:<9}  {len(job['attempts'])} att.  {prompt}  {detail}")
            return EXIT_OK
        if args.command == "cancel":
            job = await client.request("DELETE", f"/v1/jobs/{args.job_id}")
            print(f"job {job['id']} {job['state']}" + (" (interrupting it)" if job["state"] == JobState.RUNNING else ""))
            return EXIT_OK
        data = await client.request("POST", f"/v1/instances/{args.name}/{args.command}")
        print(f"{args.command} of {data['instance']} requested")
        return EXIT_OK


async def _status(client: ServiceClient) -> int:
    data = await client.request("GET", "/v1/instances")
    print(f"{'INSTANCE':<14} {'STATE':<11} {'PID':>7} {'RSS':>9} {'DEVICE':>9} {'JOBS':>5}  "
          f"{'URL':<24} RESTARTS")
    for item in data["instances"]:
        restarts = ", ".join(f"{reason}={count}" for reason, count in sorted(item["restarts"].items())) or "-"
        rss = f"{item['rss_mb']:.0f} MB" if item["rss_mb"] is not None else "-"
        device = f"{item['device_mem_mb']:.0f} MB" if item["device_mem_mb"] is not None else "-"
        print(f"{item['name']:<14} {item['state']:<11} {item['pid'] or '-':>7} {rss:>9} {device:>9} "
              f"{item['jobs_run']:>5}  {item['url']:<24} {restarts}")
    print(f"queue depth: {data['queue_depth']}  running jobs: {data['running_jobs']}")
    hosts = (await client.request("GET", "/v1/hosts"))["hosts"]
    if len(hosts) > 1:  # a queue shared on PostgreSQL: every live supervisor
        now = time.time()
        print(f"\n{'HOST':<24} {'INSTANCES':<28} {'HEARTBEAT':>10}  VERSION")
        for host in hosts:
            states = ", ".join(f"{item['name']}={item['state']}" for item in host["instances"]) or "-"
            mark = " (this one)" if host.get("self") else ""
            print(f"{host['name'] + mark:<24} {states:<28} {max(0.0, now - host['heartbeat_at']):>8.0f} s  "
                  f"{host['version']}")
    return EXIT_OK


async def _submit(client: ServiceClient, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"prompt": args.prompt}
    for name in ("style", "seed", "width", "height", "steps", "workflow"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.webhook:
        body["webhook"] = {"url": args.webhook}
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    try:
        job = await client.request("POST", "/v1/jobs", body=body, headers=headers)
    except ServiceError as exc:
        error = exc.body.get("error", {})
        if error.get("code") == "unsafe_prompt":
            print(f"rejected: the prompt is not suitable for children (category: {error.get('category')})",
                  file=sys.stderr)
            return EXIT_UNSAFE
        raise
    print(f"job {job['id']} {job['state']}: {client.url}{job['status_url']}", file=sys.stderr)
    if not args.wait:
        print(job["id"])
        return EXIT_OK
    try:
        return await follow_and_save(client, job["id"], args.out)
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels us, then raises KeyboardInterrupt
        print(f"\nstopped following; job {job['id']} is still queued or running on the service.\n"
              f"cancel it with: {supervisor_command()} cancel {job['id']}", file=sys.stderr)
        raise


async def follow_and_save(client: ServiceClient, job_id: str, out: Path) -> int:
    """Show the job's progress until it ends; save its images and print their paths."""
    display = ProgressDisplay()
    last_note = None
    try:
        async for name, event in client.events(job_id):
            if name == "progress":
                display.step(progress_label(event), int(event.get("value", 0)), int(event.get("max", 1)))
            elif name == "state":
                note = event["state"]  # a final error is printed once, below
                if note != last_note:  # the stream's first event may repeat the state already shown
                    display.say(note)
                last_note = note
    finally:
        display.close()  # what follows (an error, Ctrl-C's hint) starts on its own line
    job = await client.request("GET", f"/v1/jobs/{job_id}")
    if job["state"] != JobState.SUCCEEDED:
        category = f", category {job['category']}" if job.get("category") else ""
        print(f"job {job_id} {job['state']}{category}: {job.get('error') or ''}", file=sys.stderr)
        if job["state"] != JobState.REJECTED:
            return EXIT_FAILED
        return {"missing_models": EXIT_MISSING_MODELS, "invalid": EXIT_BAD_REQUEST}.get(job.get("category"),
                                                                                       EXIT_UNSAFE)
    paths = []
    for index, url in enumerate(job["images"]):
        data = await client.download(url)
        path = out / f"{job_id}-{index}.png"
        await asyncio.to_thread(_save, path, data)
        paths.append(path)
    for path in paths:
        print(path)
    return EXIT_OK


def _save(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    partial.replace(path)
