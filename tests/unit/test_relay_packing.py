"""The raw relay's packing: every line unchanged, datagrams of at most the limit, a payload that fits
alone sent as the very object read, a line longer than the limit alone, one longer than UDP counted."""

from __future__ import annotations

import json

from pystatsd.client import MAX_UDP_PAYLOAD
from stages.receiver.relay_packing import cut, lines, pack


def lines_of(datagrams: list[bytes]) -> list[bytes]:
    return [line for datagram in datagrams for line in datagram.split(b"\n") if line]


def test_a_payload_that_fits_with_no_neighbour_beside_it_goes_as_the_object_read() -> None:
    payloads = [b"a" * 900 + b":1|c", b"b" * 900 + b":1|c\n"]
    datagrams, too_long = pack(payloads, 1432)
    assert too_long == 0
    assert [d is p for d, p in zip(datagrams, payloads, strict=True)] == [True, True]


def test_small_payloads_are_packed_up_to_the_limit_joined_by_one_newline() -> None:
    payloads = [f"m{i}:{i}|c".encode() for i in range(10)] + [b"s:1|c\n", b"t:2|c"]
    datagrams, _ = pack(payloads, 20)
    assert all(len(d) <= 20 for d in datagrams)
    assert lines_of(datagrams) == [p.rstrip(b"\n") for p in payloads]
    assert datagrams[0] == b"m0:0|c\nm1:1|c\nm2:2|c"  # 20 bytes: exactly the limit
    assert b"\n\n" not in b"".join(datagrams)  # a payload's own newline is the separator


def test_a_payload_over_the_limit_is_cut_at_line_boundaries() -> None:
    payload = b"\n".join(f"line.{i}:{i}|ms".encode() for i in range(400)) + b"\n"
    datagrams, too_long = pack([payload], 1432)
    assert too_long == 0
    assert all(len(d) <= 1432 for d in datagrams)
    assert len(datagrams) == -(-len(payload) // 1432)  # as few as the limit allows (lines are short)
    assert lines_of(datagrams) == payload.split(b"\n")[:-1]


def test_a_line_longer_than_the_limit_goes_alone_its_neighbours_packed_around_it() -> None:
    long = b"long:1|c|#" + b"t" * 3000
    datagrams, too_long = pack([b"a:1|c\n" + long + b"\nb:2|c", b"c:3|c"], 1432)
    assert (too_long, datagrams) == (0, [b"a:1|c", long, b"b:2|c\nc:3|c"])


def test_a_line_longer_than_any_udp_datagram_is_counted_not_sent() -> None:
    huge = b"h:1|c|#" + b"t" * MAX_UDP_PAYLOAD
    datagrams, too_long = pack([b"a:1|c\n" + huge + b"\nb:2|c"], 1432)
    assert (too_long, datagrams) == (1, [b"a:1|c", b"b:2|c"])
    assert cut(huge, 1432) == ([], 1)


def test_a_json_document_goes_alone_and_whole_even_over_the_limit() -> None:
    document = json.dumps([{"metric_name": f"j{i}", "metric_type": "counter", "value": 1} for i in range(50)],
                          indent=1).encode()
    datagrams, too_long = pack([b"a:1|c", document, b"b:1|c"], 1432)
    assert (too_long, datagrams) == (0, [b"a:1|c", document, b"b:1|c"])


def test_empty_payloads_send_nothing_and_lines_counts_a_datagram_s_lines() -> None:
    assert pack([b"", b""], 1432) == ([], 0)
    assert [lines(d) for d in (b"a:1|c", b"a:1|c\n", b"a:1|c\nb:1|c")] == [1, 1, 2]


def test_the_limit_is_never_passed_whatever_the_line_lengths() -> None:
    payloads = [b"\n".join(b"x" * ((i * 37 + j * 11) % 300 + 1) for j in range(i % 9 + 1)) for i in range(300)]
    for limit in (1, 64, 301, 1432):
        datagrams, too_long = pack(payloads, limit)
        assert too_long == 0
        assert all(len(d) <= limit or b"\n" not in d for d in datagrams)
        assert lines_of(datagrams) == lines_of(payloads)
