"""The package layering: imports point one way, from the entry points down to the shared core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3] / "replicator"

# Lowest first: a package may import its own modules and those of the packages before it, never after.
LAYERS = ("core", "observe", "aws", "source", "checkpoint", "sink", "pipeline", "runtime", "ops", "cli")
# Top-level modules that are entry points: they may import anything.
ENTRY_MODULES = {"__init__", "__main__", "lambda_handler"}


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "replicator":
        return None
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, at any depth: plain, relative, TYPE_CHECKING, in functions, and by name.

    "By name" is ``importlib.import_module("replicator....")`` or ``__import__("replicator....")`` with a
    literal argument (the plugin transform imports a user's module from the config: not a literal).
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ["replicator", *path.relative_to(root).parent.parts]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            if module == "replicator" or not node.module:
                # ``from replicator import x`` / ``from .. import x``: x names a package or module.
                out.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
            else:
                out.append((node.lineno, module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                out.append((node.lineno, node.args[0].value))
    return out


def _check_import(own: str, module: str) -> str | None:
    """What is wrong with package ``own`` importing ``module``, or None."""
    if module.startswith("replicator_dev"):
        # Only ``replicator demo`` loads the dev package, when installed, and says so when not.
        return None if own == "cli" else f"imports the dev-only package {module}"
    other = _package_of(module)
    if other is None or other == own or other.startswith("__"):
        return None  # outside the project, the same package, or the root's ``__version__``
    if other == "" or other not in LAYERS:
        return f"{own} -> {module} (not a layer)"
    if LAYERS.index(other) > LAYERS.index(own):
        return f"{own} -> {other} points up the layers"
    return None


def violations(root: Path = ROOT) -> list[str]:
    """Every import that points against the layer order, as ``file:line: a -> b``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if len(rel.parts) == 1:
            if rel.stem not in ENTRY_MODULES:
                found.append(f"{rel}: a module outside every layer")
            continue
        own = rel.parts[0]
        if own not in LAYERS:
            found.append(f"{rel}: package {own!r} is not in LAYERS")
            continue
        for line, module in _imports(path, root):
            problem = _check_import(own, module)
            if problem:
                found.append(f"{rel}:{line}: {problem}")
    return found


def test_imports_point_down_the_layers() -> None:
    """No module imports a package above its own, so the tree reads as core -> ... -> cli."""
    assert violations() == []


def test_every_package_is_a_layer() -> None:
    """Each folder of replicator/ is one of the named layers, and each layer exists."""
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from replicator.runtime.service import Replicator\n", "core -> runtime points up the layers"),
        ("if TYPE_CHECKING:\n    from replicator.ops import verify\n", "core -> ops points up the layers"),
        ("def f():\n    import replicator.cli.main\n", "core -> cli points up the layers"),
        ("from replicator import pipeline\n", "core -> pipeline points up the layers"),
        ("from replicator_dev.local import dynamodb_local\n", "imports the dev-only package"),
        ("import replicator.nowhere\n", "core -> replicator.nowhere (not a layer)"),
        ("from ..runtime import service\n", "core -> runtime points up the layers"),
        ("from ..runtime.service import Replicator\n", "core -> runtime points up the layers"),
        ("from .. import runtime\n", "core -> runtime points up the layers"),
        ("import importlib\nimportlib.import_module('replicator.runtime.service')\n", "core -> runtime points up"),
        ("__import__('replicator.ops.verify')\n", "core -> ops points up the layers"),
    ],
)
def test_the_check_catches_an_upward_import(tmp_path: Path, source: str, expected: str) -> None:
    """An upward import in any form (plain, relative, TYPE_CHECKING, in a function, by name) is reported."""
    pkg = tmp_path / "core"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text(source)
    found = violations(tmp_path)
    assert len(found) == 1
    assert expected in found[0]
