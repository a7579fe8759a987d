"""Reading changes: DynamoDB Streams or Kinesis, shard lineage, and one reader per shard."""
