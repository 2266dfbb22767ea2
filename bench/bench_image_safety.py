"""How long the Kids Image Safety gate adds per image on this machine (not a test).

Measures the classifier's one-time load, then scoring of ComfyUI IMAGE tensors (tensor -> uint8 ->
open_nsfw preprocessing -> ONNX run) one at a time and in a batch, and drawing the placeholder.

    .venv/bin/python bench/bench_image_safety.py [--size 1024] [--repeats 20] [--batch 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "custom_nodes"))

from cute_animal_kids.image_classifier import ImageClassifier  # noqa: E402
from cute_animal_kids.placeholder_image import placeholder_tensor  # noqa: E402


def timed_ms(action, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return times


def summary(times: list[float]) -> str:
    return f"median {statistics.median(times):.1f} ms, min {min(times):.1f}, max {max(times):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, args.size, args.size, 3, generator=generator)
    batch = torch.rand(args.batch, args.size, args.size, 3, generator=generator)
    classifier = ImageClassifier()

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    start = time.perf_counter()
    classifier.load()
    print(f"load: {(time.perf_counter() - start) * 1000:.0f} ms (once per process)")
    classifier.score(image)  # warm-up
    print(f"score 1 image {args.size}²: {summary(timed_ms(lambda: classifier.score(image), args.repeats))}")
    per_batch = timed_ms(lambda: classifier.score(batch), max(3, args.repeats // args.batch))
    print(f"score batch of {args.batch} at {args.size}²: {summary(per_batch)}"
          f" -> {statistics.median(per_batch) / args.batch:.1f} ms per image")
    drawn = timed_ms(lambda: placeholder_tensor(args.size, args.size), args.repeats)
    print(f"placeholder {args.size}²: {summary(drawn)}")


if __name__ == "__main__":
    main()
