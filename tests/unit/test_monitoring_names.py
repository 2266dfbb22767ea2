"""The shipped alerts and dashboard name the states ``/metrics`` writes, and the alerts fire.

State names come from ``supervisor/states.py``; every ``state``/``outcome`` matcher in
``deploy/prometheus`` and ``deploy/grafana`` must be one of them (a rule matching ``FAILED`` when the
metric says ``failed`` can never fire). Each alert is then evaluated on a scrape of the real
``ServiceMetrics`` (``tests/integration/test_supervisor_pool.py`` does it on a real pool too).
"""

from __future__ import annotations

import json
import re

import pytest

from cak.install_state import REPO_ROOT
from supervisor.instance import InstanceSnapshot
from supervisor.metrics import ServiceMetrics
from supervisor.states import InstanceState, JobState
from tests.support.promql import alert_rules, evaluate, scrape_samples

RULES = REPO_ROOT / "deploy" / "prometheus" / "cute-animal-kids.rules.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "cute-animal-kids.json"
SELECTOR = re.compile(r"\b(cak_[a-z_]+)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
# metric → label → the enum its values come from
ENUM_LABELS = {
    "cak_instance_state": {"state": InstanceState},
    "cak_jobs": {"state": JobState},
    "cak_job_duration_seconds_count": {"outcome": JobState},
    "cak_job_duration_seconds_bucket": {"outcome": JobState},
    "cak_job_duration_seconds_sum": {"outcome": JobState},
}


def dashboard_exprs() -> list[str]:
    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query", "definition") and isinstance(value, str):
                    found.append(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(DASHBOARD.read_text()))
    return found


def all_exprs() -> list[str]:
    return [*alert_rules(RULES).values(), *dashboard_exprs()]


def test_every_state_matcher_names_an_enum_value():
    checked = 0
    for expr in all_exprs():
        for metric, body in SELECTOR.findall(expr):
            for label, _op, value in MATCHER.findall(body):
                enum = ENUM_LABELS.get(metric, {}).get(label)
                if enum is None:
                    continue
                for name in value.split("|"):
                    assert name in set(enum), f"{metric}{{{label}}}: {name!r} is no {enum.__name__}: {expr}"
                    checked += 1
    assert checked >= 4  # the serving/failed panels and alerts, running jobs, failed outcomes


def _snapshot(name: str, state: InstanceState) -> InstanceSnapshot:
    return InstanceSnapshot(name=name, state=state, url="http://127.0.0.1:1", pid=None, rss_mb=None,
                            device_mem_mb=None, jobs_run=0, restarts={"crash": 6},
                            last_restart_reason="crash", started_at=None, idle_frees=0, drained=False)


def _scrape(*snapshots: InstanceSnapshot) -> list:
    metrics = ServiceMetrics(lambda: snapshots)
    metrics.set_job_counts({JobState.QUEUED: 2})
    return scrape_samples(metrics.render().decode())


def _instances(vector) -> set[str]:
    return {dict(labels).get("instance") for labels in vector}


@pytest.mark.parametrize("alert", sorted(alert_rules(RULES)))
def test_each_alert_evaluates_on_a_scrape(alert):
    samples = _scrape(_snapshot("a", InstanceState.READY), _snapshot("bad", InstanceState.FAILED))
    evaluate(alert_rules(RULES)[alert], samples, target={"job": "cute-animal-kids"})  # no syntax left out


def test_failed_and_no_serving_alerts_fire_on_the_states_metrics_writes():
    rules = alert_rules(RULES)
    one_failed = _scrape(_snapshot("a", InstanceState.BUSY), _snapshot("bad", InstanceState.FAILED))
    assert _instances(evaluate(rules["CakInstanceFailed"], one_failed)) == {"bad"}
    assert evaluate(rules["CakNoInstanceServing"], one_failed) == {}
    none_serving = _scrape(_snapshot("a", InstanceState.STARTING), _snapshot("bad", InstanceState.FAILED))
    assert len(evaluate(rules["CakNoInstanceServing"], none_serving)) == 1
    assert evaluate(rules["CakServiceDown"], one_failed, target={"job": "cute-animal-kids"}) == {}
    assert evaluate(rules["CakQueueBacklog"], one_failed) == {}  # 2 queued is no backlog
