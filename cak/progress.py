"""The one progress display of the command-line tools (``runner run`` and ``supervisor submit --wait``).

``ProgressDisplay`` renders; ``ProgressReporter`` turns a ComfyUI prompt's events into it (the
supervisor's CLI feeds it the job service's progress events instead). On a terminal a tqdm bar is redrawn in place for the step that runs; in a log (not a TTY) the same
facts become plain lines: every whole line the tool says, and each labelled step counter at every
tenth of its way, so CI logs stay readable and short.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm

from .events import RECONCILED, RECONNECTED, ComfyEvent

# Non-TTY: a progress line each time a counter passes another tenth of its maximum.
LOG_PARTS = 10
BAR_FORMAT = "{desc} |{bar}| {n}/{total} {percentage:3.0f}%"


class ProgressDisplay:
    """Lines and one step bar on ``stream`` (stderr by default); ``close`` ends an open bar.

    ``line`` replaces the stream with a callable that takes each whole line (never a bar): how the
    service's ``up --demo`` puts progress into its log records.
    """

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None,
                 line: Callable[[str], None] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = False if line is not None else self.stream.isatty() if tty is None else tty
        self._line = line
        self._bar: tqdm | None = None
        self._bar_label: str | None = None
        self._logged_part: dict[str, int] = {}

    def say(self, text: str) -> None:
        """A whole line (an open bar stays on screen above it, finished)."""
        self.close()
        if self._line is not None:
            self._line(text)
            return
        self.stream.write(text + "\n")
        self.stream.flush()

    def step(self, label: str, value: int, maximum: int) -> None:
        """Counter ``label`` is at ``value`` of ``maximum`` (e.g. a sampler's steps)."""
        maximum = max(int(maximum), 1)
        value = min(max(int(value), 0), maximum)
        if self.tty:
            if self._bar is None or self._bar_label != label or self._bar.total != maximum:
                self.close()
                self._bar = tqdm(total=maximum, desc=label, file=self.stream, bar_format=BAR_FORMAT,
                                 dynamic_ncols=True, leave=True)
                self._bar_label = label
            self._bar.n = value
            self._bar.refresh()
            return
        part = LOG_PARTS * value // maximum
        if part > self._logged_part.get(label, 0):
            self._logged_part[label] = part
            self.say(f"{label}: step {value}/{maximum} ({100 * value // maximum}%)")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = self._bar_label = None


class ProgressReporter:
    """An ``on_event`` handler for ``ComfyClient.run``: which node runs, and its steps."""

    def __init__(self, graph: dict[str, Any], display: ProgressDisplay | None = None) -> None:
        self.display = display or ProgressDisplay()
        self.classes = {node_id: node.get("class_type", "?") for node_id, node in graph.items()}
        self.to_run = len(graph)
        self.done = 0
        self.current: str | None = None
        self.started = time.monotonic()
        self._handlers: dict[str, Callable[[ComfyEvent], None]] = {
            "execution_start": self._on_start, "execution_cached": self._on_cached,
            "executing": self._on_executing, "progress": self._on_progress,
            "execution_success": self._on_success, "execution_error": self._end,
            "execution_interrupted": self._end, RECONNECTED: self._on_reconnected,
            RECONCILED: self._on_reconciled,
        }

    def say(self, text: str) -> None:
        self.display.say(text)

    def __call__(self, event: ComfyEvent) -> None:
        handler = self._handlers.get(event.type)
        if handler is not None:
            handler(event)

    def _label(self, node: str) -> str:
        return f"node {node} {self.classes.get(node, '?')}"

    def _on_start(self, event: ComfyEvent) -> None:
        self.say(f"prompt {event.data.get('prompt_id', '')[:8]} started")

    def _on_cached(self, event: ComfyEvent) -> None:
        nodes = [str(n) for n in event.data.get("nodes", [])]
        if nodes:
            self.to_run = max(len(self.classes) - len(nodes), 0)
            self.say(f"cached (not run again): {len(nodes)} nodes ({', '.join(nodes)})")

    def _on_executing(self, event: ComfyEvent) -> None:
        node = event.node
        if node is None:
            return
        self.done += 1
        self.current = node
        self.say(f"[{self.done}/{self.to_run}] {self._label(node)}")

    def _on_progress(self, event: ComfyEvent) -> None:
        node = event.node or self.current or "?"
        self.display.step(f"    {self._label(node)}", int(event.data.get("value", 0)),
                          int(event.data.get("max", 1)))

    def _on_success(self, event: ComfyEvent) -> None:
        self.say(f"finished in {time.monotonic() - self.started:.1f} s")

    def _on_reconnected(self, event: ComfyEvent) -> None:
        self.say(f"websocket reconnected after {event.data.get('downtime_s', 0):.1f} s; checking /history")

    def _on_reconciled(self, event: ComfyEvent) -> None:
        self.say(f"prompt state from /history: {event.data.get('status')}")

    def _end(self, event: ComfyEvent) -> None:
        self.display.close()
