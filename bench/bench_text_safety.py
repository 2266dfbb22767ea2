"""How long the text gate takes per prompt on this CPU (run by hand; results go to docs/benchmarks.md).

    .venv/bin/python bench/bench_text_safety.py [--repeats 1000]

Times ``check_text`` (default, non-strict mode: normalise + match, the call the supervisor makes
before queueing a job) after a warm-up that loads and compiles the lexicon:

- each prompt of ``PROMPTS`` (plain and disguised, both languages) ``--repeats`` times;
- "distinct 300-char prompts": prompts cut from the evaluation set (tests/data/text_gate_eval.yaml),
  each checked ONCE, so per-word caches help only with words seen in earlier prompts.

Two clocks: wall time (``perf_counter``: what a caller waits, including the time other processes
take the CPU away on a loaded machine) and this thread's CPU time (``thread_time``: the work
itself, steady under load). Nothing caches whole prompts or their decisions, so repeating a
prompt measures the full work every time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "custom_nodes"))

from cute_animal_kids.text_safety import check_text  # noqa: E402 - after the path set-up

EVAL_FILE = ROOT / "tests" / "data" / "text_gate_eval.yaml"
PROMPTS = {
    "en, safe, 40 chars": "a bunny with a red scarf in the meadow",
    "zh, safe, 8 chars": "一只戴帽子的小熊",
    "en, safe, 300 chars": ("a fluffy little bear cub in a yellow raincoat jumping into puddles with a "
                            "duckling friend, " * 4)[:300],
    "en, disguised, unsafe": "a b.u.n.n.y holding a ｇ ｕ ｎ with b l o o d",
    "en, masked, unsafe": "a cute kitten that wants to k*ll the b#nny",
    "zh, traditional, unsafe": "一隻拿著槍的小熊",
    "zh, safe, 300 chars": ("一只戴着黄色雨衣的小熊和小鸭子朋友在雨后的花园里跳水坑，旁边有彩虹和蝴蝶，" * 10)[:300],
    "mixed, safe, 300 chars": ("小熊 and a duckling 在花园里 play with a red ball 🎈🐻, " * 8)[:300],
    "en, unsafe at the end, 300 chars": ("a fluffy little bear cub in a yellow raincoat jumping into puddles "
                                         "with a duckling friend, " * 4)[:280] + " and a g.un",
}
DISTINCT_LENGTH = 300


def distinct_prompts() -> list[str]:
    """300-character prompts made of consecutive evaluation-set texts, each one different."""
    texts = [entry["text"] for entry in yaml.safe_load(EVAL_FILE.read_text(encoding="utf-8"))]
    prompts = []
    for first in range(len(texts)):
        prompt, index = "", first
        while len(prompt) < DISTINCT_LENGTH and index < len(texts):
            prompt += texts[index] + " "
            index += 1
        if len(prompt) >= DISTINCT_LENGTH:
            prompts.append(prompt[:DISTINCT_LENGTH])
    return prompts


def measure(texts: list[str]) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of one ``check_text`` call per text."""
    wall, cpu = [], []
    for text in texts:
        started, started_cpu = time.perf_counter(), time.thread_time()
        check_text(text)
        cpu.append((time.thread_time() - started_cpu) * 1000)
        wall.append((time.perf_counter() - started) * 1000)
    return wall, cpu


def row(label: str, verdict: str, wall: list[float], cpu: list[float]) -> str:
    def p99(values: list[float]) -> float:
        return sorted(values)[min(len(values) - 1, int(len(values) * 0.99))]

    return (f"| {label} | {verdict} | {statistics.median(wall):.3f} | {p99(wall):.3f} | "
            f"{statistics.median(cpu):.3f} | {p99(cpu):.3f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1000, help="calls per prompt (default %(default)s)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    started = time.perf_counter()
    check_text("warm-up 小熊")
    print(f"first call (loads and compiles the lexicon): {(time.perf_counter() - started) * 1000:.0f} ms")
    print("| prompt | verdict | wall median ms | wall p99 ms | CPU median ms | CPU p99 ms |\n"
          "|---|---|---|---|---|---|")
    for label, text in PROMPTS.items():
        wall, cpu = measure([text] * args.repeats)
        print(row(label, check_text(text).category or "safe", wall, cpu))
    prompts = distinct_prompts()
    wall, cpu = measure(prompts)
    refused = sum(not check_text(text).safe for text in prompts)
    print(row(f"{len(prompts)} distinct 300-char prompts, once each", f"{refused} refused", wall, cpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
