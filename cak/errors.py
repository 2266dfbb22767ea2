"""The runner's errors and the process exit code each one maps to.

Every error carries a one-line message meant for a person; the CLI prints it as is (no traceback)
and exits with the code of its class, so scripts and the supervisor can tell failures apart.
"""

from __future__ import annotations

import re
from typing import Any

# Exit codes of `python -m runner` (documented in --help and docs/workflows.md).
EXIT_OK = 0
EXIT_USAGE = 2          # bad command line, workflow file or parameter value
EXIT_VALIDATION = 3     # the graph does not fit the server (/object_info or ComfyUI's own check)
EXIT_UNSAFE = 4         # the prompt or the image was rejected by the safety nodes
EXIT_EXECUTION = 5      # a node failed while running, or the run was interrupted
EXIT_TIMEOUT = 6        # the run (or the silence between two events) took too long
EXIT_SERVER = 7         # server unreachable, not a ComfyUI, or it died mid-run

UNSAFE_EXCEPTION_SUFFIXES = ("UnsafePromptError", "UnsafeImageError")
_CATEGORY = re.compile(r"category:\s*([\w-]+)")


class ComfyError(Exception):
    """Base of every runner error; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_EXECUTION


class UsageError(ComfyError):
    """A bad workflow file, manifest, parameter name or value (the user can fix it locally)."""

    exit_code = EXIT_USAGE


class ValidationFailed(ComfyError):
    """The graph does not fit the server: ``problems`` lists one line per issue."""

    exit_code = EXIT_VALIDATION

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        first = problems[0] if problems else "unknown problem"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"workflow does not validate: {first}{more}")


class ServerUnreachable(ComfyError):
    """Nothing answered at the URL (refused, DNS, or connect timeout)."""

    exit_code = EXIT_SERVER


class NotComfyUI(ComfyError):
    """Something answered, but not like a ComfyUI does."""

    exit_code = EXIT_SERVER


class ServerGone(ComfyError):
    """The server stopped answering while our prompt was queued or running."""

    exit_code = EXIT_SERVER


class PromptRejected(ComfyError):
    """ComfyUI refused the prompt (HTTP 400); ``node_errors`` is its per-node detail."""

    exit_code = EXIT_VALIDATION

    def __init__(self, message: str, error: dict[str, Any] | None = None,
                 node_errors: dict[str, Any] | None = None) -> None:
        self.error = error or {}
        self.node_errors = node_errors or {}
        self.problems = node_error_lines(self.node_errors)
        detail = f": {self.problems[0]}" if self.problems else ""
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"ComfyUI rejected the prompt ({message}){detail}{more}")


class ExecutionFailed(ComfyError):
    """A node raised while running (``execution_error``)."""

    exit_code = EXIT_EXECUTION

    def __init__(self, prompt_id: str, node_id: str | None, node_type: str | None,
                 exception_type: str, message: str) -> None:
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.message = message.strip()
        first_line = self.message.splitlines()[0] if self.message else ""
        super().__init__(f"node {node_id} ({node_type}) failed: {exception_type}: {first_line}")


class UnsafeContent(ExecutionFailed):
    """A safety node refused the prompt or the image; ``category`` is what it named."""

    exit_code = EXIT_UNSAFE

    def __init__(self, prompt_id: str, node_id: str | None, node_type: str | None,
                 exception_type: str, message: str) -> None:
        super().__init__(prompt_id, node_id, node_type, exception_type, message)
        match = _CATEGORY.search(message)
        self.category = match.group(1) if match else None
        self.kind = "image" if exception_type.endswith("UnsafeImageError") else "prompt"


class Interrupted(ComfyError):
    """The prompt was interrupted (by us, by another client, or from the editor)."""

    exit_code = EXIT_EXECUTION

    def __init__(self, prompt_id: str, node_id: str | None = None, node_type: str | None = None) -> None:
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.node_type = node_type
        where = f" at node {node_id} ({node_type})" if node_id else ""
        super().__init__(f"prompt {prompt_id} was interrupted{where}")


class RunTimeout(ComfyError):
    """The whole run, or one HTTP call, took longer than allowed."""

    exit_code = EXIT_TIMEOUT


class StepTimeout(RunTimeout):
    """No event arrived for ``step_timeout`` seconds: a node may be stuck (HTTP can still answer)."""


def execution_error(prompt_id: str, data: dict[str, Any]) -> ExecutionFailed:
    """The right error for an ``execution_error`` event (or its /history message)."""
    exception_type = str(data.get("exception_type") or "Exception")
    cls = UnsafeContent if exception_type.endswith(UNSAFE_EXCEPTION_SUFFIXES) else ExecutionFailed
    node_id = data.get("node_id")
    return cls(prompt_id, None if node_id is None else str(node_id), data.get("node_type"),
               exception_type, str(data.get("exception_message") or ""))


def node_error_lines(node_errors: dict[str, Any]) -> list[str]:
    """One readable line per input error in ComfyUI's ``node_errors``."""
    lines = []
    for node_id, entry in node_errors.items():
        class_type = entry.get("class_type", "?")
        for error in entry.get("errors", []):
            details = error.get("details") or ""
            text = error.get("message", "error") + (f": {details}" if details else "")
            lines.append(f"node {node_id} ({class_type}): {text}")
    return lines
