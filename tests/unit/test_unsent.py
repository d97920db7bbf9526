"""The receiver's unsent file: its fixed bytes, and what a successor reads from it after a kill.

tests/data/contract/unsent.v1.bin is the file of RECORD below, written when version 1 was fixed. Any
change to those bytes is a new version of the file, which readers must then read beside version 1.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.receiver.unsent import RUNNING, Predecessor, ShardStream, decode, encode, read_predecessor

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "contract" / "unsent.v1.bin"
RECORD = Predecessor(pid=4242, epoch=1_700_000_000_000_000_000, unparsed=3,
                     streams=[ShardStream(next_seq=7, sent_before=120, held=40), ShardStream(0, 0, 5)])


def golden_record() -> bytes:
    return encode(RUNNING, RECORD.pid, RECORD.epoch, RECORD.unparsed, RECORD.streams)


def test_the_file_encodes_to_its_golden_bytes_and_decodes_back() -> None:
    assert golden_record() == GOLDEN.read_bytes()
    assert decode(GOLDEN.read_bytes()) == (RUNNING, RECORD)


@pytest.mark.parametrize(("data", "reason"), [
    (b"PSDUNSNT", "shorter than the header"),
    (b"XXXXXXXX" + golden_record()[8:], "magic"),
    (golden_record()[:8] + b"\x02" + golden_record()[9:], "version 2"),
    (golden_record()[:-1], "for 2 shards"),
])
def test_a_file_that_is_not_one_is_refused_naming_why(data: bytes, reason: str, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match=reason):
        decode(data)
    path = tmp_path / "receiver.unsent"
    path.write_bytes(data)
    assert read_predecessor(path) is None
    assert "are not counted" in caplog.text


def test_closing_headers_end_each_stream_past_what_was_handed_on_and_held() -> None:
    headers = RECORD.closing_headers("receiver", 1000.0)
    assert [(shard, h.src, h.epoch, h.seq, h.sent_before, h.metrics, h.n) for shard, h in headers] == [
        (0, "receiver", RECORD.epoch, 8, 160, 0, 0),  # past seq 7, which was never sent: the held 40 count as one batch
        (1, "receiver", RECORD.epoch, 1, 5, 0, 0),
    ]
    assert RECORD.held == 45
