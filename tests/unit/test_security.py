"""Secure by default: loopback only, private sockets, no control port, a run directory nobody else can touch."""

from __future__ import annotations

import argparse
import configparser
import logging
import os
import socket
from pathlib import Path

import pytest

from stages.common.addresses import parse_listener
from stages.common.config import REPO_CONFIG, load_config
from stages.common.lifecycle import StartError, run_dir
from stages.receiver.listeners.inet import bind_inet

REPO = Path(__file__).resolve().parents[2]


def supervisord_conf() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read(REPO / "supervisord.conf")
    return parser


def test_supervisord_control_socket_is_private_and_there_is_no_http_server() -> None:
    conf = supervisord_conf()
    assert conf.get("unix_http_server", "chmod") == "0700"
    assert not conf.has_section("inet_http_server")
    assert conf.get("supervisord", "umask") == "077"


def test_shipped_config_listens_on_loopback_only_with_health_off() -> None:
    config = load_config(REPO_CONFIG)
    for url in config.listener_urls():
        _, (host, _) = parse_listener(url)
        assert host in ("127.0.0.1", "::1", "localhost"), url
    assert config.health_address == ""


def test_defaults_without_a_config_file_are_loopback(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty).listener_urls() == ["udp://127.0.0.1:5090"]


def test_a_listener_open_to_the_network_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        sock = bind_inet(("0.0.0.0", 0), socket.SOCK_DGRAM, "udp://0.0.0.0:0", reuse_port=False)
    sock.close()
    assert "udp://0.0.0.0:0 accepts unauthenticated metrics from the network" in caplog.text


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o722])
def test_a_run_directory_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "run"
    directory.mkdir()
    os.chmod(directory, mode)
    with pytest.raises(StartError, match="must belong to this user and not be writable by group or others"):
        run_dir(argparse.Namespace(run_dir=str(directory)), load_config(REPO_CONFIG))


def test_a_new_run_directory_is_private(short_tmp_path: Path) -> None:
    made = run_dir(argparse.Namespace(run_dir=str(short_tmp_path / "fresh")), load_config(REPO_CONFIG))
    assert made.stat().st_mode & 0o777 == 0o700
