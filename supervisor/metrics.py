"""Prometheus metrics of the job service and its instances, in a registry of their own.

Job counters and histograms are updated as things happen; the pool's state (instances, restarts,
memory) is read from ``Pool.snapshot()`` at scrape time, so the numbers never drift from the pool.
Job counts by state come from the job store, refreshed by the ``/metrics`` handler before it
renders (the store is async, a collector is not).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .states import InstanceState, JobState

DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
GUARD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)


class ServiceMetrics:
    def __init__(self, snapshot: Callable[[], Iterable[Any]]) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Gauge("cak_jobs", "Jobs in the store, by state", ["state"], registry=self.registry)
        self.queue_depth = Gauge("cak_queue_depth", "Jobs waiting for an instance", registry=self.registry)
        self.job_duration = Histogram(
            "cak_job_duration_seconds", "Time from submission to a final state, by outcome",
            ["outcome"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.attempts = Counter("cak_job_attempts", "Attempts ended, by reason", ["reason"],
                                registry=self.registry)
        self.safety_rejections = Counter(
            "cak_safety_rejections",
            "Requests refused by a safety check, by stage (lexicon and guard before the queue, the "
            "workflow's prompt or image gate) and category", ["stage", "category"], registry=self.registry)
        self.guard_latency = Histogram(
            "cak_guard_latency_seconds", "Time the guard stage took per text it judged (cache hits excluded)",
            buckets=GUARD_BUCKETS, registry=self.registry)
        self.webhook_deliveries = Counter(
            "cak_webhook_deliveries", "Webhook tries, by outcome (delivered, retry, gone, failed)",
            ["outcome"], registry=self.registry)
        self.registry.register(_PoolCollector(snapshot))

    def set_job_counts(self, counts: dict[str, int]) -> None:
        for state in JobState:
            self.jobs.labels(state).set(counts.get(state, 0))
        self.queue_depth.set(counts.get(JobState.QUEUED, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PoolCollector(Collector):
    """Instance gauges and restart counters straight from the pool's snapshot."""

    def __init__(self, snapshot: Callable[[], Iterable[Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Any]:
        state = GaugeMetricFamily("cak_instance_state", "1 for the state each instance is in",
                                  labels=["instance", "state"])
        rss = GaugeMetricFamily("cak_instance_rss_bytes", "Resident memory of the instance's process tree",
                                labels=["instance"])
        device = GaugeMetricFamily("cak_instance_device_memory_bytes", "Device memory the instance holds",
                                   labels=["instance"])
        jobs_run = CounterMetricFamily("cak_instance_jobs", "Jobs the instance has run", labels=["instance"])
        restarts = CounterMetricFamily("cak_instance_restarts", "Restarts of the instance, by reason",
                                       labels=["instance", "reason"])
        for snap in self.snapshot():
            current = snap.state
            for name in InstanceState:  # every state, 1 for the current one: alerts match these names
                state.add_metric([snap.name, name], 1.0 if name == current else 0.0)
            if snap.rss_mb is not None:
                rss.add_metric([snap.name], snap.rss_mb * 1024 * 1024)
            if snap.device_mem_mb is not None:
                device.add_metric([snap.name], snap.device_mem_mb * 1024 * 1024)
            jobs_run.add_metric([snap.name], snap.jobs_run)
            for reason, count in sorted(snap.restarts.items()):
                restarts.add_metric([snap.name, reason], count)
        return [state, rss, device, jobs_run, restarts]
