"""How long the Kids Guard takes per prompt on this CPU (run by hand; results go to docs/benchmarks.md).

    .venv/bin/python bench/bench_guard.py [--model models/guard/cak_tiny_qwen3guard] [--repeats 10]

Times the load (transformers import + weights) and ``Guard.check`` per prompt: the chat template,
the prefill of the ~280-340-token moderation request, greedy generation of up to the policy's
``max_new_tokens`` and the parse. The default is install.py's tiny random-weight model, which
always generates the full budget (it never emits the end token): a worst case in tokens, on a
model ~10 000 times smaller than the real 0.6B. Point ``--model`` at a real checkpoint to measure it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "custom_nodes"))

from cute_animal_kids.guard_model import Guard, GuardModel  # noqa: E402 - needs the path above

PROMPTS = {
    "en, 40 chars": "a bunny with a red scarf in the meadow",
    "zh, 8 chars": "一只戴帽子的小熊",
    "en, 300 chars": ("a fluffy little bear cub in a yellow raincoat jumping into puddles with a "
                      "duckling friend, " * 4)[:300],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "guard" / "cak_tiny_qwen3guard",
                        help="checkpoint folder (default: the tiny test model)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=10, help="checks per prompt (default %(default)s)")
    args = parser.parse_args()
    model = GuardModel(args.model, args.device)
    started = time.perf_counter()
    model.load()
    print(f"load ({args.model.name} on {args.device}, incl. importing transformers): "
          f"{time.perf_counter() - started:.1f} s")
    guard = Guard(model)
    tokenizer, _ = model._loaded  # type: ignore[misc] - loaded above
    guard.check("warm-up")
    print(f"max_new_tokens {model.max_new_tokens}\n")
    print("| prompt | request tokens | verdict | median s | min s | max s |\n|---|---|---|---|---|---|")
    for label, text in PROMPTS.items():
        request = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False)
        tokens = len(tokenizer(request)["input_ids"])
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            decision = guard.check(text)
            times.append(time.perf_counter() - started)
        verdict = decision.label or decision.category
        print(f"| {label} | {tokens} | {verdict} | {statistics.median(times):.3f} | {min(times):.3f} | "
              f"{max(times):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
