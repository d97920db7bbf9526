#!/usr/bin/env bash
# Install the servers the sink tests run against, from Debian's packages: InfluxDB 1.x (influxd),
# Graphite's carbon (carbon-cache, with the whisper library the tests read its files with),
# Prometheus (remote write) and VictoriaMetrics (remote write, and InfluxDB 2's /api/v2/write); then InfluxDB 1.8.3,
# built once by build_influxd.sh beside this script, and the OpenTelemetry Collector the otlp sink tests
# run against, built once by build_otelcol.sh. Idempotent: when every program is already
# there, nothing is fetched. The packages' own services are not used (the tests start their own
# servers on free loopback ports).
set -euo pipefail

say() { echo "install_servers: $*"; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

have_all() {
    command -v influxd >/dev/null 2>&1 \
        && command -v carbon-cache >/dev/null 2>&1 \
        && command -v prometheus >/dev/null 2>&1 \
        && command -v victoria-metrics >/dev/null 2>&1 \
        && /usr/bin/python3 -c 'import whisper' >/dev/null 2>&1
}

install_packages() {
    if have_all; then
        say "influxd, carbon-cache, prometheus, victoria-metrics and whisper already installed"
        return
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        say "apt-get is unavailable: install influxdb, graphite-carbon, python3-whisper, prometheus and victoria-metrics by hand"
        exit 1
    fi
    [[ "$(id -u)" == 0 ]] || { say "installing packages needs root: run this script as root"; exit 1; }

    say "installing influxdb, graphite-carbon, python3-whisper, prometheus and victoria-metrics with apt-get"
    out="$(mktemp)"
    trap 'rm -f "$out"' EXIT
    # The lock timeout lets two test runs that start together wait for each other instead of failing.
    if ! { apt-get update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
                influxdb graphite-carbon python3-whisper prometheus victoria-metrics; } >"$out" 2>&1; then
        say "apt-get could not install the servers; its output follows"
        # Registry addresses are masked, as in the other install scripts.
        sed -E 's#[a-z]+://[^/[:space:]]+#<registry>#g' "$out"
        exit 1
    fi
    have_all || { say "packages installed but influxd, carbon-cache, prometheus, victoria-metrics or whisper is still missing"; exit 1; }
    say "installed: $(dpkg-query -W -f='${Package} ${Version}  ' influxdb graphite-carbon python3-whisper prometheus \
        victoria-metrics)"
    rm -f "$out"
    trap - EXIT
}

install_packages
bash "$here/build_influxd.sh"
bash "$here/build_otelcol.sh"
