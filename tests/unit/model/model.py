"""Two model regions: tables, their streams, the application and the replicators, driving the real code.

Each region's table is a dict of items; every change to it appends the stream record DynamoDB Streams
(NEW_AND_OLD_IMAGES) would emit. A worker reads a region's stream and runs each record through the real
``Pipeline`` (classification, filters, transforms, versions) and the real ``ConditionalWriter.request``
(markers, ConditionBuilder); the request's ConditionExpression is evaluated on the model table by
``evaluator``. States are immutable: every step returns a new ``World``, so the explorer can branch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from unit.model.configs import REGIONS, TABLE, TS, Settings
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


@dataclasses.dataclass(frozen=True)
class Worker:
    """One direction's real pipeline and writers."""

    pipeline: Pipeline
    writer: ConditionalWriter
    source_writer: ConditionalWriter | None


def build_workers(settings: Settings) -> tuple[Worker, ...]:
    """The workers of this configuration, built as ``runtime.wiring.build_processor`` builds them."""
    workers = []
    for direction in (0, 1) if settings.active_active else (0,):
        cfg = settings.config(direction)
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
    """One state of both regions. Never mutated: steps return new worlds."""

    tables: tuple[dict[str, Item], dict[str, Item]]
    streams: tuple[tuple[ChangeRecord, ...], tuple[ChangeRecord, ...]]
    cursors: tuple[int, int]
    """Per direction: the next record of the source stream to deliver in order."""
    parked: tuple[frozenset[int], frozenset[int]]
    """Per direction: dead-lettered records (skipped in order), to be redriven later."""
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
        return (
            tuple(tuple(sorted((k, _freeze(v)) for k, v in t.items())) for t in self.tables),
            tuple(tuple(_record_id(r) for r in s) for s in self.streams),
            self.cursors,
            self.parked,
            self.ops_done,
            self.faults_left,
            self.replays_closed,
            self.last_writer,
            self.later_ms,
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


def empty_world(*, faults: int = 1) -> World:
    """Both tables empty, nothing delivered; ``faults``: the budget of replays, dead letters and expiries."""
    return World(({}, {}), ((), ()), (0, 0), (frozenset(), frozenset()), faults_left=faults)


def _stream_time_s(world: World, settings: Settings) -> float:
    if settings.stream_clock == "streams_s":
        return float(BASE_S)  # every change in one second: the stream's clock says nothing
    return (world.app_clock_ms() + 5) / 1000


def change(world: World, settings: Settings, region: int, pk: str, after: Item | None, *, ttl: bool = False) -> World:
    """Set ``pk`` in ``region``'s table to ``after`` and append the stream record it makes."""
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
        "awsRegion": REGIONS[region],
    }
    if ttl:
        event["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    record = from_lambda_event(event, shard_id=f"shard-{region}")
    streams = list(world.streams)
    streams[region] = (*streams[region], record)
    if len(streams[region]) > MAX_STREAM:
        raise Livelock(f"{REGIONS[region]}'s stream passed {MAX_STREAM} records")
    tables = list(world.tables)
    tables[region] = table
    return dataclasses.replace(world, tables=(tables[0], tables[1]), streams=(streams[0], streams[1]))


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
        attrs: dict[str, Any] = {"a": value, "b": {"S": REGIONS[region]}}
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
    stamped = change(world, settings, region, pk, after)
    return dataclasses.replace(stamped, ops_done=world.ops_done + 1, last_writer=region)


def deliver(world: World, settings: Settings, workers: tuple[Worker, ...], direction: int, index: int) -> World:
    """Worker ``direction`` processes record ``index`` of its source stream (any number of times)."""
    record = world.streams[direction][index]
    worker = workers[direction]
    try:
        decision = worker.pipeline.run(record)
    except (TransformError, RecordRejectedError):
        return world  # dead-lettered for good: a redrive fails the same way
    if isinstance(decision, str):
        return world
    target = 1 - direction
    world = _apply(world, settings, target, worker.writer.request(decision).params)
    if worker.source_writer is not None and decision.item is None:
        keys = decision.record.event["dynamodb"]["Keys"]
        request = worker.source_writer.request(dataclasses.replace(decision, keys=keys))
        world = _apply(world, settings, direction, request.params)
    elif worker.source_writer is not None:
        # As BatchProcessor._revive_source: an upsert on a tombstone gets its flags cleared in the source.
        revive = worker.source_writer.revive_request(record.event["dynamodb"]["NewImage"], decision.version)
        if revive is not None:
            world = _apply(world, settings, direction, revive.params)
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
