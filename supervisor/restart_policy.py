"""When to restart an instance, and when to give up on it: back-off and a sliding window.

Pure logic with the clock passed in, so it is unit-tested without processes or sleeping. Only fault
restarts count (an instance that keeps crashing must not take the machine with it); planned ones
(recycle, request) restart at once and never lead to FAILED.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .settings import RestartSettings

FAULT_REASONS = frozenset({"crash", "unresponsive", "hang", "leak", "warmup"})
PLANNED_REASONS = frozenset({"recycle", "request"})
REASONS = FAULT_REASONS | PLANNED_REASONS


@dataclass(frozen=True)
class RestartDecision:
    """``give_up``: too many faults in the window (the instance becomes FAILED); else wait ``delay_s``."""

    give_up: bool
    delay_s: float
    faults_in_window: int


class RestartPolicy:
    """Counts fault restarts in the last ``window_s`` seconds and spaces them out exponentially."""

    def __init__(self, config: RestartSettings) -> None:
        self.config = config
        self._faults: deque[float] = deque()

    def decide(self, reason: str, now: float) -> RestartDecision:
        """Record a restart for ``reason`` at ``now`` (monotonic seconds) and say what to do."""
        if reason not in REASONS:
            raise ValueError(f"unknown restart reason {reason!r}")
        self._forget_before(now - self.config.window_s)
        if reason in PLANNED_REASONS:
            return RestartDecision(give_up=False, delay_s=0.0, faults_in_window=len(self._faults))
        self._faults.append(now)
        count = len(self._faults)
        if count > self.config.max_restarts:
            return RestartDecision(give_up=True, delay_s=0.0, faults_in_window=count)
        return RestartDecision(give_up=False, delay_s=self.delay_for(count), faults_in_window=count)

    def delay_for(self, count: int) -> float:
        """The first fault in the window restarts at once; then initial, initial*factor, … up to max."""
        if count <= 1:
            return 0.0
        config = self.config
        return min(config.backoff_max_s, config.backoff_initial_s * config.backoff_factor ** (count - 2))

    def reset(self) -> None:
        """Forget past faults (an operator asked for a restart of a FAILED instance)."""
        self._faults.clear()

    def _forget_before(self, cutoff: float) -> None:
        while self._faults and self._faults[0] <= cutoff:
            self._faults.popleft()
