"""bench/chaos.py with small numbers: one fault of each kind under a stream of jobs, nothing lost.

It runs the bench as a real process (it starts its own supervisor and ComfyUI instances) and reads
its JSON report; the numbers are counts, never times.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cak.install_state import REPO_ROOT
from tests.support.supervisor_fixtures import comfy_processes_under

pytestmark = pytest.mark.slow


def test_chaos_small_run_loses_nothing_and_recovers_from_every_fault():
    _check_small_run([])


def test_chaos_two_hosts_on_postgres_lose_nothing_when_a_host_dies_or_freezes(postgres_url):
    """--hosts 2: host_kill and host_stop join the faults; the same rules, read from PostgreSQL."""
    report = _check_small_run(["--hosts", "2", "--database-url", postgres_url], minutes=20)
    assert report["hosts"] == 2
    assert {"host_kill", "host_stop"} <= set(report["faults"])


def _check_small_run(extra: list[str], minutes: int = 12) -> dict:
    run = subprocess.run(
        [sys.executable, "bench/chaos.py", "--jobs", "12", "--clients", "3", "--seed", "1",
         "--faults-per-kind", "1", "--max-minutes", str(minutes), "--json", *extra],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=minutes * 120 + 60)
    assert run.stdout, run.stderr[-4000:]
    report = json.loads(run.stdout)
    context = json.dumps(report, indent=1) + "\n" + run.stderr[-3000:]
    assert report["lost"] == 0 and report["duplicated"] == 0 and report["not_final"] == 0, context
    assert report["violations"] == [], context
    assert report["jobs_submitted"] == 12 and report["incomplete"] == [], context
    for kind, row in report["faults"].items():
        assert row["count"] >= 1 and row["recovered"] == row["count"], (kind, context)
    assert report["final_states"].get("rejected", 0) >= 1  # the unsafe prompt
    assert report["final_states"].get("failed", 0) >= 1    # the hang job, after max_attempts
    assert report["leftover_comfyui"] == 0
    assert run.returncode == 0, context
    assert comfy_processes_under(Path(report["run_folder"])) == []
    return report
