"""Exit watch through a pidfd and the RSS of a process tree, on plain child processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import psutil

from cak.comfy_process import wait_exit
from supervisor.process_watch import ProcessTree, tree_memory
from tests.support.waiting import wait_until

CHILD_WITH_GRANDCHILD = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', "
    "'import time; b = bytearray(b\"x\") * (64 << 20); time.sleep(60)']); "
    "time.sleep(60)"
)
CHILD_THEN_GRANDCHILD = (  # the grandchild starts once a line arrives on stdin
    "import subprocess, sys, time; sys.stdin.readline(); "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "time.sleep(60)"
)


def test_wait_exit_returns_the_code_of_a_killed_process():
    async def scenario() -> tuple[int, bool]:
        popen = subprocess.Popen(["sleep", "60"])
        waiter = asyncio.create_task(wait_exit(popen))
        await asyncio.sleep(0.2)
        still_waiting = not waiter.done()
        popen.send_signal(signal.SIGKILL)
        return await asyncio.wait_for(waiter, 30), still_waiting

    code, still_waiting = asyncio.run(scenario())
    assert still_waiting and code == -signal.SIGKILL


def test_wait_exit_on_an_already_reaped_process():
    popen = subprocess.Popen(["true"])
    popen.wait()
    assert asyncio.run(wait_exit(popen)) == 0


def test_tree_memory_counts_descendants():
    popen = subprocess.Popen([sys.executable, "-c", CHILD_WITH_GRANDCHILD], start_new_session=True)
    try:
        for _ in range(100):
            memory = tree_memory(popen.pid)
            if memory is not None and memory.processes == 2 and memory.rss_mb > 64:
                break
            time.sleep(0.1)
        assert memory is not None and memory.processes == 2 and memory.rss_mb > 64
    finally:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
    assert tree_memory(popen.pid) is None


def test_process_tree_walks_the_descendants_only_when_asked():
    """The check after each job reuses the last walk; a child started since counts from the next walk."""
    popen = subprocess.Popen([sys.executable, "-c", CHILD_THEN_GRANDCHILD], stdin=subprocess.PIPE,
                             start_new_session=True)
    try:
        tree = ProcessTree(popen.pid)
        first = tree.memory()
        assert first is not None and first.processes == 1
        assert popen.stdin is not None
        popen.stdin.write(b"go\n")
        popen.stdin.flush()
        wait_until(lambda: psutil.Process(popen.pid).children(), "the grandchild started", timeout=60)
        reused = tree.memory(rescan=False)
        assert reused is not None and reused.processes == 1
        walked = tree.memory(rescan=True)
        assert walked is not None and walked.processes == 2
    finally:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
    assert tree.memory(rescan=False) is None
