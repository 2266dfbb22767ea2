"""Measuring a ComfyUI process's memory: the RSS of its whole process tree.

(Noticing that it exited is the launcher's job: ``cak.comfy_process.wait_exit``.)
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class TreeMemory:
    rss_mb: float
    processes: int


def tree_memory(pid: int) -> TreeMemory | None:
    """RSS of ``pid`` and all its descendants (None once the process is gone). Call in a thread."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    counted = 0
    for process in processes:
        try:
            total += process.memory_info().rss
            counted += 1
        except psutil.Error:
            continue  # a child that exited while we walked the tree
    return TreeMemory(rss_mb=total / 2**20, processes=counted) if counted else None
