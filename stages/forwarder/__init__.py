"""The forwarder stage: every flush from the shards, fanned out to every configured sink."""
