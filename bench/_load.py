"""The machine's load, as every bench states it: the 1-minute load average at the start and the end (and
wherever a bench notes it between), and whether the bench may judge PASS/FAIL. Not when the machine was
busy: above --max-load (default 0.75 per core) at any point noted, a slow figure says more about the
neighbours than about the code, so the targets print "not judged" and the figures as measured.

    watch = LoadWatch.from_args(args)   # after parser.add_argument(...) by add_arguments(parser)
    print(watch.start_line())
    ...                                 # watch.note() between stages
    print(watch.end_line())
    print(f"- {watch.verdict(ok)} ...")
"""

from __future__ import annotations

import argparse
import os
import time

DEFAULT_MAX_LOAD = 0.75 * (os.cpu_count() or 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-load", type=float, default=DEFAULT_MAX_LOAD, metavar="L",
                        help=f"no PASS/FAIL when the 1-minute load average went above L (default: 0.75 per core, "
                             f"{DEFAULT_MAX_LOAD:g} here)")  # fmt: skip


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class LoadWatch:
    def __init__(self, max_load: float = DEFAULT_MAX_LOAD):
        self.max_load = max_load
        self.seen = [os.getloadavg()[0]]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LoadWatch:
        return cls(args.max_load)

    def note(self) -> float:
        self.seen.append(os.getloadavg()[0])
        return self.seen[-1]

    @property
    def busy(self) -> bool:
        return max(self.seen) > self.max_load

    def start_line(self) -> str:
        return f"- load average at start: {load_average()}"

    def end_line(self) -> str:
        self.note()
        said = f"- load average at end: {load_average()} (highest 1-minute figure seen: {max(self.seen):.2f})"
        if self.busy:
            said += (f"\n- the machine was busy (above --max-load {self.max_load:g}): the targets are not judged, "
                     "the figures are as measured; run again on a quiet machine to judge them")  # fmt: skip
        return said

    def verdict(self, ok: bool) -> str:
        return "not judged" if self.busy else ("PASS" if ok else "FAIL")


def wait_for_quiet(load: float, most_s: float) -> float:
    """Wait (up to ``most_s``) until the 1-minute load average is at most ``load``; the seconds waited."""
    started = time.monotonic()
    while os.getloadavg()[0] > load and time.monotonic() - started < most_s:
        time.sleep(5)
    return time.monotonic() - started
