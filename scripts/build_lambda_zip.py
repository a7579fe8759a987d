# ruff: noqa: INP001 - scripts/ holds stand-alone scripts, not a package
"""Build ``dist/lambda.zip``: the ``replicator`` package and its runtime dependencies for AWS Lambda.

    python scripts/build_lambda_zip.py [--output dist/lambda.zip] [--arch x86_64|arm64]
        [--python-version 3.11|3.12|3.13] [--prune-botocore-data]

- Dependencies are the ``[project] dependencies`` of pyproject.toml, less the ones only the command
  line uses (``rich``: also, when present, structlog imports it for tracebacks, ~80 ms of cold start).
  They are installed with ``pip install --target`` as manylinux wheels for CPython ``--python-version``
  (the function's runtime, the SAM template's ``Runtime``), never built from source, and pinned to the
  versions in ``requirements.lock`` (the tested set; ``make lock`` refreshes it; ``--no-pin`` lets pip
  choose). botocore is included, pinned to what aiobotocore requires: Lambda's
  bundled boto3/botocore is of whatever version the runtime carries, and /var/task comes first on
  sys.path, so the zip's copy is the one imported.
- ``replicator/`` is copied from the source tree (no build step writes into the checkout).
- ``__pycache__``, ``*.pyc``, ``tests`` directories inside packages and pip's ``bin/`` scripts (their
  shebangs name the build machine's interpreter) are stripped. Then every module is compiled afresh
  into ``__pycache__`` as unchecked-hash pycs (``--no-compile`` to skip): /var/task is read-only, so
  without them each cold start compiles every module it imports. Such pycs hold no timestamp and name
  sources as ``/var/task/...``, so they are reproducible.
- ``--prune-botocore-data`` keeps only the API models of the services the replicator calls
  (``PRUNED_SERVICES``) out of botocore's ~400: a smaller zip (see the README's Cold start section for
  the figures). A client of any other service would then fail to load its model.
- The zip is deterministic: entries sorted, timestamps fixed (1980-01-01), permissions normalised.
  Building twice from the same inputs gives the same bytes (the script prints the SHA-256).

Downloads are cached in ``.cache/pip`` (``--cache-dir``), so a rebuild needs no network.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import importlib.metadata
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

ROOT = Path(__file__).resolve().parent.parent
PYTHON_VERSIONS = ("3.11", "3.12", "3.13")
"""Lambda runtimes the zip can be built for (the SAM template's ``Runtime`` allowed values)."""
PYTHON_VERSION = PYTHON_VERSIONS[0]
LOCK_FILE = ROOT / "requirements.lock"
PRUNED_SERVICES = frozenset({"dynamodb", "dynamodbstreams", "kinesis", "sqs", "sts"})
"""botocore service models kept by ``--prune-botocore-data``: every service the replicator creates a client of."""
PLATFORMS = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
EXCLUDED_DEPENDENCIES = frozenset({"rich", "click"})
"""Needed by the command line and the operator tools only; never imported by the handler."""
EXCLUDED_SUBPACKAGES = frozenset({"cli"})
"""``replicator/cli`` needs click, which the zip leaves out: shipping it would only ship an import error."""
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
LAMBDA_TASK_ROOT = "/var/task"
_NEVER_PINNED = frozenset({"replicator", "pip", "setuptools", "wheel"})
_STRIP_DIRS = frozenset({"__pycache__", "tests"})
_STRIP_SUFFIXES = (".pyc", ".pyo")


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """Return the distribution name at the start of a PEP 508 requirement string."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"cannot read a distribution name in requirement {requirement!r}")
    return canonical(match.group(1))


def runtime_requirements(pyproject: Path, exclude: Iterable[str] = EXCLUDED_DEPENDENCIES) -> list[str]:
    """``[project] dependencies`` of ``pyproject`` without the excluded distributions."""
    excluded = {canonical(name) for name in exclude}
    with pyproject.open("rb") as handle:
        dependencies: list[str] = tomllib.load(handle)["project"]["dependencies"]
    return [req for req in dependencies if requirement_name(req) not in excluded]


def installed_pins() -> list[str]:
    """``name==version`` for every distribution installed in this interpreter (used as constraints)."""
    pins: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name or canonical(name) in _NEVER_PINNED:
            continue
        pins[canonical(name)] = f"{canonical(name)}=={dist.version}"
    return [pins[name] for name in sorted(pins)]


def lock_pins(lock: Path) -> list[str]:
    """``name==version`` of every package in a pip-compile/uv lock file (hashes and comments left out)."""
    pins = []
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if match:
            pins.append(f"{canonical(match.group(1))}=={match.group(2)}")
    if not pins:
        raise SystemExit(f"{lock} pins nothing: regenerate it with `make lock`")
    return sorted(pins)


def prune_botocore_data(root: Path, keep: Iterable[str] = PRUNED_SERVICES) -> int:
    """Delete botocore's service models except ``keep`` (the shared files at data/'s top stay); bytes freed."""
    data = root / "botocore" / "data"
    kept = frozenset(keep)
    missing = sorted(name for name in kept if not (data / name).is_dir())
    if missing:
        raise SystemExit(f"botocore/data has no model for {missing}: is botocore installed in {root}?")
    freed = 0
    for service in sorted(p for p in data.iterdir() if p.is_dir() and p.name not in kept):
        freed += sum(f.stat().st_size for f in service.rglob("*") if f.is_file())
        shutil.rmtree(service)
    return freed


def pip_install(
    requirements: Sequence[str],
    target: Path,
    *,
    platform: str,
    cache_dir: Path,
    constraints: Path | None,
    python_version: str = PYTHON_VERSION,
) -> None:
    """Install manylinux wheels of ``requirements`` (and their dependencies) into ``target``."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--target",
        str(target),
        "--platform",
        platform,
        "--implementation",
        "cp",
        "--python-version",
        python_version,
        "--only-binary=:all:",
        "--no-compile",
        "--no-warn-script-location",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        "--cache-dir",
        str(cache_dir),
    ]
    if constraints is not None:
        cmd += ["--constraint", str(constraints)]
    subprocess.run([*cmd, *requirements], check=True)  # noqa: S603 - argv from this script, no shell


def copy_package(source: Path, destination: Path, *, exclude: Iterable[str] = EXCLUDED_SUBPACKAGES) -> None:
    """Copy a package's source tree without caches and without the top-level subpackages in ``exclude``."""
    caches = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    left_out = frozenset(exclude)

    def ignore(directory: str, names: list[str]) -> set[str]:
        ignored = set(caches(directory, names))
        if Path(directory) == source:
            ignored |= left_out.intersection(names)
        return ignored

    shutil.copytree(source, destination, ignore=ignore)


def strip_tree(root: Path) -> None:
    """Remove caches, compiled files, test suites inside packages and pip's ``bin/`` from ``root``."""
    shutil.rmtree(root / "bin", ignore_errors=True)
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if not path.exists():
            continue
        if path.is_dir() and path.name in _STRIP_DIRS:
            shutil.rmtree(path)
        elif path.is_file() and path.name.endswith(_STRIP_SUFFIXES):
            path.unlink()


def compile_tree(root: Path, python_version: str = PYTHON_VERSION) -> None:
    """Compile every module into unchecked-hash pycs naming sources under /var/task (reproducible)."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" != python_version:
        raise SystemExit(
            f"pycs must be compiled by Python {python_version} (the runtime's); this is "
            f"{sys.version_info.major}.{sys.version_info.minor}: use --no-compile or run this script with "
            f"python{python_version}"
        )
    ok = compileall.compile_dir(
        root,
        quiet=2,
        stripdir=str(root),
        prependdir=LAMBDA_TASK_ROOT,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        workers=1,
    )
    if not ok:
        # A module that does not compile (e.g. a test helper with syntax for another version) just
        # ships without its pyc; the interpreter compiles it in memory if it is ever imported.
        sys.stderr.write("note: some modules did not compile; they ship without pycs\n")


def _mode(path: Path) -> int:
    executable = path.suffix == ".so" or ".so." in path.name or os.access(path, os.X_OK)
    return 0o755 if executable else 0o644


def write_zip(root: Path, output: Path) -> None:
    """Zip every file under ``root`` deterministically (sorted, fixed time and modes) into ``output``."""
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=ZIP_EPOCH)
            info.create_system = 3  # Unix, so Lambda applies the permission bits below
            info.external_attr = (0o100000 | _mode(path)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes(), compresslevel=6)
    partial.replace(output)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build(
    output: Path,
    *,
    arch: str = "x86_64",
    cache_dir: Path = ROOT / ".cache" / "pip",
    pin: bool = True,
    compile_pycs: bool = True,
    build_dir: Path | None = None,
    python_version: str = PYTHON_VERSION,
    lock: Path = LOCK_FILE,
    prune: bool = False,
) -> Path:
    """Build the zip at ``output``; returns it. ``build_dir`` (default: a temporary one) is emptied first."""
    with tempfile.TemporaryDirectory(prefix="lambda-build-") as scratch:
        tree = build_dir or Path(scratch) / "tree"
        if tree.exists():
            shutil.rmtree(tree)
        tree.mkdir(parents=True)
        constraints = None
        if pin:
            constraints = Path(scratch) / "constraints.txt"
            constraints.write_text("\n".join(lock_pins(lock)) + "\n", encoding="utf-8")
        pip_install(
            runtime_requirements(ROOT / "pyproject.toml"),
            tree,
            platform=PLATFORMS[arch],
            cache_dir=cache_dir,
            constraints=constraints,
            python_version=python_version,
        )
        if prune:
            prune_botocore_data(tree)
        copy_package(ROOT / "replicator", tree / "replicator")
        strip_tree(tree)
        if compile_pycs:
            compile_tree(tree, python_version)
        write_zip(tree, output)
    return output


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--output", type=Path, default=ROOT / "dist" / "lambda.zip")
    parser.add_argument("--arch", choices=sorted(PLATFORMS), default="x86_64", help="the function's architecture")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "pip", help="pip's download cache")
    parser.add_argument("--build-dir", type=Path, default=None, help="keep the unpacked tree here (emptied first)")
    parser.add_argument("--python-version", choices=PYTHON_VERSIONS, default=PYTHON_VERSION, help="the runtime")
    parser.add_argument("--lock", type=Path, default=LOCK_FILE, help="pins (default: requirements.lock)")
    parser.add_argument(
        "--prune-botocore-data", action="store_true", help=f"keep only {', '.join(sorted(PRUNED_SERVICES))}"
    )
    parser.add_argument("--no-pin", action="store_true", help="let pip pick versions instead of the lock's")
    parser.add_argument("--no-compile", action="store_true", help="ship sources only (slower cold starts)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    output = build(
        args.output,
        arch=args.arch,
        cache_dir=args.cache_dir,
        pin=not args.no_pin,
        compile_pycs=not args.no_compile,
        build_dir=args.build_dir,
        python_version=args.python_version,
        lock=args.lock,
        prune=args.prune_botocore_data,
    )
    with zipfile.ZipFile(output) as archive:
        entries = archive.infolist()
        unpacked = sum(info.file_size for info in entries)
    sys.stdout.write(
        f"{output}: {output.stat().st_size / 2**20:.1f} MiB zipped, {unpacked / 2**20:.1f} MiB unpacked, "
        f"{len(entries)} files, sha256 {sha256(output)}, built in {time.monotonic() - started:.1f} s\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
