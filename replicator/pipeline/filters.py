"""Lambda event source mapping ``FilterCriteria``, evaluated locally on Lambda-shaped stream records.

A pattern is written exactly as for a Lambda event source mapping (the EventBridge pattern language as
Lambda documents it) and applied to the record in the Lambda event shape (``eventName``,
``dynamodb.NewImage.<attr>.<type>`` ...), so a filter moves between this replicator and a Lambda
trigger unchanged. Supported: literal values (string, number, true, false, null; ``""`` is the empty
string and differs from null and from a missing field), ``equals-ignore-case``, ``prefix`` and
``suffix`` (both optionally ``{"equals-ignore-case": ...}``), ``anything-but`` (a value, a list of
strings or of numbers, ``{"prefix"|"suffix": ...}``, ``{"equals-ignore-case": ...}``), ``numeric``
(``["=", x]`` or up to one lower and one upper bound), ``exists`` true/false, ``$or`` at any level, and
AND across the fields of an object. Up to five patterns (ten with a raised quota) are OR-ed.

Matching follows aws/event-ruler, the engine behind EventBridge and Lambda filtering:

- only leaf values match; a leaf pattern on an object never matches (``exists: false`` then holds);
- an array in the event matches when any element does (arrays of objects: the rest of the pattern must
  match within one element);
- ``numeric`` and number literals match JSON numbers only, never strings. DynamoDB ``N`` values are
  strings in the record (``{"N": "5"}``), so numeric patterns under ``N`` never match, as in Lambda,
  and ``anything-but`` a list of numbers excludes none of them (it matches every ``N`` value);
  compilation reports such patterns in ``CompiledFilters.warnings``.

Known differences, none reachable from DynamoDB stream records in practice: number literals compare by
value (event-ruler also adds a numeric-equals matcher for them), and ``exists: false`` under an array of
objects is decided per element.

Each pattern is validated and compiled once into closures; matching does no parsing.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final, NamedTuple

from replicator.core.errors import FilterError

MAX_FILTERS: Final = 5
"""Lambda's default quota of filters per event source mapping (raisable to 10 on request)."""

MAX_FILTERS_RAISED: Final = 10
"""The most filters per event source mapping Lambda grants on request."""

MAX_PATTERN_CHARS: Final = 4096
"""Maximum length of one ``Filter.Pattern`` string in the Lambda API."""

NUMERIC_LIMIT: Final = 5e9
"""event-ruler documents numeric matching for values within +-5e9."""

_Match = Callable[[Any], bool]
_ObjMatch = Callable[[Mapping[str, Any]], bool]

_NUMERIC_OPS: Final = ("=", "<", "<=", ">", ">=")
_OPERATORS: Final = ("anything-but", "equals-ignore-case", "exists", "numeric", "prefix", "suffix")
_UNSUPPORTED_OPERATORS: Final = frozenset({"wildcard", "cidr", "equals"})
_OR: Final = "$or"


class _Missing:
    """The value of a field the event does not have."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()
_EMPTY: Final[Mapping[str, Any]] = {}


class CompiledFilters:
    """Compiled filter patterns: a record passes if any pattern matches it, or if there are none."""

    __slots__ = ("_fns", "_match", "patterns", "warnings")

    def __init__(self, fns: Sequence[_ObjMatch], patterns: Sequence[str], warnings: list[str]) -> None:
        """Hold the compiled patterns, their JSON texts (for Lambda) and the compile-time warnings."""
        self._fns = tuple(fns)
        self.patterns: tuple[str, ...] = tuple(patterns)
        """Each pattern as the JSON string a Lambda ``Filter.Pattern`` takes."""
        self.warnings: list[str] = warnings
        """Patterns (or parts) that can never match, each naming the filter, the path and the fix."""
        self._match: _ObjMatch
        if not self._fns:
            self._match = _match_all
        elif len(self._fns) == 1:
            self._match = self._fns[0]
        else:
            self._match = _any_of(self._fns)

    def matches(self, event: dict[str, Any]) -> bool:
        """Return True if any pattern matches the Lambda-shaped record, or there are no patterns."""
        return self._match(event)

    def old_image_matches(self, event: dict[str, Any]) -> bool:
        """Return True if the item as it was before this change matched: the record with OldImage as NewImage.

        That view is a MODIFY (the item existed); a record without OldImage (an INSERT) has no such view.
        """
        ddb = event.get("dynamodb")
        if not isinstance(ddb, dict) or "OldImage" not in ddb:
            return False
        old_view = {**event, "eventName": "MODIFY", "dynamodb": {**ddb, "NewImage": ddb["OldImage"]}}
        return self._match(old_view)

    def new_image_patterns(self) -> list[int]:
        """Indexes of the patterns that look at NewImage (a delete has none, so they never pass one)."""
        return [i for i, text in enumerate(self.patterns) if '"NewImage"' in text]

    def __len__(self) -> int:
        """Return the number of patterns."""
        return len(self._fns)

    def __repr__(self) -> str:
        """Show the counts, never the patterns' values."""
        return f"CompiledFilters({len(self._fns)} patterns, {len(self.warnings)} warnings)"


def compile_filters(patterns: Sequence[Mapping[str, Any] | str], *, max_filters: int = MAX_FILTERS) -> CompiledFilters:
    """Validate and compile up to ``max_filters`` patterns (dicts, or JSON strings as in ``FilterCriteria``).

    Raises FilterError naming the filter's index and the path inside it when a pattern is invalid.
    """
    if isinstance(patterns, str | bytes | Mapping):
        raise FilterError(0, "", "filters must be a list of patterns, not a single pattern")
    if len(patterns) > max_filters:
        raise FilterError(
            max_filters,
            "",
            f"at most {max_filters} filters per event source mapping (Lambda's quota), got {len(patterns)};"
            f" after raising the quota (up to {MAX_FILTERS_RAISED}), set filters_per_event_source_mapping",
        )
    warnings: list[str] = []
    fns: list[_ObjMatch] = []
    texts: list[str] = []
    for index, raw in enumerate(patterns):
        pattern = _load(index, raw)
        ctx = _Ctx(index, warnings)
        fns.append(_compile_object(ctx, pattern, "", _ROOT, in_or=False))
        # Measured after compiling, so a bad value is reported at its path rather than by json.dumps.
        texts.append(_pattern_text(index, raw, pattern))
    return CompiledFilters(fns, texts, list(dict.fromkeys(warnings)))


def lambda_filter_criteria(
    patterns: Sequence[Mapping[str, Any] | str], *, max_filters: int = MAX_FILTERS
) -> dict[str, Any]:
    """Return {"Filters": [{"Pattern": "<json string>"}, ...]} as a mapping's FilterCriteria takes.

    Validates the patterns first (FilterError as compile_filters); JSON strings are passed through as given.
    """
    compiled = compile_filters(patterns, max_filters=max_filters)
    return {"Filters": [{"Pattern": text} for text in compiled.patterns]}


# --- loading -------------------------------------------------------------------------------------


def _load(index: int, raw: object) -> Mapping[str, Any]:
    if isinstance(raw, str):
        try:
            pattern = json.loads(raw)
        except ValueError as exc:
            raise FilterError(index, "", f"pattern is not valid JSON: {exc}") from exc
    elif isinstance(raw, Mapping):
        pattern = raw
    else:
        raise FilterError(index, "", f"a pattern is a mapping or a JSON string, got {type(raw).__name__}")
    if not isinstance(pattern, Mapping):
        raise FilterError(index, "", f"a pattern is a JSON object, got {type(pattern).__name__}")
    return pattern


def _pattern_text(index: int, raw: object, pattern: Mapping[str, Any]) -> str:
    """Return the pattern as Lambda's ``Filter.Pattern`` string: a given JSON string stays as written."""
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = json.dumps(pattern, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise FilterError(index, "", f"pattern cannot be written as JSON: {exc}") from exc
    if len(text) > MAX_PATTERN_CHARS:
        raise FilterError(
            index, "", f"pattern is {len(text)} characters as JSON; Lambda allows at most {MAX_PATTERN_CHARS}"
        )
    return text


# --- the shape of a DynamoDB stream record, for never-matching warnings --------------------------


class _Shape(NamedTuple):
    """What a path holds in a Lambda-shaped DynamoDB stream record."""

    kind: str
    """root, ddb, item, attr, obj (object); str, numstr, bool, num (leaf); any (unknown)."""
    values: frozenset[str] | None = None
    """For enumerated string fields, the values they can take."""


_ROOT: Final = _Shape("root")
_DDB: Final = _Shape("ddb")
_ITEM: Final = _Shape("item")
_ATTR: Final = _Shape("attr")
_OBJ: Final = _Shape("obj")
_STR: Final = _Shape("str")
_NUMSTR: Final = _Shape("numstr")
_BOOL: Final = _Shape("bool")
_NUM: Final = _Shape("num")
_ANY: Final = _Shape("any")
_OBJECT_KINDS: Final = frozenset({"root", "ddb", "item", "attr", "obj"})
_LEAF_KINDS: Final = frozenset({"str", "numstr", "bool", "num"})

_ROOT_FIELDS: Final[Mapping[str, _Shape]] = {
    "eventID": _STR,
    "eventName": _Shape("str", frozenset({"INSERT", "MODIFY", "REMOVE"})),
    "eventVersion": _STR,
    "eventSource": _Shape("str", frozenset({"aws:dynamodb"})),
    "awsRegion": _STR,
    "eventSourceARN": _STR,
    "dynamodb": _DDB,
    "userIdentity": _OBJ,
}
_DDB_FIELDS: Final[Mapping[str, _Shape]] = {
    "ApproximateCreationDateTime": _NUM,
    "Keys": _ITEM,
    "NewImage": _ITEM,
    "OldImage": _ITEM,
    "SequenceNumber": _STR,
    "SizeBytes": _NUM,
    "StreamViewType": _Shape("str", frozenset({"KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES"})),
}
_TYPE_DESCRIPTORS: Final[Mapping[str, _Shape]] = {
    "S": _STR,
    "N": _NUMSTR,
    "B": _STR,
    "BOOL": _BOOL,
    "NULL": _BOOL,
    "M": _ITEM,
    "L": _ATTR,
    "SS": _STR,
    "NS": _NUMSTR,
    "BS": _STR,
}

_N_FIX: Final = (
    'DynamoDB N values are strings in the stream record (e.g. {"N": "5"}) and numeric patterns and '
    "number literals only match JSON numbers, so this never matches (in Lambda either); match the string "
    'value instead (e.g. {"N": ["5"]} or {"N": [{"prefix": "5"}]}), or compare numbers in a transform'
)


def _anything_but_numbers_fix(numbers: object) -> str:
    as_strings = [str(n) for n in numbers] if isinstance(numbers, list | tuple) else [str(numbers)]
    return (
        "anything-but with numbers excludes only JSON numbers, and values here are strings (DynamoDB N values"
        ' are strings in the record, e.g. {"N": "5"}), so this matches every record that has the attribute'
        f" (in Lambda too); to exclude the value, write it as a string: {json.dumps({'anything-but': as_strings})}"
    )


class _Ctx:
    """Compile state for one pattern: its index (for errors) and the shared warning list."""

    __slots__ = ("index", "warnings")

    def __init__(self, index: int, warnings: list[str]) -> None:
        self.index = index
        self.warnings = warnings

    def error(self, path: str, message: str) -> FilterError:
        return FilterError(self.index, path, message)

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"filters[{self.index}] at {path or '<root>'}: {message}")

    def child_shape(self, shape: _Shape, key: str, path: str) -> _Shape:  # noqa: PLR0911 - one exit per shape
        kind = shape.kind
        if kind == "root":
            child = _ROOT_FIELDS.get(key)
            if child is None:
                self.warn(path, f"{key!r} is not a field of a DynamoDB stream record ({', '.join(_ROOT_FIELDS)})")
                return _ANY
            return child
        if kind == "ddb":
            child = _DDB_FIELDS.get(key)
            if child is None:
                self.warn(path, f"{key!r} is not a field of a stream record's dynamodb ({', '.join(_DDB_FIELDS)})")
                return _ANY
            return child
        if kind == "item":
            return _ATTR
        if kind == "attr":
            child = _TYPE_DESCRIPTORS.get(key)
            if child is None:
                self.warn(
                    path,
                    f"{key!r} is not a DynamoDB type descriptor ({', '.join(_TYPE_DESCRIPTORS)}),"
                    ' so this never matches; attribute values look like {"S": "text"}',
                )
                return _ANY
            return child
        if kind in _LEAF_KINDS:
            self.warn(path, "the parent is a leaf value (not an object) in the record, so this never matches")
            return _ANY
        return _ANY

    def leaf_on_object(self, shape: _Shape, path: str) -> None:
        if shape.kind not in _OBJECT_KINDS:
            return
        hint = ""
        if shape.kind == "attr":
            hint = (
                "; an attribute's value is a type-descriptor map, so match on the type, e.g. "
                '{"status": {"S": [...]}} or {"status": {"S": [{"exists": true}]}}'
            )
        self.warn(
            path,
            "this path holds an object in a DynamoDB stream record and only leaf values match, so this never"
            f" matches (and exists:false always does){hint}",
        )

    def check(self, shape: _Shape, kind: str, path: str, literal: object = None) -> None:
        """Warn when a matcher of ``kind`` can never match the values found at ``shape``."""
        where = shape.kind
        if where == "numstr" and kind in {"numeric", "number"}:
            self.warn(path, _N_FIX)
        elif where == "str" and kind in {"numeric", "number"}:
            self.warn(path, "values here are strings and numeric patterns only match JSON numbers: never matches")
        elif where in {"str", "numstr"} and kind in {"bool", "null"}:
            self.warn(path, f"values here are strings, so {json.dumps(literal)} never matches")
        elif where == "bool" and kind in {"string", "string-op", "numeric", "number", "null"}:
            self.warn(path, "BOOL and NULL values are JSON booleans in the record: match with [true] or [false]")
        elif where == "num" and kind in {"string", "string-op", "bool", "null"}:
            self.warn(path, "values here are JSON numbers: match with a number or a numeric pattern")
        if kind == "string" and isinstance(literal, str):
            if shape.values is not None and literal not in shape.values:
                self.warn(path, f"{literal!r} never matches: values here are one of {sorted(shape.values)}")
            elif where == "numstr":
                self._check_number_string(path, literal)

    def _check_number_string(self, path: str, literal: str) -> None:
        try:
            number = Decimal(literal)
        except InvalidOperation:
            self.warn(path, f"{literal!r} is not a number, and N values always are: never matches")
            return
        canonical = _canonical_number(number)
        if canonical is not None and canonical != literal:
            self.warn(
                path,
                f"DynamoDB returns numbers in canonical form, so {literal!r} likely never matches; write {canonical!r}",
            )


def _canonical_number(number: Decimal) -> str | None:
    if not number.is_finite():
        return None
    if number == 0:
        return "0"
    return format(number.normalize(), "f")


# --- compilation ---------------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _compile_object(ctx: _Ctx, pattern: Mapping[str, Any], path: str, shape: _Shape, *, in_or: bool) -> _ObjMatch:
    """Compile an object pattern: every field must match (AND), and each ``$or`` needs one branch."""
    if not pattern:
        raise ctx.error(path, "empty objects are not allowed in a pattern")
    leaves: list[tuple[str, _Match]] = []
    nested: list[tuple[str, _Match]] = []
    ors: list[tuple[_ObjMatch, ...]] = []
    for key, value in pattern.items():
        if not isinstance(key, str):
            raise ctx.error(path, f"field names must be strings, got {key!r}")
        if key == _OR:
            ors.append(_compile_or(ctx, value, path, shape))
            continue
        child_path = _join(path, key)
        if in_or and (key in _OPERATORS or key in _UNSUPPORTED_OPERATORS):
            raise ctx.error(child_path, f"{key!r} is an operator name and cannot be a field name inside $or")
        child_shape = ctx.child_shape(shape, key, child_path)
        if isinstance(value, Mapping):
            nested.append((key, _compile_nested(ctx, value, child_path, child_shape, in_or=in_or)))
        elif isinstance(value, list | tuple):
            ctx.leaf_on_object(child_shape, child_path)
            leaves.append((key, _compile_leaf(ctx, value, child_path, child_shape)))
        else:
            raise ctx.error(
                child_path,
                f"must be an object or a list of matchers, got {_describe(value)}; leaf values are always"
                f" lists in a pattern, e.g. [{json.dumps(value, default=str)}]",
            )
    # Leaves first: they are cheap and usually the most selective (eventName), so failing records
    # leave before the walk into the images.
    return _and(tuple(leaves + nested), tuple(ors))


def _and(fields: tuple[tuple[str, _Match], ...], ors: tuple[tuple[_ObjMatch, ...], ...]) -> _ObjMatch:
    if len(fields) == 1 and not ors:
        ((key, fn),) = fields

        def match_one(obj: Mapping[str, Any]) -> bool:
            return fn(obj.get(key, _MISSING))

        return match_one

    def match_all(obj: Mapping[str, Any]) -> bool:
        get = obj.get
        for key, fn in fields:
            if not fn(get(key, _MISSING)):
                return False
        for branches in ors:
            for branch in branches:
                if branch(obj):
                    break
            else:
                return False
        return True

    return match_all


def _compile_or(ctx: _Ctx, value: object, path: str, shape: _Shape) -> tuple[_ObjMatch, ...]:
    or_path = _join(path, _OR)
    if not isinstance(value, list | tuple):
        raise ctx.error(or_path, f"$or takes a list of at least 2 objects, got {_describe(value)}")
    if len(value) < 2:  # noqa: PLR2004 - event-ruler's rule: an $or needs two branches
        raise ctx.error(or_path, f"$or takes a list of at least 2 objects, got {len(value)}")
    branches = []
    for j, branch in enumerate(value):
        branch_path = f"{or_path}[{j}]"
        if not isinstance(branch, Mapping):
            raise ctx.error(branch_path, f"each $or branch is an object, got {_describe(branch)}")
        branches.append(_compile_object(ctx, branch, branch_path, shape, in_or=True))
    return tuple(branches)


def _compile_nested(ctx: _Ctx, pattern: Mapping[str, Any], path: str, shape: _Shape, *, in_or: bool) -> _Match:
    """Compile a field whose pattern is an object: the event value must be an object matching it."""
    match_obj = _compile_object(ctx, pattern, path, shape, in_or=in_or)
    # A missing field, or a leaf where the pattern expects an object, has no sub-fields at all: the
    # answer depends only on the pattern (true only if it is all exists:false), so compute it now.
    absent = match_obj(_EMPTY)

    def match_nested(value: Any) -> bool:  # noqa: ANN401 - any JSON value
        if isinstance(value, dict):
            return match_obj(value)
        if isinstance(value, list):
            seen = False
            for element in _flatten(value):
                if isinstance(element, dict):
                    seen = True
                    if match_obj(element):
                        return True
            return False if seen else absent
        return absent

    return match_nested


def _flatten(values: list[Any]) -> Iterator[Any]:
    """Yield the elements of a (possibly nested) JSON array: event-ruler crushes arrays out."""
    for value in values:
        if isinstance(value, list):
            yield from _flatten(value)
        else:
            yield value


class _Leaf:
    """The matchers in one leaf list, sorted by kind while compiling."""

    __slots__ = ("bools", "exists_false", "exists_true", "null", "numbers", "preds", "strings")

    def __init__(self) -> None:
        self.strings: set[str] = set()
        self.numbers: set[int | float] = set()
        self.bools: set[bool] = set()
        self.null = False
        self.exists_true = False
        self.exists_false = False
        self.preds: list[_Match] = []


def _compile_leaf(ctx: _Ctx, values: Sequence[Any], path: str, shape: _Shape) -> _Match:
    """Compile a list of matchers: the field matches if any matcher matches any of its leaf values."""
    if not values:
        raise ctx.error(path, "empty lists are not allowed: list at least one value or matcher")
    leaf = _Leaf()
    for matcher in values:
        if isinstance(matcher, str):
            leaf.strings.add(matcher)
            ctx.check(shape, "string", path, matcher)
        elif matcher is None:
            leaf.null = True
            ctx.check(shape, "null", path)
        elif isinstance(matcher, bool):
            leaf.bools.add(matcher)
            ctx.check(shape, "bool", path, matcher)
        elif isinstance(matcher, int | float):
            leaf.numbers.add(_finite(ctx, path, matcher))
            ctx.check(shape, "number", path, matcher)
        elif isinstance(matcher, Mapping):
            _compile_operator(ctx, matcher, path, shape, leaf)
        else:
            raise ctx.error(
                path,
                "a matcher is a string, number, true, false, null or an {operator: ...} object,"
                f" got {_describe(matcher)}",
            )
    return _build_leaf(leaf)


def _build_leaf(leaf: _Leaf) -> _Match:  # noqa: C901 - one branch per value type, kept flat for speed
    strings = frozenset(leaf.strings)
    numbers = frozenset(leaf.numbers)
    bools = frozenset(leaf.bools)
    null = leaf.null
    preds = tuple(leaf.preds)
    exists_false = leaf.exists_false

    match_str: _Match
    match_other: _Match
    if leaf.exists_true:
        # Any present leaf value satisfies exists:true.
        match_str = match_other = _true
    else:
        if preds:

            def match_str(value: str) -> bool:
                if value in strings:
                    return True
                return any(pred(value) for pred in preds)

        else:
            match_str = strings.__contains__

        def match_other(value: Any) -> bool:  # noqa: ANN401 - any JSON scalar
            if value is None:
                if null:
                    return True
            elif isinstance(value, bool):
                if value in bools:
                    return True
            elif isinstance(value, int | float):
                if value in numbers:
                    return True
            elif isinstance(value, bytes | bytearray):
                # Lambda sees B/BS values base64-encoded; match them as it would.
                return match_str(base64.b64encode(value).decode("ascii"))
            return any(pred(value) for pred in preds)

    def match_leaf(value: Any) -> bool:  # noqa: ANN401 - any JSON value, or _MISSING
        if type(value) is str:
            return match_str(value)
        if value is _MISSING or isinstance(value, dict):
            # No leaf value at this path: only exists:false matches.
            return exists_false
        if isinstance(value, list):
            seen = False
            for element in _flatten(value):
                if isinstance(element, dict):
                    continue
                seen = True
                if match_str(element) if type(element) is str else match_other(element):
                    return True
            return False if seen else exists_false
        return match_other(value)

    return match_leaf


def _true(_value: Any) -> bool:  # noqa: ANN401 - any JSON value
    return True


def _match_all(_event: Mapping[str, Any]) -> bool:
    return True


def _any_of(fns: tuple[_ObjMatch, ...]) -> _ObjMatch:
    def match_any(event: Mapping[str, Any]) -> bool:
        return any(fn(event) for fn in fns)

    return match_any


def _compile_operator(ctx: _Ctx, matcher: Mapping[str, Any], path: str, shape: _Shape, leaf: _Leaf) -> None:
    if len(matcher) != 1:
        raise ctx.error(
            path,
            f"a matcher object has exactly one operator ({', '.join(_OPERATORS)}), got {sorted(matcher)}",
        )
    ((op, arg),) = matcher.items()
    if op == "exists":
        if not isinstance(arg, bool):
            raise ctx.error(path, f"exists takes true or false, got {_describe(arg)}")
        if arg:
            leaf.exists_true = True
        else:
            leaf.exists_false = True
    elif op in {"prefix", "suffix"}:
        leaf.preds.append(_affix(ctx, op, arg, path))
        ctx.check(shape, "string-op", path)
    elif op == "equals-ignore-case":
        text = _string(ctx, arg, path, op).lower()
        leaf.preds.append(lambda value: isinstance(value, str) and value.lower() == text)
        ctx.check(shape, "string-op", path)
    elif op == "anything-but":
        leaf.preds.append(_anything_but(ctx, arg, path, shape))
    elif op == "numeric":
        leaf.preds.append(_numeric(ctx, arg, path))
        ctx.check(shape, "numeric", path)
    elif op in _UNSUPPORTED_OPERATORS:
        raise ctx.error(path, f"{op!r} is an EventBridge operator that Lambda event filtering does not document")
    else:
        raise ctx.error(path, f"unknown operator {op!r}; expected one of {', '.join(_OPERATORS)}")


def _affix(ctx: _Ctx, op: str, arg: object, path: str) -> _Match:
    """Compile ``prefix``/``suffix``, plain or ``{"equals-ignore-case": ...}``: strings only."""
    if isinstance(arg, Mapping):
        if len(arg) != 1 or "equals-ignore-case" not in arg:
            raise ctx.error(path, f'{op} takes a string or {{"equals-ignore-case": "..."}}, got {sorted(arg)}')
        text = _string(ctx, arg["equals-ignore-case"], path, f"{op}/equals-ignore-case").lower()
        if op == "prefix":
            return lambda value: isinstance(value, str) and value.lower().startswith(text)
        return lambda value: isinstance(value, str) and value.lower().endswith(text)
    text = _string(ctx, arg, path, op)
    if op == "prefix":
        return lambda value: isinstance(value, str) and value.startswith(text)
    return lambda value: isinstance(value, str) and value.endswith(text)


def _anything_but(ctx: _Ctx, arg: object, path: str, shape: _Shape) -> _Match:  # noqa: C901 - its forms
    """Compile ``anything-but``: matches any present leaf value except the ones described."""
    if isinstance(arg, Mapping):
        if len(arg) != 1:
            raise ctx.error(path, f"anything-but takes one of prefix, suffix, equals-ignore-case; got {sorted(arg)}")
        ((op, inner),) = arg.items()
        if op in {"prefix", "suffix"}:
            text = _string(ctx, inner, path, f"anything-but/{op}")
            if not text:
                raise ctx.error(path, f"anything-but/{op} cannot be empty")
            if op == "prefix":
                return lambda value: not (isinstance(value, str) and value.startswith(text))
            return lambda value: not (isinstance(value, str) and value.endswith(text))
        if op == "equals-ignore-case":
            items = inner if isinstance(inner, list | tuple) else [inner]
            if not items:
                raise ctx.error(path, "anything-but/equals-ignore-case needs at least one string")
            lowered = frozenset(_string(ctx, item, path, "anything-but/equals-ignore-case").lower() for item in items)
            return lambda value: not (isinstance(value, str) and value.lower() in lowered)
        raise ctx.error(path, f"anything-but takes prefix, suffix or equals-ignore-case, not {op!r}")
    items = list(arg) if isinstance(arg, list | tuple) else [arg]
    if not items:
        raise ctx.error(path, "anything-but needs at least one value")
    if all(isinstance(item, str) for item in items):
        excluded = frozenset(items)
        return lambda value: not (isinstance(value, str) and value in excluded)
    if all(isinstance(item, int | float) and not isinstance(item, bool) for item in items):
        excluded_numbers = frozenset(_finite(ctx, path, item) for item in items)
        if shape.kind in {"str", "numstr"}:
            ctx.warn(path, _anything_but_numbers_fix(items))
        # event-ruler's AnythingBut matches every value not in its set: a string is never one of the numbers.
        return lambda value: not (_is_number(value) and value in excluded_numbers)
    raise ctx.error(
        path,
        "anything-but takes a string, a number, a list of only strings or of only numbers, or an object;"
        f" got {json.dumps(arg, default=str)}",
    )


def _numeric(ctx: _Ctx, arg: object, path: str) -> _Match:
    """Compile ``numeric``: ``["=", x]``, or one bound, or a lower bound followed by an upper bound."""
    if not isinstance(arg, list | tuple) or len(arg) not in {2, 4}:
        raise ctx.error(
            path,
            f'numeric takes a list like ["=", 100] or [">", 0, "<=", 5], got {json.dumps(arg, default=str)}',
        )
    pairs: list[tuple[str, float]] = []
    for k in range(0, len(arg), 2):
        op, bound = arg[k], arg[k + 1]
        if op not in _NUMERIC_OPS:
            raise ctx.error(path, f"numeric operator {op!r} is not one of {', '.join(map(repr, _NUMERIC_OPS))}")
        if not _is_number(bound):
            raise ctx.error(path, f"numeric operator {op!r} needs a number, got {json.dumps(bound, default=str)}")
        number = _finite(ctx, path, bound)
        if abs(number) > NUMERIC_LIMIT:
            ctx.warn(path, f"{number} is outside +-5e9, the range event-ruler documents for numeric matching")
        pairs.append((op, number))
    if len(pairs) == 1:
        op, bound = pairs[0]
        return _bound(op, bound)
    (low_op, low), (high_op, high) = pairs
    if low_op not in {">", ">="} or high_op not in {"<", "<="}:
        raise ctx.error(
            path,
            "a numeric range is a lower bound ('>' or '>=') followed by an upper bound ('<' or '<='),"
            f" got {low_op!r} then {high_op!r}",
        )
    if not low < high:
        raise ctx.error(path, f"numeric range is empty: lower bound {low} is not below upper bound {high}")
    lower, upper = _bound(low_op, low), _bound(high_op, high)
    return lambda value: lower(value) and upper(value)


def _bound(op: str, bound: float) -> _Match:
    if op == "=":
        return lambda value: _is_number(value) and value == bound
    if op == "<":
        return lambda value: _is_number(value) and value < bound
    if op == "<=":
        return lambda value: _is_number(value) and value <= bound
    if op == ">":
        return lambda value: _is_number(value) and value > bound
    return lambda value: _is_number(value) and value >= bound


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(ctx: _Ctx, path: str, number: float) -> float:
    if isinstance(number, float) and not math.isfinite(number):
        raise ctx.error(path, f"{number} is not a JSON number")
    return number


def _string(ctx: _Ctx, value: object, path: str, op: str) -> str:
    if not isinstance(value, str):
        raise ctx.error(path, f"{op} takes a string, got {_describe(value)}")
    return value


def _describe(value: object) -> str:
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return f"{type(value).__name__} {json.dumps(value, default=str)}"
