"""Rules applied to a metric's identity before it is given its shard (see :mod:`.kind`)."""
