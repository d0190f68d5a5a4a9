"""Make the inputs of the batch examples (their setup: run once on each worker in prepare).

Writes --count files of --mb megabytes each into --out: text that compresses as logs do (repeated
words and numbers from a seeded generator: the same bytes on every node, every run). Files already
there at their size are kept.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

WORDS = "request served cache miss hit upstream latency user session token error retry ok".split()


def make(path: Path, size: int, seed: int) -> None:
    if path.is_file() and path.stat().st_size == size:
        return
    rng = random.Random(seed)
    lines, written = [], 0
    while written < size:
        line = f"{rng.randrange(10**9):09d} {' '.join(rng.choices(WORDS, k=8))} {rng.random():.6f}\n"
        lines.append(line)
        written += len(line)
    path.write_text("".join(lines)[:size])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--count", type=int, default=1, help="files to make (default: 1)")
    parser.add_argument("--mb", type=float, default=1.0, help="size of each, in MB (default: 1)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for index in range(args.count):
        make(args.out / f"input-{index}.txt", int(args.mb * 1_000_000), seed=index)
    print(f"{args.count} input(s) of {args.mb:g} MB in {args.out}")


if __name__ == "__main__":
    main()
