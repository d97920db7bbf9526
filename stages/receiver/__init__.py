"""The receiver stage: listeners → parsers → per-shard batches → aggregator shards."""
