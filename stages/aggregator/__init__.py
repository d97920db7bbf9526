"""The aggregator stage: N shard processes, each owning the series of the names hashed to it."""
