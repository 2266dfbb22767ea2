"""Chaos bench: the job service under faults. Every accepted job must end exactly once, and every
broken instance (and the supervisor itself) must come back.

    .venv/bin/python bench/chaos.py --jobs 300 --clients 4 --seed 7 --faults-per-kind 5 --max-minutes 50

It starts ``python -m supervisor up`` as a real subprocess (``tests/job_service.SupervisorProcess``)
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

At the end it reconciles the clients' records with the API and the SQLite file (rules in
``reconcile``), prints a table (or ``--json``) and exits 0 when all holds, 1 on any lost or
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
import math
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from supervisor.job_store import NOT_COUNTED_REASONS  # noqa: E402 - path set above
from supervisor.states import SERVING_STATES, TERMINAL_STATES  # noqa: E402
from tests.job_service import SupervisorProcess  # noqa: E402
from tests.supervisor_fixtures import FAULT_NODES_DIR, comfy_processes_under, fault_graph  # noqa: E402

SETTINGS_FILE = Path(__file__).with_name("chaos.yaml")
WORKFLOW_MANIFEST = REPO / "workflows" / "cute_animal_cpu.yaml"
FINAL = TERMINAL_STATES
SERVING = SERVING_STATES
NOT_COUNTED = frozenset(NOT_COUNTED_REASONS)  # with not_started: a prefetched prompt given back unrun
LOST_REASONS = frozenset({"crash", "unresponsive", "hang", "ServerGone", "ServerUnreachable", "RunTimeout"})
SIGNAL_FAULTS = {"sigkill": (signal.SIGKILL, "crash"), "sigstop": (signal.SIGSTOP, "unresponsive")}
FAULT_KINDS = ("sigkill", "sigstop", "supervisor_kill", "hang", "leak")
MARK = re.compile(r"\[r(\d+)\]")
RECOVERY_LIMIT_S = 300.0  # one fault's recovery; past it the fault counts as unrecovered
POLL_S = 0.5
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Unreachable(Exception):
    """No connection: the request never reached the service, so sending it again is safe."""


class AnswerLost(Exception):
    """The request went out but no answer came back: the service may or may not have acted on it."""


@dataclass
class Spec:
    """One planned request, fully drawn from the seed before the run starts."""

    index: int
    kind: str  # normal, keyed, unsafe, cancel, hang, leak
    body: dict[str, Any]
    key: str | None = None
    cancel_after_s: float = 0.0
    think_s: float = 0.0
    conflict: bool = False  # also resend the key with another body (expects 409)


@dataclass
class Outcome:
    """What a client saw for one spec."""

    spec: Spec
    submitted_at: float = 0.0
    status: int | None = None        # the submission's answer
    job_id: str | None = None
    answer_lost: bool = False        # a non-keyed submission whose answer never came
    replay: tuple[int, str | None, bool] | None = None  # keyed resend: status, id, Idempotent-Replayed
    conflict_status: int | None = None
    cancel_status: int | None = None
    final: dict[str, Any] | None = None
    image_ok: bool | None = None


@dataclass
class Fault:
    kind: str
    instance: str | None
    pid: int | None
    at: float                        # the signal, or when the attempt/job ended for node faults
    epoch: int = 0                   # the supervisor process it happened under
    expected: str | None = None      # restart reason the supervisor should give
    seen: str | None = None
    recovered_at: float | None = None
    note: str = ""
    survivors: list[int] = field(default_factory=list)  # ComfyUI of a killed supervisor still running

    @property
    def ttr(self) -> float | None:
        return None if self.recovered_at is None else self.recovered_at - self.at


@dataclass
class Sample:
    at: float
    epoch: int  # supervisor process generation (restart counters start again with each)
    instances: dict[str, tuple[str, int | None, dict[str, int]]]


@dataclass
class RunState:
    args: argparse.Namespace
    settings: dict[str, Any]
    base: Path
    started: float = field(default_factory=time.time)
    outcomes: list[Outcome] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    epoch: int = 0

    @property
    def deadline(self) -> float:
        return self.started + self.args.max_minutes * 60

    def left(self) -> float:
        return self.deadline - time.time()

    def say(self, text: str) -> None:
        line = f"[{time.time() - self.started:7.1f}s] {text}"
        print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- the plan


def build_plan(settings: dict[str, Any], jobs: int, faults_per_kind: int, max_attempts: int,
               rng: random.Random) -> list[Spec]:
    """Job kinds in seeded order: fault jobs from ``faults_per_kind``, the mix from chaos.yaml."""
    kinds = ["hang"] * math.ceil(faults_per_kind / max_attempts) + ["leak"] * faults_per_kind
    for kind, share in settings["mix"].items():
        kinds += [kind] * max(1 if jobs >= 8 else 0, round(jobs * share))
    if len(kinds) > jobs:
        raise SystemExit(f"--jobs {jobs} is too few for {len(kinds)} fault and special jobs")
    kinds += ["normal"] * (jobs - len(kinds))
    rng.shuffle(kinds)
    styles = yaml.safe_load(WORKFLOW_MANIFEST.read_text())["parameters"]["style"]["choices"]
    plan = []
    for index, kind in enumerate(kinds):
        think = rng.uniform(*settings["think_s"])
        marker = f"[r{index}]"
        if kind in ("hang", "leak"):
            inputs = {"seconds": 3600.0} if kind == "hang" else {"megabytes": settings["leak_mb"]}
            graph = fault_graph(kind.capitalize(), seed=rng.randrange(2**32), **inputs)
            graph["5"]["inputs"]["text"] = f"{rng.choice(settings['safe_prompts'])} {marker}"
            graph["6"]["inputs"]["text"] = "blurry"  # the helper's "scary, dark" fails the text check
            plan.append(Spec(index, kind, {"graph": graph}, think_s=think))
            continue
        prompts = settings["unsafe_prompts"] if kind == "unsafe" else settings["safe_prompts"]
        steps = settings["cancel_steps"] if kind == "cancel" else settings["steps"]
        seed = rng.randrange(2**32)
        body = {"prompt": f"{rng.choice(prompts)} {marker}", "style": rng.choice(styles), "seed": seed,
                "width": rng.choice(settings["sizes"]), "height": rng.choice(settings["sizes"]),
                "steps": rng.randint(*steps)}
        plan.append(Spec(index, kind, body, key=f"chaos-{seed}-{index}" if kind == "keyed" else None,
                         cancel_after_s=rng.uniform(*settings["cancel_after_s"]) if kind == "cancel" else 0.0,
                         think_s=think))
    keyed = [spec for spec in plan if spec.key]
    if keyed:
        keyed[0].conflict = True
    return plan


def fault_schedule(faults_per_kind: int, jobs: int, rng: random.Random) -> list[tuple[int, str]]:
    """The signal and supervisor faults in seeded order, each with the number of submitted jobs it
    waits for: seeded points spread over the whole job stream, however fast it flows (node faults
    come with their jobs)."""
    kinds = [kind for kind in ("sigkill", "sigstop", "supervisor_kill") for _ in range(faults_per_kind)]
    rng.shuffle(kinds)
    marks = sorted(rng.randrange(jobs) for _ in kinds)
    return list(zip(marks, kinds))


# ---------------------------------------------------------------------- the run


class Chaos:
    def __init__(self, state: RunState, supervisor: SupervisorProcess,
                 session: aiohttp.ClientSession) -> None:
        self.s = state
        self.sup = supervisor
        self.session = session
        self.fault_rng = random.Random(f"{state.args.seed}-faults")
        self.fault_jobs: set[str] = set()
        self.settled = asyncio.Event()
        self.stopped_pids: set[int] = set()

    async def call(self, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        try:
            url = self.sup.url + path
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

    async def monitor(self) -> None:
        """Sample ``/v1/instances`` until the run ends: the record recoveries are read from."""
        while not self.settled.is_set():
            epoch = self.s.epoch
            try:
                status, _, data = await self.call("GET", "/v1/instances")
            except (Unreachable, AnswerLost):
                status = 0
            if status == 200 and epoch == self.s.epoch:
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
                await self.kill_supervisor()
            else:
                await self.signal_instance(kind)

    async def settle(self, count: int, quiet_s: float = 6.0) -> list[dict[str, Any]]:
        """Wait (bounded) until ``count`` instances have been idle and READY for ``quiet_s``.

        A leak restart comes just after its job ends, so the last ones need this to be seen.
        """
        since, quiet_from = time.time(), None
        while time.time() - since < RECOVERY_LIMIT_S:
            latest = self.s.samples[-1] if self.s.samples else None
            idle = latest is not None and sum(
                state == "ready" for state, _, _ in latest.instances.values()) >= count
            quiet_from = (quiet_from or latest.at) if idle else None
            if quiet_from is not None and latest.at - quiet_from >= quiet_s:
                break
            await asyncio.sleep(POLL_S)
        self.settled.set()
        try:
            _, _, data = await self.call("GET", "/v1/instances")
        except (Unreachable, AnswerLost):
            return []
        return data["instances"]

    async def pick_victim(self) -> tuple[str, int] | None:
        """A serving instance that is idle or runs a plain job (a fault job there would blur the causes)."""
        while self.s.left() > 60:
            try:
                _, _, instances = await self.call("GET", "/v1/instances")
                _, _, running = await self.call("GET", "/v1/jobs?state=running&limit=100")
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
        fault = Fault(kind, name, pid, time.time(), self.s.epoch, expected=reason)
        self.s.faults.append(fault)
        self.s.say(f"fault {kind}: {name} pid {pid}")
        fault.recovered_at = await self.serving_again(name, pid, RECOVERY_LIMIT_S)
        self.s.say(f"  {name} serving again after {fault.ttr:.1f} s" if fault.ttr is not None
                   else f"  {name} NOT serving again")

    async def kill_supervisor(self) -> None:
        """SIGKILL the supervisor, start it again; its start must also end the ComfyUI left running."""
        await asyncio.to_thread(self.sup.record_pids)  # the helper's own clean-up list
        left_running = await asyncio.to_thread(self.live_comfyui)
        fault = Fault("supervisor_kill", None, self.sup.popen.pid if self.sup.popen else None, time.time(),
                      self.s.epoch)
        self.s.epoch += 1
        self.s.faults.append(fault)
        self.s.say(f"fault supervisor_kill: pid {fault.pid} (ComfyUI {sorted(left_running)} left running)")
        await asyncio.to_thread(self.sup.kill)
        try:
            await asyncio.to_thread(self.sup.start, 2, min(RECOVERY_LIMIT_S, max(self.s.left(), 1)))
        except (TimeoutError, RuntimeError) as exc:
            fault.note = f"restart failed: {str(exc).splitlines()[0]}"
            self.s.say(f"  supervisor restart FAILED: {exc}")
            return
        fault.recovered_at = time.time()
        fault.survivors = sorted(left_running & await asyncio.to_thread(self.live_comfyui))
        self.s.say(f"  supervisor and 2 instances serving again after {fault.ttr:.1f} s"
                   + (f"; the old ComfyUI {fault.survivors} still run" if fault.survivors else ""))
        for pid in fault.survivors:  # reported as a violation; not left to slow the rest of the run
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def live_comfyui(self) -> set[int]:
        return {process.pid for process in comfy_processes_under(self.s.base / "out")}

    def kill_comfyui(self) -> None:
        """Every ComfyUI of this run: the recorded pids, then any process still naming the run folder."""
        self.sup.kill_orphans()
        for process in comfy_processes_under(self.s.base / "out"):
            with contextlib.suppress(psutil.Error):  # gone meanwhile
                process.kill()


# ---------------------------------------------------------------------- reconciliation


def restart_events(samples: list[Sample]) -> list[tuple[float, int, str, str]]:
    """(time seen, epoch, instance, reason) for each restart, from the counters' increments."""
    events = []
    last: dict[tuple[int, str], dict[str, int]] = {}
    for sample in samples:
        for name, (_, _, restarts) in sample.instances.items():
            before = last.get((sample.epoch, name), {})
            for reason, count in restarts.items():
                events += [(sample.at, sample.epoch, name, reason)] * (count - before.get(reason, 0))
            last[(sample.epoch, name)] = restarts
    return events


def pid_at(samples: list[Sample], name: str, when: float) -> tuple[int | None, int]:
    """The instance's last known process at ``when``, and the supervisor epoch it belonged to."""
    pid, epoch = None, 0
    for sample in samples:
        if sample.at > when:
            break
        pid, epoch = sample.instances.get(name, ("", None, {}))[1] or pid, sample.epoch
    return pid, epoch


def recovered_at(samples: list[Sample], name: str, after: float, old_pid: int | None) -> float | None:
    for sample in samples:
        state, pid, _ = sample.instances.get(name, ("", None, {}))
        if sample.at >= after and state in SERVING and pid and pid != old_pid:
            return sample.at
    return None


def node_faults(state: RunState) -> list[Fault]:
    """Hang and leak faults as they happened: each hang attempt, each leaky job's instance afterwards."""
    faults = []
    for outcome in state.outcomes:
        job = outcome.final
        if outcome.spec.kind not in ("hang", "leak") or job is None:
            continue
        for attempt in job["attempts"]:
            if attempt["ended_at"] is None:
                continue
            wanted = {"hang": "hang", "leak": "succeeded"}[outcome.spec.kind]
            if attempt["reason"] == wanted:
                name, at = attempt["instance"], attempt["ended_at"]
                pid, epoch = pid_at(state.samples, name, at)
                faults.append(Fault(outcome.spec.kind, name, pid, at, epoch, expected=outcome.spec.kind,
                                    note=f"job {job['id']}"))
    return faults


def match_restarts(state: RunState, faults: list[Fault]) -> list[tuple[float, int, str, str]]:
    """Give each instance fault the restart the supervisor made for it; returns the unclaimed ones."""
    events = restart_events(state.samples)
    used: set[int] = set()
    for fault in sorted(faults, key=lambda f: f.at):
        if fault.instance is None:
            continue
        for number, (seen, epoch, name, reason) in enumerate(events):
            # A restart is counted once the old process is stopped: at or after the fault, within
            # the grace time plus the sampling interval before it for node faults (their time is
            # when the job store closed the attempt, which may come a moment later).
            if (number not in used and name == fault.instance and epoch == fault.epoch
                    and seen >= fault.at - 2.0):
                used.add(number)
                fault.seen = reason
                break
        if fault.recovered_at is None:
            fault.recovered_at = recovered_at(state.samples, fault.instance, fault.at, fault.pid)
    return [event for number, event in enumerate(events) if number not in used]


def explained(attempt: dict[str, Any], injected: list[Fault]) -> bool:
    """An attempt that ended because of a fault this bench injected on its instance.

    Any lost-instance reason counts: which check notices a stopped process first (the probes, or a
    job's silence) is the fault's business, checked on the fault's side.
    """
    if attempt["reason"] in NOT_COUNTED:
        return True
    start, end = attempt["started_at"], attempt["ended_at"] or time.time()
    return attempt["reason"] in LOST_REASONS and any(
        f.instance == attempt["instance"] and start - 1 <= f.at <= end + 1 for f in injected)


def expected_outcome(outcome: Outcome, injected: list[Fault], max_attempts: int) -> tuple[str | None, str]:
    """(violation or None, a short class for the summary) for one spec, from the client's view."""
    spec, job = outcome.spec, outcome.final
    if spec.kind == "unsafe":
        if outcome.status != 422 or job is None:
            return f"unsafe request answered {outcome.status}", "wrong"
        if job["state"] != "rejected" or not job["category"] or job["attempts"]:
            return (f"unsafe job {job['state']} (category {job['category']}, "
                    f"{len(job['attempts'])} attempts)"), "wrong"
        return None, "rejected"
    if outcome.status != 202 or job is None:
        return f"answered {outcome.status}, final state {job and job['state']}", "wrong"
    attempts = [a for a in job["attempts"] if a["reason"] not in NOT_COUNTED]
    lost = [a for a in attempts if a["reason"] != "succeeded"]
    state = job["state"]
    if spec.kind == "hang":
        if state != "failed" or job["images"]:
            return f"hang job {state}", "wrong"
        if len(attempts) != max_attempts or not all(
                a["reason"] == "hang" or explained(a, injected) for a in attempts):
            return "hang job attempts: " + ", ".join(a["reason"] for a in attempts), "wrong"
        return None, "failed as planned"
    if spec.kind == "cancel" and outcome.cancel_status == 202:
        return (None, "cancelled") if state == "cancelled" and not job["images"] else \
            (f"cancel answered 202 but the job ended {state}", "wrong")
    if state == "failed" and len(lost) == max_attempts and all(explained(a, injected) for a in lost):
        return None, "failed: every attempt hit by a fault"
    if state == "cancelled" and spec.kind == "cancel" and outcome.cancel_status == 409:
        return None, "cancelled"
    if state == "rejected" and job["category"] == "nsfw" and attempts \
            and attempts[-1]["reason"] == "unsafe_image":
        return None, "image gate rejected"  # the gate's answer for that picture: deterministic, not retried
    if state != "succeeded":
        return f"{spec.kind} job {state}: {job['error']}", "wrong"
    if len(job["images"]) != 1 or not outcome.image_ok:
        return f"succeeded with {len(job['images'])} image(s), image readable: {outcome.image_ok}", "wrong"
    if spec.key and (outcome.replay is None or outcome.replay[:2] != (202, outcome.job_id)
                     or not outcome.replay[2]):
        return f"idempotent resend answered {outcome.replay}", "wrong"
    return None, "succeeded"


def read_db(base: Path) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Every job row and its attempts' reasons, read-only after the supervisor stopped."""
    db = sqlite3.connect(f"file:{base / 'out' / 'jobs.sqlite3'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        jobs = [dict(row) for row in db.execute("SELECT id, state, request FROM jobs")]
        attempts: dict[str, list[str]] = {}
        for row in db.execute("SELECT job_id, reason FROM attempts ORDER BY job_id, number"):
            attempts.setdefault(row["job_id"], []).append(row["reason"])
    finally:
        db.close()
    return jobs, attempts


def marker(request_json: str) -> int | None:
    request = json.loads(request_json)
    text = request.get("prompt") or json.dumps(request.get("graph", {}), ensure_ascii=False)
    found = MARK.search(text)
    return int(found.group(1)) if found else None


def reconcile(state: RunState, plan: list[Spec], max_attempts: int, leftovers: int,
              final_instances: list[dict[str, Any]]) -> dict[str, Any]:
    """The rules (each broken one is listed in ``violations``):

    - lost: a job id the service answered (202, or 422 for an unsafe prompt) that is missing from
      the database or not final at the end; an answered job with no final state seen by the client;
    - duplicated: more than one job row for one request (every request carries a unique marker in
      its prompt), more than one ``succeeded`` attempt for a job, a result folder with other files
      than ``0.png``, a keyed resend that got another job;
    - outcome per kind: plain, keyed and leak jobs succeed with one readable PNG (or fail only when
      each of their ``max_attempts`` counted attempts was ended by a fault this bench injected on
      that instance); unsafe ones are 422 and ``rejected`` with a category and no attempt; a cancel
      answered 202 ends ``cancelled``, one answered 409 had already ended; a hang job ``failed``
      with ``max_attempts`` counted attempts, each ``hang`` (or an injected fault on its instance);
      ``supervisor_restart`` attempts never count;
    - faults: each injected fault got a restart with its own reason (``crash``, ``unresponsive``,
      ``hang``, ``leak``) on that instance, and the instance served again with a new process
      (the supervisor: both instances); no ComfyUI of the run is left after the stop.
    """
    violations: list[str] = []
    injected = [f for f in state.faults if f.instance is not None]
    faults = state.faults + node_faults(state)
    spare_restarts = match_restarts(state, faults)
    kills = [f for f in state.faults if f.kind == "supervisor_kill"]
    for fault in faults:
        if fault.expected is not None and fault.seen is None and any(
                k.epoch == fault.epoch and k.at > fault.at for k in kills):
            fault.note += " (its restart was pre-empted by the supervisor kill)"
            fault.expected = None
        if fault.recovered_at is None:
            violations.append(f"fault {fault.kind} on {fault.instance or 'supervisor'} at "
                              f"+{fault.at - state.started:.0f}s not followed by recovery "
                              f"{fault.note}".strip())
        if fault.survivors:
            violations.append(f"supervisor restart left the killed one's ComfyUI running: {fault.survivors}")
        if fault.expected is not None and fault.seen != fault.expected:
            violations.append(f"fault {fault.kind} on {fault.instance}: restart reason {fault.seen}, "
                              f"expected {fault.expected}")
    rows, attempts = read_db(state.base)
    by_id = {row["id"]: row for row in rows}
    per_request = Counter(marker(row["request"]) for row in rows)
    lost = duplicated = not_final = 0
    classes: Counter[str] = Counter()
    latencies = []
    for outcome in state.outcomes:
        spec = outcome.spec
        if per_request[spec.index] > 1:
            duplicated += 1
            violations.append(f"request {spec.index} ({spec.kind}) stored {per_request[spec.index]} times")
        if outcome.answer_lost:
            classes["answer lost (not resent)"] += 1
            continue
        if outcome.job_id is None:
            violations.append(f"request {spec.index} ({spec.kind}) answered {outcome.status}, no job")
            continue
        row = by_id.get(outcome.job_id)
        if row is None:
            lost += 1
            violations.append(f"job {outcome.job_id} (request {spec.index}) is not in the database")
            continue
        if row["state"] not in FINAL or outcome.final is None:
            not_final += 1
            violations.append(f"job {outcome.job_id} (request {spec.index}) not final: {row['state']}")
            continue
        if attempts.get(outcome.job_id, []).count("succeeded") > 1:
            duplicated += 1
            violations.append(f"job {outcome.job_id} has several succeeded attempts")
        folder = state.base / "out" / "job-images" / outcome.job_id
        files = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        if files != (["0.png"] if row["state"] == "succeeded" else []):
            if len(files) > 1:
                duplicated += 1
            violations.append(f"job {outcome.job_id} ({row['state']}) has result files {files}")
        if spec.key and outcome.replay and outcome.replay[1] not in (None, outcome.job_id):
            duplicated += 1
        problem, kind = expected_outcome(outcome, injected, max_attempts)
        classes[f"{spec.kind}: {kind}"] += 1
        if problem:
            violations.append(f"request {spec.index} ({spec.kind}, job {outcome.job_id}): {problem}")
        if outcome.final["state"] == "succeeded" and spec.kind in ("normal", "keyed", "leak", "cancel"):
            latencies.append(outcome.final["finished_at"] - outcome.final["created_at"])
    stray = [row["id"] for row in rows if marker(row["request"]) is None]
    if stray:
        violations.append(f"{len(stray)} job(s) in the database belong to no request: {stray[:5]}")
    keyed = [o for o in state.outcomes if o.conflict_status is not None]
    if keyed and keyed[0].conflict_status != 409:
        violations.append(f"same key with another body answered {keyed[0].conflict_status}, expected 409")
    serving = [i["name"] for i in final_instances if i["state"] in SERVING]
    if len(serving) < state.settings["supervisor"]["instances"]:
        violations.append(f"instances serving at the end: {serving or 'none'}")
    if leftovers:
        violations.append(f"{leftovers} ComfyUI process(es) left after the stop")
    submitted = len(state.outcomes)
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in FAULT_KINDS:
        these = [f for f in faults if f.kind == kind]
        times = [f.ttr for f in these if f.ttr is not None]
        by_kind[kind] = {"count": len(these), "recovered": len(times),
                         "ttr_median_s": round(statistics.median(times), 1) if times else None,
                         "ttr_max_s": round(max(times), 1) if times else None}
    incomplete = []
    if submitted < len(plan):
        incomplete.append(f"{len(plan) - submitted} job(s) not submitted before the deadline")
    short = [k for k in FAULT_KINDS if by_kind[k]["count"] < state.args.faults_per_kind]
    if short:
        counted = ", ".join(f"{k} {by_kind[k]['count']}" for k in short)
        incomplete.append(f"fewer faults than asked: {counted}")
    finals = Counter(o.final["state"] for o in state.outcomes if o.final)
    return {
        "seed": state.args.seed, "jobs_planned": len(plan), "jobs_submitted": submitted,
        "clients": state.args.clients, "minutes": round((time.time() - state.started) / 60, 1),
        "accepted": sum(o.status == 202 for o in state.outcomes),
        "final_states": dict(finals), "outcome_classes": dict(sorted(classes.items())),
        "lost": lost, "duplicated": duplicated, "not_final": not_final,
        "faults": by_kind, "other_restarts": Counter(reason for *_, reason in spare_restarts),
        "latency_s": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95),
                      "jobs": len(latencies)},
        "leftover_comfyui": leftovers, "violations": violations, "incomplete": incomplete,
        "run_folder": str(state.base),
    }


def _percentile(values: list[float], percent: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(percent / 100 * len(ordered)) - 1)], 2)


def table(report: dict[str, Any]) -> str:
    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    lines = [f"chaos run: seed {report['seed']}, {report['jobs_submitted']}/{report['jobs_planned']} jobs "
             f"from {report['clients']} clients, {report['minutes']} min",
             "", "| jobs | count |", "|---|---|"]
    lines.append(f"| accepted (202) | {report['accepted']} |")
    lines += [f"| final {state} | {count} |" for state, count in sorted(report["final_states"].items())]
    lines += [f"| {name} | {count} |" for name, count in report["outcome_classes"].items()]
    lines += ["", "| fault | injected | recovered | time to recover (median) | (max) |",
              "|---|---|---|---|---|"]
    for kind, row in report["faults"].items():
        lines.append(f"| {kind} | {row['count']} | {row['recovered']} | {seconds(row['ttr_median_s'])} | "
                     f"{seconds(row['ttr_max_s'])} |")
    latency = report["latency_s"]
    other = ", ".join(f"{k} {v}" for k, v in sorted(report["other_restarts"].items())) or "none"
    lines += ["", "| result | value |", "|---|---|",
              f"| lost | {report['lost']} |", f"| duplicated | {report['duplicated']} |",
              f"| not final | {report['not_final']} |", f"| rule violations | {len(report['violations'])} |",
              f"| latency of succeeded jobs p50 / p95 (submit → final, {latency['jobs']} jobs) | "
              f"{seconds(latency['p50'])} / {seconds(latency['p95'])} |",
              f"| restarts not caused by an injected fault | {other} |",
              f"| ComfyUI left after stop | {report['leftover_comfyui']} |"]
    lines += [f"VIOLATION: {v}" for v in report["violations"]]
    lines += [f"INCOMPLETE: {v}" for v in report["incomplete"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------- main


def supervisor_for(base: Path, settings: dict[str, Any]) -> SupervisorProcess:
    """The tests' launcher, with this run's config; the fault nodes load as extra custom nodes."""
    conf = settings["supervisor"]
    sup = SupervisorProcess(base, instances=conf["instances"], jobs=conf["jobs"], health=conf["health"])
    config = yaml.safe_load(sup.config_path.read_text())
    config["model_folders"] = {"custom_nodes": str(FAULT_NODES_DIR)}
    sup.config_path.write_text(yaml.safe_dump(config))
    return sup


async def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    settings = yaml.safe_load(SETTINGS_FILE.read_text())
    max_attempts = settings["supervisor"]["jobs"]["max_attempts"]
    plan = build_plan(settings, args.jobs, args.faults_per_kind, max_attempts, random.Random(args.seed))
    schedule = fault_schedule(args.faults_per_kind, args.jobs, random.Random(f"{args.seed}-schedule"))
    state = RunState(args, settings, base)
    sup = supervisor_for(base, settings)
    state.say(f"starting the supervisor (2 CPU instances, warm-up) in {base}")
    connector = aiohttp.TCPConnector(force_close=True, limit=64)  # no stale keep-alive across a restart
    timeout = aiohttp.ClientTimeout(total=30, connect=5)
    final_instances: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        chaos = Chaos(state, sup, session)
        try:
            await asyncio.to_thread(sup.start, settings["supervisor"]["instances"], RECOVERY_LIMIT_S)
            state.started = time.time()  # the budget counts from a serving pool
            faults = " ".join(f"{kind} after job {mark}" for mark, kind in schedule)
            state.say(f"serving on {sup.url}; {len(plan)} jobs; faults: {faults}; and the hang/leak jobs")
            queue: asyncio.Queue[Spec] = asyncio.Queue()
            for spec in plan:
                queue.put_nowait(spec)
            watcher = asyncio.create_task(chaos.monitor())
            injector = asyncio.create_task(chaos.inject(schedule))
            clients = [asyncio.create_task(chaos.client(queue)) for _ in range(args.clients)]
            progress = asyncio.create_task(report_progress(state))
            await asyncio.gather(*clients)
            state.say(f"clients done: {len(state.outcomes)} submitted")
            await injector
            final_instances = await chaos.settle(settings["supervisor"]["instances"])
            await watcher
            progress.cancel()
            leftovers = await asyncio.to_thread(stop_and_count, sup, base)
        finally:
            for pid in chaos.stopped_pids:  # a stopped process cannot act on the SIGTERM of the stop
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.to_thread(sup.stop)  # after a failure; otherwise a no-op
            await asyncio.to_thread(chaos.kill_comfyui)
    state.say("supervisor stopped; reconciling")
    return reconcile(state, plan, max_attempts, leftovers, final_instances)


def stop_and_count(sup: SupervisorProcess, base: Path) -> int:
    """SIGTERM the supervisor (it drains and stops its instances); ComfyUI of the run still alive after."""
    assert sup.popen is not None
    sup.popen.send_signal(signal.SIGTERM)
    sup.popen.wait(timeout=120)
    return len(comfy_processes_under(base / "out"))


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
                        help="SIGKILLs, SIGSTOPs and supervisor kills each, leak jobs; hang jobs enough for "
                             "this many hang attempts (default 5)")
    parser.add_argument("--max-minutes", type=float, default=45,
                        help="the whole run's budget once the pool serves; faults stop at 75%% of it "
                             "(default 45)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    parser.add_argument("--keep", action="store_true", help="keep the run folder")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.clients < 1 or args.faults_per_kind < 0 or args.max_minutes <= 0:
        parser.error("--jobs and --clients must be >= 1, --faults-per-kind >= 0, --max-minutes > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="cak-chaos-"))
    try:
        report = asyncio.run(run(args, base))
    except (TimeoutError, RuntimeError) as exc:
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
