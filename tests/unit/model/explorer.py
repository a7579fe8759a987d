"""Exhaustive exploration: every history of a configuration up to a bound, checked for convergence.

From each state the explorer takes every step the world allows: an application operation (PutItem,
UpdateItem upsert, DeleteItem, in any region that takes writes, on any key), the in-order delivery of
a lane's next record (each (source, target) lane on its own, so deliveries to different targets
interleave), and, within a fault budget, the faults at-least-once delivery allows: a replay of any
record already delivered (a checkpoint reset, a stale lease owner, a Kinesis duplicate), a record
dead-lettered now and redriven at any later time, a tombstone expiring by TTL. Every quiescent state
(each lane has delivered its whole stream, nothing left parked) must show every table equal as a
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

from replicator.core.errors import RecordRejectedError, TransformError

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
    finals: set[object] = dataclasses.field(default_factory=set)
    """The tables of every quiescent state (``World.table_contents``)."""


class Skips:
    """Which records each lane's pipeline skips (echoes, tombstones' expiries), to deliver them at once.

    Delivering a record its pipeline skips writes nothing and is decided by the record alone: it commutes
    with every other step, so delivering it as soon as it is the lane's next record reaches the same tables
    as delivering it later, and replaying or dead-lettering it changes nothing but the fault budget. The
    mesh explores with this reduction (``explore(settle=True)``); two regions explore without it.
    """

    def __init__(self, settings: Settings, workers: tuple[Worker, ...]) -> None:
        """Remember the lanes; the answers are memoised by the record's content."""
        self._settings = settings
        self._workers = workers
        self._memo: dict[tuple[object, ...], bool] = {}

    def skipped(self, world: World, d: int, index: int) -> bool:
        """Whether lane ``d``'s pipeline skips record ``index`` of its source stream."""
        source = self._settings.lanes[d][0]
        key = (d, world.stream_ids[source][index])
        if key not in self._memo:
            try:
                self._memo[key] = isinstance(self._workers[d].pipeline.run(world.streams[source][index]), str)
            except (TransformError, RecordRejectedError):
                self._memo[key] = True  # dead-lettered for good: no write either
        return self._memo[key]

    def settle(self, world: World) -> World:
        """Deliver every lane's next records while its pipeline skips them."""
        for d, (source, _) in enumerate(self._settings.lanes):
            while world.cursors[d] < len(world.streams[source]) and self.skipped(world, d, world.cursors[d]):
                world = _advance(world, d)
        return world


def _steps(  # noqa: C901, PLR0912 - one branch per kind of step reads as the list in the module doc
    world: World,
    settings: Settings,
    workers: tuple[Worker, ...],
    max_ops: int,
    *,
    sequential: bool,
    kinds: tuple[str, ...] = OPERATIONS,
    skips: Skips | None = None,
    keys: int = len(KEYS),
) -> Iterator[Step]:
    s = settings
    if world.ops_done < max_ops:
        regions: tuple[int, ...] = tuple(range(len(s.regions))) if s.active_active else (0,)
        if sequential and world.last_writer is not None and not _quiescent(world, settings):
            # Sequential writes: another region writes only after everything has been replicated.
            regions = (world.last_writer,)
        touched = {pk for t in world.tables for pk in t} | {
            pk for st in world.streams for r in st for pk in [r.keys["pk"]["S"]]
        }
        # Symmetry: keys are interchangeable, so a first write to an untouched key only goes to the first one.
        used = KEYS[:keys]
        candidates = [k for k in used if k in touched] + [k for k in used if k not in touched][:1]
        for region in regions:
            for pk in candidates:
                for kind in kinds:
                    yield (
                        f"app {kind} {pk} in region {region}",
                        lambda r=region, p=pk, k=kind: app_op(world, s, r, p, k),
                    )
    for d in range(len(workers)):
        cursor, name = world.cursors[d], _lane_name(s, d)
        if cursor < len(world.streams[s.lanes[d][0]]):
            yield (f"deliver {name}:{cursor}", lambda d=d, c=cursor: _advance(deliver(world, s, workers, d, c), d))
            if world.faults_left and not world.replays_closed:
                yield (f"dead-letter {name}:{cursor}", lambda d=d, c=cursor: _park(world, d, c))
        for index in sorted(world.parked[d]):
            yield (f"redrive {name}:{index}", lambda d=d, i=index: _unpark(deliver(world, s, workers, d, i), d, i))
        if world.faults_left and not world.replays_closed:
            for index in range(cursor):
                if index not in world.parked[d] and (skips is None or not skips.skipped(world, d, index)):
                    yield (f"replay {name}:{index}", lambda d=d, i=index: _replay(world, s, workers, d, i, skips))
    # A tombstone expires days after its delete: after the replication lag (everything delivered), and
    # with a TTL shorter than the replay window, before a replay may come.
    if _quiescent(world, settings) or settings.ttl_shorter_than_replay:
        for region in range(len(s.regions)):
            for pk in KEYS:
                yield (f"tombstone of {pk} expires in region {region}", lambda r=region, p=pk: _expire(world, s, r, p))


def _replay(  # noqa: PLR0917 - the step's world, lane and record, and the reduction
    world: World, settings: Settings, workers: tuple[Worker, ...], d: int, index: int, skips: Skips | None
) -> World | None:
    after = deliver(world, settings, workers, d, index)
    if skips is not None and after is world:
        # Superseded: the same state with less budget, whose every history is one of the state before.
        return None
    return _spend(after)


def _lane_name(settings: Settings, d: int) -> str:
    """Two regions: the lane's index (its direction); more: source>target."""
    if len(settings.regions) == 2:
        return str(d)
    source, target = settings.lanes[d]
    return f"{source}>{target}"


def _advance(world: World, d: int) -> World:
    cursors = list(world.cursors)
    cursors[d] += 1
    return dataclasses.replace(world, cursors=tuple(cursors))


def _park(world: World, d: int, index: int) -> World:
    parked = list(world.parked)
    parked[d] = parked[d] | {index}
    return _spend(_advance(dataclasses.replace(world, parked=tuple(parked)), d))


def _unpark(world: World, d: int, index: int) -> World:
    parked = list(world.parked)
    parked[d] = parked[d] - {index}
    return dataclasses.replace(world, parked=tuple(parked))


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


def _quiescent(world: World, settings: Settings) -> bool:
    return all(
        world.cursors[d] == len(world.streams[source]) and not world.parked[d]
        for d, (source, _) in enumerate(settings.lanes)
    )


def _diverged(world: World, settings: Settings) -> str | None:
    for pk in KEYS:
        views = [live(t.get(pk), settings) for t in world.tables]
        if any(view != views[0] for view in views[1:]):
            return f"{pk}: " + ", ".join(f"region {r} reads {view}" for r, view in enumerate(views))
    return None


def explore(
    settings: Settings,
    *,
    max_ops: int,
    faults: int = 1,
    sequential: bool = False,
    kinds: tuple[str, ...] = OPERATIONS,
    reduce: bool = False,
    keys: int = len(KEYS),
) -> Report:
    """Explore every history of ``settings`` with up to ``max_ops`` application operations on ``keys`` keys.

    ``sequential``: the regions take turns, each writing only once the other's writes are replicated
    (what is promised without ``timestamp_attribute``); else they write concurrently. ``kinds``: the
    application operations explored (a subset narrows the search to one kind of history). ``reduce``: fewer
    states, the same final tables: records a lane skips are delivered at once (``Skips``), a replay that
    writes nothing is not taken, and a state already expanded with at least as much fault budget is not
    expanded again (with more budget a state allows every step it allows with less).
    """
    workers = build_workers(settings)
    skips = Skips(settings, workers) if reduce else None
    report = Report(settings)
    budgets: dict[object, int] = {}
    """Per state expanded (without its budget when reducing), the greatest fault budget it had."""
    start = empty_world(faults=faults, regions=len(settings.regions), track_makers=settings.forwards_application_only)
    if skips is not None:
        start = skips.settle(start)
    # Depth-first with explicit stacks of (state, path to it). Reducing, one per fault budget, the
    # greatest first: a state is then expanded with the most budget it is reached with, once.
    stacks: list[list[tuple[World, list[str]]]] = [[] for _ in range(faults + 1)]
    stacks[start.faults_left if skips is not None else 0].append((start, []))
    while any(stacks):
        world, path = next(stack for stack in reversed(stacks) if stack).pop()
        key, budget = (world.frozen(), 0) if skips is None else (world.content(), world.faults_left)
        first = key not in budgets
        if not first and budgets[key] >= budget:
            continue
        budgets[key] = budget
        report.states += 1
        if first and _quiescent(world, settings):
            report.histories += 1
            report.finals.add(world.table_contents())
            detail = _diverged(world, settings)
            if detail is not None:
                report.counterexample, report.detail = path, detail
                return report
        for label, step in _steps(
            world, settings, workers, max_ops, sequential=sequential, kinds=kinds, skips=skips, keys=keys
        ):
            try:
                after = step()
            except Livelock as exc:
                report.counterexample, report.detail = [*path, label], str(exc)
                return report
            if after is None:
                continue
            if skips is None:
                stacks[0].append((after, [*path, label]))
            else:
                stacks[after.faults_left].append((skips.settle(after), [*path, label]))
    return report


def steps_of(
    settings: Settings, *, max_ops: int, sequential: bool = False
) -> tuple[tuple[Worker, ...], Callable[[World], Iterator[Step]]]:
    """The workers of ``settings`` and a function listing the steps a world allows (for random walks)."""
    workers = build_workers(settings)
    return workers, lambda world: _steps(world, settings, workers, max_ops, sequential=sequential)


def quiescent_check(world: World, settings: Settings, workers: tuple[Worker, ...], *, drain: bool) -> str | None:
    """Deliver what is left (``drain``: in order, parked records redriven), then compare the tables."""
    while drain and not _quiescent(world, settings):
        for d, (source, _) in enumerate(settings.lanes):
            for index in sorted(world.parked[d]):
                world = _unpark(deliver(world, settings, workers, d, index), d, index)
            while world.cursors[d] < len(world.streams[source]):
                world = _advance(deliver(world, settings, workers, d, world.cursors[d]), d)
    return _diverged(world, settings)


def run_history(settings: Settings, history: list[str], *, faults: int = 0) -> str | None:
    """Take the steps ``history`` names (as counterexamples print them), deliver the rest: how the tables differ."""
    workers = build_workers(settings)
    world = empty_world(faults=faults, regions=len(settings.regions), track_makers=settings.forwards_application_only)
    for label in history:
        steps = dict(_steps(world, settings, workers, max_ops=len(history), sequential=False))
        after = steps[label]()
        assert after is not None, f"{label}: not possible here"
        world = after
    return quiescent_check(world, settings, workers, drain=True)
