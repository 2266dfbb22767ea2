"""``python -m runner``: run, validate and convert workflows against a ComfyUI server.

Every failure ends in one line on stderr (no traceback) and a distinct exit code (see
``cak.errors`` and the epilog below), so that scripts and the supervisor can act on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from cak.comfy_client import ComfyClient
from cak.comfy_process import ComfyLaunch, ComfyProcess, ComfyStartError
from cak.demo import DEMO_PROMPT
from cak.errors import (
    EXIT_EXECUTION,
    EXIT_OK,
    EXIT_SERVER,
    EXIT_TIMEOUT,
    EXIT_UNSAFE,
    EXIT_USAGE,
    EXIT_VALIDATION,
    ComfyError,
    ExecutionFailed,
    PromptRejected,
    UnsafeContent,
    UsageError,
    ValidationFailed,
)
from cak.events import RunResult
from cak.install_state import REPO_ROOT, VAR_DIR, NotInstalledError, load_state
from cak.object_info import ObjectInfo
from cak.progress import ProgressDisplay, ProgressReporter
from cak.validation import validate_graph
from cak.workflow import Workflow, parse_assignments

from .ui_convert import ui_to_api

SERVER_ENV = "CAK_COMFYUI_URL"
FALLBACK_SERVER = "http://127.0.0.1:8188"
SERVER_HELP = f"ComfyUI base URL (default: ${SERVER_ENV} when set, else {FALLBACK_SERVER})"
DEMO_WORKFLOW = "cute_animal_cpu"

EPILOG = f"""\
examples (cak-runner is in .venv/bin/, installed by install.py; `.venv/bin/python -m runner` is the
same; both work from any folder):
  cak-runner run cute_animal_cpu --set prompt="{DEMO_PROMPT}" --set seed=7 \\
      --server http://127.0.0.1:8188 --out out/
  cak-runner run workflows/cute_animal_qwen_image.yaml --set steps=8 --set lora_strength=1 --json
  cak-runner demo                      # starts ComfyUI, draws one picture, stops it
  cak-runner validate cute_animal_qwen_image --server http://127.0.0.1:8188
  cak-runner object-info --server http://127.0.0.1:8188 --out object_info.json
  cak-runner validate cute_animal_cpu --object-info object_info.json      # offline
  cak-runner convert my_edit.ui.json --object-info object_info.json --out my_edit.api.json

WORKFLOW is a name from workflows/ (e.g. cute_animal_cpu), a manifest (.yaml) or an API-format
.json (its manifest is used when one lies next to it). See docs/workflows.md for parameters.
--server defaults to ${SERVER_ENV} when that is set, else {FALLBACK_SERVER}.

exit codes:
  {EXIT_OK}  success
  {EXIT_USAGE}  bad command line, workflow file, parameter name or value
  {EXIT_VALIDATION}  the graph does not fit the server (unknown class, bad link, value out of range,
     missing model file), or ComfyUI rejected the prompt
  {EXIT_UNSAFE}  the safety nodes rejected the prompt or the image (nothing is saved)
  {EXIT_EXECUTION}  a node failed while running (node id, class and message are printed), or the
     prompt was interrupted
  {EXIT_TIMEOUT}  the run took longer than --timeout, or no progress for --step-timeout seconds
  {EXIT_SERVER}  server unreachable, not a ComfyUI, or it died / restarted mid-run
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cak-runner",
        description="Run Cute Animal Kids workflows on a ComfyUI server, headless: fill parameters "
                    "through the workflow's manifest, check the graph against the server, follow "
                    "progress, download the pictures.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="fill a workflow's parameters, run it on a server, save the pictures",
        description="Fill WORKFLOW's parameters (--set), validate it against the server's "
                    "/object_info, submit it, show progress per node and step on stderr, and save "
                    "the pictures into --out. Prints the saved paths (or JSON with --json).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("workflow", metavar="WORKFLOW", help="workflow name, manifest or API .json")
    _add_set(run)
    _add_server(run)
    _add_run_options(run, default_out="out")

    demo = commands.add_parser(
        "demo", help="start the project's ComfyUI, draw one picture on the CPU models, stop it",
        description=f"Start this project's ComfyUI (as install.py set it up), run {DEMO_WORKFLOW} "
                    f"with the prompt {DEMO_PROMPT!r} (change it with --set prompt=...), save the "
                    "picture under --out, print its path and stop ComfyUI again.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_set(demo)
    _add_run_options(demo, default_out=str(REPO_ROOT / "out"))

    validate = commands.add_parser(
        "validate", help="check a workflow against a server's (or a saved) /object_info",
        description="Check WORKFLOW (with its defaults and any --set values) against /object_info: "
                    "node classes exist, required inputs are there, links point at real outputs of "
                    "the right type, numbers are in range, choices and model files exist.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    validate.add_argument("workflow", metavar="WORKFLOW", help="workflow name, manifest or API .json")
    _add_set(validate)
    _add_object_info_source(validate)

    object_info = commands.add_parser(
        "object-info", help="save a server's /object_info for offline validate/convert",
        description="Fetch /object_info from --server and write it to --out.")
    _add_server(object_info)
    object_info.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the JSON")

    convert = commands.add_parser(
        "convert", help="turn an editor (UI-format) workflow into the API format",
        description="Convert UI_JSON (as saved by the ComfyUI editor) into the API format that "
                    "/prompt and `run` take, using /object_info for each node's widget order. "
                    "Muted and bypassed nodes are left out; notes and groups are layout only.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    convert.add_argument("ui_json", type=Path, metavar="UI_JSON", help="editor workflow file")
    _add_object_info_source(convert)
    convert.add_argument("--out", type=Path, required=True, metavar="API_JSON", help="where to write the API graph")
    return parser


def default_server() -> str:
    """Where ``--server`` points when it is not given (read when the command line is parsed)."""
    return os.environ.get(SERVER_ENV) or FALLBACK_SERVER


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="assignments",
                        help="set a workflow parameter (repeatable), e.g. --set seed=7")


def _add_server(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=default_server(), metavar="URL", help=SERVER_HELP)
    parser.add_argument("--request-timeout", type=float, default=30.0, metavar="S",
                        help="limit for each HTTP call (default %(default)s s)")


def _add_object_info_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--server", default=default_server(), metavar="URL", help=SERVER_HELP)
    source.add_argument("--object-info", type=Path, metavar="FILE",
                        help="a saved /object_info JSON instead of a server (offline)")
    parser.add_argument("--request-timeout", type=float, default=30.0, metavar="S",
                        help="limit for each HTTP call (default %(default)s s)")


def _add_run_options(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--out", type=Path, default=Path(default_out), metavar="DIR",
                        help="folder for the pictures (default %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="print a machine-readable result (or error) as JSON on stdout")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="limit for the whole run (default: the manifest's run.timeout_s)")
    parser.add_argument("--step-timeout", type=float, metavar="S",
                        help="longest silence between two progress events once the prompt runs "
                             "(default: the manifest's run.step_timeout_s)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


# --------------------------------------------------------------------------- commands


async def _load_object_info(args: argparse.Namespace) -> ObjectInfo:
    if args.object_info is not None:
        return ObjectInfo.load(args.object_info)
    async with ComfyClient(args.server, request_timeout=args.request_timeout) as client:
        await client.check()
        return ObjectInfo(await client.object_info())


def _models_hint() -> str:
    try:
        return load_state().models_dir
    except NotInstalledError:
        return "models"


async def cmd_validate(args: argparse.Namespace) -> int:
    workflow = Workflow.load(args.workflow)
    graph = workflow.build(parse_assignments(args.assignments))
    problems = validate_graph(graph, await _load_object_info(args), _models_hint())
    for problem in problems:
        print(f"invalid: {problem}", file=sys.stderr)
    if problems:
        print(f"{workflow.name}: {len(problems)} problem(s)", file=sys.stderr)
        return EXIT_VALIDATION
    print(f"{workflow.name}: ok ({len(graph)} nodes)")
    return EXIT_OK


async def cmd_object_info(args: argparse.Namespace) -> int:
    async with ComfyClient(args.server, request_timeout=args.request_timeout) as client:
        await client.check()
        info = await client.object_info()
    await asyncio.to_thread(_write_text, args.out, json.dumps(info, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out} ({len(info)} node classes)")
    return EXIT_OK


async def cmd_convert(args: argparse.Namespace) -> int:
    try:
        workflow = json.loads(await asyncio.to_thread(args.ui_json.read_text))
    except OSError as exc:
        raise UsageError(f"cannot read {args.ui_json}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{args.ui_json} is not valid JSON ({exc})") from None
    graph = ui_to_api(workflow, await _load_object_info(args))
    await asyncio.to_thread(_write_text, args.out, dump_api_graph(graph))
    print(f"wrote {args.out} ({len(graph)} nodes)")
    return EXIT_OK


def dump_api_graph(graph: dict[str, Any]) -> str:
    """The API JSON as the shipped files are written (stable, diff-friendly)."""
    return json.dumps(graph, indent=2, ensure_ascii=False) + "\n"


async def cmd_run(args: argparse.Namespace) -> int:
    workflow = Workflow.load(args.workflow)
    values = workflow.resolve(parse_assignments(args.assignments))
    async with ComfyClient(args.server, request_timeout=args.request_timeout) as client:
        return await run_workflow(client, workflow, values, args)


async def run_workflow(client: ComfyClient, workflow: Workflow, values: dict[str, Any],
                       args: argparse.Namespace) -> int:
    """Validate, run and save; shared by ``run`` and ``demo``."""
    graph = workflow.build(values)
    reporter = ProgressReporter(graph, ProgressDisplay(_DevNull() if args.quiet else sys.stderr))
    await client.check()
    reporter.say(f"checking {workflow.name} against {client.base_url}/object_info")
    problems = validate_graph(graph, ObjectInfo(await client.object_info()), _models_hint())
    if problems:
        raise ValidationFailed(problems)
    limits = workflow.raw_manifest.get("run") or {}
    timeout = args.timeout if args.timeout is not None else limits.get("timeout_s")
    step_timeout = args.step_timeout if args.step_timeout is not None else limits.get("step_timeout_s")
    reporter.say(f"submitting {workflow.name} ({len(graph)} nodes)")
    try:
        result = await client.run(graph, on_event=reporter, timeout=timeout, step_timeout=step_timeout)
    finally:
        reporter.display.close()  # an error message must not land on a terminal's bar line
    paths = await save_images(client, result, args.out)
    if args.json:
        print(json.dumps({"status": "ok", "workflow": workflow.name, "prompt_id": result.prompt_id,
                          "images": [str(p) for p in paths], "parameters": values,
                          "duration_s": result.duration_s, "cached_nodes": result.cached_nodes,
                          "reconnects": result.reconnects}, ensure_ascii=False))
    else:
        for path in paths:
            print(path)
    if not paths:
        reporter.say("the prompt finished but saved no picture")
    return EXIT_OK


async def save_images(client: ComfyClient, result: RunResult, out_dir: Path) -> list[Path]:
    """Download each saved picture into ``out_dir`` as ``<name>_<prompt id>.png``."""
    paths = []
    for image in result.images:
        data = await client.download(image)
        name = Path(image.filename)
        path = out_dir / f"{name.stem.rstrip('_')}_{result.prompt_id[:8]}{name.suffix}"
        await asyncio.to_thread(_write_bytes, path, data)
        paths.append(path.resolve())
    return paths


async def cmd_demo(args: argparse.Namespace) -> int:
    workflow = Workflow.load(DEMO_WORKFLOW)
    values = workflow.resolve({"prompt": DEMO_PROMPT, **parse_assignments(args.assignments)})
    try:
        state = load_state()
    except NotInstalledError as exc:
        raise UsageError(str(exc)) from None
    # Per-process folder: ComfyUI empties its temp folder at start, so two demos must not share one.
    process = ComfyProcess(ComfyLaunch(base_dir=VAR_DIR / "demo" / str(os.getpid())), state)
    say = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    say(f"starting ComfyUI {state.comfyui_version} on the CPU (this takes 10-40 s; log: "
        f"{process.launch.log_path})")
    started = time.monotonic()
    process.start()
    try:
        ready = asyncio.create_task(process.wait_ready())
        while not ready.done():
            await asyncio.wait({ready}, timeout=5)
            if not ready.done():
                say(f"  still starting ComfyUI ... {time.monotonic() - started:.0f} s")
        try:
            ready.result()
        except ComfyStartError as exc:
            say(str(exc))
            raise _Exit(EXIT_SERVER, f"ComfyUI did not start (log: {process.launch.log_path})") from None
        say(f"ComfyUI is up at {process.url} after {time.monotonic() - started:.0f} s")
        async with ComfyClient(process.url) as client:
            return await run_workflow(client, workflow, values, args)
    finally:
        say("stopping ComfyUI")
        await process.stop()
        # The pictures were downloaded to --out: ComfyUI's own folders (outputs, log) are not kept.
        await asyncio.to_thread(shutil.rmtree, process.launch.base_dir, True)


class _Exit(ComfyError):
    """A failure of the CLI itself, with an explicit exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = code


class _DevNull:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


COMMANDS = {"run": cmd_run, "demo": cmd_demo, "validate": cmd_validate,
            "object-info": cmd_object_info, "convert": cmd_convert}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(COMMANDS[args.command](args))
    except ComfyError as exc:
        _report(exc, getattr(args, "json", False))
        return exc.exit_code
    except KeyboardInterrupt:
        print("runner: interrupted", file=sys.stderr)
        return 130


def _report(exc: ComfyError, as_json: bool) -> None:
    """The error as one line on stderr (validation lists one line per problem first)."""
    problems = getattr(exc, "problems", None) or []
    if isinstance(exc, (ValidationFailed, PromptRejected)) and len(problems) > 1:
        for problem in problems:
            print(f"invalid: {problem}", file=sys.stderr)
    if isinstance(exc, UnsafeContent):
        category = f" (category: {exc.category})" if exc.category else ""
        message = f"rejected: unsafe {exc.kind}{category} at node {exc.node_id} ({exc.node_type}); nothing was saved"
    else:
        message = str(exc)
    print(f"runner: error: {message}", file=sys.stderr)
    if as_json:
        body: dict[str, Any] = {"status": "error", "exit_code": exc.exit_code, "error": type(exc).__name__,
                                "message": message}
        if isinstance(exc, ExecutionFailed):
            body.update(node_id=exc.node_id, node_type=exc.node_type, exception_type=exc.exception_type)
        if isinstance(exc, UnsafeContent):
            body.update(category=exc.category, kind=exc.kind)
        if problems:
            body["problems"] = problems
        print(json.dumps(body, ensure_ascii=False))

