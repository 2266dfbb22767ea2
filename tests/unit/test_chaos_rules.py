"""The chaos soak's plan and reconciliation rules (tests/support/chaos_rules.py), on made-up records."""

from __future__ import annotations

import random
from collections import Counter

import yaml
from cute_animal_kids.text_safety import check_text

from cak.install_state import REPO_ROOT
from tests.support import chaos_rules as chaos

SETTINGS = yaml.safe_load((REPO_ROOT / "bench" / "chaos.yaml").read_text())


def _plan(seed: int = 3, jobs: int = 40, faults: int = 5) -> list:
    return chaos.build_plan(SETTINGS, jobs, faults, 3, random.Random(seed))


def test_plan_is_reproducible_and_has_every_kind():
    first, again = _plan(), _plan()
    assert [(s.kind, s.body, s.key) for s in first] == [(s.kind, s.body, s.key) for s in again]
    kinds = [s.kind for s in first]
    assert kinds.count("hang") == 2 and kinds.count("leak") == 5  # 2 hang jobs x 3 attempts >= 5
    assert {"unsafe", "cancel", "keyed", "normal"} <= set(kinds)
    assert sum(s.conflict for s in first) == 1
    assert [s.kind for s in _plan(seed=4)] != kinds


def test_fault_schedule_is_seeded_and_spread_over_the_jobs():
    schedule = chaos.fault_schedule(5, 300, random.Random("7-schedule"))
    assert schedule == chaos.fault_schedule(5, 300, random.Random("7-schedule"))
    assert sorted(Counter(kind for _, kind in schedule).values()) == [5, 5, 5]
    marks = [mark for mark, _ in schedule]
    assert marks == sorted(marks) and 0 <= marks[0] and marks[-1] < 300


def test_two_hosts_add_host_kills_and_stops_to_the_schedule():
    schedule = chaos.fault_schedule(2, 100, random.Random("7-schedule"), hosts=2)
    assert Counter(kind for _, kind in schedule) == {kind: 2 for kind in
                                                     ("sigkill", "sigstop", "supervisor_kill", "host_kill", "host_stop")}
    assert chaos.fault_kinds(1) == chaos.FAULT_KINDS


def test_a_host_fault_explains_host_lost_attempts_of_that_host_only():
    frozen = chaos.Fault("host_stop", None, 99, 15.0, host_instances=["host-a-cpu-1"])
    assert chaos.explained(_attempt("host_lost", instance="host-a-cpu-1"), [frozen])
    assert not chaos.explained(_attempt("host_lost", instance="host-b-cpu-1"), [frozen])
    assert not chaos.explained(_attempt("host_lost", instance="host-a-cpu-1", start=30.0, end=40.0), [frozen])


def test_pid_at_reads_only_the_samples_of_the_instance_s_own_host():
    samples = [chaos.Sample(1.0, 0, {"host-a-cpu-1": ("ready", 10, {})}),
               chaos.Sample(1.5, 1, {"host-b-cpu-1": ("ready", 20, {})})]
    assert chaos.pid_at(samples, "host-a-cpu-1", 2.0) == (10, 0)
    assert chaos.pid_at(samples, "host-b-cpu-1", 2.0) == (20, 1)


def test_every_request_carries_its_own_marker():
    for spec in _plan():
        text = spec.body.get("prompt") or spec.body["graph"]["5"]["inputs"]["text"]
        assert chaos.MARK.search(text).group(1) == str(spec.index)
        if "graph" in spec.body:
            assert spec.body["graph"]["6"]["inputs"]["text"] == "blurry"


def test_every_planned_prompt_but_the_unsafe_ones_passes_the_text_gate():
    """The marker and the safe prompts must not trip the gate (it refused "[r18]" once: an adult rating)."""
    plan = _plan(jobs=300)
    texts = {spec.kind: [] for spec in plan}
    for spec in plan:
        texts[spec.kind].append(spec.body.get("prompt") or spec.body["graph"]["5"]["inputs"]["text"])
    refused = [(kind, text) for kind, batch in texts.items() if kind != "unsafe"
               for text in batch if not check_text(text).safe]
    assert refused == []
    assert all(not check_text(text).safe for text in texts["unsafe"])


def test_restart_events_come_from_counter_increments_per_supervisor():
    samples = [
        chaos.Sample(1.0, 0, {"a": ("ready", 10, {})}),
        chaos.Sample(2.0, 0, {"a": ("starting", 11, {"crash": 1})}),
        chaos.Sample(3.0, 0, {"a": ("ready", 11, {"crash": 1})}),
        chaos.Sample(9.0, 1, {"a": ("ready", 20, {"hang": 1})}),  # a new supervisor counts from zero
    ]
    assert chaos.restart_events(samples) == [(2.0, 0, "a", "crash"), (9.0, 1, "a", "hang")]
    assert chaos.recovered_at(samples, "a", 1.5, 10) == 3.0
    assert chaos.pid_at(samples, "a", 2.5) == (11, 0)


def _attempt(reason: str, instance: str = "a", start: float = 10.0, end: float = 20.0) -> dict:
    return {"number": 1, "instance": instance, "started_at": start, "ended_at": end, "reason": reason}


def test_a_lost_attempt_is_explained_only_by_a_fault_on_its_instance_during_it():
    kill = chaos.Fault("sigkill", "a", 10, 15.0, expected="crash")
    assert chaos.explained(_attempt("crash"), [kill])
    assert chaos.explained(_attempt("hang"), [kill])  # a stopped process may be noticed as a hang
    assert not chaos.explained(_attempt("crash", instance="b"), [kill])
    assert not chaos.explained(_attempt("crash", start=30.0, end=40.0), [kill])
    assert not chaos.explained(_attempt("node_error"), [kill])
    assert chaos.explained(_attempt("supervisor_restart"), [])
    assert chaos.explained(_attempt("not_started"), [])  # a prefetched prompt given back unrun


def _outcome(kind: str, state: str, attempts: list[dict], **extra) -> chaos.Outcome:
    spec = chaos.Spec(0, kind, {})
    job = {"id": "j", "state": state, "attempts": attempts, "error": None,
           "images": ["/i/0"] if state == "succeeded" else [], "category": extra.pop("category", None)}
    return chaos.Outcome(spec, status=extra.pop("status", 202), job_id="j", final=job, image_ok=True, **extra)


def test_hang_job_must_fail_after_every_attempt_hung():
    hung = [_attempt("hang"), _attempt("supervisor_restart"), _attempt("hang"), _attempt("hang")]
    assert chaos.expected_outcome(_outcome("hang", "failed", hung), [], 3) == (None, "failed as planned")
    problem, _ = chaos.expected_outcome(_outcome("hang", "failed", hung[:3]), [], 3)
    assert problem and "attempts" in problem
    problem, _ = chaos.expected_outcome(_outcome("hang", "succeeded", [_attempt("succeeded")]), [], 3)
    assert problem


def test_plain_job_outcomes():
    ok = _outcome("normal", "succeeded", [_attempt("crash"), _attempt("succeeded")])
    assert chaos.expected_outcome(ok, [], 3) == (None, "succeeded")
    unexplained = [_attempt("crash")] * 3
    assert chaos.expected_outcome(_outcome("normal", "failed", unexplained), [], 3)[0]
    kill = chaos.Fault("sigkill", "a", 10, 15.0, expected="crash")
    assert chaos.expected_outcome(_outcome("normal", "failed", unexplained), [kill], 3)[0] is None
    gate = _outcome("normal", "rejected", [_attempt("unsafe_image")], category="nsfw")
    assert chaos.expected_outcome(gate, [], 3) == (None, "image gate rejected")
    cancelled = _outcome("cancel", "succeeded", [_attempt("succeeded")], cancel_status=202)
    assert chaos.expected_outcome(cancelled, [], 3)[0]
    keyed = _outcome("keyed", "succeeded", [_attempt("succeeded")], replay=(202, "other", True))
    keyed.spec.key = "k"
    assert chaos.expected_outcome(keyed, [], 3)[0]


def _leak_then_hang(events_in_one_sample: dict[str, int]) -> tuple[chaos.RunState, list[chaos.Fault]]:
    """A leak job ends on 'a' (pid 10) and a prefetched hang job already running there hangs."""
    samples = [chaos.Sample(1.0, 0, {"a": ("ready", 10, {})}),
               chaos.Sample(30.0, 0, {"a": ("ready", 11, events_in_one_sample)})]
    state = chaos.RunState(args=None, settings={}, base=None, started=0.0, samples=samples)
    leak = chaos.Fault("leak", "a", 10, 12.0, expected="leak")
    hang = chaos.Fault("hang", "a", 10, 25.0, expected="hang")
    chaos.match_restarts(state, [leak, hang])
    return state, [leak, hang]


def test_two_restarts_in_one_sample_go_to_the_faults_of_their_own_reasons():
    _, (leak, hang) = _leak_then_hang({"hang": 1, "leak": 1})
    assert (leak.seen, hang.seen) == ("leak", "hang")


def test_a_leak_restart_pre_empted_by_a_later_hard_fault_of_the_same_process_is_no_violation():
    state, faults = _leak_then_hang({"hang": 1})
    assert [f.seen for f in faults] == [None, "hang"]
    assert chaos.preempted(faults[0], faults, []) and not chaos.preempted(faults[1], faults, [])
    other_process = chaos.Fault("hang", "a", 11, 25.0, expected="hang", seen="hang")
    assert not chaos.preempted(faults[0], [faults[0], other_process], [])
