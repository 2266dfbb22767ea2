"""How long the Kids Guard takes per prompt on this CPU, and what the gate and guard refuse together
on the labelled evaluation prompts (run by hand; results go to docs/benchmarks.md).

    .venv/bin/python bench/bench_guard.py [--model models/guard/cak_tiny_qwen3guard] [--repeats 10]
    .venv/bin/python bench/bench_guard.py --eval [--split test] [--limit N] --model models/guard/Qwen3Guard-Gen-0.6B

Times the load (transformers import + weights) and ``Guard.check`` per prompt: the chat template,
the prefill of the ~280-340-token moderation request, greedy generation of up to the policy's
``max_new_tokens`` and the parse. The default is install.py's tiny random-weight model, which
always generates the full budget (it never emits the end token): a worst case in tokens, on a
model ~10 000 times smaller than the real 0.6B. Point ``--model`` at a real checkpoint to measure it.

``--eval`` runs every ``tests/data/text_gate_eval*.yaml`` prompt of one half through what the
supervisor does before the queue: the text gate, then, for what the gate passes, the guard (a guard
that cannot judge refuses: fail closed). It prints the refusal rates of the gate alone and of both,
for unsafe and innocent prompts. The tiny model refuses everything, so only a real checkpoint gives
a figure; the tiny one shows the path runs end to end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "custom_nodes"))

from cute_animal_kids.guard_model import Guard, GuardModel  # noqa: E402 - needs the path above
from cute_animal_kids.text_safety import check_text  # noqa: E402

from cak.progress import ProgressDisplay  # noqa: E402

EVAL_FILES = sorted((ROOT / "tests" / "data").glob("text_gate_eval*.yaml"))

PROMPTS = {
    "en, 40 chars": "a bunny with a red scarf in the meadow",
    "zh, 8 chars": "一只戴帽子的小熊",
    "en, 300 chars": ("a fluffy little bear cub in a yellow raincoat jumping into puddles with a "
                      "duckling friend, " * 4)[:300],
}


def evaluate(guard: Guard, split: str, limit: int | None) -> None:
    """Refusals of the gate alone and of gate + guard on one half of the evaluation prompts."""
    entries = [e for file in EVAL_FILES for e in yaml.safe_load(file.read_text(encoding="utf-8"))
               if split == "all" or e["split"] == split][:limit]
    totals: Counter[str] = Counter()
    by_gate: Counter[str] = Counter()
    by_both: Counter[str] = Counter()
    guard_labels: Counter[str] = Counter()
    progress = ProgressDisplay()
    for done, entry in enumerate(entries, 1):
        label = entry["label"]
        totals[label] += 1
        if not check_text(entry["text"]).safe:
            by_gate[label] += 1
            by_both[label] += 1
        else:
            decision = guard.check(entry["text"])
            guard_labels[decision.label or decision.category or "?"] += 1
            by_both[label] += not decision.safe
        progress.step(f"{split} prompts", done, len(entries))
    progress.close()
    print(f"\n{len(entries)} prompts ({split}) from {len(EVAL_FILES)} files; guard verdicts on what the gate "
          f"passed: {dict(guard_labels)}\n")
    print("| | unsafe refused | innocent refused |\n|---|---|---|")
    for name, refused in (("text gate", by_gate), ("text gate + guard", by_both)):
        cells = [f"{refused[k]}/{totals[k]} ({refused[k] / max(1, totals[k]):.1%})" for k in ("unsafe", "safe")]
        print(f"| {name} | {cells[0]} | {cells[1]} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "guard" / "cak_tiny_qwen3guard",
                        help="checkpoint folder (default: the tiny test model)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=10, help="checks per prompt (default %(default)s)")
    parser.add_argument("--eval", action="store_true",
                        help="refusal rates of gate and gate + guard on the evaluation prompts instead of timings")
    parser.add_argument("--split", choices=("dev", "test", "all"), default="test",
                        help="which half of the evaluation prompts (default %(default)s: the half nothing was tuned on)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts of that half")
    args = parser.parse_args()
    model = GuardModel(args.model, args.device)
    started = time.perf_counter()
    model.load()
    print(f"load ({args.model.name} on {args.device}, incl. importing transformers): "
          f"{time.perf_counter() - started:.1f} s")
    guard = Guard(model)
    if args.eval:
        evaluate(guard, args.split, args.limit)
        return 0
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
