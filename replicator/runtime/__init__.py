"""What runs the pipeline: the per-shard consumer loop, the coordinator, the ECS service and the Lambda handler."""
