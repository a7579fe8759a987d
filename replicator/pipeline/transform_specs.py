"""The ``transforms:`` config language: what each entry may say, compiled into transform stages.

Each item is validated (discriminated by its ``type`` key) and turned into a stage of
:mod:`replicator.pipeline.transforms`, in order::

    {type: include, attributes: [a, b]}         keep only these (and the key attributes) in both images
    {type: exclude, attributes: [secret]}        drop these; excluding a key attribute fails the record
    {type: rename, attributes: {old: new}}       rename non-key attributes in both images
    {type: set, attribute: x, value: {S: eu}}    a constant AttributeValue in both images
    {type: set, attribute: x, derived: NAME}     a value derived from the record or the replication
    {type: map_keys, attributes: {pk: id}}       rename key attributes in the keys and both images
    {type: drop_deletes}                         drop REMOVE records
    {type: plugin, function: "pkg.mod:func"}     call a function of your own

A malformed item, one naming a replication marker attribute, or a plugin that cannot be imported is a
:class:`ConfigError` at build time, before any record is read.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import importlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from replicator.core.errors import ConfigError
from replicator.core.records import AttributeValue, ChangeRecord
from replicator.pipeline.transforms import (
    DerivedValue,
    Stage,
    copy_value,
    deriver,
    drop_deletes,
    exclude_stage,
    guard,
    include_stage,
    map_keys_stage,
    plugin_stage,
    rename_stage,
    set_stage,
)

# --------------------------------------------------------------------------------------------------
# Config shapes
# --------------------------------------------------------------------------------------------------

_STRICT = ConfigDict(extra="forbid", frozen=True)
_Name = Annotated[str, Field(min_length=1, max_length=65535)]


class _Renaming(BaseModel):
    """Shared checks of a ``{old: new}`` mapping."""

    model_config = _STRICT

    attributes: dict[_Name, _Name] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_to_one(self) -> _Renaming:
        seen: dict[str, str] = {}
        for old, new in self.attributes.items():
            if old == new:
                raise ValueError(f"attributes: {old!r} is renamed to itself")
            if new in seen:
                raise ValueError(f"attributes: {seen[new]!r} and {old!r} are both renamed to {new!r}")
            seen[new] = old
        return self


class IncludeSpec(BaseModel):
    """Keep only these attributes (key attributes are always kept)."""

    model_config = _STRICT

    type: Literal["include"]
    attributes: list[_Name]


class ExcludeSpec(BaseModel):
    """Drop these attributes."""

    model_config = _STRICT

    type: Literal["exclude"]
    attributes: list[_Name] = Field(min_length=1)


class RenameSpec(_Renaming):
    """Rename non-key attributes."""

    type: Literal["rename"]


class MapKeysSpec(_Renaming):
    """Rename key attributes, for a target table whose key schema names them differently."""

    type: Literal["map_keys"]


class SetSpec(BaseModel):
    """Set one attribute to a constant (``value``) or a derived value (``derived``)."""

    model_config = _STRICT

    type: Literal["set"]
    attribute: _Name
    value: Any = None
    derived: DerivedValue | None = None

    @model_validator(mode="after")
    def _value_or_derived(self) -> SetSpec:
        has_value = "value" in self.model_fields_set
        if has_value == (self.derived is not None):
            raise ValueError("give exactly one of value (an AttributeValue) or derived")
        if has_value:
            # frozen: write the normalised value (B as bytes) through object.__setattr__.
            object.__setattr__(self, "value", validate_attribute_value(self.value, "value"))
        return self


class DropDeletesSpec(BaseModel):
    """Drop REMOVE records."""

    model_config = _STRICT

    type: Literal["drop_deletes"]


class PluginSpec(BaseModel):
    """Call ``package.module:function`` with each record."""

    model_config = _STRICT

    type: Literal["plugin"]
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


TransformSpec: TypeAlias = Annotated[
    IncludeSpec | ExcludeSpec | RenameSpec | SetSpec | MapKeysSpec | DropDeletesSpec | PluginSpec,
    Field(discriminator="type"),
]
_SPEC_ADAPTER: TypeAdapter[TransformSpec] = TypeAdapter(TransformSpec)
# --------------------------------------------------------------------------------------------------
# AttributeValue validation (for constants in config)
# --------------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_MAX_DIGITS = 38  # DynamoDB numbers keep 38 significant digits
_MAX_EXP = 126  # magnitude below 1E+126
_MIN_EXP = -130  # magnitude at least 1E-130


# pydantic turns only ValueError (not TypeError) into a validation error, hence the TRY004 waivers.


def _number(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: a number must be given as a string, e.g. {{N: '5'}}")  # noqa: TRY004 - see above
    if not _NUMBER.fullmatch(value):
        raise ValueError(f"{where}: {value!r} is not a number")
    num = decimal.Decimal(value)
    if num:
        # Count by hand: Decimal.normalize() would round to the context's 28 digits first.
        digits = "".join(map(str, num.as_tuple().digits)).strip("0")
        if len(digits) > _MAX_DIGITS:
            raise ValueError(f"{where}: more than {_MAX_DIGITS} significant digits")
        if not _MIN_EXP <= num.copy_abs().adjusted() < _MAX_EXP:
            raise ValueError(f"{where}: magnitude outside DynamoDB's range (1E-130 to below 1E+126)")
    return value


def _binary(value: object, where: str) -> bytes:
    # Items carry B as bytes (as botocore parses them); YAML !!binary gives bytes, a plain string is
    # read as base64, which is how the wire format and the Lambda event spell binary.
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ValueError(f"{where}: a string binary value must be base64") from None
    raise ValueError(f"{where}: binary must be bytes or a base64 string")


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: must be a string")  # noqa: TRY004 - see above
    return value


def _boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}: must be true or false")  # noqa: TRY004 - see above
    return value


def _null(value: object, where: str) -> bool:
    if value is not True:
        raise ValueError(f"{where}: must be true")
    return True


def _map(value: object, where: str) -> dict[str, AttributeValue]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: must be a mapping of attribute name to AttributeValue")  # noqa: TRY004
    out = {}
    for name, sub in value.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: attribute names must be non-empty strings")
        out[name] = validate_attribute_value(sub, f"{where}.{name}")
    return out


def _list(value: object, where: str) -> list[AttributeValue]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: must be a list of AttributeValues")  # noqa: TRY004 - see above
    return [validate_attribute_value(sub, f"{where}[{i}]") for i, sub in enumerate(value)]


def _set_of(element: Callable[[object, str], Any]) -> Callable[[object, str], list[Any]]:
    def check(values: object, where: str) -> list[Any]:
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}: a set must be a non-empty list")
        out = [element(v, f"{where}[{i}]") for i, v in enumerate(values)]
        # DynamoDB rejects sets with duplicates; numbers are compared by value ("1" equals "1.0").
        seen = {decimal.Decimal(v) for v in out} if element is _number else set(out)
        if len(seen) != len(out):
            raise ValueError(f"{where}: a set must not hold duplicates")
        return out

    return check


_CHECKS: dict[str, Callable[[object, str], Any]] = {
    "S": _string,
    "N": _number,
    "B": _binary,
    "BOOL": _boolean,
    "NULL": _null,
    "M": _map,
    "L": _list,
    "SS": _set_of(_string),
    "NS": _set_of(_number),
    "BS": _set_of(_binary),
}


def validate_attribute_value(value: object, where: str = "value") -> AttributeValue:
    """Return a well-formed AttributeValue (one type descriptor) or raise ValueError naming the path."""
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"{where}: must be a mapping with exactly one type descriptor ({', '.join(_CHECKS)})")
    ((type_, inner),) = value.items()
    check = _CHECKS.get(type_)
    if check is None:
        raise ValueError(f"{where}: unknown type descriptor {type_!r} (expected one of {', '.join(_CHECKS)})")
    return {type_: check(inner, f"{where}.{type_}")}


# --------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------


def _format_errors(index: int, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        if loc and isinstance(loc[0], str) and err["type"] not in ("union_tag_invalid", "union_tag_not_found"):
            loc = loc[1:]  # pydantic puts the union's tag first
        key = f"transforms[{index}]"
        for part in loc:
            key += f"[{part}]" if isinstance(part, int) else f".{part}"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "union_tag_not_found":
            key += ".type"
            msg = "required key is missing (include, exclude, rename, set, map_keys, drop_deletes or plugin)"
        elif err["type"] == "union_tag_invalid":
            key += ".type"
        elif err["type"] == "value_error" and re.match(r"\w+[.:\[]", msg):
            # our validators name the field first ("attributes: ..."): fold it into the key
            field, _, rest = msg.partition(": ")
            key, msg = f"{key}.{field}", rest
        lines.append(f"{key}: {msg}")
    return "\n".join(lines)


def _refuse_markers(index: int, field: str, names: Sequence[str], markers: frozenset[str]) -> None:
    for name in names:
        if name in markers:
            raise ConfigError(
                f"transforms[{index}].{field}: {name!r} is a replication marker attribute; "
                "transforms may not read or write it (the writer owns it)"
            )


def _import_plugin(index: int, target: str) -> Callable[[ChangeRecord], object]:
    module_name, _, qualname = target.partition(":")
    where = f"transforms[{index}].function"
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # any failure while importing user code is a config error
        raise ConfigError(f"{where}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{where}: {target!r}: {module_name!r} has no attribute {qualname!r}") from None
    if not callable(obj):
        raise ConfigError(f"{where}: {target!r} is not callable")
    func: Callable[[ChangeRecord], object] = obj
    return func


def build_transforms(
    specs: Sequence[Mapping[str, Any]],
    *,
    marker_attributes: frozenset[str],
    source_region: str,
    clock: Callable[[], float] = time.time,
) -> list[Stage]:
    """Validate the ``transforms:`` config and return one stage per item, in order.

    Raises ConfigError (``transforms[i].key: what is wrong``) for a malformed item, an item naming a
    replication marker attribute, or a plugin that cannot be imported or is not callable.
    ``clock`` gives epoch seconds for the replication-time derived values (inject one in tests).
    """
    stages: list[Stage] = []
    for index, raw in enumerate(specs):
        try:
            spec = _SPEC_ADAPTER.validate_python(raw)
        except ValidationError as exc:
            raise ConfigError(_format_errors(index, exc)) from None
        inner = _build_one(index, spec, marker_attributes, source_region, clock)
        stages.append(guard(f"transforms[{index}] ({spec.type})", inner))
    return stages


def _build_one(  # noqa: PLR0911 - one return per stage type reads as a table
    index: int,
    spec: TransformSpec,
    markers: frozenset[str],
    source_region: str,
    clock: Callable[[], float],
) -> Stage:
    if isinstance(spec, IncludeSpec):
        _refuse_markers(index, "attributes", spec.attributes, markers)
        return include_stage(frozenset(spec.attributes))
    if isinstance(spec, ExcludeSpec):
        _refuse_markers(index, "attributes", spec.attributes, markers)
        return exclude_stage(frozenset(spec.attributes))
    if isinstance(spec, RenameSpec | MapKeysSpec):
        _refuse_markers(index, "attributes", list(spec.attributes), markers)
        _refuse_markers(index, "attributes", list(spec.attributes.values()), markers)
        if isinstance(spec, RenameSpec):
            return rename_stage(dict(spec.attributes))
        return map_keys_stage(dict(spec.attributes))
    if isinstance(spec, SetSpec):
        _refuse_markers(index, "attribute", [spec.attribute], markers)
        if spec.derived is None:
            constant: AttributeValue = spec.value
            return set_stage(spec.attribute, lambda _record: copy_value(constant))
        return set_stage(spec.attribute, deriver(spec.derived, source_region, clock))
    if isinstance(spec, DropDeletesSpec):
        return drop_deletes
    return plugin_stage(_import_plugin(index, spec.function))
