"""The ``pystatsd`` command: run, check, status, planned operations, the supervisord.conf it writes.

It drives the stages and may read them; no stage imports it.
"""
