from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st

from replicator.core.config import Config, ReplicationConfig
from replicator.core.records import ChangeRecord, from_lambda_event
from replicator.core.retry import RetryPolicy
from replicator.observe.metrics import Metrics
from replicator.pipeline import version as versions
from replicator.pipeline.origin import classify
from replicator.pipeline.processor import BatchProcessor
from replicator.pipeline.stages import Pipeline
from replicator.sink.writer import ConditionalWriter, ConditionBuilder, Write

SEQ = "4421584500000000017450439091"
STREAM_T = 1_700_000_000.0  # one-second resolution, as DynamoDB Streams gives it
TS_CFG = ReplicationConfig(timestamp_attribute="updatedAt", timestamp_unit="ms")
PLAIN_CFG = ReplicationConfig()


def record(
    event_name: str = "MODIFY",
    *,
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    seq: str = SEQ,
    ttl: bool = False,
    t: float = STREAM_T,
) -> ChangeRecord:
    """Build a stream record in the Lambda event shape."""
    ddb: dict[str, Any] = {
        "Keys": {"pk": {"S": "k1"}},
        "SequenceNumber": seq,
        "ApproximateCreationDateTime": t,
    }
    if new is not None:
        ddb["NewImage"] = new
    if old is not None:
        ddb["OldImage"] = old
    event: dict[str, Any] = {"eventID": "e1", "eventName": event_name, "dynamodb": ddb}
    if ttl:
        event["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    return from_lambda_event(event, shard_id="shardId-1")


def img(**attrs: Any) -> dict[str, Any]:
    """Return an image with key pk=k1 and the given raw attributes."""
    return {"pk": {"S": "k1"}, **attrs}


# -- versions ---------------------------------------------------------------------------------------

regions = st.sampled_from(["us-east-1", "us-west-2", "eu-west-1", "ap-south-1", "a", "a-1", "z9"])


@given(
    a=st.tuples(st.integers(0, 10**17 - 1), regions, st.integers(0, 10**versions.TIEBREAK_DIGITS - 1)),
    b=st.tuples(st.integers(0, 10**17 - 1), regions, st.integers(0, 10**versions.TIEBREAK_DIGITS - 1)),
)
def test_version_string_order_equals_tuple_order(a, b):
    """Encoded versions compare as strings exactly as their (timestamp, origin, tie-breaker) tuples."""
    va = versions.encode(a[0], a[1], str(a[2]))
    vb = versions.encode(b[0], b[1], str(b[2]))
    assert (va < vb) == (a < b)
    assert (va == vb) == (a == b)


def test_version_tiebreak_keeps_source_order_within_one_microsecond():
    """Same time and origin: a later (longer) sequence number sorts after an earlier (shorter) one."""
    assert versions.encode(5, "us-east-1", "999") < versions.encode(5, "us-east-1", "1000")


@pytest.mark.parametrize(
    ("ts", "tiebreak"), [(-1, "1"), (10**17, "1"), (0, "12a"), (0, "1" * (versions.MAX_TIEBREAK_DIGITS + 1))]
)
def test_version_rejects_out_of_range_parts(ts, tiebreak):
    """Timestamps beyond 17 digits and non-decimal or overlong tie-breakers are refused."""
    with pytest.raises(ValueError, match="version"):
        versions.encode(ts, "us-east-1", tiebreak)


def version_of(rec: ChangeRecord, cfg: ReplicationConfig = PLAIN_CFG) -> tuple[str, int | None]:
    """Compute a record's version as the us-east-1 pipeline does."""
    return versions.change_version(
        rec,
        origin="us-east-1",
        version_attribute=cfg.version_attribute,
        timestamp_attribute=cfg.timestamp_attribute,
        timestamp_unit=cfg.timestamp_unit,
    )


def test_version_uses_stream_time_without_app_timestamp():
    """Without timestamp_attribute the version's time is ApproximateCreationDateTime in µs."""
    version, app = version_of(record("INSERT", new=img(a={"S": "x"})))
    assert version == versions.encode(1_700_000_000_000_000, "us-east-1", SEQ)
    assert app is None


def test_version_hlc_bumps_past_the_version_it_modified():
    """A change to an item whose marker is newer than the stream clock gets that time plus 1 µs."""
    newer = versions.encode(1_700_000_000_500_000, "us-west-2", "7")
    rec = record("MODIFY", new=img(_rep_version={"S": newer}), old=img(_rep_version={"S": newer}))
    version, _ = version_of(rec)
    assert versions.timestamp_of(version) == 1_700_000_000_500_001
    assert version > newer


def test_version_prefers_the_app_timestamp():
    """With timestamp_attribute configured and present, it sets the version's time (ms -> µs)."""
    rec = record("MODIFY", new=img(updatedAt={"N": "1700000000123"}), old=img(updatedAt={"N": "1"}))
    version, app = version_of(rec, TS_CFG)
    assert app == 1_700_000_000_123_000
    assert versions.timestamp_of(version) == app


def test_delete_of_a_replicated_item_is_one_unit_after_it():
    """Deleting an item replicated from elsewhere: one unit after its timestamp, whatever the stream clock."""
    rec = record("REMOVE", old=img(updatedAt={"N": "1700000000123"}, _rep_ts={"N": "1700000000123"}), t=1_700_000_000.0)
    version, app = version_of(rec, TS_CFG)
    assert app == 1_700_000_000_124_000
    assert versions.timestamp_of(version) == app


def test_delete_of_a_local_item_keeps_its_time_and_follows_it_by_sequence():
    """Deleting a local write: its timestamp, not the stream's clock; the sequence number orders the two."""
    put = record("INSERT", new=img(updatedAt={"N": "1700000000123"}), seq="100")
    rec = record("REMOVE", old=img(updatedAt={"N": "1700000000123"}), t=1_700_000_000.9, seq="101")
    recreate = record("INSERT", new=img(updatedAt={"N": "1700000000123"}), seq="102")
    version, app = version_of(rec, TS_CFG)
    assert app == 1_700_000_000_123_000
    assert version_of(put, TS_CFG)[0] < version < version_of(recreate, TS_CFG)[0]


def test_delete_version_ignores_a_stream_clock_ahead_of_the_application():
    """A Kinesis clock 5 ms ahead of the application's does not put the tombstone after a re-create."""
    rec = record("REMOVE", old=img(updatedAt={"N": "1700000000123"}), t=1_700_000_000.128, seq="101")
    recreate = record("INSERT", new=img(updatedAt={"N": "1700000000124"}), seq="102")
    assert version_of(rec, TS_CFG)[0] < version_of(recreate, TS_CFG)[0]


def test_delete_without_app_timestamp_still_carries_one():
    """A delete of an item lacking the timestamp gets the stream time, so its tombstone is comparable."""
    _, app = version_of(record("REMOVE", old=img(a={"S": "x"})), TS_CFG)
    assert app == 1_700_000_000_000_000


# -- classify ---------------------------------------------------------------------------------------

V1 = versions.encode(1, "us-west-2", "1")
V2 = versions.encode(2, "us-west-2", "2")


@pytest.mark.parametrize(
    ("rec", "expected"),
    [
        (record("INSERT", new=img(a={"S": "x"})), "application"),
        (record("MODIFY", new=img(a={"S": "y"}), old=img(a={"S": "x"})), "application"),
        # UpdateItem on a replicated item: markers untouched in both images.
        (
            record("MODIFY", new=img(a={"S": "y"}, _rep_version={"S": V1}), old=img(_rep_version={"S": V1})),
            "application",
        ),
        # PutItem over a replicated item: the new image lost the markers.
        (record("MODIFY", new=img(a={"S": "y"}), old=img(_rep_version={"S": V1})), "application"),
        (record("INSERT", new=img(_rep_version={"S": V1})), "echo"),
        (record("MODIFY", new=img(_rep_version={"S": V2}), old=img(_rep_version={"S": V1})), "echo"),
        (record("MODIFY", new=img(_rep_version={"S": V2}), old=img(a={"S": "x"})), "echo"),
        (record("REMOVE", old=img(a={"S": "x"})), "application"),
        (record("REMOVE", old=img(a={"S": "x"}), ttl=True), "ttl_delete"),
        (
            record("REMOVE", old=img(_rep_version={"S": V1}, _rep_deleted={"BOOL": True}), ttl=True),
            "tombstone_gc",
        ),
        # Not TTL: the application deleted it (an upsert on a tombstone, flags not yet cleared): replicated.
        (record("REMOVE", old=img(_rep_version={"S": V1}, _rep_deleted={"BOOL": True})), "application"),
    ],
    ids=[
        "insert",
        "modify",
        "update-keeps-markers",
        "put-over-replicated",
        "echo-insert",
        "echo-modify",
        "echo-over-local",
        "app-delete",
        "ttl-delete",
        "tombstone-gc-ttl",
        "tombstone-removed",
    ],
)
def test_classify(rec, expected):
    """Each kind of change is attributed to the application, a replicator or TTL."""
    assert classify(rec, PLAIN_CFG) == expected


def test_ttl_delete_skip_or_replicate_per_config():
    """replication.ttl_deletes decides whether a TTL deletion (userIdentity Service) is replicated."""
    rec = record("REMOVE", old=img(a={"S": "x"}), ttl=True)
    skip = Pipeline(
        replication=ReplicationConfig(ttl_deletes="skip"),
        origin_region="us-east-1",
        filters=_no_filters(),
        transforms=[],
    )
    keep = Pipeline(replication=PLAIN_CFG, origin_region="us-east-1", filters=_no_filters(), transforms=[])
    assert skip.run(rec) == "ttl_skipped"
    out = keep.run(rec)
    assert isinstance(out, Write)
    assert out.item is None


def test_pipeline_skips_echoes_and_strips_markers():
    """An echo ends as echo_skipped; an application change loses the old markers before the writer."""
    pipeline = Pipeline(replication=PLAIN_CFG, origin_region="us-east-1", filters=_no_filters(), transforms=[])
    assert pipeline.run(record("INSERT", new=img(_rep_version={"S": V1}))) == "echo_skipped"
    out = pipeline.run(
        record(
            "MODIFY",
            new=img(a={"S": "y"}, _rep_version={"S": V1}, _rep_origin={"S": "us-west-2"}),
            old=img(_rep_version={"S": V1}),
        )
    )
    assert isinstance(out, Write)
    assert out.item == img(a={"S": "y"})
    assert out.version > V1


def _no_filters() -> Any:
    return Pipeline.from_config(
        Config(source={"region": "us-east-1", "table": "src"}, target={"region": "us-west-2", "table": "dst"})
    ).filters


# -- conditions -------------------------------------------------------------------------------------


def test_condition_without_timestamp_is_version_only():
    """No timestamp attribute: write when the target has no version or an older one."""
    builder = ConditionBuilder(PLAIN_CFG, origin_region="us-east-1", target_region="us-west-2")
    assert builder.expression(with_timestamp=False) == "attribute_not_exists(#ver) OR #ver < :ver"
    assert builder.names(with_timestamp=False) == {"#ver": "_rep_version"}


def test_condition_for_a_change_lacking_the_timestamp_spares_timestamped_items():
    """A change without the app timestamp may only replace items that lack one too."""
    builder = ConditionBuilder(TS_CFG, origin_region="us-east-1", target_region="us-west-2")
    expr = builder.expression(with_timestamp=False)
    assert expr == "attribute_not_exists(#ts) AND (attribute_not_exists(#ver) OR #ver < :ver)"
    assert builder.names(with_timestamp=False) == {"#ver": "_rep_version", "#ts": "updatedAt"}


def test_condition_clauses_with_timestamp():
    """Each case has its clause: no timestamp, older local write, older replicated version."""
    builder = ConditionBuilder(TS_CFG, origin_region="us-east-1", target_region="us-west-2")
    clauses = [
        "attribute_not_exists(#ts)",
        "(#ts < :ts AND (attribute_not_exists(#rts) OR #rts <> #ts))",
        "(#rts = #ts AND #ver < :ver)",
    ]
    assert builder.expression(with_timestamp=True) == " OR ".join(clauses)
    assert builder.names(with_timestamp=True) == {
        "#ver": "_rep_version",
        "#ts": "updatedAt",
        "#rts": "_rep_ts",
    }


def test_condition_tie_clause_only_for_the_greater_origin():
    """On equal timestamps the greater region name wins: only that direction gets the tie clause."""
    wins = ConditionBuilder(TS_CFG, origin_region="us-west-2", target_region="us-east-1").expression(
        with_timestamp=True
    )
    loses = ConditionBuilder(TS_CFG, origin_region="us-east-1", target_region="us-west-2").expression(
        with_timestamp=True
    )
    tie = "(#ts = :ts AND (attribute_not_exists(#rts) OR #rts <> #ts))"
    assert wins.endswith(" OR " + tie)
    assert tie not in loses


# -- writer requests ---------------------------------------------------------------------------------


def writer(cfg: ReplicationConfig = PLAIN_CFG, client: Any = None) -> ConditionalWriter:
    """Return a us-east-1 -> us-west-2 writer with a fixed clock."""
    return ConditionalWriter(
        client,
        table="dst",
        cfg=cfg,
        origin_region="us-east-1",
        target_region="us-west-2",
        clock=lambda: 1_000.5,
    )


def make_write(item: dict[str, Any] | None, *, app_ts: int | None = None, version: str = V2) -> Write:
    """Return a Write for key k1."""
    rec = record("REMOVE" if item is None else "MODIFY", new=item, old=img())
    return Write(keys={"pk": {"S": "k1"}}, item=item, version=version, app_timestamp_us=app_ts, record=rec)


def test_put_request_carries_item_and_markers():
    """A put is a conditional PutItem of the item plus version and origin markers."""
    req = writer().request(make_write(img(a={"S": "x"})))
    assert req.operation == "PutItem"
    assert req.params["Item"] == img(a={"S": "x"}, _rep_version={"S": V2}, _rep_origin={"S": "us-east-1"})
    assert req.params["TableName"] == "dst"
    assert req.params["ExpressionAttributeValues"] == {":ver": {"S": V2}}
    assert req.params["ConditionExpression"] == "attribute_not_exists(#ver) OR #ver < :ver"


def test_put_request_with_timestamp_copies_it_to_the_marker():
    """With a timestamp, :ts and the _rep_ts marker are the item's own timestamp value."""
    item = img(updatedAt={"N": "1700000000123"})
    req = writer(TS_CFG).request(make_write(item, app_ts=1_700_000_000_123_000))
    assert req.params["Item"]["_rep_ts"] == {"N": "1700000000123"}
    assert req.params["Item"]["updatedAt"] == {"N": "1700000000123"}
    assert req.params["ExpressionAttributeValues"][":ts"] == {"N": "1700000000123"}
    assert "#rts" in req.params["ExpressionAttributeNames"]


def test_tombstone_request_contents():
    """A delete is a PutItem of keys, markers, the deleted flag and a TTL (clock + tombstone_ttl_s)."""
    req = writer().request(make_write(None))
    assert req.operation == "PutItem"
    assert req.params["Item"] == {
        "pk": {"S": "k1"},
        "_rep_version": {"S": V2},
        "_rep_origin": {"S": "us-east-1"},
        "_rep_deleted": {"BOOL": True},
        "_rep_expires": {"N": str(1_000 + 15 * 24 * 3600)},
    }


def test_tombstone_with_timestamp_carries_it_in_unit():
    """A tombstone carries the delete's timestamp (in the unit) as the attribute and its marker copy."""
    req = writer(TS_CFG).request(make_write(None, app_ts=1_700_000_000_124_000))
    item = req.params["Item"]
    assert item["updatedAt"] == item["_rep_ts"] == {"N": "1700000000124"}
    assert req.params["ExpressionAttributeValues"][":ts"] == {"N": "1700000000124"}


def test_delete_mode_uses_conditional_delete_item():
    """With deletes: delete, a delete is a DeleteItem by key under the same condition."""
    req = writer(ReplicationConfig(deletes="delete")).request(make_write(None))
    assert req.operation == "DeleteItem"
    assert req.params["Key"] == {"pk": {"S": "k1"}}
    assert "Item" not in req.params
    assert req.params["ConditionExpression"] == "attribute_not_exists(#ver) OR #ver < :ver"


def test_custom_marker_names_are_used():
    """Marker attribute names come from the configuration."""
    cfg = ReplicationConfig(version_attribute="v_", origin_attribute="o_")
    req = writer(cfg).request(make_write(img()))
    assert set(req.params["Item"]) == {"pk", "v_", "o_"}
    assert req.params["ExpressionAttributeNames"] == {"#ver": "v_"}


class RecordingClient:
    """Records put_item calls; answers each with the next scripted error (None: success)."""

    def __init__(self, *errors: Exception | None) -> None:
        """Script the answers to successive calls."""
        self.calls: list[dict[str, Any]] = []
        self._errors = list(errors)

    async def put_item(self, **params: Any) -> dict[str, Any]:
        """Record the call and answer it as scripted."""
        self.calls.append(params)
        err = self._errors.pop(0) if self._errors else None
        if err is not None:
            raise err
        return {}


def client_error(code: str) -> ClientError:
    """Return a botocore ClientError with the given code."""
    return ClientError({"Error": {"Code": code, "Message": "m"}}, "PutItem")


async def test_conditional_check_failed_is_superseded():
    """A failed condition means the target holds a newer version: superseded, not an error."""
    client = RecordingClient(client_error("ConditionalCheckFailedException"))
    assert await writer(client=client).write(make_write(img())) == "superseded"
    assert len(client.calls) == 1


async def test_superseded_counts_a_conflict_and_is_not_retried():
    """The processor counts a lost condition in ``conflicts`` and does not write again."""
    client = RecordingClient(client_error("ConditionalCheckFailedException"))
    metrics = Metrics().for_target("eu-west-1")
    processor = BatchProcessor(
        pipeline=Pipeline(replication=PLAIN_CFG, origin_region="us-east-1", filters=_no_filters(), transforms=[]),
        writer=writer(client=client),
        metrics=metrics,
        retry_policy=RetryPolicy(),
        max_concurrent_writes=4,
    )
    result = await processor.process([record("INSERT", new=img(a={"S": "x"}))])
    assert result.outcomes["superseded"] == 1
    assert len(client.calls) == 1
    assert metrics.registry.get_sample_value("replicator_conflicts_total", {"target": "eu-west-1"}) == 1


async def test_source_tombstone_written_for_deletes_only():
    """With a source writer, a delete also leaves a tombstone in the source table; a put does not."""
    target, source = RecordingClient(), RecordingClient()
    src_writer = ConditionalWriter(
        source, table="src", cfg=PLAIN_CFG, origin_region="us-east-1", target_region="us-east-1"
    )
    processor = BatchProcessor(
        pipeline=Pipeline(replication=PLAIN_CFG, origin_region="us-east-1", filters=_no_filters(), transforms=[]),
        writer=writer(client=target),
        metrics=Metrics(),
        retry_policy=RetryPolicy(),
        max_concurrent_writes=4,
        source_writer=src_writer,
    )
    await processor.process([record("INSERT", new=img(a={"S": "x"}), seq="1")])
    assert source.calls == []
    await processor.process([record("REMOVE", old=img(a={"S": "x"}), seq="2")])
    assert len(source.calls) == 1
    tomb = source.calls[0]
    assert tomb["TableName"] == "src"
    assert tomb["Item"]["_rep_deleted"] == {"BOOL": True}
    assert tomb["Item"]["_rep_version"] == target.calls[-1]["Item"]["_rep_version"]
