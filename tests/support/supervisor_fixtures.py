"""Helpers for the supervisor's tests: a pool living on its own event loop, and fault graphs.

A pool is expensive (each ComfyUI start costs 10–40 s here), so test modules share one for all
their tests; it lives on an event loop in a background thread and tests call into it with
``harness.call(coroutine)``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import psutil

from cak.demo import cpu_graph
from supervisor.instance import InstanceSnapshot
from supervisor.pool import Pool
from supervisor.settings import Settings, load_settings
from tests.support.waiting import wait_until

T = TypeVar("T")
FAULT_NODES_DIR = Path(__file__).resolve().parent.parent / "fault_nodes"


def fault_nodes_config(folder: Path) -> Path:
    """An extra-model-paths file that loads the fault nodes (test instances only)."""
    path = folder / "fault_nodes.yaml"
    path.write_text(f"cak_fault_nodes:\n  custom_nodes: {FAULT_NODES_DIR}\n")
    return path


def fault_graph(node: str, seed: int, **inputs: Any) -> dict:
    """The CPU graph with ``Fault<node>`` spliced in between VAEDecode and SaveImage."""
    graph = cpu_graph(seed=seed, prefix=f"fault_{node.lower()}")
    graph["11"] = {"class_type": f"Fault{node}", "inputs": {"images": ["9", 0], **inputs}}
    graph["10"]["inputs"]["images"] = ["11", 0]
    return graph


class RecordingHandler(logging.Handler):
    """Keeps the supervisor's log records, so tests can check what it decided and why."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, instance: str) -> list[str]:
        return [r.getMessage() for r in self.records if getattr(r, "instance", None) == instance]


class PoolHarness:
    """A ``Pool`` on an event loop in a background thread, driven from synchronous tests."""

    def __init__(self, config: Settings, extra_model_paths: list[Path]) -> None:
        self.config = config
        self.changes: list[InstanceSnapshot] = []
        self.log = RecordingHandler()
        logging.getLogger("supervisor").addHandler(self.log)
        logging.getLogger("supervisor").setLevel(logging.DEBUG)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="pool loop", daemon=True)
        self.thread.start()
        self.pool: Pool = self.call(self._make(extra_model_paths))

    async def _make(self, extra_model_paths: list[Path]) -> Pool:
        return Pool(self.config, extra_model_paths=extra_model_paths, on_change=self.changes.append)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 600) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def run_sync(self, function: Callable[[], T]) -> T:
        """Call a plain pool method on the loop's thread (the pool is not thread-safe)."""
        async def wrapped() -> T:
            return function()
        return self.call(wrapped())

    def snapshot(self, name: str) -> InstanceSnapshot:
        return next(s for s in self.run_sync(self.pool.snapshot) if s.name == name)

    def wait_until(self, name: str, predicate: Callable[[InstanceSnapshot], bool], timeout: float = 300,
                   what: str = "") -> InstanceSnapshot:
        """Poll the snapshot of ``name`` until ``predicate`` holds (the timeout only avoids hanging)."""
        def holds() -> InstanceSnapshot | None:
            snap = self.snapshot(name)
            return snap if predicate(snap) else None

        return wait_until(holds, lambda: f"{name}: {what or 'condition'} not reached; last snapshot "
                          f"{self.snapshot(name)}", timeout, interval=0.2)

    def close(self) -> None:
        try:
            self.call(self.pool.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            logging.getLogger("supervisor").removeHandler(self.log)


def pool_config(output_root: Path, instances: list[dict], **health: Any) -> Settings:
    return load_settings(overrides={"instances": instances, "output_root": str(output_root), "health": health})


def comfy_processes_under(folder: Path) -> list[psutil.Process]:
    """Live ComfyUI processes whose command line names ``folder`` (one pool's instances)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if any(str(folder) in part for part in cmdline) and any(p.endswith("main.py") for p in cmdline):
            try:
                if process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except psutil.Error:
                continue
    return found
