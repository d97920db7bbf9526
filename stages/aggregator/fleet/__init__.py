"""The fleet tier: shards whose input is the edges' partials in Kafka instead of the receivers."""
