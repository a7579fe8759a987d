"""Where the dev helpers keep DynamoDB Local: the checkout's .cache/, as the README says."""

from __future__ import annotations

from pathlib import Path

import pytest
from replicator_dev.local.install import default_cache_dir

ROOT = Path(__file__).resolve().parents[3]


def test_the_default_cache_is_the_checkouts_dot_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """From a source checkout (pip install -e ./dev) downloads go to <checkout>/.cache."""
    monkeypatch.delenv("REPLICATOR_CACHE_DIR", raising=False)
    assert default_cache_dir() == ROOT / ".cache"


def test_the_environment_variable_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """REPLICATOR_CACHE_DIR overrides the checkout's folder."""
    monkeypatch.setenv("REPLICATOR_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
