"""The chaos soak's plan and reconciliation rules (pure: no process is started).

``bench/chaos.py`` runs the soak and hands its records to ``reconcile``; the unit tests check these
rules on made-up records (tests/unit/test_chaos_rules.py). Each rule broken is one ``violations`` line.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sqlite3
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.rows import dict_row

from supervisor.job_store import NOT_COUNTED_REASONS
from supervisor.states import SERVING_STATES, TERMINAL_STATES
from tests.support.supervisor_fixtures import fault_graph

REPO = Path(__file__).resolve().parents[2]
WORKFLOW_MANIFEST = REPO / "workflows" / "cute_animal_cpu.yaml"

FINAL = TERMINAL_STATES
SERVING = SERVING_STATES
NOT_COUNTED = frozenset(NOT_COUNTED_REASONS)  # with not_started: a prefetched prompt given back unrun
LOST_REASONS = frozenset({"crash", "unresponsive", "hang", "ServerGone", "ServerUnreachable", "RunTimeout",
                          "host_lost"})
FAULT_KINDS = ("sigkill", "sigstop", "supervisor_kill", "hang", "leak")
GRACEFUL_REASONS = frozenset({"leak"})  # restarts that wait for the running job to end
# Two-host mode only (--hosts 2): a whole host SIGKILLed (supervisor and ComfyUI, then started again),
# a whole host SIGSTOPped past its lease (then SIGCONT). Its jobs go to the other host as host_lost.
HOST_FAULT_KINDS = ("host_kill", "host_stop")
SUPERVISOR_FAULTS = frozenset({"supervisor_kill", *HOST_FAULT_KINDS})
MARK = re.compile(r"\[req (\d+)\]")  # not "[rN]": the text gate refuses "r18" (an adult rating)
RECOVERY_LIMIT_S = 300.0  # one fault's recovery; past it the fault counts as unrecovered


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
    host_instances: list[str] = field(default_factory=list)  # a supervisor fault hits all of these

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
        marker = f"[req {index}]"
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


def fault_kinds(hosts: int) -> tuple[str, ...]:
    """The fault kinds a run injects: the host faults only when there is another host to take over."""
    return FAULT_KINDS + (HOST_FAULT_KINDS if hosts > 1 else ())


def fault_schedule(faults_per_kind: int, jobs: int, rng: random.Random, hosts: int = 1) -> list[tuple[int, str]]:
    """The signal and supervisor faults in seeded order, each with the number of submitted jobs it
    waits for: seeded points spread over the whole job stream, however fast it flows (node faults
    come with their jobs)."""
    signalled = [kind for kind in fault_kinds(hosts) if kind not in ("hang", "leak")]
    kinds = [kind for kind in signalled for _ in range(faults_per_kind)]
    rng.shuffle(kinds)
    marks = sorted(rng.randrange(jobs) for _ in kinds)
    return list(zip(marks, kinds))


# ---------------------------------------------------------------------- the run


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
    """The instance's last known process at ``when``, and the supervisor epoch it belonged to
    (with several hosts, only the samples of ``name``'s own host count)."""
    pid, epoch = None, 0
    for sample in samples:
        if sample.at > when:
            break
        if name in sample.instances:
            pid, epoch = sample.instances[name][1] or pid, sample.epoch
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
    # A restart is counted once the old process is stopped: at or after the fault, within the
    # grace time plus the sampling interval before it for node faults (their time is when the
    # job store closed the attempt, which may come a moment later). Restarts of the faults' own
    # reasons are given first: two seen in one sample have no order.
    ordered = sorted((f for f in faults if f.instance is not None), key=lambda f: f.at)
    for own_reason_only in (True, False):
        for fault in ordered:
            if fault.seen is not None:
                continue
            for number, (seen, epoch, name, reason) in enumerate(events):
                if (number not in used and name == fault.instance and epoch == fault.epoch
                        and seen >= fault.at - 2.0 and (reason == fault.expected or not own_reason_only)):
                    used.add(number)
                    fault.seen = reason
                    break
    for fault in ordered:
        if fault.recovered_at is None:
            fault.recovered_at = recovered_at(state.samples, fault.instance, fault.at, fault.pid)
    return [event for number, event in enumerate(events) if number not in used]


def preempted(fault: Fault, faults: list[Fault], kills: list[Fault]) -> str | None:
    """What made the restart ``fault`` expected unnecessary, when it got none."""
    if fault.expected is None or fault.seen is not None:
        return None
    if any(k.epoch == fault.epoch and k.at > fault.at for k in kills):
        return "the supervisor kill"
    if fault.expected in GRACEFUL_REASONS and any(
            other.instance == fault.instance and other.epoch == fault.epoch and other.pid == fault.pid
            and other.at > fault.at and other.seen is not None for other in faults):
        # A leak restarts after the running job; a prefetched job already running there hung,
        # and that hard restart of the same process ended the leak with it.
        return "a later fault of the same process"
    return None


def explained(attempt: dict[str, Any], injected: list[Fault]) -> bool:
    """An attempt that ended because of a fault this bench injected on its instance.

    Any lost-instance reason counts: which check notices a stopped process first (the probes, or a
    job's silence) is the fault's business, checked on the fault's side.
    """
    if attempt["reason"] in NOT_COUNTED:
        return True
    start, end = attempt["started_at"], attempt["ended_at"] or time.time()
    return attempt["reason"] in LOST_REASONS and any(
        attempt["instance"] in (f.instance, *f.host_instances) and start - 1 <= f.at <= end + 1 for f in injected)


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


def marker(request_json: str | dict[str, Any]) -> int | None:
    request = json.loads(request_json) if isinstance(request_json, str) else request_json
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
      ``hang``, ``leak``) on that instance, unless a supervisor kill, or for a leak a later fault
      of the same process, made it unnecessary; the instance served again with a new process
      (the supervisor: both instances); no ComfyUI of the run is left after the stop.
    """
    violations: list[str] = []
    hosts = getattr(state.args, "hosts", 1)
    injected = [f for f in state.faults if f.instance is not None or f.host_instances]
    faults = state.faults + node_faults(state)
    spare_restarts = match_restarts(state, faults)
    kills = [f for f in state.faults if f.kind in SUPERVISOR_FAULTS]
    for fault in faults:
        why = preempted(fault, faults, kills)
        if why:
            fault.note += f" (its restart was pre-empted by {why})"
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
    rows, attempts, results = read_db(state)
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
        files = results.get(outcome.job_id, [])
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
    if len(serving) < state.settings["supervisor"]["instances"] * hosts:
        violations.append(f"instances serving at the end: {serving or 'none'}")
    if leftovers:
        violations.append(f"{leftovers} ComfyUI process(es) left after the stop")
    submitted = len(state.outcomes)
    by_kind: dict[str, dict[str, Any]] = {}
    kinds = fault_kinds(hosts)
    for kind in kinds:
        these = [f for f in faults if f.kind == kind]
        times = [f.ttr for f in these if f.ttr is not None]
        by_kind[kind] = {"count": len(these), "recovered": len(times),
                         "ttr_median_s": round(statistics.median(times), 1) if times else None,
                         "ttr_max_s": round(max(times), 1) if times else None}
    incomplete = []
    if submitted < len(plan):
        incomplete.append(f"{len(plan) - submitted} job(s) not submitted before the deadline")
    short = [k for k in kinds if by_kind[k]["count"] < state.args.faults_per_kind]
    if short:
        counted = ", ".join(f"{k} {by_kind[k]['count']}" for k in short)
        incomplete.append(f"fewer faults than asked: {counted}")
    finals = Counter(o.final["state"] for o in state.outcomes if o.final)
    return {
        "seed": state.args.seed, "hosts": hosts, "jobs_planned": len(plan), "jobs_submitted": submitted,
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

    lines = [f"chaos run: seed {report['seed']}, {report['hosts']} host(s), "
             f"{report['jobs_submitted']}/{report['jobs_planned']} jobs "
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


def read_db(state: RunState) -> tuple[list[dict[str, Any]], dict[str, list[str]], dict[str, list[str]]]:
    """Every job row, its attempts' reasons and its stored result names, read after the supervisors
    stopped: the SQLite file and the result folders, or the shared PostgreSQL (``--database-url``)."""
    url = getattr(state.args, "database_url", None)
    if url:
        return _read_postgres(url)
    base = state.base
    db = sqlite3.connect(f"file:{base / 'out' / 'jobs.sqlite3'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        jobs = [dict(row) for row in db.execute("SELECT id, state, request FROM jobs")]
        attempts: dict[str, list[str]] = {}
        for row in db.execute("SELECT job_id, reason FROM attempts ORDER BY job_id, number"):
            attempts.setdefault(row["job_id"], []).append(row["reason"])
    finally:
        db.close()
    results = {}
    for job in jobs:
        folder = base / "out" / "job-images" / job["id"]
        results[job["id"]] = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    return jobs, attempts, results


def _read_postgres(url: str) -> tuple[list[dict[str, Any]], dict[str, list[str]], dict[str, list[str]]]:
    """The same records from the shared store, where the images are rows (``job_images``)."""
    with psycopg.connect(url, row_factory=dict_row) as db:
        jobs = db.execute("SELECT id, state, request FROM jobs").fetchall()
        attempts: dict[str, list[str]] = {}
        for row in db.execute("SELECT job_id, reason FROM attempts ORDER BY job_id, number"):
            attempts.setdefault(row["job_id"], []).append(row["reason"])
        results: dict[str, list[str]] = {}
        for row in db.execute("SELECT job_id, name FROM job_images ORDER BY job_id, name"):
            results.setdefault(row["job_id"], []).append(row["name"])
    return jobs, attempts, results
