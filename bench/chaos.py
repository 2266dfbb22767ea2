"""Chaos bench: the job service under faults. Every accepted job must end exactly once, and every
broken instance (and the supervisor itself) must come back.

    .venv/bin/python bench/chaos.py --jobs 300 --clients 4 --seed 7 --faults-per-kind 5 --max-minutes 50

It starts ``python -m supervisor up`` as a real subprocess (``tests/support/job_service.SupervisorProcess``)
with two CPU instances, the test-only fault nodes (``tests/fault_nodes``) and raw graphs allowed —
both only in this run's config (``bench/chaos.yaml``). Several asyncio clients submit a seeded mix
of jobs over HTTP: plain jobs of every style, size and seed, unsafe prompts, cancels, jobs with an
Idempotency-Key submitted twice (and once with another body), and jobs whose graph holds a fault
node. Meanwhile faults are injected at seeded random moments, one after the other:

- ``sigkill``: SIGKILL an instance's ComfyUI (pid from ``GET /v1/instances``) → restart ``crash``;
- ``sigstop``: SIGSTOP it → its probes fail → restart ``unresponsive``;
- ``supervisor_kill``: SIGKILL the supervisor (its ComfyUI keep running: own process groups) and
  start it again on the same config and database; the new one must end those ComfyUI itself;
- ``hang``: a job with ``FaultHang`` → restart ``hang`` on each attempt until the job fails;
- ``leak``: a job with ``FaultLeak`` → the job succeeds, then the instance restarts ``leak``.

``--hosts 2`` runs two supervisors (``host-a``, ``host-b``, one CPU instance each, a short lease) on one
PostgreSQL job store (``--database-url``, or a server of its own from ``tests/support/postgres_server.py``).
Clients spread their requests over the live hosts and follow each job on any of them; the faults
above hit one host at a time, and two more join them:

- ``host_kill``: SIGKILL a host's supervisor and its ComfyUI together, then start it again; its jobs
  go on elsewhere (``host_lost``) or at its own restart (``supervisor_restart``);
- ``host_stop``: SIGSTOP a host's supervisor and ComfyUI past the lease, then SIGCONT; the other host
  takes its jobs over (``host_lost``) and the woken one must commit nothing.

    .venv/bin/python bench/chaos.py --hosts 2 --jobs 40 --faults-per-kind 1 --max-minutes 30

At the end it reconciles the clients' records with the API and the store (the SQLite file, or the
PostgreSQL tables) (rules in
``tests/support/chaos_rules.py``), prints a table (or ``--json``) and exits 0 when all holds, 1 on any lost or
duplicated job, wrong outcome, unrecovered fault or leftover ComfyUI, 3 when time ran out before
every job was sent or every fault injected. The seed fixes the jobs, the faults and the pauses;
what the processes do in between still depends on timing, so runs are alike, not identical.
Loopback only; every wait is bounded by ``--max-minutes``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.chaos_rules import (  # noqa: E402
    FINAL,
    RECOVERY_LIMIT_S,
    SERVING,
    Fault,
    Outcome,
    RunState,
    Sample,
    Spec,
    build_plan,
    fault_schedule,
    pid_at,
    reconcile,
    table,
)
from tests.support.job_service import SupervisorProcess, host_pair  # noqa: E402
from tests.support.postgres_server import scratch_postgres  # noqa: E402
from tests.support.supervisor_fixtures import FAULT_NODES_DIR, comfy_processes_under  # noqa: E402

SETTINGS_FILE = Path(__file__).with_name("chaos.yaml")
SIGNAL_FAULTS = {"sigkill": (signal.SIGKILL, "crash"), "sigstop": (signal.SIGSTOP, "unresponsive")}
POLL_S = 0.5
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Unreachable(Exception):
    """No connection: the request never reached the service, so sending it again is safe."""


class AnswerLost(Exception):
    """The request went out but no answer came back: the service may or may not have acted on it."""


class Chaos:
    def __init__(self, state: RunState, hosts: list[SupervisorProcess],
                 session: aiohttp.ClientSession) -> None:
        self.s = state
        self.hosts = hosts
        self.session = session
        self.fault_rng = random.Random(f"{state.args.seed}-faults")
        self.fault_jobs: set[str] = set()
        self.settled = asyncio.Event()
        self.stopped_pids: set[int] = set()
        # Each host process's epoch (restart counters start again with each); hosts being killed or
        # frozen are left out of requests and samples until they serve again.
        self.epochs = {host.url: number for number, host in enumerate(hosts)}
        state.epoch = len(hosts) - 1
        self.down: set[str] = set()
        self.turn = 0

    def live(self) -> list[SupervisorProcess]:
        return [host for host in self.hosts if host.url not in self.down] or self.hosts

    def next_host(self) -> SupervisorProcess:
        """The live hosts in turn: every request may go to any of them."""
        live = self.live()
        self.turn += 1
        return live[self.turn % len(live)]

    async def call(self, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None,
                   host: SupervisorProcess | None = None) -> tuple[int, dict[str, str], Any]:
        try:
            url = (host or self.next_host()).url + path
            async with self.session.request(method, url, json=body, headers=headers) as answer:
                raw = await answer.read()
                data = json.loads(raw) if raw and answer.content_type == "application/json" else raw
                return answer.status, dict(answer.headers), data
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(str(exc)) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise AnswerLost(str(exc)) from exc

    # ------------------------------------------------------------------ clients

    async def client(self, queue: asyncio.Queue[Spec]) -> None:
        """Submit specs from the shared queue, following up to ``inflight_per_client`` at once."""
        slots = asyncio.Semaphore(self.s.settings["inflight_per_client"])
        followers: list[asyncio.Task[None]] = []
        while not queue.empty() and self.s.left() > 0:
            spec = queue.get_nowait()
            await slots.acquire()
            await asyncio.sleep(spec.think_s)
            outcome = Outcome(spec, submitted_at=time.time())
            self.s.outcomes.append(outcome)
            await self.submit(outcome)
            if outcome.job_id is None:
                slots.release()
                continue
            if spec.kind in ("hang", "leak"):
                self.fault_jobs.add(outcome.job_id)
            task = asyncio.create_task(self.follow(outcome), name=f"follow {spec.index}")
            task.add_done_callback(lambda _t: slots.release())
            followers.append(task)
        await asyncio.gather(*followers)

    async def send_until_answered(self, method: str, path: str, body: Any = None,
                                  headers: dict[str, str] | None = None, *,
                                  resend_if_lost: bool) -> tuple[int, dict[str, str], Any] | None:
        """Send until a definitive answer (503 and refused connections are sent again).

        A lost answer is sent again only when that is safe (``resend_if_lost``); otherwise None.
        """
        while self.s.left() > 0:
            try:
                status, headers_in, data = await self.call(method, path, body, headers)
            except Unreachable:
                await asyncio.sleep(1.0)
                continue
            except AnswerLost:
                if not resend_if_lost:
                    return None
                await asyncio.sleep(1.0)
                continue
            if status == 503:
                await asyncio.sleep(1.0)
                continue
            return status, headers_in, data
        return None

    async def submit(self, outcome: Outcome) -> None:
        spec = outcome.spec
        headers = {"Idempotency-Key": spec.key} if spec.key else None
        answer = await self.send_until_answered("POST", "/v1/jobs", spec.body, headers,
                                                resend_if_lost=bool(spec.key))
        if answer is None:
            outcome.answer_lost = True
            return
        outcome.status, _, data = answer
        if outcome.status == 202:
            outcome.job_id = data["id"]
        elif outcome.status == 422 and isinstance(data, dict) and data.get("job"):
            outcome.job_id = data["job"]["id"]
        if spec.key and outcome.job_id:
            again = await self.send_until_answered("POST", "/v1/jobs", spec.body, headers,
                                                   resend_if_lost=True)
            if again is not None:
                status, headers_in, data = again
                outcome.replay = (status, data.get("id") if isinstance(data, dict) else None,
                                  headers_in.get("Idempotent-Replayed") == "true")
            if spec.conflict:
                other = {**spec.body, "prompt": spec.body["prompt"] + " again"}
                conflict = await self.send_until_answered("POST", "/v1/jobs", other, headers,
                                                          resend_if_lost=True)
                outcome.conflict_status = conflict[0] if conflict else None

    async def follow(self, outcome: Outcome) -> None:
        """Poll the job until it is final; cancel it on the way when the spec says so."""
        spec = outcome.spec
        cancel_at = outcome.submitted_at + spec.cancel_after_s if spec.kind == "cancel" else None
        path = f"/v1/jobs/{outcome.job_id}"
        while self.s.left() > 0:
            if cancel_at is not None and time.time() >= cancel_at and outcome.cancel_status != 202:
                answer = await self.send_until_answered("DELETE", path, resend_if_lost=True)
                if answer is not None and outcome.cancel_status != 202:
                    outcome.cancel_status = answer[0]
                cancel_at = None
            try:
                status, _, job = await self.call("GET", path)
            except (Unreachable, AnswerLost):
                status, job = 0, None
            if status == 200 and job["state"] in FINAL:
                outcome.final = job
                if job["state"] == "succeeded" and job["images"]:
                    got = await self.send_until_answered("GET", job["images"][0], resend_if_lost=True)
                    outcome.image_ok = (got is not None and got[0] == 200
                                        and bytes(got[2][:8]) == PNG_SIGNATURE)
                return
            await asyncio.sleep(1.0)

    # ------------------------------------------------------------------ watching the instances

    async def monitor(self, host: SupervisorProcess) -> None:
        """Sample the host's ``/v1/instances`` until the run ends: the record recoveries are read from."""
        while not self.settled.is_set():
            epoch = self.epochs[host.url]
            if host.url in self.down:
                await asyncio.sleep(POLL_S)
                continue
            try:
                status, _, data = await self.call("GET", "/v1/instances", host=host)
            except (Unreachable, AnswerLost):
                status = 0
            if status == 200 and epoch == self.epochs[host.url]:
                self.s.samples.append(Sample(time.time(), epoch, {
                    i["name"]: (i["state"], i["pid"], dict(i["restarts"])) for i in data["instances"]}))
            await asyncio.sleep(POLL_S)

    async def serving_again(self, name: str, old_pid: int, limit: float) -> float | None:
        """When ``name`` serves again with another process (from the samples), or None."""
        since = time.time()
        while time.time() - since < limit and self.s.left() > 0:
            for sample in reversed(self.s.samples):
                if sample.at < since:
                    break
                state, pid, _ = sample.instances.get(name, ("", None, {}))
                if state in SERVING and pid and pid != old_pid:
                    return sample.at
            await asyncio.sleep(POLL_S)
        return None

    # ------------------------------------------------------------------ injecting faults

    async def inject(self, schedule: list[tuple[int, str]]) -> None:
        """The scheduled faults one after the other: each once its share of the jobs was submitted
        and the previous one recovered, after a seeded pause."""
        inject_until = self.s.started + 0.75 * self.s.args.max_minutes * 60
        for mark, kind in schedule:
            while len(self.s.outcomes) < mark and time.time() < inject_until:
                await asyncio.sleep(POLL_S)
            await asyncio.sleep(self.fault_rng.uniform(*self.s.settings["fault_pause_s"]))
            if time.time() > inject_until:
                self.s.say(f"no time left for the remaining {kind} and later faults")
                return
            if kind == "supervisor_kill":
                await self.kill_supervisor(self.fault_rng.choice(self.hosts))
            elif kind in ("host_kill", "host_stop"):
                await self.hit_host(kind, self.fault_rng.choice(self.hosts))
            else:
                await self.signal_instance(kind)

    async def settle(self, count: int, quiet_s: float = 6.0) -> list[dict[str, Any]]:
        """Wait (bounded) until ``count`` instances (all hosts') have been idle and READY for ``quiet_s``.

        A leak restart comes just after its job ends, so the last ones need this to be seen.
        """
        since, quiet_from = time.time(), None
        instances: list[dict[str, Any]] = []
        while time.time() - since < RECOVERY_LIMIT_S:
            instances = await self.all_instances()
            now = time.time()
            idle = sum(i["state"] == "ready" for i in instances) >= count
            quiet_from = (quiet_from or now) if idle else None
            if quiet_from is not None and now - quiet_from >= quiet_s:
                break
            await asyncio.sleep(POLL_S)
        self.settled.set()
        return instances

    async def all_instances(self) -> list[dict[str, Any]]:
        found = []
        for host in self.hosts:
            try:
                status, _, data = await self.call("GET", "/v1/instances", host=host)
            except (Unreachable, AnswerLost):
                continue
            if status == 200:
                found += data["instances"]
        return found

    async def pick_victim(self) -> tuple[str, int] | None:
        """A serving instance that is idle or runs a plain job (a fault job there would blur the causes)."""
        while self.s.left() > 60:
            host = self.fault_rng.choice(self.live())
            try:
                _, _, instances = await self.call("GET", "/v1/instances", host=host)
                _, _, running = await self.call("GET", "/v1/jobs?state=running&limit=100", host=host)
            except (Unreachable, AnswerLost):
                await asyncio.sleep(1.0)
                continue
            busy_with = {job["attempts"][-1]["instance"]: job["id"] for job in running.get("jobs", [])
                         if job["attempts"]}
            eligible = sorted(
                (i["name"], i["pid"]) for i in instances["instances"]
                if i["pid"] and (i["state"] == "ready" or (i["state"] == "busy" and i["name"] in busy_with
                                                           and busy_with[i["name"]] not in self.fault_jobs)))
            if eligible:
                return self.fault_rng.choice(eligible)
            await asyncio.sleep(1.0)
        return None

    async def signal_instance(self, kind: str) -> None:
        victim = await self.pick_victim()
        if victim is None:
            self.s.say(f"{kind}: no instance to hit before the deadline")
            return
        name, pid = victim
        sig, reason = SIGNAL_FAULTS[kind]
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            self.s.say(f"{kind}: {name} pid {pid} was already gone; skipped")
            return
        if sig == signal.SIGSTOP:
            self.stopped_pids.add(pid)
        # The epoch of the victim's own host: with two hosts, the other one may have been restarted
        # (a newer epoch) since, and the restart this fault causes is counted under this one.
        now = time.time()
        fault = Fault(kind, name, pid, now, pid_at(self.s.samples, name, now)[1], expected=reason)
        self.s.faults.append(fault)
        self.s.say(f"fault {kind}: {name} pid {pid}")
        fault.recovered_at = await self.serving_again(name, pid, RECOVERY_LIMIT_S)
        self.s.say(f"  {name} serving again after {fault.ttr:.1f} s" if fault.ttr is not None
                   else f"  {name} NOT serving again")

    def supervisor_fault(self, kind: str, host: SupervisorProcess) -> Fault:
        """The record of a fault on a whole supervisor: it hits every instance of that host."""
        seen = [sample for sample in reversed(self.s.samples) if sample.epoch == self.epochs[host.url]]
        fault = Fault(kind, None, host.popen.pid if host.popen else None, time.time(), self.epochs[host.url],
                      host_instances=sorted(seen[0].instances) if seen else [])
        self.s.faults.append(fault)
        self.s.say(f"fault {kind}: {host.name or 'supervisor'} pid {fault.pid}, instances {fault.host_instances}")
        return fault

    async def restart(self, host: SupervisorProcess, fault: Fault) -> bool:
        """Start a killed host again on its config and database: a new epoch once it serves."""
        self.s.epoch += 1
        self.epochs[host.url] = self.s.epoch
        count = self.s.settings["supervisor"]["instances"]
        try:
            await asyncio.to_thread(host.start, count, min(RECOVERY_LIMIT_S, max(self.s.left(), 1)))
        except (TimeoutError, RuntimeError) as exc:
            fault.note = f"restart failed: {str(exc).splitlines()[0]}"
            self.s.say(f"  supervisor restart FAILED: {exc}")
            return False
        finally:
            self.down.discard(host.url)
        fault.recovered_at = time.time()
        return True

    async def kill_supervisor(self, host: SupervisorProcess) -> None:
        """SIGKILL the supervisor, start it again; its start must also end the ComfyUI left running."""
        await asyncio.to_thread(host.record_pids)  # the helper's own clean-up list
        left_running = await asyncio.to_thread(self.live_comfyui, host)
        self.down.add(host.url)
        fault = self.supervisor_fault("supervisor_kill", host)
        self.s.say(f"  ComfyUI {sorted(left_running)} left running")
        await asyncio.to_thread(host.kill)
        if not await self.restart(host, fault):
            return
        fault.survivors = sorted(left_running & await asyncio.to_thread(self.live_comfyui, host))
        self.s.say(f"  supervisor and its instances serving again after {fault.ttr:.1f} s"
                   + (f"; the old ComfyUI {fault.survivors} still run" if fault.survivors else ""))
        for pid in fault.survivors:  # reported as a violation; not left to slow the rest of the run
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    async def hit_host(self, kind: str, host: SupervisorProcess) -> None:
        """A whole host lost: killed and started again (``host_kill``), or frozen past its lease and
        woken (``host_stop``). Meanwhile the other host must take its jobs over."""
        self.down.add(host.url)
        fault = self.supervisor_fault(kind, host)
        if kind == "host_kill":
            await asyncio.to_thread(host.kill_host)
            if await self.restart(host, fault):
                self.s.say(f"  {host.name} serving again after {fault.ttr:.1f} s")
            return
        await asyncio.to_thread(host.pause_host)
        paused = set(host.paused)
        self.stopped_pids |= paused
        await asyncio.sleep(self.s.settings["hosts"]["stop_leases"] * self.s.settings["hosts"]["lease_s"])
        await asyncio.to_thread(host.resume_host)
        self.stopped_pids -= paused
        try:
            await asyncio.to_thread(host.wait_ready, self.s.settings["supervisor"]["instances"],
                                    min(RECOVERY_LIMIT_S, max(self.s.left(), 1)))
        except (TimeoutError, RuntimeError) as exc:
            fault.note = f"not serving after SIGCONT: {str(exc).splitlines()[0]}"
            self.s.say(f"  {host.name} NOT serving again: {exc}")
            return
        finally:
            self.down.discard(host.url)
        fault.recovered_at = time.time()
        self.s.say(f"  {host.name} woken and serving again after {fault.ttr:.1f} s")

    def live_comfyui(self, host: SupervisorProcess | None = None) -> set[int]:
        folder = host.base_dir if host is not None else self.s.base
        return {process.pid for process in comfy_processes_under(folder)}

    def kill_comfyui(self) -> None:
        """Every ComfyUI of this run: the recorded pids, then any process still naming the run folder."""
        for host in self.hosts:
            host.kill_orphans()
        for process in comfy_processes_under(self.s.base):
            with contextlib.suppress(psutil.Error):  # gone meanwhile
                process.kill()


# ---------------------------------------------------------------------- reconciliation


def supervisors_for(base: Path, settings: dict[str, Any], database_url: str | None) -> list[SupervisorProcess]:
    """The tests' launcher, with this run's config (one host, or a pair on ``database_url``); the
    fault nodes load as extra custom nodes."""
    conf = settings["supervisor"]
    if database_url is None:
        hosts = [SupervisorProcess(base, instances=conf["instances"], jobs=conf["jobs"], health=conf["health"])]
    else:
        hosts = host_pair(base, database_url, lease_s=settings["hosts"]["lease_s"], jobs=conf["jobs"],
                          health=conf["health"])
    for sup in hosts:
        config = yaml.safe_load(sup.config_path.read_text())
        config["model_folders"] = {"custom_nodes": str(FAULT_NODES_DIR)}
        if database_url is not None:  # instances named after the host: attempts and faults tell them apart
            config["instances"] = [{"name": f"{sup.name}-cpu-{n + 1}"} for n in range(conf["instances"])]
        sup.config_path.write_text(yaml.safe_dump(config))
    return hosts


async def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    settings = yaml.safe_load(SETTINGS_FILE.read_text())
    if args.hosts > 1:
        settings["supervisor"]["instances"] = settings["hosts"]["instances"]
    max_attempts = settings["supervisor"]["jobs"]["max_attempts"]
    plan = build_plan(settings, args.jobs, args.faults_per_kind, max_attempts, random.Random(args.seed))
    schedule = fault_schedule(args.faults_per_kind, args.jobs, random.Random(f"{args.seed}-schedule"), args.hosts)
    state = RunState(args, settings, base)
    count = settings["supervisor"]["instances"]
    hosts = supervisors_for(base, settings, args.database_url if args.hosts > 1 else None)
    state.say(f"starting {len(hosts)} supervisor(s) ({count} CPU instance(s) each, warm-up) in {base}")
    connector = aiohttp.TCPConnector(force_close=True, limit=64)  # no stale keep-alive across a restart
    timeout = aiohttp.ClientTimeout(total=30, connect=5)
    final_instances: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        chaos = Chaos(state, hosts, session)
        try:
            await asyncio.gather(*(asyncio.to_thread(host.start, count, RECOVERY_LIMIT_S) for host in hosts))
            state.started = time.time()  # the budget counts from a serving pool
            faults = " ".join(f"{kind} after job {mark}" for mark, kind in schedule)
            state.say(f"serving on {' '.join(host.url for host in hosts)}; {len(plan)} jobs; faults: {faults}; "
                      "and the hang/leak jobs")
            queue: asyncio.Queue[Spec] = asyncio.Queue()
            for spec in plan:
                queue.put_nowait(spec)
            watchers = [asyncio.create_task(chaos.monitor(host)) for host in hosts]
            injector = asyncio.create_task(chaos.inject(schedule))
            clients = [asyncio.create_task(chaos.client(queue)) for _ in range(args.clients)]
            progress = asyncio.create_task(report_progress(state))
            await asyncio.gather(*clients)
            state.say(f"clients done: {len(state.outcomes)} submitted")
            await injector
            final_instances = await chaos.settle(count * len(hosts))
            await asyncio.gather(*watchers)
            progress.cancel()
            leftovers = await asyncio.to_thread(stop_and_count, hosts, base)
        finally:
            for pid in chaos.stopped_pids:  # a stopped process cannot act on the SIGTERM of the stop
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for host in hosts:
                await asyncio.to_thread(host.stop)  # after a failure; otherwise a no-op
            await asyncio.to_thread(chaos.kill_comfyui)
    state.say("supervisors stopped; reconciling")
    return reconcile(state, plan, max_attempts, leftovers, final_instances)


def stop_and_count(hosts: list[SupervisorProcess], base: Path) -> int:
    """SIGTERM the supervisors (each drains and stops its instances); ComfyUI of the run still alive after."""
    for sup in hosts:
        assert sup.popen is not None
        sup.popen.send_signal(signal.SIGTERM)
    for sup in hosts:
        assert sup.popen is not None
        sup.popen.wait(timeout=120)
    return len(comfy_processes_under(base))


async def report_progress(state: RunState) -> None:
    while True:
        await asyncio.sleep(30)
        done = sum(o.final is not None for o in state.outcomes)
        state.say(f"progress: {len(state.outcomes)} submitted, {done} final, "
                  f"{len(state.faults)} faults injected")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/chaos.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog="Exit status: 0 all rules hold; 1 a job was lost or duplicated, ended wrongly, a fault was "
               "not recovered or a ComfyUI was left behind; 2 the service did not start; 3 the time ran out "
               "before every job was sent or every fault injected. The run folder (config, logs, database, "
               "images) is removed unless --keep is given or a rule failed.")
    parser.add_argument("--jobs", type=int, default=300,
                        help="jobs to submit, fault jobs included (default 300)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--seed", type=int, default=7,
                        help="seeds the jobs, the faults and the pauses (default 7)")
    parser.add_argument("--faults-per-kind", type=int, default=5,
                        help="SIGKILLs, SIGSTOPs and supervisor kills each (host kills and stops too with --hosts 2), "
                             "leak jobs; hang jobs enough for this many hang attempts (default 5)")
    parser.add_argument("--max-minutes", type=float, default=45,
                        help="the whole run's budget once the pool serves; faults stop at 75%% of it "
                             "(default 45)")
    parser.add_argument("--hosts", type=int, choices=(1, 2), default=1,
                        help="supervisors sharing one queue: 2 runs them on PostgreSQL and adds host_kill and "
                             "host_stop faults (default 1: one supervisor on SQLite)")
    parser.add_argument("--database-url", default=None,
                        help="the PostgreSQL of --hosts 2 (an empty database); default: a server of its own "
                             "in the run folder (Debian's PostgreSQL, install.py --with-postgres)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    parser.add_argument("--keep", action="store_true", help="keep the run folder")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.clients < 1 or args.faults_per_kind < 0 or args.max_minutes <= 0:
        parser.error("--jobs and --clients must be >= 1, --faults-per-kind >= 0, --max-minutes > 0")
    if args.database_url and args.hosts < 2:
        parser.error("--database-url is for --hosts 2 (one host keeps its SQLite queue)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="cak-chaos-"))
    try:
        with contextlib.ExitStack() as stack:
            if args.hosts > 1 and args.database_url is None:  # read by the reconciliation before the stop
                args.database_url = stack.enter_context(scratch_postgres()).new_database()
            report = asyncio.run(run(args, base))
    except (TimeoutError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"the service did not start: {exc}\nrun folder kept: {base}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else table(report))
    failed = bool(report["violations"] or report["lost"] or report["duplicated"])
    if args.keep or failed:
        print(f"run folder kept: {base}", file=sys.stderr)
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 3 if report["incomplete"] else 0


if __name__ == "__main__":
    sys.exit(main())
