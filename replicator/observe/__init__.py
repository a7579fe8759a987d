"""What the worker tells operators: Prometheus metrics, per-shard state, health endpoints, logs."""
