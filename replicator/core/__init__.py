"""What every other package builds on: change records, the AttributeValue codec, errors, config, retries."""
