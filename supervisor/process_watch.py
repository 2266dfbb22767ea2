"""Measuring a ComfyUI process's memory: the RSS of its whole process tree.

(Noticing that it exited is the launcher's job: ``cak.comfy_process.wait_exit``.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psutil


@dataclass(frozen=True)
class TreeMemory:
    rss_mb: float
    processes: int


@dataclass
class ProcessTree:
    """One process and its descendants, measured again and again (one per process lifetime).

    Finding the descendants reads every process on the machine (psutil's ppid map, ~1-2 ms of CPU
    with a hundred processes, more on a busy host); reading a known process's RSS is one small file.
    So the walk is done when ``rescan`` asks for it (the periodic memory check, the baseline) and the
    check after every job reuses the processes found then; a child started since counts from the
    next walk.
    """

    pid: int
    _known: list[psutil.Process] = field(default_factory=list)
    _scanned: bool = False

    def memory(self, rescan: bool = True) -> TreeMemory | None:
        """RSS of the process and its descendants (None once the process is gone). Call in a thread."""
        try:
            if rescan or not self._scanned:
                root = psutil.Process(self.pid)
                self._known = [root, *root.children(recursive=True)]
                self._scanned = True
        except psutil.Error:
            return None
        total = 0
        counted = 0
        for process in self._known:
            try:
                total += process.memory_info().rss
                counted += 1
            except psutil.Error:
                continue  # a child that exited since the walk
        if counted == 0 or not self._known[0].is_running():
            return None
        return TreeMemory(rss_mb=total / 2**20, processes=counted)


def tree_memory(pid: int) -> TreeMemory | None:
    """RSS of ``pid`` and all its descendants (None once the process is gone). Call in a thread."""
    return ProcessTree(pid).memory()
