"""Noticing at once that a ComfyUI process exited, and measuring its memory.

A pidfd becomes readable the moment the process exits, so the event loop learns of a crash without
polling and without a blocked thread. Where pidfds are missing (old kernels, non-Linux), a thread
waits on the process instead.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass

import psutil


async def wait_exit(popen: subprocess.Popen[bytes]) -> int:
    """Return the exit code once ``popen`` has exited (and reap it)."""
    if popen.poll() is not None:
        return popen.returncode
    try:
        fd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):
        return await asyncio.to_thread(popen.wait)
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
    try:
        await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    # The pidfd fired: the process is a zombie now, so this wait returns immediately.
    return popen.wait()


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
