"""The state names of jobs and of instances: the one place they are written.

The code, ``/metrics`` (label ``state``), the API and dashboard, the CLI, the bench and the tests
all use these members; ``deploy/prometheus`` and ``deploy/grafana`` match the same lower-case
values (a unit test parses them against these enums). Standard library only, so the CLI can import
it without the service.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.REJECTED, JobState.CANCELLED})


class InstanceState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    DRAINING = "draining"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


SERVING_STATES = frozenset({InstanceState.READY, InstanceState.BUSY})


class AttemptReason(StrEnum):
    """How an attempt ended, beyond the final states and the pool's lost-instance reasons."""

    SUPERVISOR_RESTART = "supervisor_restart"  # this host restarted under it: not counted
    SUPERVISOR_SHUTDOWN = "supervisor_shutdown"  # drained at shutdown: not counted
    NOT_STARTED = "not_started"  # a prefetched prompt withdrawn before it ran: not counted
    HOST_LOST = "host_lost"  # its host stopped renewing the lease (dead, cut off, paused): counted
