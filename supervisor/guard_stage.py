"""The supervisor's second safety stage: the pack's Qwen3Guard check, off the event loop.

The lexicon runs first (cheap); only what it passes comes here. Each check runs in a worker thread
of a pool of ``max_concurrency`` threads (inference blocks for ~1 s on a CPU), bounded by a time-out
after which the text is refused with ``guard_unavailable``. The pool's size is the bound: a
thread that overruns its time-out stays busy until it really ends, so a stuck model can never pile
up more than ``max_concurrency`` inference threads. Real verdicts are cached by normalised text; refusals for
"could not judge" are not, so a recovered model is asked again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
import unicodedata
from collections import OrderedDict
from pathlib import Path

from cute_animal_kids.guard_model import Guard, GuardDecision, GuardModel, unavailable
from prometheus_client import Histogram

log = logging.getLogger("supervisor.guard")

CACHE_SIZE = 4096


def cache_key(text: str) -> str:
    """Texts that differ only in width, case or spacing get the same verdict."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def load_guard(model_path: Path, device: str) -> Guard:
    """Load the checkpoint now (blocking); ``GuardUnavailable`` says why it is not loadable.

    ``up`` calls this before any ComfyUI starts, so a wrong ``guard.model_path`` stops the start
    instead of refusing every job later.
    """
    model = GuardModel(model_path, device)
    model.load()
    return Guard(model)


class GuardStage:
    """Asynchronous, bounded, cached access to one :class:`Guard`."""

    def __init__(self, guard: Guard, *, timeout_s: float, max_concurrency: int, controversial: str,
                 latency: Histogram | None = None, cache_size: int = CACHE_SIZE) -> None:
        self.guard = guard
        self.timeout_s = timeout_s
        self.controversial = controversial
        self.latency = latency
        self._executor = concurrent.futures.ThreadPoolExecutor(max_concurrency, thread_name_prefix="guard")
        self._cache: OrderedDict[str, GuardDecision] = OrderedDict()
        self._cache_size = cache_size

    async def check(self, text: str) -> GuardDecision:
        """The guard's decision on ``text``; a time-out or failure is a refusal (fail closed)."""
        key = cache_key(text)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                # A time-out cancels a check still waiting for a thread; one already running
                # cannot be interrupted and keeps its thread until it ends.
                decision = await asyncio.wrap_future(
                    self._executor.submit(self.guard.check, text, self.controversial))
        except TimeoutError:
            log.warning("guard timed out after %.1f s", self.timeout_s)
            decision = unavailable(f"the guard model took longer than {self.timeout_s:g} s")
        except Exception as exc:  # Guard.check catches model errors; this is the pool itself failing
            log.exception("guard stage failed")
            decision = unavailable(f"the guard stage failed: {type(exc).__name__}")
        if self.latency is not None:
            self.latency.observe(time.monotonic() - started)
        if not decision.unavailable:
            self._cache[key] = decision
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return decision

    def close(self) -> None:
        """Stop taking checks; running threads finish on their own (they cannot be interrupted)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
