"""Workload, prober, ceiling writer and process sampling shared by ``bench/run.py``.

Everything here runs in the harness process, never in the system under test.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import statistics
import threading
import time
from typing import TYPE_CHECKING, Any

import psutil
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

if TYPE_CHECKING:
    from collections.abc import Iterator

Item = dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Op:
    """One source change: a put of ``item`` or (item None) a delete of ``key``."""

    key: Item
    item: Item | None


def operations(
    n: int,
    *,
    item_size: int,
    seed: int = 7,
    insert_share: float = 0.5,
    delete_share: float = 0.1,
    spread: int = 1000,
) -> Iterator[Op]:
    """``n`` changes: inserts of new keys, updates and deletes of existing keys.

    An update or delete picks a random key among those last changed at least ``spread`` changes ago
    (default: one full GetRecords page), so a page rarely holds two changes to one key: the saturation
    figure measures writes, not the collapsing of same-key changes (the bench reports ``collapsed``).
    """
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not security
    eligible: list[str] = []
    cooling: collections.deque[tuple[int, str]] = collections.deque()
    next_key = 0
    for i in range(n):
        while cooling and cooling[0][0] <= i - spread:
            eligible.append(cooling.popleft()[1])
        roll = rng.random()
        if not eligible or roll < insert_share:
            pk = f"k{next_key:08d}"
            next_key += 1
        else:
            idx = rng.randrange(len(eligible))
            pk = eligible[idx]
            eligible[idx] = eligible[-1]
            eligible.pop()
            if roll > 1 - delete_share:
                yield Op({"pk": {"S": pk}}, None)
                continue
        cooling.append((i, pk))
        yield Op({"pk": {"S": pk}}, make_item(pk, i, item_size, rng))


def make_item(pk: str, seq: int, item_size: int, rng: random.Random) -> Item:
    """Return an order-like item of about ``item_size`` bytes (attribute names + values)."""
    item: Item = {
        "pk": {"S": pk},
        "status": {"S": rng.choice(["new", "paid", "shipped"])},
        "total": {"N": f"{rng.randrange(100000) / 100:.2f}"},
        "lines": {"L": [{"M": {"sku": {"S": f"sku-{rng.randrange(50)}"}, "qty": {"N": str(rng.randrange(1, 5))}}}]},
        "seq": {"N": str(seq)},
    }
    pad = item_size - 80
    if pad > 0:
        item["pad"] = {"S": "x" * pad}
    return item


def client_config(concurrency: int) -> AioConfig:
    """Return the harness's client config: botocore's standard retries, a pool for ``concurrency``."""
    return AioConfig(max_pool_connections=concurrency, retries={"mode": "standard", "total_max_attempts": 5})


async def apply_ops(client: Any, table: str, ops: list[Op], *, concurrency: int) -> float:  # noqa: ANN401 - aiobotocore
    """Write ``ops`` with ``concurrency`` writers (no order across keys); return the seconds it took."""
    queue = iter(ops)

    async def worker() -> None:
        for op in queue:
            if op.item is None:
                await client.delete_item(TableName=table, Key=op.key)
            else:
                await client.put_item(TableName=table, Item=op.item)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


async def ordered_apply(client: Any, table: str, ops: list[Op], *, concurrency: int) -> None:  # noqa: ANN401
    """Write ``ops`` concurrently, each key's changes in order (lanes by key): a reproducible preload."""
    lanes: list[list[Op]] = [[] for _ in range(concurrency)]
    for op in ops:
        lanes[hash(op.key["pk"]["S"]) % concurrency].append(op)

    async def lane(items: list[Op]) -> None:
        for op in items:
            if op.item is None:
                await client.delete_item(TableName=table, Key=op.key)
            else:
                await client.put_item(TableName=table, Item=op.item)

    await asyncio.gather(*(lane(items) for items in lanes))


@dataclasses.dataclass(slots=True)
class LagProbe:
    """End-to-end lag, measured from outside: probe items written to the source, looked for in the target.

    Every ``interval_s`` a probe key (one of a few) is written with a fresh token; the time is taken when
    PutItem is acknowledged. One poller looks for every outstanding probe with a single consistent
    BatchGetItem on the target every ``poll_s``; a probe's lag is (response received - acknowledged),
    so the figure errs high by at most ``poll_s`` plus one GetItem round trip. The extra load is
    1/interval_s writes/s on the source and 1/poll_s small reads/s on the target: small against the
    workload, and the same for the replicator and the baseline.
    """

    source: Any
    target: Any
    table: str
    interval_s: float = 0.1
    poll_s: float = 0.02
    timeout_s: float = 30.0
    keys: int = 8
    lags_s: list[float] = dataclasses.field(default_factory=list)
    lost: int = 0
    _pending: dict[str, tuple[str, float]] = dataclasses.field(default_factory=dict)
    _writing: set[str] = dataclasses.field(default_factory=set)

    async def run(self, stop: asyncio.Event) -> None:
        """Write probes until ``stop``, then wait for the outstanding ones (up to ``timeout_s``).

        Open loop: each probe's PutItem runs as its own task, so a slow acknowledgement (a busy source)
        delays only that probe's start of the clock, not the next probes (awaiting each in turn left a
        starved run with 12 probes in 30 s).
        """
        poller = asyncio.create_task(self._poll(stop))
        writes: set[asyncio.Task[None]] = set()
        i = 0
        next_at = time.monotonic()
        while not stop.is_set():
            pk = f"probe#{i % self.keys}"
            if pk not in self._pending and pk not in self._writing:
                self._writing.add(pk)
                task = asyncio.create_task(self._put(pk, f"{time.time_ns()}-{i}"))
                writes.add(task)
                task.add_done_callback(writes.discard)
            i += 1
            next_at += self.interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if writes:
            await asyncio.gather(*writes)
        await poller

    async def _put(self, pk: str, token: str) -> None:
        try:
            await self.source.put_item(TableName=self.table, Item={"pk": {"S": pk}, "token": {"S": token}})
            self._pending[pk] = (token, time.monotonic())
        finally:
            self._writing.discard(pk)

    async def _poll(self, stop: asyncio.Event) -> None:
        deadline: float | None = None
        while True:
            if stop.is_set():
                deadline = deadline or time.monotonic() + self.timeout_s
                if (not self._pending and not self._writing) or time.monotonic() > deadline:
                    self.lost += len(self._pending)
                    return
            if self._pending:
                keys = [{"pk": {"S": pk}} for pk in self._pending]
                resp = await self.target.batch_get_item(
                    RequestItems={
                        self.table: {
                            "Keys": keys,
                            "ConsistentRead": True,
                            "ProjectionExpression": "pk, #t",
                            "ExpressionAttributeNames": {"#t": "token"},
                        }
                    }
                )
                seen = time.monotonic()
                for item in resp.get("Responses", {}).get(self.table, []):
                    pk = item["pk"]["S"]
                    pending = self._pending.get(pk)
                    if pending and item.get("token", {}).get("S") == pending[0]:
                        self.lags_s.append(seen - pending[1])
                        del self._pending[pk]
                for pk, (_, acked) in list(self._pending.items()):
                    if seen - acked > self.timeout_s:
                        self.lost += 1
                        del self._pending[pk]
            await asyncio.sleep(self.poll_s)


async def paced_workload(
    client: Any,  # noqa: ANN401 - aiobotocore client
    table: str,
    ops: Iterator[Op],
    *,
    rate: float,
    stop: asyncio.Event,
) -> int:
    """Open-loop: start one write every 1/rate s whatever the latency of the last; return writes done."""
    interval = 1.0 / rate
    next_at = time.monotonic()
    tasks: set[asyncio.Task[Any]] = set()
    done = 0
    while not stop.is_set():
        op = next(ops)
        if op.item is None:
            call = client.delete_item(TableName=table, Key=op.key)
        else:
            call = client.put_item(TableName=table, Item=op.item)
        task = asyncio.ensure_future(call)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        done += 1
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    if tasks:
        await asyncio.gather(*tasks)
    return done


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in ms (None without samples)."""
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "samples": 0}
    ordered = sorted(values)
    if len(ordered) >= 2:  # noqa: PLR2004 - quantiles needs two points
        q = statistics.quantiles(ordered, n=100, method="inclusive")
        p50, p95, p99 = q[49], q[94], q[98]
    else:
        p50 = p95 = p99 = ordered[0]
    return {
        "p50_ms": round(p50 * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "samples": len(ordered),
    }


class ProcessSampler:
    """CPU seconds and peak RSS of one process, sampled every ``every_s`` in a thread (psutil)."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        """Attach to ``pid``; sampling starts with ``start``."""
        self.proc = psutil.Process(pid)
        self.every_s = every_s
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ProcessSampler:
        """Start sampling RSS."""
        self._thread.start()
        return self

    def cpu_s(self) -> float:
        """User + system CPU seconds the process used so far."""
        try:
            t = self.proc.cpu_times()
        except psutil.NoSuchProcess:
            return float("nan")
        return float(t.user + t.system)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=2)


def aio_session() -> Any:  # noqa: ANN401 - aiobotocore session
    """Return an aiobotocore session (credentials come from the environment the harness sets)."""
    return get_session()


class ThreadedLagProbe:
    """A ``LagProbe`` on its own event loop, thread and clients, so the harness's load cannot starve it.

    On the harness's loop the prober shared the event loop and connection pool with the paced workload;
    on a busy machine it completed 7-12 probes in 30 s instead of ~300. Here only the GIL is shared.
    """

    def __init__(self, source_endpoint: str, target_endpoint: str, table: str, *, regions: tuple[str, str]) -> None:
        """Configure; ``start`` launches the thread."""
        self.source_endpoint = source_endpoint
        self.target_endpoint = target_endpoint
        self.table = table
        self.regions = regions
        self.lags_s: list[float] = []
        self.lost = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="lag-probe", daemon=True)
        self._error: BaseException | None = None

    async def _main(self) -> None:
        session = aio_session()
        cfg = client_config(16)
        try:
            async with (
                session.create_client(
                    "dynamodb", region_name=self.regions[0], endpoint_url=self.source_endpoint, config=cfg
                ) as src,
                session.create_client(
                    "dynamodb", region_name=self.regions[1], endpoint_url=self.target_endpoint, config=cfg
                ) as tgt,
            ):
                # 32 keys: a probe is skipped while its key is still outstanding, so with 8 a lag of 1 s
                # capped the count at 8 a second, and slow runs reported too few probes to be valid.
                probe = LagProbe(src, tgt, self.table, interval_s=0.05, keys=32)
                stop = asyncio.Event()

                async def watch() -> None:
                    await asyncio.to_thread(self._stop.wait)
                    stop.set()

                watcher = asyncio.create_task(watch())
                await probe.run(stop)
                await watcher
                self.lags_s, self.lost = probe.lags_s, probe.lost
        except BaseException as exc:  # noqa: BLE001 - handed to the harness's thread in stop()
            self._error = exc

    def start(self) -> ThreadedLagProbe:
        """Start probing."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop writing probes, wait for the outstanding ones (up to the probe's timeout)."""
        self._stop.set()
        self._thread.join(60)
        if self._error is not None:
            raise self._error
