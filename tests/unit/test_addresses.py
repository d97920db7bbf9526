"""The address grammar (stages.common.addresses) and the receiver's listener registry name the same
schemes, each parsed by the same rule: the config accepts exactly the listeners the receiver opens."""

from __future__ import annotations

import re

import pytest

from stages.common.addresses import LISTENER_ADDRESSES, parse_listener
from stages.receiver.listeners import LISTENERS


def test_every_scheme_the_config_accepts_is_one_the_receiver_opens_and_the_other_way() -> None:
    assert LISTENERS.keys() == LISTENER_ADDRESSES.keys()


@pytest.mark.parametrize("url", ["udp://127.0.0.1:8125", "tcp://[::1]:8126", "unixgram:///run/x.sock",
                                 "unix:///run/y.sock"])
def test_a_listener_parses_its_address_as_the_config_does(url: str) -> None:
    scheme, address = parse_listener(url)
    assert LISTENERS[scheme].family.parse_address(url.partition("://")[2]) == address


@pytest.mark.parametrize(("url", "message"), [
    ("http://127.0.0.1:80", "is not a listener URL (one of udp://, tcp://, unixgram://, unix://)"),
    ("udp://127.0.0.1:0", "expected host:port with a port from 1 to 65535"),
    ("unix://run/x.sock", "expected an absolute socket path"),
])
def test_a_bad_listener_url_is_named_with_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(repr(url))}.*{re.escape(message)}"):
        parse_listener(url)
