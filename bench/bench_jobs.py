"""Job latency through the supervisor vs the runner straight to one ComfyUI, and jobs/s with 1 and 2 instances.

Run by hand (it starts its own ComfyUI processes; nothing else should load the machine):

    .venv/bin/python bench/bench_jobs.py [--jobs 5] [--burst 6] [--steps 4]

Latency: sequential jobs on the CPU workflow (each with a new seed, so no cache hits), after one
warm-up job; the supervisor's figure covers submit → queue → dispatch → run → image staged and
committed → final state seen over HTTP; the direct figure is ComfyClient.run + image download.
Throughput: ``--burst`` jobs submitted at once, jobs/s until the last one ends.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cak.comfy_client import ComfyClient
from cak.comfy_process import ComfyLaunch, ComfyProcess, free_port
from cak.demo import DEMO_PROMPT
from cak.install_state import REPO_ROOT, load_state
from cak.workflow import Workflow
from supervisor.service_client import ServiceClient, ServiceError
from supervisor.states import TERMINAL_STATES

WORKFLOW = "cute_animal_cpu"
FINAL = TERMINAL_STATES


async def wait_job(client: ServiceClient, job_id: str) -> dict:
    while True:
        job = await client.request("GET", f"/v1/jobs/{job_id}")
        if job["state"] in FINAL:
            if job["state"] != "succeeded":
                raise RuntimeError(f"job {job_id} ended {job['state']}: {job['error']}")
            return job
        await asyncio.sleep(0.05)


class Supervisor:
    def __init__(self, base: Path, instances: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = base / "supervisor.yaml"
        config.write_text(yaml.safe_dump({"instances": instances, "output_root": str(base / "out"),
                                          "http": {"port": self.port}}))
        self.instances = instances
        self.popen = subprocess.Popen([sys.executable, "-m", "supervisor", "up", "--config", str(config)],
                                      cwd=REPO_ROOT, stdout=(base / "log").open("wb"), stderr=subprocess.STDOUT)

    async def ready(self, client: ServiceClient) -> None:
        while True:
            try:
                data = await client.request("GET", "/v1/instances")
                if sum(i["state"] == "ready" for i in data["instances"]) >= self.instances:
                    return
            except ServiceError:  # not listening yet
                pass
            await asyncio.sleep(0.5)

    def stop(self) -> None:
        self.popen.send_signal(signal.SIGTERM)
        self.popen.wait(timeout=120)


async def supervisor_run(base: Path, instances: int, sequential: int, burst: int, steps: int,
                         seed: int) -> tuple[list[float], float]:
    supervisor = Supervisor(base, instances)
    try:
        async with ServiceClient(supervisor.url) as client:
            await supervisor.ready(client)
            # Warm-up: one job per instance at once (the pool picks the least used) loads every model.
            jobs = [await client.request("POST", "/v1/jobs", body={"prompt": DEMO_PROMPT, "steps": steps,
                                                                     "seed": seed + 1000 + k})
                    for k in range(instances)]
            await asyncio.gather(*(wait_job(client, job["id"]) for job in jobs))
            latencies = []
            for n in range(sequential):
                started = time.perf_counter()
                job = await client.request("POST", "/v1/jobs", body={"prompt": DEMO_PROMPT, "steps": steps,
                                                                      "seed": seed + n})
                await wait_job(client, job["id"])
                latencies.append(time.perf_counter() - started)
            started = time.perf_counter()
            jobs = [await client.request("POST", "/v1/jobs", body={"prompt": DEMO_PROMPT, "steps": steps,
                                                                    "seed": seed + 500 + n})
                    for n in range(burst)]
            await asyncio.gather(*(wait_job(client, job["id"]) for job in jobs))
            rate = burst / (time.perf_counter() - started)
    finally:
        supervisor.stop()
    return latencies, rate


async def direct_run(base: Path, sequential: int, steps: int, seed: int) -> list[float]:
    workflow = Workflow.load(WORKFLOW)
    process = ComfyProcess(ComfyLaunch(base_dir=base / "direct"), load_state())
    process.start()
    try:
        await process.wait_ready(300)
        async with ComfyClient(process.url) as client:
            await client.run(workflow.build({"prompt": DEMO_PROMPT, "steps": steps, "seed": seed + 999}))
            latencies = []
            for n in range(sequential):
                started = time.perf_counter()
                result = await client.run(workflow.build({"prompt": DEMO_PROMPT, "steps": steps, "seed": seed + n}))
                for image in result.images:
                    await client.download(image)
                latencies.append(time.perf_counter() - started)
    finally:
        await process.stop()
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5, help="sequential jobs for the latency median")
    parser.add_argument("--burst", type=int, default=6, help="jobs submitted at once for jobs/s")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        base = Path(tmp)
        direct = await direct_run(base, args.jobs, args.steps, seed=1)
        (base / "one").mkdir()
        via_one, rate_one = await supervisor_run(base / "one", 1, args.jobs, args.burst, args.steps, seed=2000)
        (base / "two").mkdir()
        _, rate_two = await supervisor_run(base / "two", 2, 0, args.burst, args.steps, seed=4000)
    direct_median, via_median = statistics.median(direct), statistics.median(via_one)
    print(f"workflow {WORKFLOW}, {args.steps} steps, 128x128, {args.jobs} sequential jobs, burst {args.burst}")
    print(f"median latency: runner direct {direct_median:.2f} s, through the supervisor {via_median:.2f} s, "
          f"ratio {via_median / direct_median:.2f}")
    print(f"throughput: 1 instance {rate_one:.3f} jobs/s, 2 instances {rate_two:.3f} jobs/s "
          f"(x{rate_two / rate_one:.2f})")


if __name__ == "__main__":
    asyncio.run(main())
