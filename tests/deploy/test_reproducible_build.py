"""The image and the Lambda zip are built from the lock; the image ships no pip or setuptools."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[str]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _stages() -> list[list[str]]:
    stages: list[list[str]] = []
    for line in _instructions():
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_the_base_image_is_pinned_by_digest() -> None:
    """Both stages start from PYTHON_IMAGE, a tag pinned by a sha256 digest (the tag alone moves)."""
    (arg,) = [ln for ln in _instructions() if ln.startswith("ARG PYTHON_IMAGE=")]
    assert re.fullmatch(r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", arg)
    assert [stage[0].split()[1] for stage in _stages()] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_dependencies_come_from_the_lock_with_hashes() -> None:
    """The builder installs requirements.lock with --require-hashes, then the package with --no-deps."""
    builder = " ".join(_stages()[0])
    assert "COPY requirements.lock" in builder
    assert "pip install --require-hashes --no-deps -r requirements.lock" in builder
    assert "pip install --no-deps ." in builder
    assert "!requirements.lock" in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()


def test_no_pip_or_setuptools_in_the_final_image() -> None:
    """pip, setuptools and wheel leave the venv (builder) and the base image's Python (final stage)."""
    builder, final = (" ".join(stage) for stage in _stages())
    assert "/opt/venv/bin/pip uninstall --yes pip setuptools wheel" in builder
    assert "python -m pip uninstall --yes pip setuptools wheel" in final
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    # The final stage installs nothing with pip: its packages all come in the builder's venv.
    assert not re.search(r"\bpip3? install\b", final)


@pytest.fixture(scope="module")
def build() -> ModuleType:
    """Import the build script from its path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("build_lambda_zip", ROOT / "scripts" / "build_lambda_zip.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_zip_is_pinned_by_the_lock(build: ModuleType, tmp_path: Path) -> None:
    """The Lambda build's constraints are the lock's versions, without hashes or markers."""
    pins = build.lock_pins(ROOT / "requirements.lock")
    assert "aiobotocore==3.10.0" in pins or any(p.startswith("aiobotocore==") for p in pins)
    assert all(re.fullmatch(r"[a-z0-9-]+==[^\s;\\]+", p) for p in pins), pins
    assert build.LOCK_FILE == ROOT / "requirements.lock"
    empty = tmp_path / "empty.lock"
    empty.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="make lock"):
        build.lock_pins(empty)


def test_pruning_keeps_only_the_services_called(build: ModuleType, tmp_path: Path) -> None:
    """--prune-botocore-data deletes other services' models and keeps data/'s shared files."""
    data = tmp_path / "botocore" / "data"
    for service in ("dynamodb", "dynamodbstreams", "kinesis", "sqs", "sts", "ec2", "s3"):
        (data / service / "2012-01-01").mkdir(parents=True)
        (data / service / "2012-01-01" / "service-2.json.gz").write_bytes(b"x" * 10)
    (data / "endpoints.json").write_text("{}")
    freed = build.prune_botocore_data(tmp_path)
    assert freed == 20
    assert sorted(p.name for p in data.iterdir()) == [
        "dynamodb",
        "dynamodbstreams",
        "endpoints.json",
        "kinesis",
        "sqs",
        "sts",
    ]
    (data / "sts").rename(data / "gone")
    with pytest.raises(SystemExit, match="sts"):
        build.prune_botocore_data(tmp_path)
