"""How fast the webhook outbox drains on this machine, and how long an event waits (not a test).

A real job store (SQLite file), the real sender and a real aiohttp receiver on loopback, all in
this process: ``--events`` jobs end (``rejected`` at submission: one transaction each, no ComfyUI),
each writing one outbox row; we time from each commit to its arrival at the receiver, whose
signature is checked with ``standardwebhooks``. Then ``--single`` lone events, each after a pause
longer than the poll interval: what one job's webhook waits on an otherwise idle service.

    .venv/bin/python bench/bench_webhooks.py [--events 500] [--poll 1.0] [--single 10]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web
from standardwebhooks import Webhook

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cak.comfy_process import free_port  # noqa: E402
from supervisor.job_store import REJECTED  # noqa: E402
from supervisor.job_store_sqlite import SqliteJobStore  # noqa: E402
from supervisor.metrics import ServiceMetrics  # noqa: E402
from supervisor.settings import WebhooksSettings  # noqa: E402
from supervisor.webhook_delivery import WebhookSender  # noqa: E402


async def run(events: int, poll_s: float, single: int) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    verifier = Webhook(secret)
    arrived: dict[str, float] = {}
    done = asyncio.Event()
    expected = events

    async def receive(request: web.Request) -> web.Response:
        event = verifier.verify(await request.read(), dict(request.headers))
        arrived.setdefault(event["data"]["job_id"], time.time())
        if len(arrived) >= expected:
            done.set()
        return web.Response(status=204)

    port = free_port()
    runner = web.AppRunner(web.Application(client_max_size=1 << 20), access_log=None)
    runner.app.router.add_post("/hooks/", receive)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    settings = WebhooksSettings(allow=(f"http://127.0.0.1:{port}/hooks/",), secret=secret,
                                max_attempts=5, timeout_s=10, backoff_base_s=1, backoff_cap_s=10,
                                inline_images=False, inline_max_bytes=0, public_url=None, poll_interval_s=poll_s)
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteJobStore(Path(folder) / "jobs.sqlite3", Path(folder) / "out", "bench", 30.0)
        await store.open()
        sender = WebhookSender(store, settings, ServiceMetrics(list))
        sender.start()
        committed: dict[str, float] = {}

        async def end_job(n: int) -> None:
            job, _ = await store.submit({"prompt": f"p{n}", "workflow": "w",
                                         "webhook": {"url": f"http://127.0.0.1:{port}/hooks/"}},
                                        state=REJECTED, category="weapons", error="unsafe")
            committed[job.id] = time.time()

        start = time.time()
        for n in range(events):
            await end_job(n)
        submit_s = time.time() - start
        await asyncio.wait_for(done.wait(), timeout=600)
        total_s = time.time() - start
        burst = dict(committed)
        lone = []
        for n in range(single):
            await asyncio.sleep(poll_s * 1.5 + 0.1 * n)
            expected, before = len(arrived) + 1, set(committed)
            done.clear()
            await end_job(events + n)
            await asyncio.wait_for(done.wait(), timeout=60)
            (job_id,) = set(committed) - before
            lone.append(arrived[job_id] - committed[job_id])
        await sender.stop()
        await store.close()
    await runner.cleanup()
    waits = sorted(arrived[job_id] - burst[job_id] for job_id in burst)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, poll {poll_s} s")
    print(f"{events} events: jobs ended (one transaction each) in {submit_s:.2f} s; "
          f"all delivered after {total_s:.2f} s ({events / total_s:.0f} events/s end to end)")
    print(f"commit -> arrival: median {statistics.median(waits) * 1000:.0f} ms, "
          f"p95 {waits[int(len(waits) * 0.95) - 1] * 1000:.0f} ms, max {waits[-1] * 1000:.0f} ms")
    if lone:
        print(f"{len(lone)} lone events on an idle sender: median {statistics.median(lone) * 1000:.0f} ms, "
              f"min {min(lone) * 1000:.0f} ms, max {max(lone) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500, help="jobs ending with a webhook (default 500)")
    parser.add_argument("--poll", type=float, default=1.0, help="webhooks.poll_interval_s (default 1.0)")
    parser.add_argument("--single", type=int, default=10, help="lone events after the burst (default 10)")
    args = parser.parse_args()
    asyncio.run(run(args.events, args.poll, args.single))


if __name__ == "__main__":
    main()
