import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from replicator.core.errors import ConfigError
from replicator.core.records import ChangeRecord, from_lambda_event
from replicator.pipeline.transform_specs import build_transforms, validate_attribute_value
from replicator.pipeline.transforms import Stage, apply_transforms

MARKERS = frozenset({"_rep_version", "_rep_origin", "_rep_deleted", "_rep_expires"})
CLOCK_T = 1_700_000_000.001  # 2023-11-14T22:13:20.001Z


@pytest.fixture(autouse=True)
def _plugins_on_path(monkeypatch):
    # tests/ is not a package: put it on sys.path so "plugins_for_tests:..." imports.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))


def make_record() -> ChangeRecord:
    """Build a MODIFY record whose new image holds only the keys."""
    keys = {"pk": {"S": "user#1"}, "sk": {"S": "profile"}}
    ddb = {"Keys": keys, "NewImage": dict(keys), "SequenceNumber": "1", "ApproximateCreationDateTime": 1_699_999_990.0}
    event = {"eventID": "e1", "eventName": "MODIFY", "dynamodb": ddb, "awsRegion": "eu-west-1"}
    return from_lambda_event(event, shard_id="shardId-00000001")


def build(*specs: dict[str, Any]) -> list[Stage]:
    """Build stages with the test markers, region and a fixed clock."""
    return build_transforms(list(specs), marker_attributes=MARKERS, source_region="eu-west-1", clock=lambda: CLOCK_T)


# ---------------------------------------------------------------------------------------------- plugin


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz': ModuleNotFoundError"),
        ("plugins_for_tests:missing", "'plugins_for_tests' has no attribute 'missing'"),
        ("plugins_for_tests:Namespace.missing", "has no attribute 'Namespace.missing'"),
        ("plugins_for_tests:NOT_CALLABLE", "'plugins_for_tests:NOT_CALLABLE' is not callable"),
    ],
)
def test_plugin_lookup_failures_are_config_errors(function, expected):
    """A plugin that cannot be imported or called fails at build time, naming transforms[i].function."""
    with pytest.raises(ConfigError) as info:
        build({"type": "drop_deletes"}, {"type": "plugin", "function": function})
    assert str(info.value).startswith("transforms[1].function: ")
    assert expected in str(info.value)


def test_plugin_module_raising_on_import_is_a_config_error(tmp_path, monkeypatch):
    """An exception while importing the plugin's module is a ConfigError, chained."""
    (tmp_path / "broken_plugin_mod_t.py").write_text(
        textwrap.dedent("""\
        raise RuntimeError("boom at import")
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "broken_plugin_mod_t", raising=False)
    with pytest.raises(ConfigError, match=r"transforms\[0\]\.function: cannot import .*RuntimeError: boom") as info:
        build({"type": "plugin", "function": "broken_plugin_mod_t:f"})
    assert isinstance(info.value.__cause__, RuntimeError)


def test_plugin_is_imported_once_at_build_time(tmp_path, monkeypatch):
    """The function is looked up when building; replacing the module attribute later has no effect."""
    (tmp_path / "counting_plugin_mod_t.py").write_text(
        textwrap.dedent("""\
        IMPORTS = []
        IMPORTS.append(1)
        def f(record):
            return record
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "counting_plugin_mod_t", raising=False)
    stages = build({"type": "plugin", "function": "counting_plugin_mod_t:f"})
    module = sys.modules["counting_plugin_mod_t"]
    module.f = lambda _record: None  # type: ignore[attr-defined]
    for _ in range(3):
        assert apply_transforms(stages, make_record()) is not None
    assert module.IMPORTS == [1]


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"type": "include", "attributes": ["a", "_rep_version"]}, "attributes"),
        ({"type": "exclude", "attributes": ["_rep_origin"]}, "attributes"),
        ({"type": "rename", "attributes": {"_rep_deleted": "x"}}, "attributes"),
        ({"type": "rename", "attributes": {"x": "_rep_deleted"}}, "attributes"),
        ({"type": "set", "attribute": "_rep_expires", "value": {"N": "1"}}, "attribute"),
        ({"type": "set", "attribute": "_rep_version", "derived": "source_region"}, "attribute"),
        ({"type": "map_keys", "attributes": {"pk": "_rep_origin"}}, "attributes"),
        ({"type": "map_keys", "attributes": {"_rep_origin": "pk"}}, "attributes"),
    ],
)
def test_marker_attributes_are_refused(spec, field):
    """A transform naming a replication marker attribute is a ConfigError at build time."""
    with pytest.raises(ConfigError) as info:
        build({"type": "drop_deletes"}, {"type": "drop_deletes"}, spec)
    assert str(info.value).startswith(f"transforms[2].{field}: '_rep_")
    assert "replication marker" in str(info.value)


def test_markers_are_whatever_the_caller_says():
    """The marker set comes from the argument, not a built-in list."""
    build_transforms(
        [{"type": "include", "attributes": ["_rep_version"]}],
        marker_attributes=frozenset(),
        source_region="r",
    )
    with pytest.raises(ConfigError):
        build_transforms(
            [{"type": "include", "attributes": ["v"]}], marker_attributes=frozenset({"v"}), source_region="r"
        )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"type": "include", "attributes": "a"}, "transforms[2].attributes: Input should be a valid list"),
        (
            {"type": "include", "attributes": ["a", ""]},
            "transforms[2].attributes[1]: String should have at least 1",
        ),
        ({"type": "include"}, "transforms[2].attributes: required key is missing"),
        ({"type": "include", "attributes": [], "extra": 1}, "transforms[2].extra: unknown key"),
        ({"type": "exclude", "attributes": []}, "transforms[2].attributes: List should have at least 1 item"),
        (
            {"type": "rename", "attributes": {}},
            "transforms[2].attributes: Dictionary should have at least 1 item",
        ),
        ({"type": "rename", "attributes": {"a": "a"}}, "transforms[2].attributes: 'a' is renamed to itself"),
        (
            {"type": "map_keys", "attributes": {"a": "c", "b": "c"}},
            "transforms[2].attributes: 'a' and 'b' are both renamed to 'c'",
        ),
        (
            {"type": "set", "attribute": "x"},
            "transforms[2]: give exactly one of value (an AttributeValue) or derived",
        ),
        (
            {"type": "set", "attribute": "x", "value": {"S": "a"}, "derived": "source_region"},
            "transforms[2]: give exactly one",
        ),
        ({"type": "set", "attribute": "x", "derived": "tomorrow"}, "transforms[2].derived: Input should be"),
        (
            {"type": "set", "attribute": "x", "value": None},
            "transforms[2].value: must be a mapping with exactly one",
        ),
        (
            {"type": "set", "attribute": "x", "value": {"N": "abc"}},
            "transforms[2].value.N: 'abc' is not a number",
        ),
        (
            {"type": "set", "attribute": "x", "value": {"M": {"a": {"N": 5}}}},
            "transforms[2].value.M.a.N: a number must be given as a string",
        ),
        ({"type": "plugin", "function": "no_colon"}, "transforms[2].function: String should match pattern"),
        ({"type": "pivot"}, "transforms[2].type: Input tag 'pivot' found using 'type' does not match"),
        ({"attributes": ["a"]}, "transforms[2].type: required key is missing"),
        ("include", "transforms[2]: Input should be a valid dictionary"),
    ],
)
def test_config_errors_name_the_item_and_key(spec, expected):
    """Malformed items raise ConfigError with a transforms[i].key: message."""
    with pytest.raises(ConfigError) as info:
        build({"type": "drop_deletes"}, {"type": "drop_deletes"}, spec)
    assert str(info.value).startswith(expected), str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        {"S": ""},
        {"S": "text"},
        {"N": "0"},
        {"N": "-1.50"},
        {"N": "1E+125"},
        {"N": "1e-130"},
        {"N": "12345678901234567890123456789012345678"},
        {"N": "12345678901234567890123456789012345678000"},
        {"N": "0.00012345678901234567890123456789012345678"},
        {"BOOL": False},
        {"NULL": True},
        {"M": {}},
        {"M": {"a": {"L": [{"S": "x"}, {"NULL": True}, {"M": {"b": {"N": "1"}}}]}}},
        {"L": []},
        {"SS": ["a", "b"]},
        {"NS": ["1", "2.5"]},
        {"BS": [b"\x00", b"\x01"]},
        {"B": b"\xff"},
    ],
)
def test_well_formed_attribute_values_are_accepted(value):
    """Every AttributeValue type validates and comes back unchanged."""
    assert validate_attribute_value(value) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({}, "value: must be a mapping with exactly one type descriptor"),
        ({"S": "a", "N": "1"}, "value: must be a mapping with exactly one type descriptor"),
        ({"X": "a"}, "value: unknown type descriptor 'X'"),
        ({"S": 1}, "value.S: must be a string"),
        ({"N": 1.5}, "value.N: a number must be given as a string"),
        ({"N": "NaN"}, "value.N: 'NaN' is not a number"),
        ({"N": "1 "}, "value.N: '1 ' is not a number"),
        ({"N": "1E+126"}, "value.N: magnitude outside"),
        ({"N": "1E-131"}, "value.N: magnitude outside"),
        ({"N": "123456789012345678901234567890123456789"}, "value.N: more than 38 significant digits"),
        ({"N": "1.00000000000000000000000000000000000001"}, "value.N: more than 38 significant digits"),
        ({"B": "not base64!"}, "value.B: a string binary value must be base64"),
        ({"B": 5}, "value.B: binary must be bytes"),
        ({"BOOL": "true"}, "value.BOOL: must be true or false"),
        ({"NULL": False}, "value.NULL: must be true"),
        ({"M": []}, "value.M: must be a mapping"),
        ({"M": {"": {"S": "x"}}}, "value.M: attribute names must be non-empty strings"),
        ({"L": {"S": "x"}}, "value.L: must be a list"),
        ({"L": [{"S": "x"}, {"Q": 1}]}, "value.L[1]: unknown type descriptor 'Q'"),
        ({"SS": []}, "value.SS: a set must be a non-empty list"),
        ({"SS": ["a", "a"]}, "value.SS: a set must not hold duplicates"),
        ({"NS": ["1", "1.0"]}, "value.NS: a set must not hold duplicates"),
        ({"NS": ["1", "x"]}, "value.NS[1]: 'x' is not a number"),
        ({"BS": [b"a", 3]}, "value.BS[1]: binary must be bytes"),
    ],
)
def test_malformed_attribute_values_are_refused(value, expected):
    """Each malformation is refused with the path to it."""
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}"):
        validate_attribute_value(value)


def test_base64_binary_constant_becomes_bytes():
    """A base64 string B (the wire spelling) is decoded, as items carry B as bytes."""
    stages = build({"type": "set", "attribute": "b", "value": {"BS": ["AAE=", "/w=="]}})
    out = apply_transforms(stages, make_record())
    assert out is not None
    assert out.new_image is not None
    assert out.new_image["b"] == {"BS": [b"\x00\x01", b"\xff"]}
