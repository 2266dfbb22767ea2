"""What the client hands back: the events of one prompt, references to its images, the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Event types that concern one prompt (they carry its ``prompt_id``).
PROMPT_EVENTS = frozenset({
    "execution_start", "execution_cached", "executing", "progress", "progress_state",
    "executed", "execution_success", "execution_error", "execution_interrupted",
})
# Events the client makes up itself, so that observers also see what happened to the socket.
RECONNECTED = "runner_reconnected"    # data: {"attempt": n, "downtime_s": s}
RECONCILED = "runner_reconciled"      # data: {"status": "...", "source": "history"}


@dataclass(frozen=True)
class ImageRef:
    """One output file as ComfyUI names it; ``/view`` serves it."""

    filename: str
    subfolder: str = ""
    type: str = "output"
    node_id: str = ""

    @classmethod
    def from_output(cls, node_id: str, entry: dict[str, Any]) -> ImageRef:
        return cls(filename=entry["filename"], subfolder=entry.get("subfolder", ""),
                   type=entry.get("type", "output"), node_id=node_id)

    def query(self) -> dict[str, str]:
        return {"filename": self.filename, "subfolder": self.subfolder, "type": self.type}


@dataclass(frozen=True)
class ComfyEvent:
    """One JSON frame about our prompt, as it arrived (``at`` is ``time.monotonic()``)."""

    type: str
    data: dict[str, Any]
    at: float

    @property
    def node(self) -> str | None:
        """The node the event is about (``executing``/``progress``/``executed``), if any."""
        node = self.data.get("node", self.data.get("node_id"))
        return None if node is None else str(node)


@dataclass
class RunResult:
    """A finished prompt: its saved images (type ``output``), every node output, cached nodes."""

    prompt_id: str
    images: list[ImageRef]
    outputs: dict[str, Any]
    cached_nodes: list[str]
    duration_s: float
    reconnects: int = 0
    events: int = field(default=0)

    @staticmethod
    def images_from_outputs(outputs: dict[str, Any]) -> list[ImageRef]:
        """The saved images in node order (previews and temp files are left out)."""
        return [ImageRef.from_output(node_id, image)
                for node_id, output in sorted(outputs.items(), key=lambda item: _node_key(item[0]))
                for image in output.get("images", []) if image.get("type", "output") == "output"]


def _node_key(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 62, node_id)
