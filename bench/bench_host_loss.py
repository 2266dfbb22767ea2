"""How long a job waits when its host dies: SIGKILL to the job running on another host.

    .venv/bin/python bench/bench_host_loss.py [--lease-s 4 10] [--trials 3] [--database-url URL]

Two real supervisors (``host-a``, ``host-b``: ``tests/support/job_service.host_pair``, one CPU
ComfyUI each) share one PostgreSQL job store (the URL's database, or a server of its own from
``tests/support/postgres_server.py``). For each lease and trial: a long CPU job runs on one host;
that host's supervisor and ComfyUI are SIGKILLed together; the other host's API is polled until the
job's new attempt runs there. Two numbers per trial: until the new attempt started (its
``started_at``, on the same machine's clock) and until its sampler reported a first step. Expected:
up to ``lease_s`` (the lease must expire) plus the requeue sweep and the claim. The killed host is
started again between trials (its restart requeues nothing: the job moved already), and each
measured job is cancelled once it runs on the survivor.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.job_service import SLOW_JOB, SupervisorProcess, host_pair  # noqa: E402
from tests.support.postgres_server import scratch_postgres  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

POLL_S = 0.05


def runner_of(job: dict, hosts: list[SupervisorProcess]) -> SupervisorProcess | None:
    if job["state"] != "running" or not job["attempts"] or job["attempts"][-1]["ended_at"] is not None:
        return None
    instance = job["attempts"][-1]["instance"]
    return next((host for host in hosts if instance.startswith(f"{host.name}-")), None)


def one_trial(hosts: list[SupervisorProcess], seed: int) -> tuple[float, float]:
    """(s to the new attempt's start, s to its first step) after the SIGKILL of the job's host."""
    job = hosts[0].submit(prompt="a little bear on a swing", seed=seed, **SLOW_JOB)
    victim = wait_until(lambda: runner_of(hosts[0].get(f"/v1/jobs/{job['id']}"), hosts),
                        "the job never started", 600, interval=0.2)
    victim.wait_progress(job["id"])
    survivor = next(host for host in hosts if host is not victim)
    killed_at = time.time()
    victim.kill_host()
    moved = wait_until(lambda: (lambda j: j if runner_of(j, hosts) is survivor else None)(
        survivor.get(f"/v1/jobs/{job['id']}")), "the job never moved", 600, interval=POLL_S)
    started = moved["attempts"][-1]["started_at"] - killed_at
    survivor.wait_progress(job["id"])
    stepped = time.time() - killed_at
    status, _ = survivor.call("DELETE", f"/v1/jobs/{job['id']}")  # measured: no need to draw it to the end
    assert status in (202, 409), status
    survivor.wait_job(job["id"])
    victim.start(ready=1)
    return started, stepped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lease-s", type=float, nargs="+", default=[4.0, 10.0], help="leases to try (default 4 10)")
    parser.add_argument("--trials", type=int, default=3, help="kills per lease (default 3)")
    parser.add_argument("--database-url", default=None,
                        help="an empty PostgreSQL database (default: a server of its own, a fresh database per lease)")
    args = parser.parse_args()
    print(f"bench_host_loss {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| lease_s | trials | SIGKILL → new attempt started (median / max) | → its first step (median / max) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-host-loss-") as tmp, contextlib.ExitStack() as stack:
        server = stack.enter_context(scratch_postgres()) if args.database_url is None else None
        for lease in args.lease_s:
            url = server.new_database() if server is not None else args.database_url
            hosts = host_pair(Path(tmp) / f"lease-{lease}", url, lease_s=lease)
            try:
                for host in hosts:
                    host.start(ready=1)
                results = [one_trial(hosts, seed) for seed in range(args.trials)]
            finally:
                for host in hosts:
                    host.stop()
            starts, steps = [r[0] for r in results], [r[1] for r in results]
            print(f"| {lease:g} | {len(results)} | {statistics.median(starts):.1f} / {max(starts):.1f} s | "
                  f"{statistics.median(steps):.1f} / {max(steps):.1f} s |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
