"""A CPU-bound task with parameters (the command workload's example, experiments/command.yaml).

Burns --ms milliseconds of CPU time in each of --threads processes (processes, not Python threads: the
GIL would run threads one at a time), hashing the bytes of --input. Tracekit follows the whole process
tree: the task's CPU time is about ms x threads. Prints one line; exits 0.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import time
from pathlib import Path


def burn(ms: float, seed: bytes) -> str:
    digest = hashlib.sha256(seed)
    end = time.process_time() + ms / 1000
    while time.process_time() < end:
        for _ in range(2000):
            digest.update(digest.digest())
    return digest.hexdigest()[:12]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ms", type=float, required=True, help="CPU milliseconds per process")
    parser.add_argument("--threads", type=int, default=1, help="processes burning at once (default: 1)")
    parser.add_argument("--input", type=Path, help="a file whose bytes seed the hash (setup makes one)")
    args = parser.parse_args()
    seed = args.input.read_bytes() if args.input else b"tracekit"
    if args.threads == 1:
        results = [burn(args.ms, seed)]
    else:
        with multiprocessing.get_context("fork").Pool(args.threads) as pool:
            results = pool.starmap(burn, [(args.ms, seed)] * args.threads)
    print(f"burned {args.ms:g} ms x {args.threads}: {' '.join(results)}")


if __name__ == "__main__":
    main()
