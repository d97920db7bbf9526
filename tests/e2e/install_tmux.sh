#!/usr/bin/env bash
# Install tmux, the real terminal tests/e2e/test_top.py runs `pystatsd top` in, from Debian's package.
# Idempotent: nothing is fetched when tmux is already there.
set -euo pipefail

command -v tmux >/dev/null 2>&1 && exit 0
if ! command -v apt-get >/dev/null 2>&1 || [[ "$(id -u)" != 0 ]]; then
    echo "install_tmux: install tmux by hand (apt-get is unavailable, or this is not root)"
    exit 1
fi
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 tmux
