"""Where changes come from: DynamoDB Streams or Kinesis Data Streams shards, iterators and shard lineage."""
