"""What the tests and the benchmark share to run pystatsd and the programs around it.

Not part of the installed package (pyproject.toml's package discovery takes stages* and pystatsd*
only); imported from the repo root, where pytest (``pythonpath = ["."]``) and ``python -m bench.…``
both put it on the path.

- ``paths``: where the repo and its virtualenv are.
- ``wait``: polling until a check passes, failing with what was waited for.
- ``ports``: free loopback ports, and whether one accepts connections.
- ``process``: a child process (a server, a broker, a peer daemon) started, waited for and stopped.
- ``traffic``: steady statsd traffic to a port from a thread, paced, bounded and counted.
- ``pipeline``: the real pipeline under supervisord in a temp dir.
- ``netns``: hosts as network namespaces on one bridge, each link cut and restored at will.
"""
