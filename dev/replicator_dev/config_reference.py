"""The configuration reference (docs/configuration.md), rendered from the config model itself.

The model in ``replicator.core.config`` is the one place a key, its type, default, bounds and
meaning are written; this renders them so the reference cannot drift from what ``run`` accepts.
``python -m replicator_dev.config_reference --write`` rewrites the file; ``--check`` fails when
it is out of date (the test suite runs the same comparison).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from replicator.core.config import Config

REFERENCE_PATH = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

_HEADER = """\
# Configuration reference

<!-- Generated from replicator/core/config.py by `make docs`; a test fails when this file is out of date. -->

The worker reads one YAML file (`--config`, or `REPLICATOR_CONFIG` in the container) and then
`REPLICATOR_*` environment variables, which win over the file: `REPLICATOR_<SECTION>__<KEY>`, for
example `REPLICATOR_TARGET__TABLE`; lists such as `REPLICATOR_FILTERS` are JSON. An unknown key, in the
file or in the environment, is refused with a "did you mean"; every error names where the value came
from (the file, with line and column for YAML syntax, or the variable). `replicator check-config
--config FILE` validates a file without touching AWS; `replicator config-schema` prints the JSON Schema
for editors (yaml-language-server, IDEs). Every key below is optional unless its default says *required*.
"""

_BOUNDS: tuple[tuple[type[Any], str, str], ...] = (
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "≤"),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.MinLen, "min_length", "length ≥"),
    (annotated_types.MaxLen, "max_length", "length ≤"),
)


_PLAIN_NAMES: dict[object, str] = {type(None): "null", Any: "any"}


def _type_name(annotation: Any) -> str:  # noqa: ANN401 - any typing form can appear in a model
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{json.dumps(arg)}`" for arg in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in get_args(annotation))
    if origin in (list, dict):
        return f"{origin.__name__} of " + ", ".join(_type_name(arg) for arg in get_args(annotation))
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "section"
    return _PLAIN_NAMES.get(annotation) or str(getattr(annotation, "__name__", annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]  # config factories take no argument
    elif field.default is PydanticUndefined:
        return "*required*"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, Path):
        value = str(value)
    return f"`{json.dumps(value)}`"


def _bounds(field: FieldInfo) -> str:
    parts = []
    for meta in field.metadata:
        for kind, attr, symbol in _BOUNDS:
            if isinstance(meta, kind):
                parts.append(f"{symbol} {getattr(meta, attr)}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _section(model: type[BaseModel], path: tuple[str, ...], out: list[str]) -> None:
    nested: list[tuple[str, type[BaseModel]]] = []
    rows: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
            nested.append((name, annotation))
            continue
        key = ".".join((*path, name))
        env = "REPLICATOR_" + "__".join((*path, name)).upper()
        description = field.description or ""
        bounds = _bounds(field)
        if bounds:
            description = f"{description} ({bounds})" if description else f"({bounds})"
        rows.append(f"| `{key}` | {_type_name(annotation)} | {_default(field)} | `{env}` | {_cell(description)} |")
    title = ".".join(path) if path else "top level"
    out.extend(["", f"## `{title}`" if path else "## Top level", ""])
    doc = inspect.getdoc(model) or ""
    if path and doc:
        out.extend([_cell(doc), ""])
    if rows:
        out.extend(["| key | type | default | environment variable | meaning |", "|---|---|---|---|---|", *rows])
    for name, sub in nested:
        _section(sub, (*path, name), out)


def render() -> str:
    """Return the reference as Markdown."""
    out = [_HEADER.rstrip("\n")]
    _section(Config, (), out)
    return "\n".join(out) + "\n"


def undocumented() -> list[str]:
    """Return the keys that have no description (each must say what it means)."""
    missing: list[str] = []

    def walk(model: type[BaseModel], path: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
                walk(annotation, (*path, name))
            elif not field.description:
                missing.append(".".join((*path, name)))

    walk(Config, ())
    return missing


def main(argv: list[str] | None = None) -> int:
    """Write or check docs/configuration.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite docs/configuration.md")
    mode.add_argument("--check", action="store_true", help="exit 1 when docs/configuration.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        REFERENCE_PATH.parent.mkdir(parents=True, exist_ok=True)
        REFERENCE_PATH.write_text(text, encoding="utf-8")
        return 0
    current = REFERENCE_PATH.read_text(encoding="utf-8") if REFERENCE_PATH.exists() else ""
    if current != text:
        sys.stderr.write(f"{REFERENCE_PATH.name} is out of date: run `make docs`\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
