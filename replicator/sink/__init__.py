"""Writing to the target: versions, replication markers and the conditional writer."""
