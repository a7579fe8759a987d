"""Lambda FilterCriteria patterns: semantics from the Lambda/EventBridge docs, on Lambda-shaped records."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from replicator.core.errors import ConfigError, FilterError
from replicator.pipeline.filters import (
    MAX_FILTERS,
    CompiledFilters,
    compile_filters,
    lambda_filter_criteria,
)

# A generic JSON event for the grammar itself (null, "", numbers, booleans, arrays).
DOC: dict[str, Any] = {
    "name": "Alice",
    "nullable": None,
    "empty": "",
    "price": 100,
    "ratio": 2.5,
    "num_str": "5",
    "flag": True,
    "colors": ["red", "blue"],
    "nested": {"deep": {"x": "y"}},
    "people": [{"first": "John", "last": "Doe"}, {"first": "Anna", "last": "Smith"}],
    "matrix": [["a", "b"], ["c"]],
    "empties": [],
}

# A DynamoDB stream record in the Lambda event shape.
DDB: dict[str, Any] = {
    "eventID": "1",
    "eventName": "MODIFY",
    "eventVersion": "1.1",
    "eventSource": "aws:dynamodb",
    "awsRegion": "us-east-1",
    "dynamodb": {
        "ApproximateCreationDateTime": 1700000000.0,
        "Keys": {"pk": {"S": "user#1"}, "sk": {"N": "5"}},
        "NewImage": {
            "pk": {"S": "user#1"},
            "sk": {"N": "5"},
            "status": {"S": "active"},
            "email": {"S": "Alice@Example.COM"},
            "file": {"S": "report.PNG"},
            "total": {"N": "42.5"},
            "nick": {"S": ""},
            "deleted": {"BOOL": False},
            "gone": {"NULL": True},
            "tags": {"SS": ["red", "blue"]},
            "scores": {"NS": ["1", "2"]},
            "address": {"M": {"city": {"S": "Paris"}, "zip": {"S": "75001"}}},
            "items": {
                "L": [
                    {"M": {"sku": {"S": "A1"}, "qty": {"N": "1"}}},
                    {"M": {"sku": {"S": "B2"}, "qty": {"N": "3"}}},
                ]
            },
            "history": {"L": [{"S": "created"}, {"S": "paid"}]},
            "blob": {"B": b"hi"},
        },
        "OldImage": {"pk": {"S": "user#1"}, "sk": {"N": "5"}, "status": {"S": "pending"}},
        "SequenceNumber": "111",
        "SizeBytes": 26,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    },
}

REMOVE: dict[str, Any] = {
    "eventName": "REMOVE",
    "eventSource": "aws:dynamodb",
    "dynamodb": {
        "Keys": {"pk": {"S": "user#1"}},
        "OldImage": {"pk": {"S": "user#1"}, "status": {"S": "active"}},
        "SequenceNumber": "112",
    },
    "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
}


def _img(image: str, attrs: dict[str, Any]) -> dict[str, Any]:
    return {"dynamodb": {image: attrs}}


def _new(attrs: dict[str, Any]) -> dict[str, Any]:
    return _img("NewImage", attrs)


MATCH_CASES = [
    # --- equals, null and empty --------------------------------------------------------------------
    pytest.param({"name": ["Alice"]}, DOC, True, id="equals"),
    pytest.param({"name": ["Bob"]}, DOC, False, id="equals-other-value"),
    pytest.param({"name": ["alice"]}, DOC, False, id="equals-is-case-sensitive"),
    pytest.param({"name": ["Bob", "Alice"]}, DOC, True, id="or-of-values"),
    pytest.param({"nullable": [None]}, DOC, True, id="null-matches-null"),
    pytest.param({"empty": [None]}, DOC, False, id="null-does-not-match-empty-string"),
    pytest.param({"missing": [None]}, DOC, False, id="null-does-not-match-missing"),
    pytest.param({"empty": [""]}, DOC, True, id="empty-matches-empty-string"),
    pytest.param({"nullable": [""]}, DOC, False, id="empty-does-not-match-null"),
    pytest.param({"missing": [""]}, DOC, False, id="empty-does-not-match-missing"),
    # --- exists ------------------------------------------------------------------------------------
    pytest.param({"name": [{"exists": True}]}, DOC, True, id="exists-true-present"),
    pytest.param({"nullable": [{"exists": True}]}, DOC, True, id="exists-true-null-value-is-present"),
    pytest.param({"missing": [{"exists": True}]}, DOC, False, id="exists-true-missing"),
    pytest.param({"missing": [{"exists": False}]}, DOC, True, id="exists-false-missing"),
    pytest.param({"name": [{"exists": False}]}, DOC, False, id="exists-false-present"),
    pytest.param({"nested": [{"exists": True}]}, DOC, False, id="exists-true-on-object-is-not-a-leaf"),
    pytest.param({"nested": [{"exists": False}]}, DOC, True, id="exists-false-on-object-is-not-a-leaf"),
    pytest.param({"empties": [{"exists": False}]}, DOC, True, id="exists-false-empty-array"),
    pytest.param({"nope": {"child": [{"exists": False}]}}, DOC, True, id="exists-false-under-missing-parent"),
    pytest.param({"nope": {"child": ["x"]}}, DOC, False, id="equals-under-missing-parent"),
    pytest.param({"missing": [{"exists": False}, "x"]}, DOC, True, id="exists-false-or-value-missing"),
    # --- equals-ignore-case, prefix, suffix --------------------------------------------------------
    pytest.param({"name": [{"equals-ignore-case": "ALICE"}]}, DOC, True, id="equals-ignore-case"),
    pytest.param({"name": [{"equals-ignore-case": "alicia"}]}, DOC, False, id="equals-ignore-case-other"),
    pytest.param({"name": [{"prefix": "Al"}]}, DOC, True, id="prefix"),
    pytest.param({"name": [{"prefix": "al"}]}, DOC, False, id="prefix-is-case-sensitive"),
    pytest.param({"name": [{"prefix": {"equals-ignore-case": "aL"}}]}, DOC, True, id="prefix-ignore-case"),
    pytest.param({"name": [{"suffix": "ice"}]}, DOC, True, id="suffix"),
    pytest.param({"name": [{"suffix": "ICE"}]}, DOC, False, id="suffix-is-case-sensitive"),
    pytest.param({"name": [{"suffix": {"equals-ignore-case": "ICE"}}]}, DOC, True, id="suffix-ignore-case"),
    pytest.param({"price": [{"prefix": "1"}]}, DOC, False, id="prefix-never-matches-a-number"),
    # --- anything-but --------------------------------------------------------------------------------
    pytest.param({"name": [{"anything-but": ["Bob", "Carol"]}]}, DOC, True, id="anything-but-list"),
    pytest.param({"name": [{"anything-but": ["Alice", "Bob"]}]}, DOC, False, id="anything-but-list-excluded"),
    pytest.param({"name": [{"anything-but": "Alice"}]}, DOC, False, id="anything-but-single-string"),
    pytest.param({"missing": [{"anything-but": ["x"]}]}, DOC, False, id="anything-but-needs-the-field"),
    pytest.param({"price": [{"anything-but": [100, 200]}]}, DOC, False, id="anything-but-numbers-excluded"),
    pytest.param({"price": [{"anything-but": [200, 300]}]}, DOC, True, id="anything-but-numbers"),
    pytest.param({"price": [{"anything-but": 100}]}, DOC, False, id="anything-but-single-number"),
    # event-ruler's AnythingBut excludes only the listed numbers: a string value is not one of them.
    pytest.param({"num_str": [{"anything-but": [1]}]}, DOC, True, id="anything-but-numbers-pass-strings"),
    pytest.param({"name": [{"anything-but": {"prefix": "Al"}}]}, DOC, False, id="anything-but-prefix-excluded"),
    pytest.param({"name": [{"anything-but": {"prefix": "Bo"}}]}, DOC, True, id="anything-but-prefix"),
    pytest.param({"name": [{"anything-but": {"suffix": "ce"}}]}, DOC, False, id="anything-but-suffix"),
    pytest.param(
        {"name": [{"anything-but": {"equals-ignore-case": ["ALICE"]}}]},
        DOC,
        False,
        id="anything-but-ignore-case",
    ),
    pytest.param(
        {"name": [{"anything-but": {"equals-ignore-case": "bob"}}]},
        DOC,
        True,
        id="anything-but-ignore-case-other",
    ),
    pytest.param({"colors": [{"anything-but": ["red"]}]}, DOC, True, id="anything-but-any-array-element"),
    pytest.param({"colors": [{"anything-but": ["red", "blue"]}]}, DOC, False, id="anything-but-all-excluded"),
    # --- numeric -----------------------------------------------------------------------------------
    pytest.param({"price": [{"numeric": ["=", 100]}]}, DOC, True, id="numeric-equals"),
    pytest.param({"price": [{"numeric": ["=", 101]}]}, DOC, False, id="numeric-equals-other"),
    pytest.param({"price": [{"numeric": [">", 0, "<=", 100]}]}, DOC, True, id="numeric-range-closed-top"),
    pytest.param({"price": [{"numeric": [">", 0, "<", 100]}]}, DOC, False, id="numeric-range-open-top"),
    pytest.param({"price": [{"numeric": [">", 100]}]}, DOC, False, id="numeric-open-bottom"),
    pytest.param({"ratio": [{"numeric": [">=", 2.5]}]}, DOC, True, id="numeric-ge-float"),
    pytest.param({"ratio": [{"numeric": ["<", 2.5]}]}, DOC, False, id="numeric-lt-float"),
    pytest.param({"num_str": [{"numeric": ["=", 5]}]}, DOC, False, id="numeric-never-matches-a-string"),
    pytest.param({"flag": [{"numeric": ["=", 1]}]}, DOC, False, id="numeric-never-matches-a-boolean"),
    pytest.param({"missing": [{"numeric": [">", 0]}]}, DOC, False, id="numeric-missing"),
    # --- literal types -------------------------------------------------------------------------------
    pytest.param({"price": [100]}, DOC, True, id="number-literal"),
    pytest.param({"num_str": [5]}, DOC, False, id="number-literal-does-not-match-string"),
    pytest.param({"price": ["100"]}, DOC, False, id="string-literal-does-not-match-number"),
    pytest.param({"flag": [True]}, DOC, True, id="boolean-literal"),
    pytest.param({"flag": ["true"]}, DOC, False, id="boolean-does-not-match-string"),
    pytest.param({"flag": [1]}, DOC, False, id="boolean-does-not-match-number"),
    # --- and / or ------------------------------------------------------------------------------------
    pytest.param({"name": ["Alice"], "price": [100]}, DOC, True, id="and-all-fields"),
    pytest.param({"name": ["Alice"], "price": [200]}, DOC, False, id="and-one-field-fails"),
    pytest.param({"$or": [{"name": ["Bob"]}, {"price": [100]}]}, DOC, True, id="or-fields"),
    pytest.param({"$or": [{"name": ["Bob"]}, {"price": [1]}]}, DOC, False, id="or-fields-none"),
    pytest.param({"nested": {"deep": {"$or": [{"x": ["n"]}, {"x": ["y"]}]}}}, DOC, True, id="or-nested-inside-objects"),
    pytest.param({"$or": [{"name": ["Bob"]}, {"name": ["Alice"], "price": [100]}]}, DOC, True, id="or-branch-with-and"),
    pytest.param({"name": ["Bob"], "$or": [{"price": [100]}, {"flag": [True]}]}, DOC, False, id="and-outside-or-fails"),
    pytest.param(
        {"$or": [{"name": ["Bob"]}, {"$or": [{"price": [1]}, {"ratio": [2.5]}]}]},
        DOC,
        True,
        id="or-inside-or",
    ),
    pytest.param({"$or": [{"name": ["Bob"]}, {"price": [1]}], "flag": [True]}, DOC, False, id="or-fails-and-passes"),
    # --- arrays --------------------------------------------------------------------------------------
    pytest.param({"colors": ["blue"]}, DOC, True, id="array-any-element"),
    pytest.param({"colors": ["green"]}, DOC, False, id="array-no-element"),
    pytest.param({"people": {"first": ["Anna"]}}, DOC, True, id="array-of-objects"),
    pytest.param({"people": {"first": ["Anna"], "last": ["Smith"]}}, DOC, True, id="array-same-element"),
    pytest.param({"people": {"first": ["Anna"], "last": ["Doe"]}}, DOC, False, id="array-fields-across-elements"),
    pytest.param({"matrix": ["c"]}, DOC, True, id="nested-arrays-are-crushed"),
    pytest.param({"nested": ["y"]}, DOC, False, id="leaf-pattern-on-object"),
    pytest.param({"name": {"x": ["Alice"]}}, DOC, False, id="object-pattern-on-leaf"),
    # --- DynamoDB stream records -------------------------------------------------------------------
    pytest.param({"eventName": ["MODIFY"]}, DDB, True, id="ddb-event-name"),
    pytest.param({"eventName": ["INSERT", "REMOVE"]}, DDB, False, id="ddb-event-name-other"),
    pytest.param({"eventSource": ["aws:dynamodb"], "awsRegion": ["us-east-1"]}, DDB, True, id="ddb-metadata"),
    pytest.param({"dynamodb": {"Keys": {"pk": {"S": ["user#1"]}}}}, DDB, True, id="ddb-key"),
    pytest.param(_new({"status": {"S": ["active"]}}), DDB, True, id="ddb-new-image"),
    pytest.param(_img("OldImage", {"status": {"S": ["active"]}}), DDB, False, id="ddb-old-image"),
    pytest.param(_new({"total": {"N": [{"numeric": [">", 0]}]}}), DDB, False, id="ddb-numeric-on-n-never"),
    pytest.param(_new({"total": {"N": [42.5]}}), DDB, False, id="ddb-number-literal-on-n-never"),
    pytest.param(_new({"total": {"N": ["42.5"]}}), DDB, True, id="ddb-n-as-string"),
    pytest.param(_new({"total": {"N": [{"prefix": "42"}]}}), DDB, True, id="ddb-n-prefix"),
    pytest.param(_new({"nope": {"S": ["x"]}}), DDB, False, id="ddb-missing-attribute"),
    pytest.param(_new({"nope": {"S": [{"exists": False}]}}), DDB, True, id="ddb-missing-attribute-exists-false"),
    pytest.param(_new({"status": [{"exists": True}]}), DDB, False, id="ddb-exists-on-attribute-name-never"),
    pytest.param(_new({"status": {"S": [{"exists": True}]}}), DDB, True, id="ddb-exists-on-type-descriptor"),
    pytest.param(_new({"status": {"N": [{"exists": True}]}}), DDB, False, id="ddb-exists-other-type"),
    pytest.param(_new({"address": {"M": {"city": {"S": ["Paris"]}}}}), DDB, True, id="ddb-map"),
    pytest.param(_new({"address": {"M": {"city": {"S": ["Rome"]}}}}), DDB, False, id="ddb-map-other"),
    pytest.param(_new({"history": {"L": {"S": ["paid"]}}}), DDB, True, id="ddb-list-of-strings"),
    pytest.param(
        _new({"items": {"L": {"M": {"sku": {"S": ["B2"]}, "qty": {"N": ["3"]}}}}}),
        DDB,
        True,
        id="ddb-list-of-maps",
    ),
    pytest.param(
        _new({"items": {"L": {"M": {"sku": {"S": ["B2"]}, "qty": {"N": ["1"]}}}}}),
        DDB,
        False,
        id="ddb-list-of-maps-across-elements",
    ),
    pytest.param(_new({"tags": {"SS": ["blue"]}}), DDB, True, id="ddb-string-set"),
    pytest.param(_new({"tags": {"SS": ["green"]}}), DDB, False, id="ddb-string-set-other"),
    pytest.param(_new({"scores": {"NS": ["2"]}}), DDB, True, id="ddb-number-set-as-strings"),
    pytest.param(_new({"deleted": {"BOOL": [False]}}), DDB, True, id="ddb-bool"),
    pytest.param(_new({"deleted": {"BOOL": ["false"]}}), DDB, False, id="ddb-bool-not-string"),
    pytest.param(_new({"gone": {"NULL": [True]}}), DDB, True, id="ddb-null-type"),
    pytest.param(_new({"nick": {"S": [""]}}), DDB, True, id="ddb-empty-string"),
    pytest.param(_new({"nick": {"S": [None]}}), DDB, False, id="ddb-empty-string-is-not-null"),
    pytest.param(_new({"blob": {"B": ["aGk="]}}), DDB, True, id="ddb-binary-as-base64"),
    pytest.param(
        _new({"email": {"S": [{"equals-ignore-case": "alice@example.com"}]}}), DDB, True, id="ddb-ignore-case"
    ),
    pytest.param(
        _new({"file": {"S": [{"suffix": {"equals-ignore-case": ".png"}}]}}),
        DDB,
        True,
        id="ddb-suffix-ignore-case",
    ),
    pytest.param(
        {
            "eventName": ["MODIFY"],
            "dynamodb": {
                "NewImage": {"status": {"S": ["active"]}},
                "OldImage": {"status": {"S": [{"anything-but": ["active"]}]}},
            },
        },
        DDB,
        True,
        id="ddb-status-changed-to-active",
    ),
    pytest.param(
        _new({"$or": [{"status": {"S": ["closed"]}}, {"total": {"N": ["42.5"]}}]}),
        DDB,
        True,
        id="ddb-or-in-image",
    ),
    pytest.param(
        _new({"$or": [{"status": {"S": ["closed"]}}, {"total": {"N": ["1"]}}]}),
        DDB,
        False,
        id="ddb-or-in-image-none",
    ),
    pytest.param({"dynamodb": {"SizeBytes": [{"numeric": [">", 10]}]}}, DDB, True, id="ddb-size-bytes-numeric"),
    pytest.param(_new({"status": {"S": [{"exists": False}]}}), REMOVE, True, id="ddb-remove-has-no-new-image"),
    pytest.param(_new({"status": {"S": ["active"]}}), REMOVE, False, id="ddb-remove-new-image-equals"),
    pytest.param({"userIdentity": {"principalId": ["dynamodb.amazonaws.com"]}}, REMOVE, True, id="ddb-ttl-delete"),
    pytest.param({"userIdentity": {"type": [{"exists": True}]}}, DDB, False, id="ddb-not-a-ttl-delete"),
]


@pytest.mark.parametrize(("pattern", "event", "expected"), MATCH_CASES)
def test_pattern_matches_like_lambda(pattern: dict[str, Any], event: dict[str, Any], *, expected: bool) -> None:
    """Each documented operator matches (or not) exactly as Lambda event filtering does."""
    before = copy.deepcopy(event)
    compiled = compile_filters([pattern])
    assert compiled.matches(event) is expected
    # The same pattern as a JSON string (FilterCriteria's form) behaves the same, and nothing mutates.
    if event is not DDB:  # DDB holds bytes, which JSON cannot carry; the pattern itself always can.
        assert compile_filters([json.dumps(pattern)]).matches(event) is expected
    assert event == before


ORED_CASES = [
    pytest.param([], True, id="no-filters-pass-everything"),
    pytest.param([{"eventName": ["INSERT"]}], False, id="one-filter-no-match"),
    pytest.param([{"eventName": ["INSERT"]}, {"eventName": ["MODIFY"]}], True, id="second-filter-matches"),
    pytest.param([{"eventName": ["MODIFY"]}, {"eventName": ["INSERT"]}], True, id="first-filter-matches"),
    pytest.param([{"eventName": ["INSERT"]}, {"eventName": ["REMOVE"]}], False, id="no-filter-matches"),
    pytest.param(
        [{"eventName": [x]} for x in ("INSERT", "REMOVE", "INSERT", "REMOVE", "MODIFY")],
        True,
        id="fifth-matches",
    ),
    pytest.param(['{"eventName": ["INSERT"]}', '{"eventName": ["MODIFY"]}'], True, id="json-strings"),
    pytest.param(
        [{"eventName": ["INSERT"]}, '{"dynamodb": {"Keys": {"pk": {"S": ["user#1"]}}}}'],
        True,
        id="mixed-forms",
    ),
]


@pytest.mark.parametrize(("patterns", "expected"), ORED_CASES)
def test_filters_are_ored(patterns: list[Any], *, expected: bool) -> None:
    """A record passes if any filter matches; an empty filter list passes everything."""
    compiled = compile_filters(patterns)
    assert len(compiled) == len(patterns)
    assert compiled.matches(DDB) is expected


def test_five_filters_allowed_six_rejected() -> None:
    """Lambda's quota is five filters per mapping; a sixth is a configuration error naming index 5."""
    five = [{"eventName": ["INSERT"]}] * MAX_FILTERS
    assert len(compile_filters(five)) == MAX_FILTERS
    with pytest.raises(FilterError) as info:
        compile_filters([*five, {"eventName": ["MODIFY"]}])
    assert isinstance(info.value, ConfigError)
    assert info.value.filter_index == MAX_FILTERS
    assert "at most 5 filters" in str(info.value)


def test_filter_limit_is_a_setting_up_to_lambdas_raised_quota() -> None:
    """The quota can be raised to ten: max_filters=10 accepts ten patterns and refuses an eleventh."""
    ten = [{"eventName": ["INSERT"]}] * 10
    assert len(compile_filters(ten, max_filters=10)) == 10
    with pytest.raises(FilterError) as info:
        compile_filters([*ten, {"eventName": ["MODIFY"]}], max_filters=10)
    assert info.value.filter_index == 10
    assert "filters_per_event_source_mapping" in str(info.value)


def test_anything_but_numbers_passes_every_dynamodb_number() -> None:
    """{"N": [{"anything-but": [0]}]} delivers every record (N values are strings), as Lambda does, and says so."""
    compiled = compile_filters([_new({"total": {"N": [{"anything-but": [0]}]}})])
    for value in ("0", "5", "-1.5"):
        event = {"eventName": "INSERT", "dynamodb": {"NewImage": {"total": {"N": value}}}}
        assert compiled.matches(event) is True, value
    missing = {"eventName": "INSERT", "dynamodb": {"NewImage": {"other": {"S": "x"}}}}
    assert compiled.matches(missing) is False
    (warning,) = compiled.warnings
    assert "never matches" not in warning
    assert "every" in warning
    assert '{"anything-but": ["0"]}' in warning


GOOD: dict[str, Any] = {"eventName": ["INSERT"]}

INVALID_CASES = [
    pytest.param(
        [GOOD, GOOD, _new({"total": {"N": [{"numeric": [">>", 0]}]}})],
        2,
        "dynamodb.NewImage.total.N",
        "numeric operator '>>' is not one of",
        id="bad-numeric-operator",
    ),
    pytest.param([{"eventName": "INSERT"}], 0, "eventName", "leaf values are always lists", id="leaf-not-a-list"),
    pytest.param([GOOD, {"eventName": []}], 1, "eventName", "empty lists are not allowed", id="empty-list"),
    pytest.param([{"dynamodb": {}}], 0, "dynamodb", "empty objects", id="empty-object"),
    pytest.param([{}], 0, "", "empty objects", id="empty-pattern"),
    pytest.param([{"name": [{"contains": "a"}]}], 0, "name", "unknown operator 'contains'", id="unknown-operator"),
    pytest.param([{"name": [{"wildcard": "a*"}]}], 0, "name", "does not document", id="wildcard-unsupported"),
    pytest.param([{"name": [{"cidr": "10.0.0.0/8"}]}], 0, "name", "does not document", id="cidr-unsupported"),
    pytest.param([{"name": [{"prefix": "a", "suffix": "b"}]}], 0, "name", "exactly one operator", id="two-operators"),
    pytest.param([{"name": [{"exists": "yes"}]}], 0, "name", "exists takes true or false", id="exists-not-bool"),
    pytest.param([{"name": [{"prefix": 5}]}], 0, "name", "prefix takes a string", id="prefix-not-string"),
    pytest.param(
        [{"name": [{"prefix": {"anything-but": "x"}}]}],
        0,
        "name",
        "equals-ignore-case",
        id="prefix-bad-object",
    ),
    pytest.param([{"name": [{"equals-ignore-case": ["a"]}]}], 0, "name", "takes a string", id="ignore-case-not-string"),
    pytest.param(
        [{"name": [{"anything-but": ["a", 1]}]}],
        0,
        "name",
        "only strings or of only numbers",
        id="anything-but-mixed",
    ),
    pytest.param([{"name": [{"anything-but": []}]}], 0, "name", "at least one value", id="anything-but-empty"),
    pytest.param([{"name": [{"anything-but": [None]}]}], 0, "name", "anything-but takes", id="anything-but-null"),
    pytest.param([{"name": [{"anything-but": True}]}], 0, "name", "anything-but takes", id="anything-but-bool"),
    pytest.param(
        [{"name": [{"anything-but": {"prefix": ""}}]}],
        0,
        "name",
        "cannot be empty",
        id="anything-but-empty-prefix",
    ),
    pytest.param(
        [{"name": [{"anything-but": {"wildcard": "a"}}]}],
        0,
        "name",
        "not 'wildcard'",
        id="anything-but-wildcard",
    ),
    pytest.param([{"n": [{"numeric": [">", 0, "<"]}]}], 0, "n", "numeric takes a list", id="numeric-odd-length"),
    pytest.param([{"n": [{"numeric": ">"}]}], 0, "n", "numeric takes a list", id="numeric-not-a-list"),
    pytest.param(
        [{"n": [{"numeric": ["<", 5, ">", 0]}]}],
        0,
        "n",
        "lower bound ('>' or '>=') followed",
        id="range-order",
    ),
    pytest.param([{"n": [{"numeric": ["=", 1, "<", 5]}]}], 0, "n", "followed by an upper", id="equals-in-range"),
    pytest.param([{"n": [{"numeric": [">", 5, "<", 5]}]}], 0, "n", "range is empty", id="range-empty"),
    pytest.param([{"n": [{"numeric": [">", "5"]}]}], 0, "n", "needs a number", id="numeric-string-bound"),
    pytest.param([{"n": [{"numeric": [">", True]}]}], 0, "n", "needs a number", id="numeric-bool-bound"),
    pytest.param([{"n": [float("nan")]}], 0, "n", "not a JSON number", id="nan-literal"),
    pytest.param([{"$or": {"a": ["x"]}}], 0, "$or", "list of at least 2 objects", id="or-not-a-list"),
    pytest.param([{"$or": [{"a": ["x"]}]}], 0, "$or", "at least 2 objects, got 1", id="or-one-branch"),
    pytest.param([{"$or": [{"a": ["x"]}, "b"]}], 0, "$or[1]", "each $or branch is an object", id="or-branch-string"),
    pytest.param(
        [{"$or": [{"a": ["x"]}, {"prefix": ["b"]}]}],
        0,
        "$or[1].prefix",
        "operator name",
        id="or-reserved-field",
    ),
    pytest.param(
        [GOOD, _new({"$or": [{"status": {"S": ["a"]}}, {"total": {"N": [{"numeric": ["~", 1]}]}}]})],
        1,
        "dynamodb.NewImage.$or[1].total.N",
        "numeric operator '~'",
        id="error-path-inside-or",
    ),
    pytest.param([{"name": [["a"]]}], 0, "name", "a matcher is a string", id="nested-list-in-leaf"),
    pytest.param([{1: ["a"]}], 0, "", "field names must be strings", id="non-string-field-name"),
    pytest.param(["{not json"], 0, "", "not valid JSON", id="invalid-json"),
    pytest.param([GOOD, "[1, 2]"], 1, "", "a pattern is a JSON object", id="json-not-an-object"),
    pytest.param([42], 0, "", "a mapping or a JSON string", id="pattern-not-a-mapping"),
    pytest.param([{"a": ["x" * 5000]}], 0, "", "at most 4096", id="pattern-too-long"),
]


@pytest.mark.parametrize(("patterns", "index", "path", "message"), INVALID_CASES)
def test_invalid_pattern_names_filter_and_path(patterns: list[Any], index: int, path: str, message: str) -> None:
    """An invalid pattern raises FilterError naming the filter's index and the path inside it."""
    with pytest.raises(FilterError) as info:
        compile_filters(patterns)
    assert info.value.filter_index == index
    assert info.value.path == path
    assert message in str(info.value)
    assert str(info.value).startswith(f"filters[{index}] at {path or '<root>'}: ")


def test_single_pattern_instead_of_list_is_rejected() -> None:
    """Passing one pattern where a list is expected is an error, not a list of its keys."""
    with pytest.raises(FilterError, match="must be a list"):
        compile_filters({"eventName": ["INSERT"]})  # type: ignore[arg-type]


WARNING_CASES = [
    pytest.param(
        _new({"total": {"N": [{"numeric": [">", 0]}]}}),
        "dynamodb.NewImage.total.N",
        '{"N": ["5"]}',
        id="numeric-on-n",
    ),
    pytest.param(_new({"total": {"N": [5]}}), "dynamodb.NewImage.total.N", "N values are strings", id="number-on-n"),
    pytest.param(
        _new({"s": {"NS": [{"numeric": ["=", 1]}]}}),
        "dynamodb.NewImage.s.NS",
        "transform",
        id="numeric-on-ns",
    ),
    pytest.param(
        _new({"total": {"N": [{"anything-but": [5]}]}}),
        "dynamodb.NewImage.total.N",
        "N values",
        id="anything-but-num-on-n",
    ),
    pytest.param(
        {"eventName": [{"numeric": [">", 0]}]}, "eventName", "values here are strings", id="numeric-on-string"
    ),
    pytest.param({"eventName": ["insert"]}, "eventName", "'insert' never matches", id="event-name-case"),
    pytest.param({"eventSource": ["dynamodb"]}, "eventSource", "never matches", id="event-source-value"),
    pytest.param(
        _new({"status": [{"exists": True}]}),
        "dynamodb.NewImage.status",
        '{"S": [{"exists": true}]}',
        id="exists-on-attribute",
    ),
    pytest.param({"dynamodb": {"NewImage": ["x"]}}, "dynamodb.NewImage", "holds an object", id="leaf-on-image"),
    pytest.param(
        _new({"status": {"STRING": ["a"]}}),
        "dynamodb.NewImage.status.STRING",
        "type descriptor",
        id="bad-type",
    ),
    pytest.param(
        _new({"flag": {"BOOL": ["true"]}}),
        "dynamodb.NewImage.flag.BOOL",
        "[true] or [false]",
        id="string-on-bool",
    ),
    pytest.param(_new({"name": {"S": [True]}}), "dynamodb.NewImage.name.S", "values here are strings", id="bool-on-s"),
    pytest.param(_new({"n": {"N": ["5.0"]}}), "dynamodb.NewImage.n.N", "write '5'", id="n-not-canonical"),
    pytest.param(_new({"n": {"N": ["five"]}}), "dynamodb.NewImage.n.N", "not a number", id="n-not-a-number"),
    pytest.param({"eventname": ["INSERT"]}, "eventname", "not a field of a DynamoDB stream record", id="field-typo"),
    pytest.param(
        {"dynamodb": {"Newimage": {"a": {"S": ["x"]}}}},
        "dynamodb.Newimage",
        "not a field",
        id="ddb-field-typo",
    ),
    pytest.param({"dynamodb": {"SizeBytes": ["26"]}}, "dynamodb.SizeBytes", "JSON numbers", id="string-on-number"),
    pytest.param({"eventName": {"S": ["INSERT"]}}, "eventName.S", "parent is a leaf", id="object-under-leaf"),
    pytest.param({"n": [{"numeric": [">", 6e9]}]}, "n", "+-5e9", id="numeric-out-of-range"),
]


@pytest.mark.parametrize(("pattern", "path", "fragment"), WARNING_CASES)
def test_never_matching_patterns_warn(pattern: dict[str, Any], path: str, fragment: str) -> None:
    """Patterns that can never match (as in Lambda) compile, with a warning naming the path and the fix."""
    compiled = compile_filters([{"eventName": ["MODIFY"]}, pattern])
    assert any(w.startswith(f"filters[1] at {path}: ") and fragment in w for w in compiled.warnings), compiled.warnings


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param(_new({"total": {"N": ["5", {"prefix": "4"}]}}), id="n-as-strings"),
        pytest.param(
            {"eventName": ["INSERT", "MODIFY"], "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "user#"}]}}}},
            id="keys",
        ),
        pytest.param(_new({"items": {"L": {"M": {"sku": {"S": ["A1"]}}}}, "f": {"BOOL": [True]}}), id="nested"),
        pytest.param({"dynamodb": {"ApproximateCreationDateTime": [{"numeric": [">", 1.7e9]}]}}, id="time"),
        pytest.param({"userIdentity": {"principalId": ["dynamodb.amazonaws.com"]}}, id="ttl"),
    ],
)
def test_sound_patterns_do_not_warn(pattern: dict[str, Any]) -> None:
    """Well-formed DynamoDB patterns compile without warnings."""
    assert compile_filters([pattern]).warnings == []


@pytest.mark.parametrize(
    "patterns",
    [
        pytest.param([], id="none"),
        pytest.param([{"eventName": ["INSERT"]}], id="one"),
        pytest.param(
            [
                {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["active"]}}}},
                {
                    "dynamodb": {
                        "NewImage": {
                            "n": {"N": [{"prefix": "1"}]},
                            "$or": [{"a": {"S": [""]}}, {"b": {"NULL": [True]}}],
                        }
                    }
                },
                {"x": [None, 1.5, {"anything-but": {"equals-ignore-case": ["é", "Ü"]}}]},
            ],
            id="several",
        ),
    ],
)
def test_lambda_filter_criteria_round_trips(patterns: list[dict[str, Any]]) -> None:
    """Each Pattern is a JSON string that parses back to the input pattern."""
    criteria = lambda_filter_criteria(patterns)
    assert list(criteria) == ["Filters"]
    assert [json.loads(f["Pattern"]) for f in criteria["Filters"]] == patterns
    assert all(list(f) == ["Pattern"] and isinstance(f["Pattern"], str) for f in criteria["Filters"])


def test_lambda_filter_criteria_keeps_json_strings() -> None:
    """Patterns already in FilterCriteria's string form pass through unchanged."""
    text = '{ "dynamodb" : { "Keys" : { "CustomerName" : { "S" : [ "AnyCompany Industries" ] } } } }'
    assert lambda_filter_criteria([text]) == {"Filters": [{"Pattern": text}]}


def test_lambda_filter_criteria_validates() -> None:
    """Invalid patterns are rejected before they reach Lambda."""
    with pytest.raises(FilterError) as info:
        lambda_filter_criteria([{"eventName": ["INSERT"]}, {"eventName": "INSERT"}])
    assert info.value.filter_index == 1


def test_compiled_filters_interface() -> None:
    """CompiledFilters exposes matches, len and the warnings list."""
    compiled = compile_filters([_new({"total": {"N": [{"numeric": [">", 0]}]}}), {"eventName": ["MODIFY"]}])
    assert isinstance(compiled, CompiledFilters)
    assert len(compiled) == 2
    assert len(compiled.warnings) == 1
    assert compiled.matches(DDB) is True
    assert compiled.matches(REMOVE) is False
    assert "2 patterns" in repr(compiled)
