"""The prompt an instance runs before it counts as READY (``health.warmup``).

A warm-up proves the worker thread really executes prompts (``/system_stats`` only proves the HTTP
side lives) and loads the models, so the leak baseline taken after it is the loaded size. The
built-in graph runs the small CPU models for one step; ``health.warmup_graph`` names another
API-format graph (e.g. the production models at their smallest size).
"""

from __future__ import annotations

import json
from pathlib import Path

from cak.demo import cpu_graph


def warmup_graph(path: Path | None = None) -> dict:
    """The configured warm-up graph, or the tiny CPU one at 32² for one step (a preview, not output)."""
    if path is not None:
        return json.loads(path.read_text())
    return cpu_graph(width=32, height=32, seed=0, steps=1, save=False)
