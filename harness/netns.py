"""Hosts as Linux network namespaces on this machine, for tests of what crosses a network.

Each host is a namespace with its own loopback and one veth link to a bridge in the root namespace;
the bridge has the first address of a private /24, the hosts the next ones. A process started in a
host (``ip netns exec``) reaches the root namespace only through that link, so taking the link down
cuts that host off as a pulled cable would, while its own loopback still works.

Needs root (CAP_NET_ADMIN). Names carry this process's pid, so concurrent runs never share one, and
a run that was killed leaves namespaces that the next one removes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

_CLONE_NEWNET = 0x40000000
_setns = ctypes.CDLL(None, use_errno=True).setns
_NETNS_DIR = Path("/var/run/netns")
_PREFIX = "pst"


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")


def _remove_stale() -> None:
    """Namespaces and bridges of runs whose process is gone (a killed run has no teardown)."""
    listed = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"], capture_output=True, text=True).stdout
    names = [p.name for p in _NETNS_DIR.glob(f"{_PREFIX}*")] if _NETNS_DIR.exists() else []
    names += re.findall(rf"^\d+: ({_PREFIX}\d+br)\b", listed, re.MULTILINE)
    for name in names:
        ours = re.fullmatch(rf"{_PREFIX}(\d+)(?:-\d+|br)", name)
        if ours and not Path(f"/proc/{ours.group(1)}").exists():
            log.info("removing %s, left by run %s", name, ours.group(1))
            _ip(*(["link", "del", name] if name.endswith("br") else ["netns", "del", name]))


class HostNetwork:
    """``hosts`` namespaces on one bridge; ``address(host)`` is where the others reach a host,
    ``gateway`` where the hosts reach the root namespace (a server there binds to it)."""

    def __init__(self, hosts: list[str], subnet: str = "10.231.77") -> None:
        self.hosts = list(hosts)
        self.subnet = subnet
        self.bridge = f"{_PREFIX}{os.getpid()}br"
        self.gateway = f"{subnet}.1"
        self._created: list[str] = []

    def namespace(self, host: str) -> str:
        return f"{_PREFIX}{os.getpid()}-{self.hosts.index(host)}"

    def address(self, host: str) -> str:
        return f"{self.subnet}.{self.hosts.index(host) + 2}"

    def create(self) -> HostNetwork:
        _remove_stale()
        _ip("link", "add", self.bridge, "type", "bridge")
        self._created.append(self.bridge)
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for k, host in enumerate(self.hosts):
            ns, outside = self.namespace(host), f"{self.bridge[:-2]}v{k}"
            _ip("netns", "add", ns)
            self._created.append(ns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", outside, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", "eth0", "up")
        log.info("hosts %s in namespaces on bridge %s (%s)", self.hosts, self.bridge, self.gateway)
        return self

    def remove(self) -> None:
        """Deleting a namespace deletes its end of the veth, and with it the other end."""
        for name in reversed(self._created):
            _ip(*(["link", "del", name] if name == self.bridge else ["netns", "del", name]))
        self._created.clear()

    def exec_prefix(self, host: str) -> list[str]:
        """What a command is prefixed with to run in ``host``."""
        return ["ip", "netns", "exec", self.namespace(host)]

    def link(self, host: str, up: bool) -> None:
        """Take the host's one link down (its loopback stays) or bring it up again."""
        _ip("-n", self.namespace(host), "link", "set", "eth0", "up" if up else "down")

    def enter(self, host: str) -> None:
        """Move the calling thread into ``host``: sockets it opens afterwards are the host's."""
        fd = os.open(_NETNS_DIR / self.namespace(host), os.O_RDONLY)
        try:
            if _setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {self.namespace(host)}")
        finally:
            os.close(fd)
