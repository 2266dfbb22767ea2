"""The one polling helper of the suite: every "until this holds" wait goes through ``wait_until``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], what: str | Callable[[], str], timeout: float = 300.0,
               interval: float = 0.3) -> T:
    """``check()``'s first truthy value, tried every ``interval`` s.

    After ``timeout`` s: ``TimeoutError`` saying ``what`` (a callable is asked only then, e.g. for a
    log tail). The limit only stops a hang; no test asserts on how long a wait took.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(what() if callable(what) else what)
        time.sleep(interval)
