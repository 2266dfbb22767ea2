"""Job-store throughput, SQLite and PostgreSQL side by side: submit + claim + complete (not a test).

Model-free jobs on the real stores in this process: ``--jobs`` submissions made by
``--concurrency`` tasks, then as many workers claim each job, stage a 1 kB image and complete it
(the dispatcher's three commits per job). SQLite is a file in a temporary folder; PostgreSQL is
``--database-url`` or, by default, Debian's PostgreSQL 15 started for the run in a temporary
folder (``tests/support/postgres_server.py``) with fsync on, on loopback. Same machine, same run.

    .venv/bin/python bench/bench_store.py [--jobs 2000] [--concurrency 8] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from supervisor.job_store import JobStore  # noqa: E402
from supervisor.job_store_postgres import PostgresJobStore  # noqa: E402
from supervisor.job_store_sqlite import SqliteJobStore  # noqa: E402
from tests.support.postgres_server import PostgresTestServer  # noqa: E402

IMAGE = os.urandom(1024)


async def measure(store: JobStore, jobs: int, concurrency: int) -> tuple[float, float]:
    """(submit s, claim + complete s) for ``jobs`` jobs."""
    await store.open()
    numbers = iter(range(jobs))

    async def submitter() -> None:
        for n in numbers:
            await store.submit({"prompt": f"a little bear number {n}", "workflow": "cute_animal_cpu"})

    async def worker(name: str) -> None:
        while (job := await store.claim_next(name)) is not None:
            attempt = job.current_attempt.number  # type: ignore[union-attr]
            folder = store.staging_dir(job.id, attempt)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "0.png").write_bytes(IMAGE)
            assert await store.complete(job.id, attempt, ["0.png"])

    started = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    submitted = time.perf_counter()
    await asyncio.gather(*(worker(f"w{n}") for n in range(concurrency)))
    finished = time.perf_counter()
    counts = await store.counts()
    await store.close()
    assert counts["succeeded"] == jobs, counts
    return submitted - started, finished - submitted


def report(name: str, jobs: int, submit_s: float, work_s: float) -> str:
    total = submit_s + work_s
    return (f"| {name} | {jobs / submit_s:.0f} | {jobs / work_s:.0f} | {jobs / total:.0f} | {total:.2f} |")


async def run(jobs: int, concurrency: int, database_url: str | None) -> None:
    folder = Path(tempfile.mkdtemp(prefix="cak-bench-store-"))
    server = None
    try:
        sqlite = SqliteJobStore(folder / "jobs.sqlite3", folder / "sqlite-out", "bench", 30)
        sqlite_times = await measure(sqlite, jobs, concurrency)
        if database_url is None:
            folder.chmod(0o711)
            server = PostgresTestServer(folder / "postgres", durable=True)
            await asyncio.to_thread(server.init)
            database_url = await asyncio.to_thread(server.new_database)
        postgres = PostgresJobStore(database_url, folder / "pg-out", "bench", 30)
        postgres_times = await measure(postgres, jobs, concurrency)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {jobs} jobs, "
          f"concurrency {concurrency}")
    print("| store | submit jobs/s | claim + complete jobs/s | end to end jobs/s | total s |")
    print("|---|---|---|---|---|")
    print(report("SQLite (WAL, fsync per submit batch)", jobs, *sqlite_times))
    print(report("PostgreSQL 15 (loopback, fsync on)", jobs, *postgres_times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per store (default 2000)")
    parser.add_argument("--concurrency", type=int, default=8, help="submitting tasks, then workers (default 8)")
    parser.add_argument("--database-url", help="a PostgreSQL to use instead of a temporary server (its "
                                               "database gets the store's tables)")
    args = parser.parse_args()
    asyncio.run(run(args.jobs, args.concurrency, args.database_url))


if __name__ == "__main__":
    main()
