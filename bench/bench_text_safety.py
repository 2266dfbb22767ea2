"""How long the text gate takes per prompt on this CPU (run by hand; results go to docs/benchmarks.md).

    .venv/bin/python bench/bench_text_safety.py [--repeats 2000]

Times ``check_text`` (default, non-strict mode: normalise + match, the call the supervisor makes before queueing a job) on
plain and disguised prompts in both languages, after a warm-up that compiles the lexicon.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "custom_nodes"))

from cute_animal_kids.text_safety import check_text

PROMPTS = {
    "en, safe, 40 chars": "a bunny with a red scarf in the meadow",
    "zh, safe, 8 chars": "一只戴帽子的小熊",
    "en, safe, 300 chars": ("a fluffy little bear cub in a yellow raincoat jumping into puddles with a "
                            "duckling friend, " * 4)[:300],
    "en, disguised, unsafe": "a b.u.n.n.y holding a ｇ ｕ ｎ with b l o o d",
    "zh, traditional, unsafe": "一隻拿著槍的小熊",
    "zh, safe, 300 chars": ("一只戴着黄色雨衣的小熊和小鸭子朋友在雨后的花园里跳水坑，旁边有彩虹和蝴蝶，" * 10)[:300],
    "mixed, safe, 300 chars": ("小熊 and a duckling 在花园里 play with a red ball 🎈🐻, " * 8)[:300],
    "en, unsafe at the end, 300 chars": ("a fluffy little bear cub in a yellow raincoat jumping into puddles "
                                         "with a duckling friend, " * 4)[:280] + " and a g.un",
}


def measure(text: str, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        check_text(text)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2000, help="calls per prompt (default %(default)s)")
    args = parser.parse_args()
    started = time.perf_counter()
    check_text("warm-up 小熊")
    print(f"first call (loads and compiles the lexicon): {(time.perf_counter() - started) * 1000:.0f} ms")
    print("| prompt | verdict | median ms | p99 ms |\n|---|---|---|---|")
    for label, text in PROMPTS.items():
        times = sorted(measure(text, args.repeats))
        verdict = check_text(text).category or "safe"
        print(f"| {label} | {verdict} | {statistics.median(times):.3f} | "
              f"{times[int(len(times) * 0.99)]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
