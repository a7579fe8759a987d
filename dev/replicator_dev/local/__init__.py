"""Local stand-ins for AWS used by the demo, the tests and the benchmarks.

``dynamodb_local`` runs Amazon's DynamoDB Local (one process per simulated region; ``install`` fetches
it, ``faketime`` gives it a fake clock) and ``moto_server`` runs moto for the services DynamoDB Local
lacks (SQS, Kinesis). ``common`` holds what they and their users share.
"""
