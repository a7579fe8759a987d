"""Cold start of an unpacked Lambda zip, as the README's Cold start section measures it.

    python bench/lambda_cold_start.py --endpoint http://127.0.0.1:8000 --table T DIR [DIR ...]

Each DIR is an unpacked ``dist/lambda.zip`` (``build_lambda_zip.py --build-dir``). Every run is a fresh
``python -S -s`` process with only DIR on its path and ``PYTHONDONTWRITEBYTECODE=1`` (read-only /var/task):
import of the handler, environment set-up, first invocation of a one-record batch against the target
table ``T`` at ``--endpoint`` (DynamoDB Local). Prints the best of ``--runs`` per phase, per DIR.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import replicator.lambda_handler as entry
    import replicator.runtime.lambda_function as h
    t1 = time.perf_counter()
    h.environment()
    t2 = time.perf_counter()

    class Context:
        aws_request_id = "req-bench"
        function_name = "replicator-bench"
        def get_remaining_time_in_millis(self):
            return 30_000

    response = entry.handler(json.loads(sys.stdin.read()), Context())
    t3 = time.perf_counter()
    assert response == {"batchItemFailures": []}, response
    print("RESULT " + json.dumps({"import_ms": (t1 - t0) * 1000, "setup_ms": (t2 - t1) * 1000,
                                  "first_invoke_ms": (t3 - t2) * 1000}))
    """
)

EVENT = {
    "Records": [
        {
            "eventID": "1",
            "eventName": "INSERT",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/src/stream/2026-01-01T00:00:00.000",
            "dynamodb": {
                "Keys": {"pk": {"S": "bench"}},
                "NewImage": {"pk": {"S": "bench"}, "v": {"N": "1"}},
                "SequenceNumber": "100",
                "SizeBytes": 20,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
                "ApproximateCreationDateTime": 1767225600,
            },
        }
    ]
}


def run_once(unpacked: Path, endpoint: str, table: str, home: Path) -> dict[str, float]:
    """One cold start in a fresh interpreter; its phases in ms."""
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(unpacked),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(home),
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "REPLICATOR_SOURCE__REGION": "us-east-1",
        "REPLICATOR_SOURCE__TABLE": "src",
        "REPLICATOR_TARGET__REGION": "us-west-2",
        "REPLICATOR_TARGET__TABLE": table,
        "REPLICATOR_TARGET__ENDPOINT_URL": endpoint,
        "REPLICATOR_METRICS__ENABLED": "false",
        "REPLICATOR_LOGGING__FORMAT": "json",
    }
    done = subprocess.run(
        [sys.executable, "-S", "-s", "-c", CHILD],
        input=json.dumps(EVENT),
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"cold start in {unpacked} failed:\n{done.stderr[-3000:]}")
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    result: dict[str, float] = json.loads(line.removeprefix("RESULT "))
    return result


def main() -> int:
    """Measure each directory ``--runs`` times, interleaved, and print the best per phase."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("dirs", type=Path, nargs="+")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    runs: dict[Path, list[dict[str, float]]] = {d: [] for d in args.dirs}
    with tempfile.TemporaryDirectory() as home:
        for _ in range(args.runs):
            for directory in args.dirs:  # interleaved, so machine load hits every variant alike
                runs[directory].append(run_once(directory, args.endpoint, args.table, Path(home)))
    for directory, results in runs.items():
        best = {phase: min(r[phase] for r in results) for phase in results[0]}
        total = min(sum(r.values()) for r in results)
        print(
            f"{directory}: import {best['import_ms']:.0f} ms, setup {best['setup_ms']:.0f} ms, "
            f"first invocation {best['first_invoke_ms']:.0f} ms, best total {total:.0f} ms (of {len(results)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
