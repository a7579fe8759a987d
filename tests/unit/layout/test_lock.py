"""requirements.lock: the shipped dependency set is inside pyproject's ranges, hashed, and the one tested here."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def _pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def _dependencies() -> list[Requirement]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return [Requirement(r) for r in tomllib.load(handle)["project"]["dependencies"]]


@pytest.mark.parametrize("requirement", _dependencies(), ids=str)
def test_each_dependency_is_locked_inside_its_range(requirement: Requirement) -> None:
    """Every runtime dependency of pyproject.toml is in the lock at a version its range allows."""
    pins = _pins()
    name = canonicalize_name(requirement.name)
    assert name in pins, f"{name} is not in requirements.lock: run `make lock`"
    assert requirement.specifier.contains(pins[name], prereleases=True), (
        f"requirements.lock pins {name}=={pins[name]}, outside {requirement}: run `make lock`"
    )


def test_every_pin_carries_hashes() -> None:
    """Each locked package lists its files' sha256 hashes (the image installs with --require-hashes)."""
    text = LOCK.read_text(encoding="utf-8")
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert len(blocks) == len(_pins())
    for block in blocks:
        assert "--hash=sha256:" in block, block.splitlines()[0]


def test_the_lock_is_what_this_environment_tests() -> None:
    """Every locked package installed here has the locked version: the tests ran against what ships."""
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    differing = {
        name: (version, installed[name])
        for name, version in _pins().items()
        if installed.get(name) not in (None, version)
    }
    assert differing == {}, "installed versions differ from requirements.lock (locked, installed): run `make venv`"


def test_the_makefile_refreshes_the_lock_with_the_command_it_records() -> None:
    """`make lock` runs the resolver with the options the lock's header names (so a refresh reproduces it)."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    recipe = re.search(r"^lock:.*\n\t(.*)$", makefile, flags=re.MULTILINE)
    assert recipe is not None
    header = LOCK.read_text(encoding="utf-8").splitlines()[1]
    for option in ("--universal", "--python-version 3.11", "--generate-hashes", "--output-file requirements.lock"):
        assert option in header
        assert option in recipe.group(1)
