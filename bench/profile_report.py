"""Summarise a py-spy raw (collapsed stacks) profile: where the CPU goes, by function.

python bench/profile_report.py bench/results/profile-drain-replicator.txt [--top 40] [--focus NAME]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

CHECKOUT = f"{Path(__file__).resolve().parents[1]}/"
"""This checkout's root: stripped from frame paths so they read as repository paths."""


def main() -> int:
    """Print self and inclusive sample shares."""
    p = argparse.ArgumentParser()
    p.add_argument("path", type=Path)
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--module", action="store_true", help="group by file instead of function")
    args = p.parse_args()
    self_: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in args.path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = []
        for frame in stack.split(";"):
            name, _, loc = frame.partition(" (")
            file = loc.split(":")[0]
            file = file.split("site-packages/")[-1].split(CHECKOUT)[-1].split("python3.11/")[-1]
            frames.append(file if args.module else f"{name} ({file})")
        if not frames:
            continue
        self_[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    print(f"{total} samples")
    print("--- self")
    for name, n in self_.most_common(args.top):
        print(f"{n / total:6.1%}  {name}")
    print("--- inclusive")
    for name, n in incl.most_common(args.top):
        print(f"{n / total:6.1%}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
