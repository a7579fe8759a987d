"""A shard whose lease goes to another worker leaves this worker's state and metrics; the renewer is supervised."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fake_lease_table import FakeLeaseTable, leased_config
from scripted_stream import RecordingTarget, ScriptedStream

from replicator.aws.clients import Clients, TargetClient
from replicator.core.config import LeaseConfig
from replicator.observe.metrics import Metrics
from replicator.runtime.assignment import LeasedAssignment
from replicator.runtime.service import Replicator

READER = {"poll_interval_s": 0.01, "max_idle_poll_interval_s": 0.02, "shard_discovery_interval_s": 0.05}


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling state that other tasks change without an event
            await asyncio.sleep(0.01)


def _series(metrics: Metrics, name: str) -> set[str]:
    return {
        sample.labels.get("shard", "")
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    }


async def test_a_lease_stolen_between_batches_removes_the_shard_from_state_and_metrics() -> None:
    """Owning 2 shards after a steal, the worker reports 2: no phantom reading shard, no lag series, ready."""
    stream = ScriptedStream()
    for shard_id in ("s0", "s1", "s2"):
        stream.add_shard(shard_id)
        stream.put(shard_id, f"k-{shard_id}", 1)
    table = FakeLeaseTable()
    # A long failover: the thief (which never renews here) keeps the lease for the whole test.
    cfg = leased_config(READER)
    target = RecordingTarget()
    clients = Clients(source=stream, streams=stream, target=TargetClient(target), checkpoint=table)
    metrics = Metrics()
    rep = Replicator(cfg, metrics=metrics, clients=clients)
    task = asyncio.create_task(rep.run())
    try:
        await _until(lambda: len(target.writes) == 3 and rep.state.count("reading") == 3)
        stolen = table.items["s1"]
        stolen["leaseOwner"] = {"S": "w2"}
        stolen["leaseCounter"] = {"N": str(int(stolen["leaseCounter"]["N"]) + 100)}
        await _until(lambda: "s1" not in rep.state.shards)
        assert rep.state.count("reading") == 2
        assert rep.state.count("owned") == 2
        assert "s1" not in rep.state.not_ready(timeout_s=0)
        assert "s1" not in _series(metrics, "replicator_iterator_age_seconds")
        assert "s1" not in _series(metrics, "replicator_checkpoint_age_seconds")
        assert _series(metrics, "replicator_iterator_age_seconds") >= {"s0", "s2"}
    finally:
        rep.stop()
        await task


async def test_a_lease_renewer_that_dies_is_logged_counted_and_restarted() -> None:
    """The renewer raising is no silent death: counted as background_task_died and running again."""
    metrics = Metrics()
    assignment = LeasedAssignment(
        FakeLeaseTable(),  # type: ignore[arg-type]
        "leases",
        stream_arn="arn:aws:dynamodb:us-east-1:1:table/T/stream/x",
        worker_id="w1",
        cfg=LeaseConfig(enabled=True, failover_time_s=1.0, renew_interval_s=0.01),
        metrics=metrics,
    )
    passes = 0

    async def renew_all() -> None:
        nonlocal passes
        passes += 1
        if passes == 1:
            raise RuntimeError("renewer bug")

    assignment.leases.renew_all = renew_all  # type: ignore[method-assign]
    await assignment.start()
    try:
        await _until(lambda: passes >= 3)
    finally:
        await assignment.release()
    died = metrics.registry.get_sample_value("replicator_errors_total", {"kind": "background_task_died"})
    assert died == 1
