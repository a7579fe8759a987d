"""Reading the configuration: the YAML file, then ``REPLICATOR_*`` variables over it, validated once.

The variables are read here rather than by pydantic-settings so that each one is checked against the
model (an unknown name such as ``REPLICATOR_TABEL`` is refused with a suggestion instead of ignored)
and every error names where its value came from: the file (with the line for YAML syntax) or the
variable.
"""

from __future__ import annotations

import difflib
import json
import os
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError

from replicator.core.config import Config
from replicator.core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

ENV_PREFIX = "REPLICATOR_"
ENV_DELIMITER = "__"
NOT_CONFIG_VARIABLES = frozenset({"REPLICATOR_CONFIG", "REPLICATOR_CACHE_DIR"})
"""``REPLICATOR_*`` names that are not config keys: the container entrypoint's and the dev tools'."""

KeyPath = tuple[str, ...]


def load(path: Path | str | None, environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate the configuration; raise ConfigError naming the key, its source and what to set."""
    data: dict[str, Any] = _read_file(Path(path)) if path is not None else {}
    env = os.environ if environ is None else environ
    from_env = _env_values(env)
    for key_path, (_, value) in from_env.items():
        _set(data, key_path, value)
    saved = None
    if environ is not None:
        # pydantic-settings reads os.environ too (the same values): swap in the given mapping for this call.
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(environ)
    try:
        return Config(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, path, from_env)) from None
    finally:
        if saved is not None:
            os.environ.clear()
            os.environ.update(saved)


def json_schema() -> dict[str, Any]:
    """The configuration's JSON Schema (for editors: yaml-language-server, VS Code, IntelliJ)."""
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "replicator configuration"
    # One of target (one table) or targets (fan-out): the model fills the other in (target_config.py).
    schema["required"] = [key for key in schema.get("required", []) if key != "target"]
    schema["oneOf"] = [{"required": ["target"]}, {"required": ["targets"]}]
    return schema


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _env_values(env: Mapping[str, str]) -> dict[KeyPath, tuple[str, Any]]:
    """Map each ``REPLICATOR_*`` variable to its key path and value; refuse names that are no key."""
    found: dict[KeyPath, tuple[str, Any]] = {}
    for name, raw in sorted(env.items()):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NOT_CONFIG_VARIABLES:
            continue
        key_path = tuple(part.lower() for part in upper[len(ENV_PREFIX) :].split(ENV_DELIMITER))
        found[key_path] = (name, _env_value(name, key_path, raw))
    return found


def _env_value(name: str, key_path: KeyPath, raw: str) -> Any:  # noqa: ANN401 - a string or parsed JSON
    model: type[BaseModel] = Config
    for depth, key in enumerate(key_path):
        fields = model.model_fields
        if key not in fields:
            prefix = key_path[:depth]
            hint = _suggest(prefix, key, as_variable=True)
            raise ConfigError(f"environment variable {name} names no config key ({'.'.join(key_path)}){hint}")
        annotation = _strip_optional(fields[key].annotation)
        last = depth == len(key_path) - 1
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if last:
                return _json(name, raw)
            model = annotation
            continue
        if not last:
            section = ".".join(key_path[: depth + 1])
            raise ConfigError(f"environment variable {name}: {section} is a value, not a section")
        if typing.get_origin(annotation) in {list, dict}:
            return _json(name, raw)  # lists and mappings are given as JSON, as pydantic-settings takes them
        return raw
    return raw


def _json(name: str, raw: str) -> Any:  # noqa: ANN401 - parsed JSON
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"environment variable {name}: not valid JSON ({exc.msg} at character {exc.pos})") from None


def _strip_optional(annotation: Any) -> Any:  # noqa: ANN401 - a type annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _set(data: dict[str, Any], key_path: KeyPath, value: Any) -> None:  # noqa: ANN401 - any config value
    node = data
    for key in key_path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    last = key_path[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last] = {**node[last], **value}
    else:
        node[last] = value


def _model_at(key_path: KeyPath) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for key in key_path:
        field = model.model_fields.get(key)
        annotation = _strip_optional(field.annotation) if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _all_paths(model: type[BaseModel], prefix: KeyPath = ()) -> list[KeyPath]:
    paths = []
    for key, field in model.model_fields.items():
        annotation = _strip_optional(field.annotation)
        paths.append((*prefix, key))
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths.extend(_all_paths(annotation, (*prefix, key)))
    return paths


def _suggest(prefix: KeyPath, key: str, *, as_variable: bool = False) -> str:
    """``; did you mean X?`` among the keys of the same section, else among every key's last name."""

    def show(key_path: KeyPath) -> str:
        if as_variable:
            return ENV_PREFIX + ENV_DELIMITER.join(key_path).upper()
        return ".".join(key_path)

    model = _model_at(prefix)
    if model is not None:
        close = difflib.get_close_matches(key, list(model.model_fields), n=1)
        if close:
            return f"; did you mean {show((*prefix, close[0]))}?"
    by_name = [p for p in _all_paths(Config) if difflib.get_close_matches(key, [p[-1]], n=1)]
    if by_name:
        return f"; did you mean {' or '.join(show(p) for p in by_name[:3])}?"
    return ""


def _format_validation_error(
    exc: ValidationError, path: Path | str | None, from_env: Mapping[KeyPath, tuple[str, Any]]
) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key{_suggest(loc[:-1], loc[-1])}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  {key}: {msg} ({_blame(loc, path, from_env)})")
    return "\n".join(lines)


def _blame(loc: KeyPath, path: Path | str | None, from_env: Mapping[KeyPath, tuple[str, Any]]) -> str:
    """Name where the offending value came from: the variable that set it (or a section above it), or the file."""
    for depth in range(len(loc), 0, -1):
        hit = from_env.get(loc[:depth])
        if hit is not None:
            return f"from environment variable {hit[0]}"
    # A whole-model check (loc ()) may involve both sources: name every variable given.
    if not loc and from_env:
        names = ", ".join(name for name, _ in from_env.values())
        where = f"{path} and " if path is not None else ""
        return f"from {where}environment variables {names}"
    if path is not None:
        return f"in {path}"
    return "from the environment: no config file given"
