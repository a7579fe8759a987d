"""The SAM template with the real SAM CLI: `sam validate --lint` and `sam build` with the prebuilt zip.

The SAM CLI is large and not a project dependency; these run where `sam` is on PATH (or named by
``SAM_CLI``), e.g. after ``python3.11 -m venv /tmp/sam && /tmp/sam/bin/pip install aws-sam-cli``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from cfn_support import LAMBDA_TEMPLATE

SAM = os.environ.get("SAM_CLI") or shutil.which("sam")
pytestmark = pytest.mark.skipif(SAM is None, reason="SAM CLI not installed (pip install aws-sam-cli; or set SAM_CLI)")


def _sam(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    return subprocess.run([str(SAM), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_sam_validate_lint(tmp_path: Path) -> None:
    """`sam validate --lint` accepts the template (SAM's transform and cfn-lint's rules)."""
    done = _sam("validate", "--lint", "-t", str(LAMBDA_TEMPLATE), "--region", "us-east-1", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_sam_build_takes_the_prebuilt_zip(tmp_path: Path) -> None:
    """`sam build` on a copy of the layout with dist/lambda.zip points the built template's CodeUri at that zip."""
    copy = tmp_path / "repo"
    (copy / "deploy" / "lambda").mkdir(parents=True)
    shutil.copy(LAMBDA_TEMPLATE, copy / "deploy" / "lambda" / "template.yaml")
    (copy / "dist").mkdir()
    with zipfile.ZipFile(copy / "dist" / "lambda.zip", "w") as archive:
        archive.writestr("replicator/lambda_handler.py", "def handler(event, context):\n    return {}\n")
    out = tmp_path / "build"
    done = _sam("build", "-t", "deploy/lambda/template.yaml", "--build-dir", str(out), cwd=copy)
    assert done.returncode == 0, done.stdout + done.stderr
    built = (out / "template.yaml").read_text(encoding="utf-8")
    assert "dist/lambda.zip" in built
