"""Live progress of running jobs, fanned out to event-stream listeners.

Progress is not worth a disk write per sampler step, so it lives here in memory; the job's state
is durable in the job store. Each listener gets its own bounded queue: a slow reader loses old
progress events, never the final state.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from cak.events import ComfyEvent

from .states import JobState

LISTENER_QUEUE = 256


def progress_label(event: dict[str, Any]) -> str:
    """Where a ``progress`` event's counter runs (instance, attempt, node): the CLIs' progress label."""
    node = f" node {event['node']}" if event.get("node") is not None else ""
    return f"{event.get('instance')} #{event.get('attempt')}{node}"


class JobEvents:
    def __init__(self) -> None:
        self._listeners: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self._progress: dict[str, dict[str, Any]] = {}
        # Called with (job id, event type, data) for every ComfyUI event and state change, in
        # order, on the event loop (the ComfyUI door follows its prompts through it). Must not block.
        self.taps: list[Callable[[str, str, dict[str, Any]], None]] = []

    def progress(self, job_id: str) -> dict[str, Any] | None:
        """The latest progress of a running job (None when nothing ran yet)."""
        return self._progress.get(job_id)

    def publish(self, job_id: str, event: dict[str, Any]) -> None:
        """Send an event (``{"type": ..., ...}``) to every listener of the job."""
        if event["type"] == "progress":
            self._progress[job_id] = event
        for queue in self._listeners.get(job_id, ()):
            if queue.full():
                queue.get_nowait()  # drop the oldest: a stalled reader must not hold the dispatcher
            queue.put_nowait(event)

    def comfy_event(self, job_id: str, instance: str, attempt: int, event: ComfyEvent) -> None:
        """Turn a ComfyUI event of the job's prompt into a progress event."""
        for tap in self.taps:
            tap(job_id, event.type, {**event.data, "attempt": attempt})
        if event.type == "progress":
            value, maximum = event.data.get("value", 0), event.data.get("max", 0) or 1
            self.publish(job_id, {"type": "progress", "instance": instance, "attempt": attempt,
                                  "node": event.node, "value": value, "max": maximum,
                                  "fraction": round(min(1.0, value / maximum), 4)})
        elif event.type == "executing" and event.node is not None:
            latest = self._progress.get(job_id, {})
            self.publish(job_id, {"type": "progress", "instance": instance, "attempt": attempt,
                                  "node": event.node, "value": 0, "max": 1,
                                  "fraction": latest.get("fraction", 0.0) if latest.get("attempt") == attempt
                                  else 0.0})

    def state(self, job_id: str, state: str, **details: Any) -> None:
        """A state change; a final state also ends the job's progress record."""
        for tap in self.taps:
            tap(job_id, "state", {"state": state, **details})
        self.publish(job_id, {"type": "state", "state": state, **details})
        if state != JobState.RUNNING:
            self._progress.pop(job_id, None)

    @contextmanager
    def listen(self, job_id: str) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(LISTENER_QUEUE)
        self._listeners[job_id].add(queue)
        try:
            yield queue
        finally:
            self._listeners[job_id].discard(queue)
            if not self._listeners[job_id]:
                del self._listeners[job_id]
