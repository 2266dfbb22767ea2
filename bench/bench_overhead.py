"""What the supervisor adds per job, and whether it keeps ComfyUI busy (issue 17), side by side.

Run by hand (it starts its own ComfyUI processes; nothing else should load the machine):

    .venv/bin/python bench/bench_overhead.py [--burst 40] [--jobs 15] [--cpu-jobs 4] [--cpu-burst 6]

Two graphs: a trivial one (EmptyImage 64x64 -> SaveImage, milliseconds in ComfyUI, a new colour per
job so nothing is cached) and the CPU workflow (``cute_animal_cpu``, 2 steps). For each:

- ComfyUI alone: sequential latency (``ComfyClient.run`` + image download) and a burst (every
  prompt posted at once, concurrently, one websocket, until the last ``execution_success``);
- through the supervisor with ``jobs.prefetch`` 0 and 1, one and two instances: sequential latency
  (POST /v1/jobs -> the final state on the job's event stream) and a burst (every job submitted
  at once, concurrently, each followed on its event stream; jobs/s until the last final state).
  Submitted one after the other, each submission would wait for its own fsync (the 202 waits until
  the job is on disk), which caps a burst at ~1/fsync; submitted together they share fsyncs.

Overhead = median supervisor latency - median ComfyUI-alone latency for the same graph. Clients
follow the event stream (no polling), so the bench itself stays light on the two cores.

``--postgres [URL]`` runs every supervisor setup twice, on SQLite and on a PostgreSQL job store
(the URL's database, or a server of its own from ``tests/support/postgres_server.py``), and prints
the PostgreSQL / SQLite latency ratio of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cak.comfy_client import ComfyClient
from cak.comfy_process import ComfyLaunch, ComfyProcess, free_port
from cak.install_state import REPO_ROOT, load_state
from cak.workflow import Workflow
from supervisor.service_client import ServiceClient, ServiceError
from tests.support.postgres_server import scratch_postgres

FINAL = {"succeeded", "failed", "rejected", "cancelled"}
CPU_WORKFLOW = "cute_animal_cpu"
PROMPT = "一只戴帽子的小熊"


def trivial_graph(n: int) -> dict:
    """EmptyImage -> SaveImage; the colour changes with ``n`` so ComfyUI caches nothing."""
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                         "color": (n * 7919) % 0xFFFFFF}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}}}


class Case:
    """One kind of job: how to build it for ComfyUI alone and as a /v1/jobs body."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.workflow = Workflow.load(CPU_WORKFLOW) if name == "cpu" else None

    def graph(self, n: int) -> dict:
        if self.workflow is None:
            return trivial_graph(n)
        return self.workflow.build({"prompt": PROMPT, "steps": 2, "seed": n})

    def body(self, n: int) -> dict:
        if self.workflow is None:
            return {"graph": trivial_graph(n)}
        return {"prompt": PROMPT, "steps": 2, "seed": n}


# ---------------------------------------------------------------------- ComfyUI alone


async def comfy_alone(base: Path, case: Case, jobs: int, burst: int, seed: int) -> tuple[list[float], float]:
    process = ComfyProcess(ComfyLaunch(base_dir=base / f"direct-{case.name}"), load_state())
    process.start()
    try:
        await process.wait_ready(300)
        async with ComfyClient(process.url) as client:
            await client.run(case.graph(seed - 1))  # loads the models
            latencies = []
            for n in range(jobs):
                started = time.perf_counter()
                result = await client.run(case.graph(seed + n))
                for image in result.images:
                    await client.download(image)
                latencies.append(time.perf_counter() - started)
            rate = await comfy_burst(process.url, case, burst, seed + 1000)
    finally:
        await process.stop()
    return latencies, rate


async def comfy_burst(url: str, case: Case, count: int, seed: int) -> float:
    """Every prompt posted at once on one client id; jobs/s until the last one succeeded."""
    client_id = uuid.uuid4().hex
    ws_url = url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as socket:
        ids = [str(uuid.uuid4()) for _ in range(count)]

        async def post(n: int, prompt_id: str) -> None:
            async with session.post(f"{url}/prompt", json={"prompt": case.graph(seed + n), "client_id": client_id,
                                                           "prompt_id": prompt_id}) as response:
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(post(n, prompt_id) for n, prompt_id in enumerate(ids)))
        left = set(ids)
        async for message in socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(message.data)
            if event["type"] == "execution_success":
                left.discard(event["data"]["prompt_id"])
            elif event["type"] == "execution_error":
                raise RuntimeError(f"prompt failed: {event['data']}")
            if not left:
                break
        return count / (time.perf_counter() - started)


# ---------------------------------------------------------------------- through the supervisor


class Supervisor:
    def __init__(self, base: Path, instances: int, prefetch: int | None, database_url: str | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.instances = instances
        base.mkdir(parents=True, exist_ok=True)
        jobs: dict = {"allow_graphs": True, "keep_images_days": 0}
        if prefetch is not None:
            jobs["prefetch"] = prefetch
        if database_url is not None:
            jobs["database_url"] = database_url
        config = base / "supervisor.yaml"
        config.write_text(yaml.safe_dump({"instances": instances, "output_root": str(base / "out"),
                                          "http": {"port": self.port}, "jobs": jobs}))
        self.log = base / "log"
        self.popen = subprocess.Popen([sys.executable, "-m", "supervisor", "up", "--config", str(config)],
                                      cwd=REPO_ROOT, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    async def ready(self, client: ServiceClient) -> None:
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"supervisor exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(ServiceError):  # not listening yet
                data = await client.request("GET", "/v1/instances")
                if sum(i["state"] == "ready" for i in data["instances"]) >= self.instances:
                    return
            await asyncio.sleep(0.5)

    def stop(self) -> None:
        self.popen.send_signal(signal.SIGTERM)
        self.popen.wait(timeout=120)


async def follow(client: ServiceClient, job_id: str) -> str:
    """The job's final state, read from its event stream."""
    async for name, data in client.events(job_id):
        if name == "state" and data["state"] in FINAL:
            if data["state"] != "succeeded":
                raise RuntimeError(f"job {job_id} ended {data['state']}: {data.get('error')}")
            return data["state"]
    raise RuntimeError(f"the event stream of job {job_id} ended without a final state")


async def submit_and_follow(client: ServiceClient, body: dict) -> None:
    job = await client.request("POST", "/v1/jobs", body=body)
    await follow(client, job["id"])


async def through_supervisor(base: Path, case: Case, instances: int, prefetch: int | None, jobs: int,
                             burst: int, seed: int, database_url: str | None) -> tuple[list[float], float]:
    supervisor = Supervisor(base, instances, prefetch, database_url)
    try:
        async with ServiceClient(supervisor.url, timeout=120) as client:
            await supervisor.ready(client)
            # Warm-up: one job per instance at once (the pool picks the least used) loads every model.
            await asyncio.gather(*(submit_and_follow(client, case.body(seed - 1 - k)) for k in range(instances)))
            latencies = []
            for n in range(jobs):
                started = time.perf_counter()
                await submit_and_follow(client, case.body(seed + n))
                latencies.append(time.perf_counter() - started)
            started = time.perf_counter()
            submitted = await asyncio.gather(*(client.request("POST", "/v1/jobs", body=case.body(seed + 1000 + n))
                                               for n in range(burst)))
            await asyncio.gather(*(follow(client, job["id"]) for job in submitted))
            rate = burst / (time.perf_counter() - started)
    finally:
        supervisor.stop()
    return latencies, rate


# ---------------------------------------------------------------------- report


async def bench_case(base: Path, case: Case, jobs: int, burst: int, setups: list[tuple[int, int | None]],
                     database_url: str | None) -> None:
    seed = random.randint(1, 10**6)
    direct, direct_rate = await comfy_alone(base, case, jobs, burst, seed)
    direct_median = statistics.median(direct)
    print(f"\n== {case.name}: {jobs} sequential jobs, burst of {burst}")
    print(f"ComfyUI alone: median latency {direct_median * 1000:.1f} ms, burst {direct_rate:.1f} jobs/s")
    rates: dict[tuple[int, int | None], float] = {}
    for instances, prefetch in setups:
        latencies, rate = await through_supervisor(base / f"{case.name}-{instances}-{prefetch}", case, instances,
                                                   prefetch, jobs, burst, seed + 10**7 * (len(rates) + 1), None)
        rates[(instances, prefetch)] = rate
        median = statistics.median(latencies) if latencies else float("nan")
        print(f"supervisor, {instances} instance(s), prefetch {prefetch}: median latency {median * 1000:.1f} ms "
              f"(overhead {(median - direct_median) * 1000:+.1f} ms), burst {rate:.1f} jobs/s "
              f"({rate / direct_rate:.2f}x ComfyUI alone)")
        if database_url is None:
            continue
        pg_latencies, pg_rate = await through_supervisor(
            base / f"{case.name}-{instances}-{prefetch}-pg", case, instances, prefetch, jobs, burst,
            seed + 10**7 * (len(rates) + 1) + 10**6, database_url)
        pg_median = statistics.median(pg_latencies)
        print(f"  same on PostgreSQL: median latency {pg_median * 1000:.1f} ms "
              f"({pg_median / median:.3f}x SQLite, {(pg_median - median) * 1000:+.1f} ms), "
              f"burst {pg_rate:.1f} jobs/s ({pg_rate / rate:.2f}x SQLite)")
    for prefetch in {p for _, p in setups}:
        if (1, prefetch) in rates and (2, prefetch) in rates:
            print(f"prefetch {prefetch}: 2 instances / 1 instance = {rates[(2, prefetch)] / rates[(1, prefetch)]:.2f}x")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=40, help="trivial jobs submitted at once (default 40)")
    parser.add_argument("--jobs", type=int, default=15, help="sequential trivial jobs for the latency median")
    parser.add_argument("--cpu-jobs", type=int, default=4, help="sequential CPU-workflow jobs (0: skip the workflow)")
    parser.add_argument("--cpu-burst", type=int, default=6, help="CPU-workflow jobs submitted at once")
    parser.add_argument("--prefetch", type=int, nargs="+", default=[0, 1],
                        help="prefetch depths to compare (default 0 1); -1: leave the setting out (older code)")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2], help="pool sizes (default 1 2)")
    parser.add_argument("--postgres", nargs="?", const="own", default=None, metavar="URL",
                        help="also run each setup on a PostgreSQL job store: this database, or (no URL) a server "
                             "of its own; prints the PostgreSQL / SQLite ratio")
    args = parser.parse_args()
    setups = [(n, None if p < 0 else p) for p in args.prefetch for n in args.instances]
    print(f"bench_overhead {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp, contextlib.ExitStack() as stack:
        url = args.postgres
        if url == "own":
            url = stack.enter_context(scratch_postgres()).new_database()
        if args.jobs:
            await bench_case(Path(tmp), Case("trivial"), args.jobs, args.burst, setups, url)
        if args.cpu_jobs:
            await bench_case(Path(tmp), Case("cpu"), args.cpu_jobs, args.cpu_burst, setups, url)


if __name__ == "__main__":
    asyncio.run(main())
