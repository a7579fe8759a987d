"""``replicator status`` with fan-out: each shard's per-target positions from the checkpoint table."""

from __future__ import annotations

from scripted_stream import ScriptedStream

from replicator.checkpoint import Checkpoint
from replicator.ops.status import collect_status
from replicator.source.streams import StreamsSource


async def test_status_rows_carry_each_targets_checkpoint() -> None:
    """A fanned-out shard's row lists every target's position; the slowest is the shard's checkpoint."""
    stream = ScriptedStream()
    stream.add_shard("s1")
    first = stream.put("s1", "k", 1)
    second = stream.put("s1", "k", 2)
    cp = Checkpoint("s1", first, shard_end=False, updated_at_s=1.0, targets={"eu": second, "ap": first})
    rows = await collect_status(StreamsSource(stream, stream), {"s1": cp}, stream_arn=stream.arn)
    assert rows[0].checkpoint == first
    assert rows[0].as_json()["targets"] == {"eu": second, "ap": first}
