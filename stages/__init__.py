"""pystatsd: a tagged statsd daemon built as a pipeline of stages (receiver → aggregator → forwarder)."""

__version__ = "2.0.0.dev0"
