"""A minimal HTTP/1.0 server for probes (``GET <path>`` → a small answer), on one thread whatever its clients do.

http.server gives every connection a thread that blocks on it: a client that sends its request
slowly, or never, holds a thread and a descriptor for as long as it likes, and one that leaves
early prints a traceback. Here one thread reads every connection without blocking: a connection
must send its whole request head within :data:`REQUEST_TIMEOUT_SECS` or is closed; at most
:data:`MAX_CLIENTS` are held, a new one at the limit closing the oldest (so a probe is answered
whatever slow clients hold); the answer is written once, without waiting for a client that does not
read. A client that leaves, or is cut, costs at most one short log line (throttled).
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http import HTTPStatus

from stages.common.log_throttle import LogThrottle

log = logging.getLogger(__name__)

#: Seconds a client has to send its request head (request line and headers), however it trickles in.
REQUEST_TIMEOUT_SECS = 5.0
#: Connections held at once; a new one beyond takes the oldest one's place.
MAX_CLIENTS = 32
#: A request head longer than this is not a probe's: answered 431 and closed.
MAX_HEAD_BYTES = 8192
#: How often the loop looks for expired connections and a stop when nothing else wakes it.
TICK_SECS = 0.25

#: path (query removed) → (status code, JSON body)
Answer = Callable[[str], tuple[int, bytes]]


class Client:
    __slots__ = ("sock", "head", "deadline")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.head = b""
        self.deadline = time.monotonic() + REQUEST_TIMEOUT_SECS


class ProbeServer:
    """Binds ``address`` at once (OSError if it cannot); :meth:`start` serves ``answer`` on a thread."""

    def __init__(self, address: tuple[str, int], answer: Answer, name: str) -> None:
        host, port = address
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        self.server = socket.create_server(address, family=family)
        self.server.setblocking(False)
        self.address = self.server.getsockname()
        self.answer = answer
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.server, selectors.EVENT_READ)
        #: fd → client, the oldest first.
        self.clients: OrderedDict[int, Client] = OrderedDict()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, name=name, daemon=True)
        self._cut_log = LogThrottle()
        self._cut = 0

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=2 * TICK_SECS + 1)
        for fd in list(self.clients):
            self._drop(fd)
        self.selector.close()
        self.server.close()

    def serve(self) -> None:
        while not self.stopping.is_set():
            for key, _ in self.selector.select(TICK_SECS):
                if key.fileobj is self.server:
                    self._accept()
                else:
                    self._read(key.fd)
            self._expire()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.server.accept()
            except (BlockingIOError, ConnectionAbortedError):
                return
            except OSError as exc:  # out of descriptors: the client waits in the kernel's queue
                log.warning("Health endpoint cannot take a connection: %s", exc.strerror)
                return
            if len(self.clients) >= MAX_CLIENTS:
                self._cut_client(next(iter(self.clients)), "the oldest of too many waiting clients")
            sock.setblocking(False)
            self.clients[sock.fileno()] = Client(sock)
            self.selector.register(sock, selectors.EVENT_READ)

    def _read(self, fd: int) -> None:
        client = self.clients.get(fd)
        if client is None:
            return
        try:
            data = client.sock.recv(MAX_HEAD_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # it left before it asked: nothing to say
            self._drop(fd)
            return
        client.head += data
        end = client.head.find(b"\r\n\r\n")
        end = end if end >= 0 else client.head.find(b"\n\n")
        if end >= 0:
            try:
                code, body = self._route(client.head[:end])
            except Exception:  # a bug must not end the thread, and with it the endpoint
                log.exception("Health endpoint cannot answer")
                code, body = HTTPStatus.INTERNAL_SERVER_ERROR, b'{"status": "internal error"}'
            self._respond(fd, code, body)
        elif len(client.head) > MAX_HEAD_BYTES:
            self._respond(fd, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, b'{"status": "request too large"}')

    def _route(self, head: bytes) -> tuple[int, bytes]:
        parts = head.split(b"\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return HTTPStatus.BAD_REQUEST, b'{"status": "bad request"}'
        if parts[0] != b"GET":
            return HTTPStatus.METHOD_NOT_ALLOWED, b'{"status": "method not allowed"}'
        return self.answer(parts[1].split(b"?", 1)[0].decode("latin-1"))

    def _respond(self, fd: int, code: int, body: bytes) -> None:
        status = HTTPStatus(code)
        response = (f"HTTP/1.0 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
        try:
            # A fresh connection's send buffer holds a small answer whole; a client that does not read
            # is not waited for.
            self.clients[fd].sock.send(response)
        except OSError:  # it left while it waited (a reset, a broken pipe): nothing to say
            pass
        self._drop(fd)

    def _expire(self) -> None:
        now = time.monotonic()
        while self.clients:
            fd, client = next(iter(self.clients.items()))
            if client.deadline > now:
                return
            self._cut_client(fd, f"no complete request within {REQUEST_TIMEOUT_SECS:g} s")

    def _cut_client(self, fd: int, why: str) -> None:
        self._drop(fd)
        self._cut += 1
        if self._cut_log.ready():
            log.warning("Health endpoint closed a client: %s (%d such clients so far)", why, self._cut)

    def _drop(self, fd: int) -> None:
        client = self.clients.pop(fd)
        self.selector.unregister(client.sock)
        client.sock.close()
