"""How often, and for how long, the documented exceptions of DESIGN's convergence table diverge.

The configurations DESIGN accepts without a convergence guarantee ("documented, not proven") are run on
the model checker's two regions (``tests/unit/model``: the real pipeline, versions and conditions) over
random histories: each step is drawn uniformly among those the world allows (application writes,
deliveries, replays, dead letters and redrives, tombstone expiry), then every record left is delivered.
A history whose tables then differ stays different: nothing is left to deliver, so the divergence
window is open until ``verify --repair``. The script prints, per configuration, the share of histories
that end diverged (and that livelock, records echoing back and forth), next to the proven rows (0 %).

    .venv/bin/python bench/divergence.py [--histories 400] [--ops 8] [--faults 2] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from unit.model.configs import Settings
from unit.model.explorer import quiescent_check, steps_of
from unit.model.model import Livelock, empty_world

ROWS: list[tuple[str, Settings]] = [
    ("one-way, deletes: delete, ts on", Settings(True, "delete", False, True, "none", False, False)),  # noqa: FBT003
    ("one-way, deletes: delete, ts off", Settings(False, "delete", False, True, "none", False, False)),  # noqa: FBT003
    ("active-active, no source_tombstones, ts on", Settings(True, "tombstone", False, True, "none", True, False)),  # noqa: FBT003
    ("active-active, no source_tombstones, ts off", Settings(False, "tombstone", False, True, "none", True, False)),  # noqa: FBT003
    ("active-active, skip_echoes: false, ts on", Settings(True, "tombstone", True, False, "none", True, False)),  # noqa: FBT003
    ("proven: one-way, tombstones, ts on", Settings(True, "tombstone", False, True, "none", False, False)),  # noqa: FBT003
    ("proven: active-active row", Settings(True, "tombstone", True, True, "none", True, False)),  # noqa: FBT003
]
MAX_STEPS = 40


def one_history(settings: Settings, rng: random.Random, *, ops: int, faults: int) -> str:
    """Walk one random history; say how it ended: converged, diverged or livelock."""
    workers, steps = steps_of(settings, max_ops=ops, sequential=not settings.timestamp)
    world = empty_world(faults=faults)
    try:
        for _ in range(MAX_STEPS):
            options = list(steps(world))
            if not options:
                break
            after = rng.choice(options)[1]()
            if after is not None:
                world = after
        detail = quiescent_check(world, settings, workers, drain=True)
    except Livelock:
        return "livelock"
    return "converged" if detail is None else "diverged"


def main(argv: list[str] | None = None) -> int:
    """Print one line per configuration."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=int, default=400)
    parser.add_argument("--ops", type=int, default=8)
    parser.add_argument("--faults", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(f"{args.histories} random histories per row, up to {args.ops} operations and {args.faults} faults")
    print(f"{'configuration':48} {'diverged':>9} {'livelock':>9} {'s':>6}")
    for label, settings in ROWS:
        rng = random.Random(args.seed)  # noqa: S311 - reproducible histories, not cryptography
        started_s = time.monotonic()
        outcomes = [one_history(settings, rng, ops=args.ops, faults=args.faults) for _ in range(args.histories)]
        elapsed_s = time.monotonic() - started_s
        diverged = 100 * outcomes.count("diverged") / len(outcomes)
        livelock = 100 * outcomes.count("livelock") / len(outcomes)
        print(f"{label:48} {diverged:8.1f}% {livelock:8.1f}% {elapsed_s:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
