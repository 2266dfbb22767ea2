"""Progress of one prompt on stderr: which node runs, and its steps.

On a terminal one line is redrawn in place; in a log (not a TTY) each node start and every tenth
of its steps get their own line, so CI logs stay readable and short.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from cak.events import RECONCILED, RECONNECTED, ComfyEvent

BAR_WIDTH = 24


class ProgressReporter:
    """An ``on_event`` handler for ``ComfyClient.run`` that writes progress to ``stream``."""

    def __init__(self, graph: dict[str, Any], stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.classes = {node_id: node.get("class_type", "?") for node_id, node in graph.items()}
        self.to_run = len(graph)
        self.done = 0
        self.current: str | None = None
        self.last_decile: dict[str, int] = {}
        self.started = time.monotonic()
        self._line_open = False
        self._handlers = {
            "execution_start": self._on_start, "execution_cached": self._on_cached,
            "executing": self._on_executing, "progress": self._on_progress,
            "execution_success": self._on_success, "execution_error": self._end_line,
            "execution_interrupted": self._end_line, RECONNECTED: self._on_reconnected,
            RECONCILED: self._on_reconciled,
        }

    def say(self, text: str) -> None:
        """A whole line (closing a redrawn progress line first)."""
        self._end_line()
        self.stream.write(text + "\n")
        self.stream.flush()

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
        value, maximum = int(event.data.get("value", 0)), max(int(event.data.get("max", 1)), 1)
        if self.tty:
            filled = BAR_WIDTH * value // maximum
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            self.stream.write(f"\r    {self._label(node)} [{bar}] step {value}/{maximum}")
            self.stream.flush()
            self._line_open = True
            return
        decile = 10 * value // maximum
        if decile > self.last_decile.get(node, 0):
            self.last_decile[node] = decile
            self.say(f"    {self._label(node)}: step {value}/{maximum}")

    def _on_success(self, event: ComfyEvent) -> None:
        self.say(f"finished in {time.monotonic() - self.started:.1f} s")

    def _on_reconnected(self, event: ComfyEvent) -> None:
        self.say(f"websocket reconnected after {event.data.get('downtime_s', 0):.1f} s; checking /history")

    def _on_reconciled(self, event: ComfyEvent) -> None:
        self.say(f"prompt state from /history: {event.data.get('status')}")

    def _end_line(self, event: ComfyEvent | None = None) -> None:
        if self._line_open:
            self.stream.write("\n")
            self._line_open = False

