"""Local stand-ins for AWS used by the demo, the tests and the benchmarks.

``dynamodb_local`` runs Amazon's DynamoDB Local (one process per simulated region) and
``moto_server`` runs moto for the services DynamoDB Local lacks (SQS, Kinesis).
"""
