"""Importing the Lambda handler stays cheap: configuration, AWS SDK and pipeline load with the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

DEFERRED = (
    "aiobotocore",
    "botocore",
    "pydantic",
    "yaml",
    "replicator.core.config",
    "replicator.aws.clients",
    "replicator.pipeline.stages",
    "replicator.sink.writer",
    "replicator.runtime.wiring",
)


def test_importing_the_entry_point_defers_the_heavy_modules() -> None:
    """A fresh interpreter importing replicator.lambda_handler has loaded none of the deferred modules."""
    code = (
        "import json, sys; import replicator.lambda_handler; "
        f"print(json.dumps([m for m in {DEFERRED!r} if m in sys.modules]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_INITIALIZATION_TYPE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert json.loads(done.stdout) == []
