import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from replicator.core.errors import TransformError
from replicator.core.records import ChangeRecord, from_lambda_event
from replicator.pipeline import transforms as tmod
from replicator.pipeline.transform_specs import build_transforms
from replicator.pipeline.transforms import apply_transforms

MARKERS = frozenset({"_rep_version", "_rep_origin", "_rep_deleted", "_rep_expires"})
SECRET = "PERSONAL-DATA-7731"  # noqa: S105 - a marker of item contents, not a password
CLOCK_T = 1_700_000_000.001  # 2023-11-14T22:13:20.001Z


@pytest.fixture(autouse=True)
def _plugins_on_path(monkeypatch):
    # tests/ is not a package: put it on sys.path so "plugins_for_tests:..." imports.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))


def make_record(
    event_name: str = "MODIFY",
    *,
    keys: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    seq: str = "4421584500000000017450439091",
    shard: str = "shardId-00000001",
) -> ChangeRecord:
    """Build a record as the source does: the images are the very dicts inside record.event."""
    ddb: dict[str, Any] = {
        "Keys": keys if keys is not None else {"pk": {"S": "user#1"}, "sk": {"S": "profile"}},
        "SequenceNumber": seq,
        "ApproximateCreationDateTime": 1_699_999_990.0,
    }
    if new is not None:
        ddb["NewImage"] = new
    if old is not None:
        ddb["OldImage"] = old
    event = {"eventID": "e1", "eventName": event_name, "dynamodb": ddb, "awsRegion": "eu-west-1"}
    return from_lambda_event(event, shard_id=shard)


def item(**extra: Any) -> dict[str, Any]:
    """Return an image holding the default keys plus the given attributes."""
    return {"pk": {"S": "user#1"}, "sk": {"S": "profile"}, **extra}


def build(*specs: dict[str, Any], clock: Callable[[], float] = lambda: CLOCK_T) -> list[tmod.Stage]:
    """Build stages with the test markers, region and a fixed clock."""
    return build_transforms(list(specs), marker_attributes=MARKERS, source_region="eu-west-1", clock=clock)


def run(record: ChangeRecord, *specs: dict[str, Any]) -> ChangeRecord | None:
    """Build the specs and apply them to the record."""
    return apply_transforms(build(*specs), record)


def snapshot(record: ChangeRecord) -> dict[str, Any]:
    """Return a deep copy of everything a stage could mutate."""
    return copy.deepcopy({"keys": record.keys, "new": record.new_image, "old": record.old_image, "event": record.event})


# --------------------------------------------------------------------------------------------- include


def test_include_keeps_listed_and_key_attributes_in_both_images():
    """The include stage keeps the listed attributes plus the keys, in NewImage and OldImage."""
    rec = make_record(new=item(a={"S": "1"}, b={"N": "2"}, c={"S": "3"}), old=item(a={"S": "0"}, c={"S": "x"}))
    out = run(rec, {"type": "include", "attributes": ["a", "b", "missing"]})
    assert out is not None
    assert out.new_image == item(a={"S": "1"}, b={"N": "2"})
    assert out.old_image == item(a={"S": "0"})
    assert out.keys == rec.keys


def test_include_on_remove_touches_only_the_old_image():
    """A REMOVE has no NewImage: include filters the OldImage and leaves NewImage None."""
    rec = make_record("REMOVE", old=item(a={"S": "1"}, b={"S": "2"}))
    out = run(rec, {"type": "include", "attributes": ["b"]})
    assert out is not None
    assert out.new_image is None
    assert out.old_image == item(b={"S": "2"})


def test_include_empty_list_keeps_only_keys():
    """An empty include list leaves just the key attributes."""
    out = run(make_record("INSERT", new=item(a={"S": "1"})), {"type": "include", "attributes": []})
    assert out is not None
    assert out.new_image == item()


# --------------------------------------------------------------------------------------------- exclude


def test_exclude_drops_attributes_from_both_images():
    """The exclude stage removes the named attributes wherever they appear."""
    rec = make_record(new=item(secret={"S": SECRET}, a={"S": "1"}), old=item(secret={"S": SECRET}))
    out = run(rec, {"type": "exclude", "attributes": ["secret"]})
    assert out is not None
    assert out.new_image == item(a={"S": "1"})
    assert out.old_image == item()


def test_exclude_of_a_key_attribute_fails_naming_it():
    """Excluding an attribute that is part of the record's key is a TransformError naming it."""
    rec = make_record(new=item(), seq="123", shard="shardId-9")
    with pytest.raises(TransformError) as info:
        run(rec, {"type": "include", "attributes": []}, {"type": "exclude", "attributes": ["sk", "x"]})
    msg = str(info.value)
    assert "transforms[1] (exclude)" in msg
    assert "'sk'" in msg
    assert "'x'" not in msg
    assert "123" in msg
    assert "shardId-9" in msg


# ---------------------------------------------------------------------------------------------- rename


def test_rename_renames_in_both_images_and_keeps_values():
    """The rename stage moves the value to the new name in NewImage and OldImage."""
    rec = make_record(new=item(old_name={"N": "1.50"}), old=item(old_name={"N": "1.40"}))
    out = run(rec, {"type": "rename", "attributes": {"old_name": "new_name"}})
    assert out is not None
    assert out.new_image == item(new_name={"N": "1.50"})
    assert out.old_image == item(new_name={"N": "1.40"})


def test_rename_swaps_two_attributes():
    """Renames happen at once, so {a: b, b: a} swaps the values."""
    out = run(
        make_record("INSERT", new=item(a={"S": "A"}, b={"S": "B"})),
        {"type": "rename", "attributes": {"a": "b", "b": "a"}},
    )
    assert out is not None
    assert out.new_image == item(a={"S": "B"}, b={"S": "A"})


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        ({"pk": "id"}, "cannot rename key attribute 'pk' (use map_keys)"),
        ({"a": "sk"}, "cannot rename onto key attribute 'sk'"),
        ({"a": "b"}, "renaming 'a' to 'b' collides with an existing attribute"),
    ],
)
def test_rename_refuses_keys_and_collisions(mapping, expected):
    """Renaming a key, onto a key, or onto an existing attribute fails the record."""
    rec = make_record(new=item(a={"S": SECRET}, b={"S": SECRET}))
    with pytest.raises(TransformError, match="transforms\\[0\\] \\(rename\\)") as info:
        run(rec, {"type": "rename", "attributes": mapping})
    assert expected in str(info.value)
    assert SECRET not in str(info.value)


def test_rename_collision_is_found_whatever_the_attribute_order():
    """The collision is reported when the existing attribute comes after the renamed one, too."""
    rec = make_record(new={"b": {"S": "1"}, "pk": {"S": "p"}, "sk": {"S": "s"}, "a": {"S": "2"}})
    with pytest.raises(TransformError, match="renaming 'a' to 'b' collides"):
        run(rec, {"type": "rename", "attributes": {"a": "b"}})


# ------------------------------------------------------------------------------------------------- set


def test_set_constant_applies_to_both_images():
    """A constant set lands in NewImage and OldImage."""
    rec = make_record(new=item(), old=item())
    out = run(rec, {"type": "set", "attribute": "region_copy", "value": {"S": "eu"}})
    assert out is not None
    assert out.new_image == item(region_copy={"S": "eu"})
    assert out.old_image == item(region_copy={"S": "eu"})


def test_set_on_remove_applies_to_old_image_only():
    """A REMOVE keeps NewImage None; the OldImage gets the attribute."""
    out = run(make_record("REMOVE", old=item()), {"type": "set", "attribute": "x", "value": {"BOOL": False}})
    assert out is not None
    assert out.new_image is None
    assert out.old_image == item(x={"BOOL": False})


def test_set_without_images_returns_the_record_as_is():
    """A keys-only record has no image to set on."""
    rec = make_record("REMOVE")
    assert run(rec, {"type": "set", "attribute": "x", "value": {"S": "1"}}) is rec


def test_set_overwrites_an_existing_attribute():
    """The set stage replaces the value of an attribute the item already has."""
    out = run(
        make_record("INSERT", new=item(x={"S": "old"})),
        {"type": "set", "attribute": "x", "value": {"N": "7"}},
    )
    assert out is not None
    assert out.new_image == item(x={"N": "7"})


def test_set_constant_is_not_shared_between_records_or_images():
    """Editing one output's nested constant cannot change another record's value."""
    stages = build({"type": "set", "attribute": "m", "value": {"M": {"l": {"L": [{"S": "a"}]}}}})
    first = apply_transforms(stages, make_record(new=item(), old=item()))
    assert first is not None
    assert first.new_image is not None
    assert first.old_image is not None
    first.new_image["m"]["M"]["l"]["L"].append({"S": "b"})
    assert first.old_image["m"] == {"M": {"l": {"L": [{"S": "a"}]}}}
    second = apply_transforms(stages, make_record(new=item()))
    assert second is not None
    assert second.new_image is not None
    assert second.new_image["m"] == {"M": {"l": {"L": [{"S": "a"}]}}}


def test_set_of_a_key_attribute_fails():
    """Setting a key attribute would make the keys disagree with the images."""
    with pytest.raises(TransformError, match="cannot set key attribute 'pk'"):
        run(make_record(new=item()), {"type": "set", "attribute": "pk", "value": {"S": "x"}})


@pytest.mark.parametrize(
    ("derived", "expected"),
    [
        ("replication_time_iso", {"S": "2023-11-14T22:13:20.001Z"}),
        ("replication_time_epoch_ms", {"N": "1700000000001"}),
        ("source_approximate_creation_time_epoch_s", {"N": "1699999990"}),
        ("source_region", {"S": "eu-west-1"}),
        ("source_sequence_number", {"S": "4421584500000000017450439091"}),
    ],
)
def test_set_derived_values(derived, expected):
    """Each derived value is computed from the injected clock, the record or the source region."""
    out = run(make_record(new=item()), {"type": "set", "attribute": "d", "derived": derived})
    assert out is not None
    assert out.new_image is not None
    assert out.new_image["d"] == expected


def test_set_derived_creation_time_keeps_fractions():
    """A fractional creation time (Kinesis carries milliseconds) is not truncated."""
    rec = make_record(new=item())
    rec.approximate_creation_time_us = 1_699_999_990_250_000
    out = run(rec, {"type": "set", "attribute": "d", "derived": "source_approximate_creation_time_epoch_s"})
    assert out is not None
    assert out.new_image is not None
    assert out.new_image["d"] == {"N": "1699999990.25"}


def test_replication_time_reads_the_clock_per_record():
    """The clock is read when a record passes, not when the stages are built."""
    ticks = iter([1.0, 2.5])
    stages = build({"type": "set", "attribute": "t", "derived": "replication_time_epoch_ms"}, clock=lambda: next(ticks))
    values = []
    for _ in range(2):
        out = apply_transforms(stages, make_record(new=item()))
        assert out is not None
        assert out.new_image is not None
        values.append(out.new_image["t"])
    assert values == [{"N": "1000"}, {"N": "2500"}]


def test_replication_time_iso_across_second_boundaries():
    """The ISO time is right for records within one second and across seconds (its prefix is cached)."""
    ticks = iter([1.999, 1.9995, 2.0004, 1_704_067_199.5, 1_704_067_200.0])
    stages = build({"type": "set", "attribute": "t", "derived": "replication_time_iso"}, clock=lambda: next(ticks))
    values = []
    for _ in range(5):
        out = apply_transforms(stages, make_record(new=item()))
        assert out is not None
        assert out.new_image is not None
        values.append(out.new_image["t"]["S"])
    assert values == [
        "1970-01-01T00:00:01.999Z",
        "1970-01-01T00:00:01.999Z",
        "1970-01-01T00:00:02.000Z",
        "2023-12-31T23:59:59.500Z",
        "2024-01-01T00:00:00.000Z",
    ]


def test_epoch_ms_does_not_lose_a_millisecond_to_float_error():
    """1.001 s is 1001 ms although 1.001 * 1000 is 1000.9999999999999 in floats."""
    assert tmod._epoch_ms(1.001) == 1001
    assert tmod._epoch_ms(0.0) == 0


# -------------------------------------------------------------------------------------------- map_keys


def test_map_keys_renames_keys_and_both_images():
    """map_keys renames key attributes consistently in Keys, NewImage and OldImage."""
    rec = make_record(new=item(a={"S": "1"}), old=item(a={"S": "0"}))
    out = run(rec, {"type": "map_keys", "attributes": {"pk": "id", "sk": "sortKey"}})
    assert out is not None
    assert out.keys == {"id": {"S": "user#1"}, "sortKey": {"S": "profile"}}
    assert out.new_image == {"id": {"S": "user#1"}, "sortKey": {"S": "profile"}, "a": {"S": "1"}}
    assert out.old_image == {"id": {"S": "user#1"}, "sortKey": {"S": "profile"}, "a": {"S": "0"}}
    assert out.key_id != rec.key_id


def test_map_keys_on_remove_without_images():
    """A keys-only REMOVE still gets its keys renamed."""
    out = run(make_record("REMOVE"), {"type": "map_keys", "attributes": {"pk": "id"}})
    assert out is not None
    assert out.keys == {"id": {"S": "user#1"}, "sk": {"S": "profile"}}
    assert out.new_image is None
    assert out.old_image is None


def test_map_keys_of_a_missing_key_fails():
    """Mapping an attribute that is not in the record's keys means the config is for another table."""
    with pytest.raises(TransformError, match="key attribute 'id' is not in the record's keys"):
        run(make_record(new=item()), {"type": "map_keys", "attributes": {"id": "pk2"}})


def test_map_keys_onto_an_existing_attribute_fails():
    """A new key name that already exists as a plain attribute would lose one value."""
    with pytest.raises(TransformError, match="renaming 'pk' to 'id' collides"):
        run(make_record(new=item(id={"S": SECRET})), {"type": "map_keys", "attributes": {"pk": "id"}})


# ---------------------------------------------------------------------------------------- drop_deletes


@pytest.mark.parametrize(("event_name", "kept"), [("INSERT", True), ("MODIFY", True), ("REMOVE", False)])
def test_drop_deletes(event_name, kept):
    """drop_deletes drops REMOVE records and passes the others through."""
    rec = make_record(event_name, new=None if event_name == "REMOVE" else item(), old=item())
    out = run(rec, {"type": "drop_deletes"})
    assert (out is not None) is kept


# ---------------------------------------------------------------------------------------------- plugin


def test_plugin_success():
    """A plugin's returned record continues down the chain."""
    out = run(
        make_record(new=item()),
        {"type": "plugin", "function": "plugins_for_tests:tag"},
        {"type": "set", "attribute": "after", "value": {"NULL": True}},
    )
    assert out is not None
    assert out.new_image == item(tagged={"BOOL": True}, after={"NULL": True})


def test_plugin_with_dotted_attribute_path():
    """The function key may name a nested attribute after the colon (module:Class.method)."""
    out = run(
        make_record(new=item(region={"S": "eu"})),
        {"type": "plugin", "function": "plugins_for_tests:Namespace.upper_region"},
    )
    assert out is not None
    assert out.new_image == item(region={"S": "EU"})


def test_plugin_drop_stops_the_chain():
    """A plugin returning None drops the record; later stages do not run."""
    calls = []

    def spy(record: ChangeRecord) -> ChangeRecord:
        calls.append(record)
        return record

    stages = [*build({"type": "plugin", "function": "plugins_for_tests:drop_everything"}), spy]
    assert apply_transforms(stages, make_record(new=item())) is None
    assert calls == []


def test_plugin_bad_return_is_a_transform_error():
    """A plugin returning neither a record nor None fails the record."""
    with pytest.raises(TransformError) as info:
        run(make_record(new=item()), {"type": "plugin", "function": "plugins_for_tests:bad_return"})
    assert "transforms[0] (plugin)" in str(info.value)
    assert "plugin returned dict, expected ChangeRecord or None" in str(info.value)


def test_plugin_exception_is_wrapped_without_its_message():
    """A plugin's exception becomes a TransformError naming the type only; the original is chained."""
    rec = make_record(new=item(email={"S": SECRET}), seq="999", shard="shardId-7")
    with pytest.raises(TransformError) as info:
        run(
            rec,
            {"type": "set", "attribute": "x", "value": {"S": "1"}},
            {"type": "plugin", "function": "plugins_for_tests:raise_with_value"},
        )
    msg = str(info.value)
    assert msg == "transforms[1] (plugin) failed on record 999 of shard shardId-7: raised ValueError"
    assert isinstance(info.value.__cause__, ValueError)
    assert SECRET in str(info.value.__cause__)


def test_plugin_cannot_mutate_the_input_record():
    """A plugin editing its argument in place leaves the source record and its event intact."""
    rec = make_record(new=item(email={"S": "a@b"}, profile={"M": {"city": {"S": "Oslo"}}}), old=item())
    before = snapshot(rec)
    out = run(rec, {"type": "plugin", "function": "plugins_for_tests:mutate_in_place"})
    assert out is not None
    assert out.new_image is not None
    assert out.new_image["email"] == {"S": "overwritten"}
    assert snapshot(rec) == before


# ---------------------------------------------------------------------------------------------- chains


def test_chain_include_rename_set_derived():
    """Stages run in order, each seeing the previous one's output."""
    rec = make_record(new=item(a={"S": "1"}, b={"S": "2"}, c={"S": "3"}))
    out = run(
        rec,
        {"type": "include", "attributes": ["a", "b"]},
        {"type": "rename", "attributes": {"a": "alpha"}},
        {"type": "set", "attribute": "replicatedAt", "derived": "replication_time_iso"},
    )
    assert out is not None
    assert out.new_image == item(alpha={"S": "1"}, b={"S": "2"}, replicatedAt={"S": "2023-11-14T22:13:20.001Z"})
    assert out.sequence_number == rec.sequence_number
    assert out.event is rec.event


def test_chain_order_matters():
    """Renaming before including keeps the renamed attribute only if include names the new name."""
    rec = make_record(new=item(a={"S": "1"}))
    rename_first = run(rec, {"type": "rename", "attributes": {"a": "z"}}, {"type": "include", "attributes": ["a"]})
    include_first = run(rec, {"type": "include", "attributes": ["a"]}, {"type": "rename", "attributes": {"a": "z"}})
    assert rename_first is not None
    assert include_first is not None
    assert rename_first.new_image == item()
    assert include_first.new_image == item(z={"S": "1"})


def test_empty_chain_returns_the_record():
    """No transforms: the record passes unchanged."""
    rec = make_record(new=item())
    assert apply_transforms(build(), rec) is rec


def test_every_stage_leaves_the_input_intact():
    """No stage mutates the input record's dicts, the event included."""
    specs = [
        {"type": "include", "attributes": ["a", "m"]},
        {"type": "exclude", "attributes": ["b"]},
        {"type": "rename", "attributes": {"a": "a2"}},
        {"type": "set", "attribute": "s", "value": {"L": [{"S": "x"}]}},
        {"type": "set", "attribute": "t", "derived": "replication_time_iso"},
        {"type": "map_keys", "attributes": {"pk": "id"}},
        {"type": "drop_deletes"},
        {"type": "plugin", "function": "plugins_for_tests:tag"},
    ]
    rec = make_record(
        new=item(a={"S": "1"}, b={"S": "2"}, m={"M": {"x": {"N": "1"}}}), old=item(a={"S": "0"}, b={"S": "1"})
    )
    fields_before = (rec.keys, rec.new_image, rec.old_image, rec.event)
    before = snapshot(rec)
    for spec in specs:
        out = run(rec, spec)
        # drop_deletes passes a kept record through as is; every other stage returns a new one.
        assert (out is rec) == (spec["type"] == "drop_deletes")
        assert snapshot(rec) == before, spec
    out = run(rec, *specs)
    assert out is not None
    assert snapshot(rec) == before
    assert (rec.keys, rec.new_image, rec.old_image, rec.event) == fields_before
    assert out.keys == {"id": {"S": "user#1"}, "sk": {"S": "profile"}}


def test_apply_transforms_wraps_errors_of_hand_made_stages():
    """A stage not from build_transforms still surfaces as a TransformError naming its index."""

    def broken(record: ChangeRecord) -> ChangeRecord:
        raise KeyError(record.keys["pk"]["S"] + SECRET)

    rec = make_record(new=item(), seq="55", shard="shardId-3")
    with pytest.raises(TransformError) as info:
        apply_transforms([lambda r: r, broken], rec)
    assert str(info.value) == "transforms[1] failed on record 55 of shard shardId-3: raised KeyError"
    assert isinstance(info.value.__cause__, KeyError)


def test_builtin_stage_failure_on_malformed_record_names_no_values():
    """A malformed image (not a dict) fails with the exception type, not its contents."""
    rec = make_record(new=item())
    rec.new_image = [SECRET]  # type: ignore[assignment]
    with pytest.raises(TransformError) as info:
        run(rec, {"type": "include", "attributes": ["a"]})
    assert "transforms[0] (include)" in str(info.value)
    assert "raised AttributeError" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "exclude", "attributes": ["pk"]},
        {"type": "rename", "attributes": {"pk": "x"}},
        {"type": "rename", "attributes": {"a": "b"}},
        {"type": "set", "attribute": "sk", "value": {"S": "x"}},
        {"type": "map_keys", "attributes": {"nope": "x"}},
        {"type": "map_keys", "attributes": {"pk": "a"}},
        {"type": "plugin", "function": "plugins_for_tests:raise_with_value"},
        {"type": "plugin", "function": "plugins_for_tests:bad_return"},
    ],
)
def test_error_messages_hold_no_item_values(spec):
    """Every run-time failure names stage, shard and sequence number, never an item value."""
    rec = make_record(
        keys={"pk": {"S": SECRET}, "sk": {"S": SECRET}},
        new={
            "pk": {"S": SECRET},
            "sk": {"S": SECRET},
            "a": {"S": SECRET},
            "b": {"S": SECRET},
            "email": {"S": SECRET},
        },
        seq="31337",
        shard="shardId-42",
    )
    with pytest.raises(TransformError) as info:
        run(rec, spec)
    msg = str(info.value)
    assert SECRET not in msg
    assert f"transforms[0] ({spec['type']})" in msg
    assert "31337" in msg
    assert "shardId-42" in msg
    assert info.value.__cause__ is not None


def test_with_replace_fallback_matches_fast_path():
    """The dataclasses.replace fallback (for a changed ChangeRecord) gives the same record."""
    rec = make_record(new=item(), old=item())
    args = ({"k": {"S": "1"}}, {"n": {"S": "2"}}, None)
    assert tmod._with is tmod._with_direct
    assert tmod._with_replace(rec, *args) == tmod._with_direct(rec, *args)
