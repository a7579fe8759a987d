"""replicator: keeps a DynamoDB table in one region in step with a table in another."""

__version__ = "0.1.0"
