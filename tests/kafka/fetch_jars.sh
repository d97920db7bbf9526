#!/usr/bin/env bash
# Install what the Kafka tests need: the broker's jars (resolved by Maven from pom.xml
# beside this script) and kcat. Idempotent: a cache with a matching marker is reused as is.
#
#   PYSTATSD_KAFKA_CACHE  cache directory (default: $PYSTATSD_CACHE/kafka, PYSTATSD_CACHE defaulting to
#                         ${XDG_CACHE_HOME:-~/.cache}/pystatsd as in harness/paths.py: outside the clone,
#                         so a fresh clone on the same machine reuses it); jars go to $CACHE/libs
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${PYSTATSD_KAFKA_CACHE:-${PYSTATSD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pystatsd}/kafka}"
libs="$cache/libs"
# The marker holds the pom's hash, so changing the Kafka version in pom.xml refetches.
marker="$libs/.fetched"
want="$(sha256sum "$here/pom.xml" | cut -d' ' -f1)"

say() { echo "fetch_jars: $*"; }
# Tool output is shown only on failure, with registry addresses masked.
show_log() { sed -E -e 's#[a-z]+://[^/[:space:]]+#<registry>#g' -e 's#\x1b\[[0-9;]*m##g' "$1"; }

install_kcat() {
    if command -v kcat >/dev/null 2>&1; then
        say "kcat already installed at $(command -v kcat)"
    elif ! command -v apt-get >/dev/null 2>&1; then
        say "kcat is missing and apt-get is unavailable: install kcat by hand (the kcat checks will fail without it)"
    else
        say "installing kcat with apt-get"
        local out
        out="$(mktemp)"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat; } >"$out" 2>&1; then
            say "apt-get could not install kcat; its output follows"
            show_log "$out"
            rm -f "$out"
            exit 1
        fi
        rm -f "$out"
        say "kcat installed at $(command -v kcat)"
    fi
}

fetch_jars() {
    if [[ -f "$marker" && "$(cat "$marker")" == "$want" ]]; then
        say "Kafka jars already in $libs"
        return
    fi
    mkdir -p "$cache"
    # Two test runs starting together must not both replace the directory.
    exec 9>"$cache/.lock"
    say "locking $cache against concurrent fetches"
    flock 9
    if [[ -f "$marker" && "$(cat "$marker")" == "$want" ]]; then
        say "Kafka jars already in $libs (fetched by another run)"
        return
    fi
    command -v mvn >/dev/null 2>&1 || { say "mvn is not installed: cannot fetch the Kafka jars"; exit 1; }
    tmp="$(mktemp -d "$cache/libs.tmp.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    say "resolving Kafka jars with Maven into $tmp"
    # -U: retry artifacts whose earlier failed download Maven has cached as "not found".
    if ! mvn -q -B -U -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$tmp/libs" >"$tmp/mvn.log" 2>&1; then
        say "Maven failed; its output follows"
        show_log "$tmp/mvn.log"
        exit 1
    fi
    echo "$want" >"$tmp/libs/.fetched"
    say "moving $(ls "$tmp/libs" | wc -l) jars into $libs"
    rm -rf "$libs"
    mv "$tmp/libs" "$libs"
    rm -rf "$tmp"
    trap - EXIT
    say "done"
}

fetch_jars
install_kcat
