"""docs/configuration.md is generated from the config model and must match it."""

from __future__ import annotations

from pathlib import Path

import pytest
from replicator_dev import config_reference


def test_reference_matches_the_model() -> None:
    """The committed reference is what the model renders today (else: `make docs`)."""
    assert config_reference.REFERENCE_PATH.read_text(encoding="utf-8") == config_reference.render()


def test_every_key_says_what_it_means() -> None:
    """Every configuration key has a description, so the reference explains each one."""
    assert config_reference.undocumented() == []


def test_check_mode_fails_on_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--check exits 1 when the file differs from the model, 0 when it matches."""
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n", encoding="utf-8")
    monkeypatch.setattr(config_reference, "REFERENCE_PATH", stale)
    assert config_reference.main(["--check"]) == 1
    assert config_reference.main(["--write"]) == 0
    assert config_reference.main(["--check"]) == 0
