"""``pystatsd replay`` (stages.control.replay) into sockets of the test's own on loopback: what is sent,
how often and how fast; a destination not on loopback needs --force; a truncated file sends nothing,
a damaged one is sent up to its damage and the command says where (exit 1)."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.sockets import loopback_udp
from stages.control import cli
from stages.control.capture_file import CLOSE, DATAGRAM, STREAM, CaptureReader, CaptureWriter
from stages.control.replay import ReplayError, destinations

URL = "udp://127.0.0.1:8125"


@pytest.fixture
def target() -> Iterator[socket.socket]:
    with loopback_udp(0) as sock:
        yield sock


def capture_file(path: Path, times: list[float], blocks: bool = False) -> bytes:
    out = io.BytesIO()
    writer = CaptureWriter(out, {})
    for n, at in enumerate(times):
        writer.add(DATAGRAM, at, URL, 0, b"hits:%d|c" % n)
        if blocks:
            writer.flush()
    writer.finish({"dropped": 0, "ended": "duration"})
    path.write_bytes(out.getvalue())
    return out.getvalue()


def received(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(65536))
        except BlockingIOError:
            return got


def replay(path: Path, target: socket.socket, *args: str) -> int:
    return cli.main(["replay", str(path), "--to", f"udp://127.0.0.1:{target.getsockname()[1]}", *args])


def test_every_datagram_is_sent_once_per_loop_in_order(tmp_path: Path, target: socket.socket) -> None:
    path = tmp_path / "a.cap"
    capture_file(path, [1.0, 1.001, 1.002])
    assert replay(path, target, "--max", "--loops", "3") == 0
    assert received(target) == [b"hits:0|c", b"hits:1|c", b"hits:2|c"] * 3


def test_the_recorded_pace_is_kept_times_the_speed(tmp_path: Path, target: socket.socket) -> None:
    path = tmp_path / "a.cap"
    capture_file(path, [1.0, 1.6])
    began = time.monotonic()
    assert replay(path, target, "--speed", "2") == 0
    assert time.monotonic() - began >= 0.3
    began = time.monotonic()
    assert replay(path, target, "--max") == 0
    assert time.monotonic() - began < 0.3
    assert len(received(target)) == 4


def test_a_truncated_file_sends_nothing_and_says_so(tmp_path: Path, target: socket.socket,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.cap"
    path.write_bytes(capture_file(path, [1.0, 1.1])[:-5])
    assert replay(path, target, "--max") == 1
    assert received(target) == []
    assert capsys.readouterr().err.startswith(f"replay: {path} is truncated (a section cut short) at byte ")


def test_a_damaged_file_is_replayed_up_to_the_damage_then_says_where(tmp_path: Path, target: socket.socket,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.cap"
    data = bytearray(capture_file(path, [1.0, 1.1, 1.2, 1.3], blocks=True))
    reader = CaptureReader(io.BytesIO(bytes(data)), "a.cap")
    ends = [reader.offset for _ in reader.records()]
    third = ends[1]  # where the third record's block begins: the two before it are good
    data[third + 20] ^= 0xFF
    path.write_bytes(bytes(data))
    assert replay(path, target, "--max") == 1
    assert received(target) == [b"hits:0|c", b"hits:1|c"]
    assert capsys.readouterr().err == (f"replay: {path} is damaged (a section's checksum does not match) at byte "
                                       f"{third}, after record 2: replayed up to there, then stopped\n")


def test_a_destination_off_loopback_needs_force() -> None:
    with pytest.raises(ReplayError, match=r"udp://192.0.2.1:8125 is not a loopback address: give --force"):
        destinations([URL], ["udp://192.0.2.1:8125"], force=False)
    assert destinations([URL], ["udp://192.0.2.1:8125"], force=True) == {URL: ("udp", ("192.0.2.1", 8125))}
    with pytest.raises(ReplayError, match="10.1.2.3:8125 is not a loopback address"):
        destinations(["udp://10.1.2.3:8125"], [], force=False)
    assert destinations(["udp://0.0.0.0:8125", "unix:///run/p.sock"], [], force=False) == {
        "udp://0.0.0.0:8125": ("udp", ("127.0.0.1", 8125)), "unix:///run/p.sock": ("unix", "/run/p.sock")}


def test_a_destination_of_the_other_kind_is_refused() -> None:
    with pytest.raises(ReplayError, match="holds what udp://127.0.0.1:8125 read, datagrams: give a datagram "
                                          "listener in --to too"):
        destinations([URL], ["tcp://127.0.0.1:8125"], force=False)
    with pytest.raises(ReplayError, match="are both datagram listeners"):
        destinations([URL], ["udp://127.0.0.1:1", "unixgram:///x.sock"], force=False)


def test_each_recorded_stream_connection_gets_a_connection_of_its_own_closed_where_it_closed(tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    tcp = "tcp://127.0.0.1:8125"
    out = io.BytesIO()
    writer = CaptureWriter(out, {})
    for at, connection, payload in ((1.0, 1, b"a:1|c\n"), (1.1, 2, b"b:1|c\n"), (1.2, 1, b"a:2|c")):
        writer.add(STREAM, at, tcp, connection, payload)
    writer.add(CLOSE, 1.3, tcp, 1)
    writer.add(STREAM, 1.4, tcp, 2, b"b:2|c\n")
    writer.finish({})
    path = tmp_path / "s.cap"
    path.write_bytes(out.getvalue())
    try:
        # Small: the kernel holds it all until the test accepts, after the replay returned.
        assert cli.main(["replay", str(path), "--max", "--to", f"tcp://127.0.0.1:{server.getsockname()[1]}"]) == 0
        streams = []
        for _ in range(2):
            conn, _ = server.accept()
            with conn:
                chunks = []
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
                streams.append(b"".join(chunks))
        assert sorted(streams) == [b"a:1|c\na:2|c", b"b:1|c\nb:2|c\n"]
    finally:
        server.close()
