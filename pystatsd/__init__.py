"""pystatsd's client library: ``from pystatsd.client import Client``. Standard library only."""
