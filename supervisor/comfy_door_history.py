"""What ``POST /history`` removed from the ComfyUI door's history, kept across supervisor restarts.

The door's history is the durable job store (its ``comfy_api`` jobs), so a deletion cannot remove
anything there: the jobs stay in ``/v1/jobs``, the metrics and the dashboard. What the door's
clients deleted is remembered in one small JSON file beside the store's outputs, replaced
atomically on every change: the prompt ids deleted one by one, and the time of the last ``clear``
(every prompt that had finished by then is hidden; later ones are not, as in ComfyUI).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("supervisor.comfy_door")

FILE_NAME = "comfy_door_history.json"


class HiddenHistory:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.cleared_at: float | None = None  # time of the last clear: what finished by then is hidden
        self.deleted: set[str] = set()
        self._lock = asyncio.Lock()

    def load(self) -> None:
        """Read the file (blocking). A missing one is an empty record; an unreadable one is logged
        and ignored (the hidden entries come back: nothing is lost)."""
        try:
            data = json.loads(self.path.read_text())
            cleared = data["cleared_at"]
            self.cleared_at = None if cleared is None else float(cleared)
            self.deleted = {str(prompt_id) for prompt_id in data["deleted"]}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("cannot read %s (%s): the door's history shows every prompt again", self.path, exc)

    def hides(self, prompt_id: str, finished_at: float | None) -> bool:
        if prompt_id in self.deleted:
            return True
        return self.cleared_at is not None and finished_at is not None and finished_at <= self.cleared_at

    async def delete(self, prompt_ids: list[str]) -> None:
        async with self._lock:
            self.deleted.update(prompt_ids)
            await self._save()

    async def clear(self) -> None:
        """Hide every prompt finished by now; the ids deleted one by one are covered by it."""
        async with self._lock:
            self.cleared_at = time.time()
            self.deleted.clear()
            await self._save()

    async def _save(self) -> None:
        payload = json.dumps({"cleared_at": self.cleared_at, "deleted": sorted(self.deleted)})
        await asyncio.to_thread(_replace, self.path, payload)


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
