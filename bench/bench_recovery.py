"""How fast the pool notices a fault and serves again: crash, hang and leak on this machine.

For each fault, ``--repeat`` times on one supervised instance (fault nodes loaded, warm-up on):
- fault → detection: from the fault (SIGKILL sent; the hanging node starting; the leaking node
  done) to the supervisor deciding the restart reason (its log record);
- detection → READY: from that decision to the new process being READY (warm-up included).

Run by hand: ``.venv/bin/python bench/bench_recovery.py [--repeat 3] [--step-timeout 15]``.
Results go to ``docs/benchmarks.md`` with the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cak.events import ComfyEvent  # noqa: E402
from supervisor.instance import InstanceSnapshot  # noqa: E402
from supervisor.pool import InstanceLost, Pool  # noqa: E402
from supervisor.settings import load_settings  # noqa: E402
from tests.support.supervisor_fixtures import fault_graph, fault_nodes_config  # noqa: E402

NAME = "bench"


class Timeline(logging.Handler):
    """Wall-clock times of the supervisor's decisions (``[bench] <reason>: …``) and of READY."""

    def __init__(self) -> None:
        super().__init__()
        self.detected: dict[str, list[float]] = {}
        self.ready: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(f"[{NAME}] ComfyUI exited"):
            self.detected.setdefault("crash", []).append(record.created)
        for reason in ("hang", "leak"):
            if message.startswith(f"[{NAME}] {reason}:"):
                self.detected.setdefault(reason, []).append(record.created)

    def on_change(self, snap: InstanceSnapshot) -> None:
        if snap.state == "ready":
            self.ready.append(time.time())


async def _next_ready_after(timeline: Timeline, moment: float) -> float:
    while True:
        later = [t for t in timeline.ready if t > moment]
        if later:
            return later[0]
        await asyncio.sleep(0.05)


async def _detected_after(timeline: Timeline, reason: str, moment: float) -> float:
    while True:
        later = [t for t in timeline.detected.get(reason, []) if t >= moment]
        if later:
            return later[0]
        await asyncio.sleep(0.05)


async def crash(pool: Pool, timeline: Timeline, seed: int) -> tuple[float, float, float]:
    pid = pool.instances[NAME].pid
    fault = time.time()
    os.kill(pid, signal.SIGKILL)
    detected = await _detected_after(timeline, "crash", fault)
    return fault, detected, await _next_ready_after(timeline, detected)


async def hang(pool: Pool, timeline: Timeline, seed: int) -> tuple[float, float, float]:
    started: list[float] = []

    def on_event(event: ComfyEvent) -> None:
        if event.type == "executing" and event.node == "11" and not started:
            started.append(time.time())

    instance = await pool.acquire(name=NAME)
    try:
        await pool.run(instance, fault_graph("Hang", seed=seed, seconds=3600.0), on_event=on_event)
        raise AssertionError("the hanging job finished")
    except InstanceLost as lost:
        assert lost.reason == "hang", lost.reason
    finally:
        pool.release(instance)
    detected = await _detected_after(timeline, "hang", started[0])
    return started[0], detected, await _next_ready_after(timeline, detected)


async def leak(pool: Pool, timeline: Timeline, seed: int, megabytes: int) -> tuple[float, float, float]:
    done: list[float] = []

    def on_event(event: ComfyEvent) -> None:
        # The leak node has no UI output (no ``executed``): SaveImage starting means it is done.
        if event.type == "executing" and event.node == "10" and not done:
            done.append(time.time())

    instance = await pool.acquire(name=NAME)
    try:
        await pool.run(instance, fault_graph("Leak", seed=seed, megabytes=megabytes), on_event=on_event)
    finally:
        pool.release(instance)
    detected = await _detected_after(timeline, "leak", done[0])
    return done[0], detected, await _next_ready_after(timeline, detected)


async def main(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    config = load_settings(overrides={
        "instances": [{"name": NAME}], "output_root": str(root / "instances"),
        "health": {"warmup": True, "step_timeout_s": args.step_timeout, "probe_interval_s": 2,
                   "max_rss_growth_mb": args.leak_mb // 2, "idle_free_s": 0,
                   "restart": {"max_restarts": 100, "backoff_initial_s": 0}},
    })
    timeline = Timeline()
    logging.getLogger("supervisor").addHandler(timeline)
    logging.getLogger("supervisor").setLevel(logging.INFO)
    pool = Pool(config, extra_model_paths=[fault_nodes_config(root)], on_change=timeline.on_change)
    started = time.time()
    await pool.start()
    await pool.wait_ready(1, timeout=600)
    print(f"first start to READY (warm-up included): {time.time() - started:.1f} s")
    results: dict[str, list[tuple[float, float]]] = {}
    try:
        for round_ in range(args.repeat):
            for name in ("crash", "hang", "leak"):
                await pool.wait_ready(1, timeout=600)
                seed = 1000 + round_ * 10 + len(results.get(name, []))
                if name == "leak":
                    fault, detected, ready = await leak(pool, timeline, seed, args.leak_mb)
                else:
                    fault, detected, ready = await {"crash": crash, "hang": hang}[name](pool, timeline, seed)
                results.setdefault(name, []).append((detected - fault, ready - detected))
                print(f"{name:5} round {round_ + 1}: fault→detection {detected - fault:6.2f} s, "
                      f"detection→READY {ready - detected:6.2f} s", flush=True)
    finally:
        await pool.stop()
    print("\n| fault | fault → detection (median, min–max) | detection → READY (median, min–max) |")
    print("|---|---|---|")
    for name, rows in results.items():
        detect = [row[0] for row in rows]
        recover = [row[1] for row in rows]
        print(f"| {name} | {statistics.median(detect):.2f} s ({min(detect):.2f}–{max(detect):.2f}) "
              f"| {statistics.median(recover):.2f} s ({min(recover):.2f}–{max(recover):.2f}) |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each fault (default 3)")
    parser.add_argument("--step-timeout", type=float, default=15.0, help="health.step_timeout_s (default 15)")
    parser.add_argument("--leak-mb", type=int, default=600,
                        help="MB the leak node keeps; the growth limit is half of it (default 600)")
    asyncio.run(main(parser.parse_args()))
