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


ECS_ONLY = (
    "replicator.runtime.service",
    "replicator.runtime.coordinator",
    "replicator.runtime.consumer",
    "replicator.runtime.assignment",
    "replicator.observe.http",
    "replicator.checkpoint",
    "replicator.source",
    "replicator.ops",
    "replicator.cli",
    "sqlite3",
    "aiohttp.web",
)


def test_the_lambda_environment_loads_no_ecs_only_module() -> None:
    """The handler and every module its environment set-up imports leave the ECS worker's modules unloaded."""
    code = (
        "import json, sys; import replicator.lambda_handler; "
        "import replicator.runtime.lambda_function.environment, replicator.runtime.wiring, "
        "replicator.sink.deadletter, replicator.aws.clients, replicator.pipeline.stages, replicator.core.config; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({ECS_ONLY!r}))))"
    )
    env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_INITIALIZATION_TYPE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert json.loads(done.stdout) == []
