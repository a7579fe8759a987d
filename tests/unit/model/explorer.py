"""Exhaustive exploration: every history of a configuration up to a bound, checked for convergence.

From each state the explorer takes every step the world allows: an application operation (PutItem,
UpdateItem upsert, DeleteItem, in any region that takes writes, on any key), the in-order delivery of
a worker's next record, and, within a fault budget, the faults at-least-once delivery allows: a replay
of any record already delivered (a checkpoint reset, a stale lease owner, a Kinesis duplicate), a record
dead-lettered now and redriven at any later time, a tombstone expiring by TTL. Every quiescent state
(each worker has delivered its whole stream, nothing left parked) must show both tables equal as a
reader sees them. States are memoised, so each distinct one is expanded once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from unit.model.configs import Settings
from unit.model.model import (
    KEYS,
    Livelock,
    Worker,
    World,
    app_op,
    build_workers,
    deliver,
    empty_world,
    expire_tombstone,
    live,
)

Step = tuple[str, Callable[[], World | None]]
OPERATIONS = ("put", "update", "delete")
"""put: a whole-item PutItem (markers dropped); update: an UpdateItem upsert (markers kept); delete."""


@dataclasses.dataclass
class Report:
    """What one exploration found."""

    settings: Settings
    states: int = 0
    histories: int = 0
    """Quiescent states checked: each ends at least one history."""
    counterexample: list[str] | None = None
    detail: str = ""


def _steps(  # noqa: C901, PLR0912 - one branch per kind of step reads as the list in the module doc
    world: World,
    settings: Settings,
    workers: tuple[Worker, ...],
    max_ops: int,
    *,
    sequential: bool,
    kinds: tuple[str, ...] = OPERATIONS,
) -> Iterator[Step]:
    s = settings
    if world.ops_done < max_ops:
        regions = (0, 1) if s.active_active else (0,)
        if sequential and world.last_writer is not None and not _quiescent(world, workers):
            # Sequential writes: the other region writes only after everything has been replicated.
            regions = (world.last_writer,)
        touched = {pk for t in world.tables for pk in t} | {
            pk for st in world.streams for r in st for pk in [r.keys["pk"]["S"]]
        }
        # Symmetry: keys are interchangeable, so a first write to an untouched key only goes to the first one.
        keys = [k for k in KEYS if k in touched] + [k for k in KEYS if k not in touched][:1]
        for region in regions:
            for pk in keys:
                for kind in kinds:
                    yield (
                        f"app {kind} {pk} in region {region}",
                        lambda r=region, p=pk, k=kind: app_op(world, s, r, p, k),
                    )
    for d in range(len(workers)):
        cursor = world.cursors[d]
        if cursor < len(world.streams[d]):
            yield (f"deliver {d}:{cursor}", lambda d=d, c=cursor: _advance(deliver(world, s, workers, d, c), d))
            if world.faults_left and not world.replays_closed:
                yield (f"dead-letter {d}:{cursor}", lambda d=d, c=cursor: _park(world, d, c))
        for index in sorted(world.parked[d]):
            yield (f"redrive {d}:{index}", lambda d=d, i=index: _unpark(deliver(world, s, workers, d, i), d, i))
        if world.faults_left and not world.replays_closed:
            for index in range(cursor):
                if index not in world.parked[d]:
                    yield (
                        f"replay {d}:{index}",
                        lambda d=d, i=index: _spend(deliver(world, s, workers, d, i)),
                    )
    # A tombstone expires days after its delete: after the replication lag (everything delivered), and
    # with a TTL shorter than the replay window, before a replay may come.
    if _quiescent(world, workers) or settings.ttl_shorter_than_replay:
        for region in (0, 1):
            for pk in KEYS:
                yield (f"tombstone of {pk} expires in region {region}", lambda r=region, p=pk: _expire(world, s, r, p))


def _advance(world: World, d: int) -> World:
    cursors = list(world.cursors)
    cursors[d] += 1
    return dataclasses.replace(world, cursors=(cursors[0], cursors[1]))


def _park(world: World, d: int, index: int) -> World:
    parked = list(world.parked)
    parked[d] = parked[d] | {index}
    return _spend(_advance(dataclasses.replace(world, parked=(parked[0], parked[1])), d))


def _unpark(world: World, d: int, index: int) -> World:
    parked = list(world.parked)
    parked[d] = parked[d] - {index}
    return dataclasses.replace(world, parked=(parked[0], parked[1]))


def _spend(world: World) -> World:
    return dataclasses.replace(world, faults_left=world.faults_left - 1)


def _expire(world: World, settings: Settings, region: int, pk: str) -> World | None:
    after = expire_tombstone(world, settings, region, pk)
    if after is None:
        return None
    # Expiry is DynamoDB's normal garbage collection, not a fault: it costs no budget. A TTL longer
    # than every replay window means nothing is replayed after a tombstone expires.
    return dataclasses.replace(
        after, replays_closed=not settings.ttl_shorter_than_replay, later_ms=world.later_ms + 60_000
    )


def _quiescent(world: World, workers: tuple[Worker, ...]) -> bool:
    return all(world.cursors[d] == len(world.streams[d]) and not world.parked[d] for d in range(len(workers)))


def _diverged(world: World, settings: Settings) -> str | None:
    for pk in KEYS:
        views = [live(t.get(pk), settings) for t in world.tables]
        if views[0] != views[1]:
            return f"{pk}: region 0 reads {views[0]}, region 1 reads {views[1]}"
    return None


def explore(
    settings: Settings,
    *,
    max_ops: int,
    faults: int = 1,
    sequential: bool = False,
    kinds: tuple[str, ...] = OPERATIONS,
) -> Report:
    """Explore every history of ``settings`` with up to ``max_ops`` application operations.

    ``sequential``: the regions take turns, each writing only once the other's writes are replicated
    (what is promised without ``timestamp_attribute``); else they write concurrently. ``kinds``: the
    application operations explored (a subset narrows the search to one kind of history).
    """
    workers = build_workers(settings)
    report = Report(settings)
    seen: set[object] = set()
    start = empty_world(faults=faults)
    # Depth-first with an explicit stack: (state, path to it).
    stack: list[tuple[World, list[str]]] = [(start, [])]
    while stack:
        world, path = stack.pop()
        key = world.frozen()
        if key in seen:
            continue
        seen.add(key)
        report.states += 1
        if _quiescent(world, workers):
            report.histories += 1
            detail = _diverged(world, settings)
            if detail is not None:
                report.counterexample, report.detail = path, detail
                return report
        for label, step in _steps(world, settings, workers, max_ops, sequential=sequential, kinds=kinds):
            try:
                after = step()
            except Livelock as exc:
                report.counterexample, report.detail = [*path, label], str(exc)
                return report
            if after is not None:
                stack.append((after, [*path, label]))
    return report


def steps_of(
    settings: Settings, *, max_ops: int, sequential: bool = False
) -> tuple[tuple[Worker, ...], Callable[[World], Iterator[Step]]]:
    """The workers of ``settings`` and a function listing the steps a world allows (for random walks)."""
    workers = build_workers(settings)
    return workers, lambda world: _steps(world, settings, workers, max_ops, sequential=sequential)


def quiescent_check(world: World, settings: Settings, workers: tuple[Worker, ...], *, drain: bool) -> str | None:
    """Deliver what is left (``drain``: in order, parked records redriven), then compare the tables."""
    while drain and not _quiescent(world, workers):
        for d in range(len(workers)):
            for index in sorted(world.parked[d]):
                world = _unpark(deliver(world, settings, workers, d, index), d, index)
            while world.cursors[d] < len(world.streams[d]):
                world = _advance(deliver(world, settings, workers, d, world.cursors[d]), d)
    return _diverged(world, settings)


def run_history(settings: Settings, history: list[str], *, faults: int = 0) -> str | None:
    """Take the steps ``history`` names (as counterexamples print them), deliver the rest: how the tables differ."""
    workers = build_workers(settings)
    world = empty_world(faults=faults)
    for label in history:
        steps = dict(_steps(world, settings, workers, max_ops=len(history), sequential=False))
        after = steps[label]()
        assert after is not None, f"{label}: not possible here"
        world = after
    return quiescent_check(world, settings, workers, drain=True)
