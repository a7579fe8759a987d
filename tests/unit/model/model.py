"""Model regions: tables, their streams, the application and the replicators, driving the real code.

Each region's table is a dict of items; every change to it appends the stream record DynamoDB Streams
(NEW_AND_OLD_IMAGES) would emit. A worker reads a region's stream and runs each record through the real
``Pipeline`` (classification, filters, transforms, versions) and the real ``ConditionalWriter.request``
(markers, ConditionBuilder); the request's ConditionExpression is evaluated on the model table by
``evaluator``. States are immutable: every step returns a new ``World``, so the explorer can branch.

Replication runs in lanes (``Settings.lanes``): a (source, target) pair with its own checkpoint. Two
regions have one lane per direction; a mesh of more has one worker per source region whose writer for
each target delivers (and replays) on its own, as ``targets:`` does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from unit.model.configs import TABLE, TS, Settings
from unit.model.evaluator import holds

from replicator.core.errors import RecordRejectedError, TransformError
from replicator.core.records import ChangeRecord, Item, from_lambda_event
from replicator.pipeline.stages import Pipeline
from replicator.sink.writer import ConditionalWriter

BASE_S = 1_700_000_000
BASE_MS = BASE_S * 1000
KEYS = ("k0", "k1")
MAX_STREAM = 14
"""A stream longer than this means records keep echoing back and forth: a livelock, reported."""


class Livelock(Exception):  # noqa: N818 - an outcome the explorer reports, named for what it is
    """Replicated writes keep producing records that are replicated again."""


class Forwarded(Livelock):
    """A worker that skips echoes forwarded a record the replicator (or TTL) made, not the application."""


@dataclasses.dataclass(frozen=True)
class Worker:
    """One lane's real pipeline (its source's) and writers (its target's, and the source's own)."""

    pipeline: Pipeline
    writer: ConditionalWriter
    source_writer: ConditionalWriter | None


def build_workers(settings: Settings) -> tuple[Worker, ...]:
    """One per lane, built as ``runtime.wiring.build_processor`` builds them."""
    workers = []
    for lane in range(len(settings.lanes)):
        cfg = settings.config(lane)
        writer = ConditionalWriter(
            client=None,  # type: ignore[arg-type] - the model evaluates requests, it never sends them
            table=TABLE,
            cfg=cfg.replication,
            origin_region=cfg.source.region,
            target_region=cfg.target.region,
            clock=lambda: float(BASE_S),
        )
        source_writer = None
        if cfg.replication.source_tombstones and cfg.replication.deletes == "tombstone":
            source_writer = ConditionalWriter(
                client=None,  # type: ignore[arg-type] - same
                table=TABLE,
                cfg=cfg.replication,
                origin_region=cfg.source.region,
                target_region=cfg.source.region,
                clock=lambda: float(BASE_S),
                replace_local_writes=False,
            )
        workers.append(Worker(Pipeline.from_config(cfg, clock=lambda: float(BASE_S)), writer, source_writer))
    return tuple(workers)


@dataclasses.dataclass(frozen=True)
class World:
    """One state of every region. Never mutated: steps return new worlds."""

    tables: tuple[dict[str, Item], ...]
    streams: tuple[tuple[ChangeRecord, ...], ...]
    cursors: tuple[int, ...]
    """Per lane: the next record of the source stream to deliver in order."""
    parked: tuple[frozenset[int], ...]
    """Per lane: dead-lettered records (skipped in order), to be redriven later."""
    stream_ids: tuple[tuple[tuple[Any, ...], ...], ...] = ()
    """Per region, each stream record's content, kept beside the stream so memoisation need not recompute it."""
    by_app: tuple[frozenset[int], ...] | None = None
    """Per region, the positions in its stream of the records the application made (the rest are
    replicators' and TTL's); None: not tracked (``Settings.forwards_application_only`` is false)."""
    ops_done: int = 0
    faults_left: int = 1
    """Replays, dead letters and expiries of tombstones before a replay, together."""
    replays_closed: bool = False
    """A tombstone expired while TTL outlives every replay window: no replay may follow."""
    last_writer: int | None = None
    """The region of the last application operation."""
    later_ms: int = 0
    """Time skipped by a tombstone's expiry: days pass before DynamoDB's TTL removes it."""

    def app_clock_ms(self) -> int:
        """The application's clock: two operations share a millisecond (equal timestamps happen)."""
        return BASE_MS + self.later_ms + self.ops_done // 2

    def frozen(self) -> tuple[Any, ...]:
        """A hashable identity of the state, for memoisation."""
        return (self.content(), self.faults_left)

    def table_contents(self) -> tuple[Any, ...]:
        """Every table's items, hashable."""
        return tuple(tuple(sorted((pk, _freeze(item)) for pk, item in table.items())) for table in self.tables)

    def content(self) -> tuple[Any, ...]:
        """The identity without the fault budget: with more budget a state allows every step it does with less."""
        # The tables are left out: every change to one appends its record (new image included) to the
        # region's stream, so the streams determine them.
        return (
            self.stream_ids,
            self.cursors,
            self.parked,
            self.ops_done,
            self.replays_closed,
            self.last_writer,
            self.later_ms,
            self.by_app,
        )


def _freeze(item: Item) -> tuple[Any, ...]:
    return tuple(sorted((k, repr(v)) for k, v in item.items()))


def _record_id(record: ChangeRecord) -> tuple[Any, ...]:
    return (
        record.event_name,
        _freeze(record.new_image or {}),
        _freeze(record.old_image or {}),
        record.approximate_creation_time_us,
        record.is_ttl_delete,
    )


def empty_world(*, faults: int = 1, regions: int = 2, track_makers: bool = True) -> World:
    """Every table empty, nothing delivered; ``faults``: the budget of replays, dead letters and expiries.

    ``track_makers``: remember which records the application made (``World.by_app``).
    """
    lanes = regions * (regions - 1)
    return World(
        tuple({} for _ in range(regions)),
        ((),) * regions,
        (0,) * lanes,
        (frozenset(),) * lanes,
        faults_left=faults,
        stream_ids=((),) * regions,
        by_app=(frozenset(),) * regions if track_makers else None,
    )


def _stream_time_s(world: World, settings: Settings) -> float:
    if settings.stream_clock == "streams_s":
        return float(BASE_S)  # every change in one second: the stream's clock says nothing
    return (world.app_clock_ms() + 5) / 1000


def change(
    world: World, settings: Settings, region: int, pk: str, after: Item | None, *, ttl: bool = False, app: bool = False
) -> World:
    """Set ``pk`` in ``region``'s table to ``after`` and append the stream record it makes.

    ``app``: the application makes the change (else a replicator or TTL does).
    """
    before = world.tables[region].get(pk)
    if before == after:
        return world
    table = dict(world.tables[region])
    if after is None:
        del table[pk]
    else:
        table[pk] = after
    ddb: dict[str, Any] = {
        "Keys": {"pk": {"S": pk}},
        "SequenceNumber": str(10**20 + len(world.streams[region])),
        "ApproximateCreationDateTime": _stream_time_s(world, settings),
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if before is not None:
        ddb["OldImage"] = before
    if after is not None:
        ddb["NewImage"] = after
    event: dict[str, Any] = {
        "eventID": ddb["SequenceNumber"],
        "eventName": "INSERT" if before is None else ("REMOVE" if after is None else "MODIFY"),
        "dynamodb": ddb,
        "awsRegion": settings.regions[region],
    }
    if ttl:
        event["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    record = from_lambda_event(event, shard_id=f"shard-{region}")
    streams = list(world.streams)
    streams[region] = (*streams[region], record)
    if len(streams[region]) > MAX_STREAM:
        raise Livelock(f"{settings.regions[region]}'s stream passed {MAX_STREAM} records")
    tables = list(world.tables)
    tables[region] = table
    ids = list(world.stream_ids)
    ids[region] = (*ids[region], _record_id(record))
    by_app = world.by_app
    if app and by_app is not None:
        by_app = tuple(made | {len(world.streams[region])} if r == region else made for r, made in enumerate(by_app))
    return dataclasses.replace(
        world, tables=tuple(tables), streams=tuple(streams), stream_ids=tuple(ids), by_app=by_app
    )


def app_op(world: World, settings: Settings, region: int, pk: str, kind: str) -> World | None:
    """The application writes in ``region`` (None: the operation makes no sense in this state)."""
    current = world.tables[region].get(pk)
    is_live = current is not None and "_rep_deleted" not in current
    # An upsert on a tombstone keeps the flag until the worker clears it, yet the application wrote it
    # (its UpdateItem returned it): it may delete it, before the worker's write lands too.
    upserted = current is not None and "_rep_deleted" in current and "a" in current
    value = {"N": str(world.ops_done)}
    if kind == "delete":
        if not (is_live or upserted):
            return None
        after: Item | None = None
    else:
        attrs: dict[str, Any] = {"a": value, "b": {"S": settings.regions[region]}}
        if settings.timestamp:
            # The contract: greater than the timestamp of the item it replaces (or the clock's).
            current_ts = int(current[TS]["N"]) if current and TS in current else 0
            # A re-create also follows the item it deleted (the application remembers it, or its clock
            # has passed it): the greatest timestamp this region's stream shows for the key.
            seen = [
                int(image[TS]["N"])
                for r in world.streams[region]
                if r.keys["pk"]["S"] == pk
                for image in (r.old_image, r.new_image)
                if image and TS in image
            ]
            attrs[TS] = {"N": str(max(world.app_clock_ms(), current_ts + 1, max(seen, default=0) + 1))}
        # put: a whole item, markers dropped; update: an UpdateItem upsert (SET a, b, ts), markers stay.
        after = {"pk": {"S": pk}, **attrs} if kind == "put" else {**(current or {"pk": {"S": pk}}), **attrs}
    stamped = change(world, settings, region, pk, after, app=True)
    return dataclasses.replace(stamped, ops_done=world.ops_done + 1, last_writer=region)


def deliver(world: World, settings: Settings, workers: tuple[Worker, ...], lane: int, index: int) -> World:
    """``lane``'s writer processes record ``index`` of its source stream (any number of times)."""
    source, target = settings.lanes[lane]
    record = world.streams[source][index]
    worker = workers[lane]
    try:
        decision = worker.pipeline.run(record)
    except (TransformError, RecordRejectedError):
        return world  # dead-lettered for good: a redrive fails the same way
    if isinstance(decision, str):
        return world
    if settings.forwards_application_only and world.by_app is not None and index not in world.by_app[source]:
        # Only the application's own changes may travel: forwarding a replicated one is how changes loop.
        raise Forwarded(f"lane {source}>{target} forwards record {index} of {settings.regions[source]}'s stream")
    world = _apply(world, settings, target, worker.writer.request(decision).params)
    if worker.source_writer is not None and decision.item is None:
        keys = decision.record.event["dynamodb"]["Keys"]
        request = worker.source_writer.request(dataclasses.replace(decision, keys=keys))
        world = _apply(world, settings, source, request.params)
    elif worker.source_writer is not None:
        # As BatchProcessor._revive_source: an upsert on a tombstone gets its flags cleared in the source.
        revive = worker.source_writer.revive_request(record.event["dynamodb"]["NewImage"], decision.version)
        if revive is not None:
            world = _apply(world, settings, source, revive.params)
    return world


def _apply(world: World, settings: Settings, region: int, params: dict[str, Any]) -> World:
    item_or_key = params.get("Item") or params["Key"]
    pk = item_or_key["pk"]["S"]
    current = world.tables[region].get(pk)
    if not holds(
        params["ConditionExpression"], params["ExpressionAttributeNames"], params["ExpressionAttributeValues"], current
    ):
        return world
    return change(world, settings, region, pk, params.get("Item"))


def expire_tombstone(world: World, settings: Settings, region: int, pk: str) -> World | None:
    """DynamoDB's TTL removes a tombstone (None: there is none)."""
    current = world.tables[region].get(pk)
    if current is None or "_rep_deleted" not in current:
        return None
    return change(world, settings, region, pk, None, ttl=True)


def live(item: Item | None, settings: Settings) -> Any:
    """What a reader sees: tombstones (and flagged items) absent, markers and transformed-away attributes left out."""
    if item is None or "_rep_deleted" in item:
        return None
    return {k: v for k, v in item.items() if not k.startswith("_rep_") and k not in settings.excluded}
